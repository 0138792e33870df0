"""Texture gradients against the exact basis-texel gradient, and per-item texture batches.

``texture`` is linear in the texture values (and ``texture_construct_mip`` is linear too), so the
exact gradient of a loss ``<g, texture(tex, ...)>`` with respect to texel ``(b, t, c)`` of
``tex`` is ``<g, texture(E, ...)>``, where ``E`` is the basis texture of the same shape as ``tex``
that is 1 at ``(b, t, c)`` and 0 elsewhere, sampled with the same ``uv`` / ``uv_da`` /
``mip_level_bias`` / filter / boundary mode (for the mipmapped modes, with the mip stack built
from ``E``). :func:`test_texture_gradient_is_the_basis_texel_gradient` checks the backward pass
of ``dr.texture`` against this construction, whose only ingredient is the library's own forward
pass, for every filter × boundary mode, 2-D and cube-map textures, broadcast and per-item
texture batches, level-of-detail from ``uv_da`` and / or ``mip_level_bias``. The test does not
assume which mip level a mode samples: whatever the forward pass does, its gradient must be the
gradient of that.

The basis textures are sampled in one call: every basis texture ``E_n`` (``n`` over all
``tex.numel()`` texels) is repeated along the batch as a per-item texture batch of ``N · B``
items, item ``n B + b`` being ``E_n``'s texture for image ``b`` sampled at image ``b``'s
coordinates. That each batch item is sampled as if it were alone is checked by
:func:`test_per_item_batch_matches_items_alone`.

Devices: ``cpu`` (the reference, float64 and float32), ``emulated`` (the CUDA kernels on the CPU
through tests/helpers/kernel_emulator.py, float32) and ``cuda`` (the kernels on a GPU, marked ``gpu``).
"""
import importlib
import math

import pytest
import torch

import diffrast as dr
from helpers import kernel_emulator
from diffrast import cuda_backend_texture as cbt

tex_module = importlib.import_module("diffrast.texture")

FILTERS = ("nearest", "linear", "linear-mipmap-nearest", "linear-mipmap-linear")
MIP_FILTERS = ("linear-mipmap-nearest", "linear-mipmap-linear")
# Largest allowed max|grad - exact| / max|exact| per dtype.
TOL = {torch.float32: 1e-6, torch.float64: 1e-12}


@pytest.fixture(params=["cpu", "emulated", pytest.param("cuda", marks=pytest.mark.gpu)])
def target(request, monkeypatch):
    """``(name, device, dtypes)``: where ``dr.texture`` runs and the dtypes to test there. ``cpu``:
    the reference, in float64 and float32; ``emulated`` / ``cuda``: the CUDA kernels (which
    take float32 tensors) through the warp emulator on the CPU / on a GPU."""
    if request.param == "cpu":
        return "cpu", torch.device("cpu"), (torch.float64, torch.float32)
    device = kernel_emulator.kernel_device(request.param, request)
    return request.param, device, (torch.float32,)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def make_uv_2d(h, w, B, seed):
    """``[B, h, w, 2]`` coordinates: a grid over [-0.25, 1.25]² (inside, the edges, outside the
    texture), u = 0 and u = 1 exactly on some samples, plus jitter."""
    g = _gen(seed)
    gu = torch.linspace(-0.25, 1.25, w, dtype=torch.float64)
    gv = torch.linspace(-0.25, 1.25, h, dtype=torch.float64)
    uv = torch.stack(torch.meshgrid(gu, gv, indexing="xy"), dim=-1).expand(B, h, w, 2).clone()
    uv = uv + 0.03 * torch.randn(B, h, w, 2, generator=g, dtype=torch.float64)
    uv[:, 0, :, 0] = 0.0
    uv[:, -1, :, 1] = 1.0
    return uv


def make_uv_cube(h, w, B, seed):
    """``[B, h, w, 3]`` directions over the whole sphere, some on a cube edge or corner."""
    g = _gen(seed)
    uv = torch.randn(B, h, w, 3, generator=g, dtype=torch.float64)
    uv[:, 0, 0] = torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64)   # a corner
    uv[:, 0, 1] = torch.tensor([-1.0, 1.0, 0.3], dtype=torch.float64)  # an edge
    uv[:, 0, 2] = torch.tensor([0.0, 0.0, -2.0], dtype=torch.float64)  # a face centre
    return uv


