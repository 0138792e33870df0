"""Forward-mode AD through the CUDA backends: their autograd Functions have no ``jvp``, so a dual
input raises (as in nvdiffrast) — never an output without its tangent, which the forward-only
path (no autograd node where nothing requires a gradient) would give if it ignored dual
tensors. ``torch.func.jvp`` alike."""
import pytest
import torch
import torch.autograd.forward_ad as fwAD

import diffrast as dr
from helpers import kernel_emulator
from helpers.contexts import KINDS, context, tensor_device


@pytest.fixture(params=[pytest.param("cuda", marks=pytest.mark.gpu), "emulated"])
def kernels(request):
    """The device on which the public ops run the CUDA kernels for float32 tensors."""
    return kernel_emulator.kernel_device(request.param, request)


def scene(device):
    g = torch.Generator().manual_seed(3)
    V = 40
    pos = torch.rand(V, 4, generator=g) * 2 - 1
    pos[:, 3] = 1
    tri = torch.randint(0, V, (30, 3), generator=g, dtype=torch.int32)
    rast = torch.rand(1, 8, 8, 4, generator=g)
    rast[..., 3] = torch.randint(0, 31, (1, 8, 8), generator=g).float()
    uv = torch.rand(1, 8, 8, 2, generator=g)
    tex = torch.rand(1, 16, 16, 3, generator=g)
    uv_da = torch.rand(1, 8, 8, 4, generator=g) * 0.1
    color = torch.rand(1, 8, 8, 3, generator=g)
    attr = torch.rand(V, 3, generator=g)
    return {k: v.to(device) for k, v in dict(pos=pos, tri=tri, rast=rast, uv=uv, uv_da=uv_da,
                                                tex=tex, color=color, attr=attr).items()}


CALLS = {
    "interpolate": ("attr", lambda s, x: dr.interpolate(x, s["rast"], s["tri"])[0]),
    "texture": ("tex", lambda s, x: dr.texture(x, s["uv"], filter_mode="linear")),
    "texture_mip": ("tex", lambda s, x: dr.texture(x, s["uv"], s["uv_da"],
                                                   filter_mode="linear-mipmap-linear")),
    "construct_mip": ("tex", lambda s, x: dr.texture_construct_mip(x).levels[0]),
    "antialias": ("color", lambda s, x: dr.antialias(x, s["rast"], s["pos"], s["tri"])),
}


@pytest.mark.parametrize("op", sorted(CALLS))
def test_dual_inputs_raise_instead_of_losing_the_tangent(kernels, op):
    s = scene(kernels)
    name, call = CALLS[op]
    x = s[name]
    call(s, x)  # (runs without forward AD)
    with fwAD.dual_level():
        dual = fwAD.make_dual(x, torch.ones_like(x))
        with pytest.raises(NotImplementedError, match="jvp"):
            call(s, dual)
    # torch.func.jvp: an error too (the Functions have no setup_context; the topology kernels
    # cannot read its wrapped tensors), whichever comes first
    with pytest.raises((NotImplementedError, RuntimeError, TypeError)):
        torch.func.jvp(lambda t: call(s, t), (x,), (torch.ones_like(x),))


@pytest.mark.parametrize("kind", KINDS)
def test_rasterize_with_dual_positions_raises(kind):
    """rasterize goes through its Function where forward-mode AD is active (it used to take the
    no-gradient path for a dual ``pos``, which does not require grad, and return no tangent)."""
    ctx = context(kind)
    s = scene(tensor_device(kind))
    pos = s["pos"][None]
    dr.rasterize(ctx, pos, s["tri"], (16, 16))
    with fwAD.dual_level():
        dual = fwAD.make_dual(pos, torch.ones_like(pos))
        with pytest.raises(NotImplementedError, match="jvp"):
            dr.rasterize(ctx, dual, s["tri"], (16, 16))
