"""Smoke test of an installed diffrast wheel: run by ``.ci/wheel_check`` in a fresh virtual
environment, from a folder outside the checkout, as ``python wheel_smoke.py CHECKOUT``.

Checks that the installed package (not the checkout) is imported; that it holds every shader,
``.cu`` and ``.cuh`` file of the checkout, its type stub and ``py.typed``, and no file outside
the package; that each kernel source reads with its headers inlined; and that a rasterize,
interpolate and antialias with a backward pass runs on the CPU.
"""
import importlib.metadata
import os
import sys
from importlib import resources

import torch

import diffrast as dr
from diffrast.cuda_ops import loader

checkout = os.path.abspath(sys.argv[1])
assert not os.path.abspath(dr.__file__).startswith(checkout + os.sep), dr.__file__
assert dr.__version__ == importlib.metadata.version("diffrast"), dr.__version__


def names(package, suffixes):
    return {p.name for p in resources.files(package).iterdir() if p.name.endswith(suffixes)}


def checkout_names(folder, suffixes):
    return {n for n in os.listdir(os.path.join(checkout, folder)) if n.endswith(suffixes)}


shader_suffixes = (".vert", ".geom", ".frag", ".glsl")
assert names("diffrast.shaders", shader_suffixes) == checkout_names("shaders", shader_suffixes)
kernels = names("diffrast.cuda_ops", (".cu", ".cuh"))
assert kernels == checkout_names("cuda_ops", (".cu", ".cuh")), kernels
for name in sorted(kernels):
    if name.endswith(".cu"):
        assert "__global__" in loader.source(name[:-3]), name
for marker in ("py.typed", "__init__.pyi"):
    assert resources.files("diffrast").joinpath(marker).is_file(), marker

dist = importlib.metadata.distribution("diffrast")
tops = {f.parts[0] for f in dist.files}
assert tops == {"diffrast", f"diffrast-{dr.__version__}.dist-info"}, tops
assert any(f.name == "LICENSE" for f in dist.files)

glctx = dr.RasterizeGLContext(device="cpu")
pos = torch.tensor([[[-0.8, -0.8, 0.0, 1.0], [0.8, -0.8, 0.0, 1.0], [0.0, 0.8, 0.0, 1.0]]],
                   requires_grad=True)
tri = torch.tensor([[0, 1, 2]], dtype=torch.int32)
col = torch.eye(3, requires_grad=True)
rast, _ = dr.rasterize(glctx, pos, tri, (64, 64))
img, _ = dr.interpolate(col, rast, tri)
dr.antialias(img, rast, pos, tri).sum().backward()
covered = (rast[..., 3] > 0).float().mean().item()
assert 0.3 < covered < 0.34, covered
assert pos.grad.abs().sum() > 0 and col.grad.abs().sum() > 0
glctx.release()
print(f"wheel smoke test passed: diffrast {dr.__version__} from {os.path.dirname(dr.__file__)}, "
      f"{len(kernels)} kernel files, coverage {covered:.3f}")