def make_lod(uv, size, seed):
    """``(uv_da, mip_level_bias)``: footprints from 1/4 texel (magnified) to the whole texture
    and beyond (level of detail from -2 to log2(size) + 1), and biases of either sign."""
    g = _gen(seed)
    B, h, w, d = uv.shape
    da = torch.randn(B, h, w, 2 * d, generator=g, dtype=torch.float64)
    da = da / da.norm(dim=-1, keepdim=True)
    lod = torch.rand(B, h, w, 1, generator=g, dtype=torch.float64) * (math.log2(size) + 3) - 2
    da = da * torch.exp2(lod) / size
    bias = torch.randn(B, h, w, generator=g, dtype=torch.float64) * 1.5
    return da, bias


def grad_and_output(tex, uv, da, bias, g, **kw):
    """``(output, gradient of <g, output> with respect to tex)`` from one ``dr.texture`` call."""
    t = tex.clone().requires_grad_(True)
    out = dr.texture(t, uv, da, bias, **kw)
    (grad,) = torch.autograd.grad(out, t, g)
    return out.detach(), grad


def basis_gradient(tex_shape, uv, da, bias, g, **kw):
    """The exact gradient of ``<g, texture(tex, ...)>`` with respect to ``tex`` (any tex of
    shape ``tex_shape``): entry ``n`` is ``<g, texture(E_n, ...)>`` for the basis texture
    ``E_n``, computed in float64 from the forward samples, all basis textures in one call."""
    N = math.prod(tex_shape)
    B = uv.shape[0]
    Bt = tex_shape[0]
    basis = torch.eye(N, dtype=uv.dtype, device=uv.device).reshape(N, *tex_shape)
    if Bt == 1:  # broadcast: E_n's one texture for every image
        basis = basis.expand(N, B, *tex_shape[1:])
    big_tex = basis.reshape(N * B, *tex_shape[1:])

    def rep(x):
        return None if x is None else x.repeat(N, *([1] * (x.ndim - 1)))

    out = dr.texture(big_tex, rep(uv), rep(da), rep(bias), **kw)
    out = out.reshape(N, *g.shape).double()
    return torch.einsum("n...,...->n", out, g.double()).reshape(tex_shape)


def make_case(tex_shape, cube, B, h, w, seed):
    """``(tex, uv, uv_da, mip_level_bias, g)`` in float64 on the CPU; ``g`` is the upstream
    gradient."""
    uv = (make_uv_cube if cube else make_uv_2d)(h, w, B, seed)
    size = tex_shape[2] if cube else max(tex_shape[1], tex_shape[2])
    da, bias = make_lod(uv, size, seed + 1)
    tex = torch.rand(tex_shape, generator=_gen(seed + 2), dtype=torch.float64)
    g = torch.randn(B, h, w, tex_shape[-1], generator=_gen(seed + 3), dtype=torch.float64)
    return tex, uv, da, bias, g


def lod_variants(filter_mode):
    """``(uv_da?, mip_level_bias?, max_mip_level)`` for the mode: the mipmapped modes take the
    level of detail from uv_da, uv_da and a bias, the bias alone, and a stack cut at level 1."""
    if filter_mode in MIP_FILTERS:
        return [(True, False, None), (True, True, None), (False, True, None), (True, True, 1)]
    return [(False, False, None), (True, True, None)]  # uv_da and the bias are ignored


def rel_err(got, want):
    """``max|got - want| / max|want|``."""
    return ((got.double().cpu() - want.double().cpu()).abs().max()
            / want.double().abs().max()).item()


# (tex shape, boundary modes): texture minibatch 1 (broadcast to the batch of 2 images) and 2
# (one texture per image); odd and power-of-two 2-D sizes, 4x4 cube faces, 2 or 3 channels.
BASIS_CASES = [
    ((1, 5, 7, 3), ("wrap", "clamp", "zero")),
    ((2, 8, 8, 2), ("wrap", "clamp", "zero")),
    ((1, 6, 4, 4, 2), ("cube",)),
    ((2, 6, 4, 4, 3), ("cube",)),
]
BASIS_PARAMS = [(shape, bm) for shape, bms in BASIS_CASES for bm in bms]


@pytest.mark.parametrize("filter_mode", FILTERS)
@pytest.mark.parametrize("tex_shape, boundary", BASIS_PARAMS,
                         ids=[f"{'x'.join(map(str, s))}-{bm}" for s, bm in BASIS_PARAMS])
def test_texture_gradient_is_the_basis_texel_gradient(target, tex_shape, boundary, filter_mode):
    name, device, dtypes = target
    cube = boundary == "cube"
    case = make_case(tex_shape, cube, B=2, h=6, w=6, seed=len(tex_shape) * 10 + tex_shape[0])
    for dtype in dtypes:
        tex, uv, da, bias, g = (x.to(device, dtype) for x in case)
        for use_da, use_bias, max_mip_level in lod_variants(filter_mode):
            kw = dict(filter_mode=filter_mode, boundary_mode=boundary,
                      max_mip_level=max_mip_level)
            d = da if use_da else None
            b = bias if use_bias else None
            _, grad = grad_and_output(tex, uv, d, b, g, **kw)
            exact = basis_gradient(tuple(tex_shape), uv, d, b, g, **kw)
            assert exact.abs().max() > 0
            err = rel_err(grad, exact)
            assert err <= TOL[dtype], (
                f"{filter_mode}, {boundary}, {name}, {dtype}, "
                f"uv_da={use_da}, bias={use_bias}, max_mip_level={max_mip_level}: tex gradient "
                f"off the basis-texel gradient by {err:.3g} of its largest entry")


def outputs_and_grads(tex, uv, da, bias, g, stack, **kw):
    """``[out, grad_tex, grad_uv, grad_uv_da, grad_bias]`` of ``<g, texture(...)>``; with
    ``stack`` the mip stack is built by ``texture_construct_mip`` (from the texture requiring
    grad, so its gradient reaches the texture) and passed in ``mip``."""
    leaves = [x.clone().requires_grad_(True) for x in (tex, uv, da, bias)]
    t, u, d, b = leaves
    mip = None
    if stack and kw["filter_mode"] in MIP_FILTERS:
        mip = dr.texture_construct_mip(t, cube_mode=kw["boundary_mode"] == "cube")
    out = dr.texture(t, u, d, b, mip=mip, **kw)
    return [out.detach()] + list(torch.autograd.grad(out, leaves, g, allow_unused=True))


NAMES = ("out", "grad_tex", "grad_uv", "grad_uv_da", "grad_bias")
# (tex shape, boundary): three images, each with its own texture.
ITEM_CASES = [((3, 8, 8, 2), "zero"), ((3, 5, 7, 3), "clamp"), ((3, 6, 4, 4, 3), "cube"),
              ((3, 6, 8, 8, 2), "cube")]


@pytest.mark.parametrize("filter_mode", FILTERS)
@pytest.mark.parametrize("tex_shape, boundary", ITEM_CASES,
                         ids=[f"{'x'.join(map(str, s))}-{bm}" for s, bm in ITEM_CASES])
def test_per_item_batch_matches_items_alone(target, tex_shape, boundary, filter_mode):
    """Each item of a per-item texture batch (tex minibatch = image batch) gets the output and
    the gradients (of tex, uv, uv_da, mip_level_bias) it gets when rendered alone: the mip
    stack included, for cube maps too (nvdiffrast's cube-map mipmaps of the items after the
    first differ from the item alone)."""
    name, device, dtypes = target
    B = tex_shape[0]
    case = make_case(tex_shape, boundary == "cube", B=B, h=5, w=6, seed=20 + len(tex_shape))
    for dtype in dtypes:
        tex, uv, da, bias, g = (x.to(device, dtype) for x in case)
        for stack in ((False, True) if filter_mode in MIP_FILTERS else (False,)):
            kw = dict(filter_mode=filter_mode, boundary_mode=boundary)
            batch = outputs_and_grads(tex, uv, da, bias, g, stack, **kw)
            for i in range(B):
                alone = outputs_and_grads(*(x[i:i + 1] for x in (tex, uv, da, bias, g)), stack,
                                          **kw)
                for what, got, want in zip(NAMES, batch, alone):
                    if want is None:  # uv_da and the bias outside the mipmapped modes
                        assert got is None or not got.any(), what
                        continue
                    err = rel_err(got[i:i + 1], want) if want.any() else got[i].abs().max()
                    assert err <= TOL[dtype], (
                        f"{filter_mode}, {boundary}, {name}, {dtype}, stack={stack}: {what} of "
                        f"batch item {i} differs from the item alone by {err:.3g} of its "
                        f"largest entry")
