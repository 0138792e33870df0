"""Tests for ``texture`` and ``texture_construct_mip`` (reference backend, CPU)."""
import math
import zlib

import pytest
import numpy as np
import torch

import diffrast as dr
from diffrast.texture import TextureMipStack
from diffrast.reference import mipmap as ref_mipmap

FILTERS = ("nearest", "linear", "linear-mipmap-nearest", "linear-mipmap-linear")
BOUNDARIES_2D = ("wrap", "clamp", "zero")


def _centres(h, w, dtype=torch.float32):
    """uv of every texel centre of an h×w texture, [1, h, w, 2]."""
    j, i = torch.meshgrid(torch.arange(h, dtype=dtype), torch.arange(w, dtype=dtype), indexing="ij")
    return torch.stack([(i + 0.5) / w, (j + 0.5) / h], -1)[None]


def _uv(*pairs, dtype=torch.float32):
    """uv tensor [1, 1, n, 2] from (u, v) pairs."""
    return torch.tensor(pairs, dtype=dtype).reshape(1, 1, -1, 2)


# ------------------------------------------------------------------------------------------------
# 2-D sampling


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("boundary", BOUNDARIES_2D)
@pytest.mark.parametrize("filter_mode", ["linear", "nearest"])
def test_texel_centres_return_texels(dtype, boundary, filter_mode):
    torch.manual_seed(0)
    tex = torch.rand(2, 5, 7, 3, dtype=dtype)          # non-square: checks u -> width, v -> rows
    uv = _centres(5, 7, dtype).expand(2, -1, -1, -1)
    out = dr.texture(tex, uv, filter_mode=filter_mode, boundary_mode=boundary)
    assert out.shape == (2, 5, 7, 3) and out.dtype == dtype
    torch.testing.assert_close(out, tex)


def test_uv_axes():
    tex = torch.zeros(1, 4, 8, 1)
    tex[0, 1, 6, 0] = 1.0                              # row 1 (v), column 6 (u)
    out = dr.texture(tex, _uv((6.5 / 8, 1.5 / 4), (1.5 / 4, 6.5 / 8)), filter_mode="nearest")
    assert out[0, 0, :, 0].tolist() == [1.0, 0.0]


def test_bilinear_between_texels():
    tex = torch.tensor([[1.0, 3.0], [5.0, 11.0]]).reshape(1, 2, 2, 1)
    out = dr.texture(tex, _uv((0.5, 0.25), (0.25, 0.5), (0.5, 0.5), (0.375, 0.25)), boundary_mode="clamp")
    assert out.flatten().tolist() == pytest.approx([2.0, 3.0, 5.0, 1.5])


def test_batch_broadcast_and_per_batch_textures():
    torch.manual_seed(1)
    uv = torch.rand(3, 4, 4, 2)
    tex1 = torch.rand(1, 6, 6, 2)
    out = dr.texture(tex1, uv)
    torch.testing.assert_close(out, dr.texture(tex1.expand(3, -1, -1, -1), uv))
    tex3 = torch.rand(3, 6, 6, 2)
    out3 = dr.texture(tex3, uv)
    for b in range(3):
        torch.testing.assert_close(out3[b:b + 1], dr.texture(tex3[b:b + 1], uv[b:b + 1]))


def test_wrap_boundary():
    tex = torch.arange(4.0).reshape(1, 1, 4, 1)       # one row: 0 1 2 3
    out = dr.texture(tex, _uv((0.0, 0.5), (1.0, 0.5), (1.125, 0.5), (-0.875, 0.5), (0.9375, 0.5), (3.125, 0.5)))
    # u=0: halfway between texel 3 (wrapped) and texel 0; u=1.125 == u=0.125 (texel 0 centre).
    assert out.flatten().tolist() == pytest.approx([1.5, 1.5, 0.0, 0.0, 2.25, 0.0])
    near = dr.texture(tex, _uv((-0.1, 0.5), (1.1, 0.5), (2.6, 0.5)), filter_mode="nearest")
    assert near.flatten().tolist() == [3.0, 0.0, 2.0]


def test_clamp_boundary():
    tex = torch.arange(4.0).reshape(1, 1, 4, 1) + 1.0  # 1 2 3 4
    out = dr.texture(tex, _uv((0.0, 0.5), (0.125, 0.5), (-5.0, 0.5), (1.0, 0.5), (7.0, 0.5), (0.5, -3.0),
                              (float("inf"), 0.5), (-float("inf"), 0.5)), boundary_mode="clamp")
    assert out.flatten().tolist() == pytest.approx([1.0, 1.0, 1.0, 4.0, 4.0, 2.5, 4.0, 1.0])
    near = dr.texture(tex, _uv((-0.1, 0.5), (1.1, 0.5), (0.3, 9.0)), filter_mode="nearest", boundary_mode="clamp")
    assert near.flatten().tolist() == [1.0, 4.0, 2.0]


def test_zero_boundary():
    tex = torch.full((1, 2, 4, 1), 2.0)
    out = dr.texture(tex, _uv((0.0, 0.5), (-0.125, 0.5), (-3.0, 0.5), (1.0, 0.5), (0.5, 1.0), (0.0, 0.0),
                              (0.5, 0.5), (0.5, 1.25)), boundary_mode="zero")
    assert out.flatten().tolist() == pytest.approx([1.0, 0.0, 0.0, 1.0, 1.0, 0.5, 2.0, 0.0])
    near = dr.texture(tex, _uv((-0.01, 0.5), (0.01, 0.5), (1.0, 0.5), (0.5, -0.01)), filter_mode="nearest",
                      boundary_mode="zero")
    assert near.flatten().tolist() == [0.0, 2.0, 0.0, 0.0]


def test_nearest_picks_containing_texel():
    torch.manual_seed(2)
    tex = torch.rand(1, 3, 5, 2)
    uv = _centres(3, 5) + (torch.rand(1, 3, 5, 2) - 0.5) * torch.tensor([0.99 / 5, 0.99 / 3])
    torch.testing.assert_close(dr.texture(tex, uv, filter_mode="nearest"), tex)


def test_nan_and_inf_coordinates():
    torch.manual_seed(3)
    tex = torch.rand(1, 4, 4, 3, requires_grad=True)
    nan = float("nan")
    uv = _uv((nan, 0.5), (0.5, nan), (0.3, 0.7), (float("inf"), 0.5), (1e30, -1e30))
    for boundary in BOUNDARIES_2D:
        for fm in FILTERS:
            kw = {"mip_level_bias": torch.full((1, 1, 5), 0.5)} if "mipmap" in fm else {}
            out = dr.texture(tex, uv, filter_mode=fm, boundary_mode=boundary, **kw)
            assert out[0, 0, :2].isnan().all(), (boundary, fm)
            assert out[0, 0, 2].isfinite().all()
            if boundary != "wrap":
                assert out[0, 0, 3:].isfinite().all()
            # Masking the NaN samples away leaves finite gradients everywhere.
            mask = torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0]).reshape(1, 1, 5, 1)
            (g,) = torch.autograd.grad(torch.where(mask > 0, out, 0.0).sum(), tex)
            assert g.isfinite().all()
    # NaN in uv_da or the bias also gives NaN, never a crash.
    uv = torch.rand(1, 2, 2, 2)
    da = torch.full((1, 2, 2, 4), nan)
    assert dr.texture(tex, uv, uv_da=da).isnan().all()
    assert dr.texture(tex, uv, mip_level_bias=torch.full((1, 2, 2), nan)).isnan().all()


def test_empty_and_extreme_inputs():
    tex = torch.rand(1, 8, 8, 2, requires_grad=True)
    cube = torch.rand(1, 6, 4, 4, 2, requires_grad=True)
    cases = [(tex, torch.rand(1, 0, 4, 2), torch.rand(1, 0, 4, 4), "wrap"),
             (tex, torch.rand(0, 3, 4, 2), torch.rand(0, 3, 4, 4), "clamp"),
             (cube, torch.rand(1, 0, 4, 3), torch.rand(1, 0, 4, 6), "cube")]
    for t, uv, da, bm in cases:
        for fm in FILTERS:
            out = dr.texture(t, uv, uv_da=da, filter_mode=fm, boundary_mode=bm)
            assert out.shape == uv.shape[:3] + (2,)
            out.sum().backward()            # connected to the graph even when empty
    big = torch.tensor([1e30, -1e30, 3e38, -3e38]).reshape(1, 1, 2, 2)
    for bm in BOUNDARIES_2D:
        assert dr.texture(tex, big, boundary_mode=bm).isfinite().all()
    dirs = torch.tensor([[1e38, 1e38, -1e38], [1e-40, 0.0, 0.0], [3e-20, 1e-20, 0.0]]).reshape(1, 1, 3, 3)
    for da in (torch.full((1, 1, 3, 6), 0.1), torch.zeros(1, 1, 3, 6)):
        for fm in FILTERS:
            out = dr.texture(cube, dirs, uv_da=da if "mipmap" in fm else None, filter_mode=fm, boundary_mode="cube")
            assert out.isfinite().all()
    # Tiny directions have huge footprints (top level), zero derivatives the base level.
    levels, mip = _level_stack(4, 4, None, cube=True)
    d = torch.tensor([1e-30, 0.0, 0.0]).reshape(1, 1, 1, 3)
    big = dr.texture(levels, d, uv_da=torch.full((1, 1, 1, 6), 0.1), mip=mip, boundary_mode="cube")
    zero = dr.texture(levels, d, uv_da=torch.zeros(1, 1, 1, 6), mip=mip, boundary_mode="cube")
    assert big.item() == 2.0 and zero.item() == 0.0


# ------------------------------------------------------------------------------------------------
# Mip level selection


def _level_stack(h, w, n_levels, cube=False):
    """A texture of zeros and a custom mip stack whose level k is the constant k."""
    sizes = ref_mipmap.mip_level_sizes(h, w, n_levels)
    if cube:
        tex = torch.zeros(1, 6, h, w, 1)
        mip = [torch.full((1, 6, a, b, 1), float(k + 1)) for k, (a, b) in enumerate(sizes)]
    else:
        tex = torch.zeros(1, h, w, 1)
        mip = [torch.full((1, a, b, 1), float(k + 1)) for k, (a, b) in enumerate(sizes)]
    return tex, mip


def _da(dudx, dudy, dvdx, dvdy, n=1):
    return torch.tensor([dudx, dudy, dvdx, dvdy], dtype=torch.float32).reshape(1, 1, 1, 4).expand(1, 1, n, 4)


def test_mip_level_from_footprint():
    tex, mip = _level_stack(16, 16, None)              # levels 1..4 hold 1..4
    uv = torch.full((1, 1, 1, 2), 0.37)
    level = lambda **kw: dr.texture(tex, uv, mip=mip, **kw).item()  # noqa: E731
    # 4 texels per pixel along both axes -> level 2.
    assert level(uv_da=_da(4 / 16, 0, 0, 4 / 16)) == pytest.approx(2.0)
    # The bias adds to the level; linear-mipmap-linear blends by the fraction.
    assert level(uv_da=_da(4 / 16, 0, 0, 4 / 16), mip_level_bias=torch.full((1, 1, 1), 0.25)) == pytest.approx(2.25)
    assert level(uv_da=_da(4 / 16, 0, 0, 4 / 16), mip_level_bias=torch.full((1, 1, 1), -1.0)) == pytest.approx(1.0)
    assert level(uv_da=_da(6 / 16, 0, 0, 6 / 16)) == pytest.approx(math.log2(6))
    # Major axis of the footprint, not the minor one or the area.
    assert level(uv_da=_da(4 / 16, 0, 0, 1 / 16)) == pytest.approx(2.0)
    assert level(uv_da=_da(1 / 16, 0, 0, 8 / 16)) == pytest.approx(3.0)
    c, s = math.cos(0.6), math.sin(0.6)                # rotated anisotropic footprint
    assert level(uv_da=_da(4 / 16 * c, -1 / 16 * s, 4 / 16 * s, 1 / 16 * c)) == pytest.approx(2.0, abs=1e-5)
    # Skewed footprint: the major axis is the larger singular value of the Jacobian.
    jac = torch.tensor([[3.0, 2.0], [1.0, 4.0]])
    sigma = torch.linalg.svdvals(jac)[0].item()
    assert level(uv_da=_da(3 / 16, 2 / 16, 1 / 16, 4 / 16)) == pytest.approx(math.log2(sigma), abs=1e-5)
    # Clamped to [0, number of levels].
    assert level(uv_da=_da(1 / 64, 0, 0, 1 / 64)) == 0.0
    assert level(uv_da=_da(0, 0, 0, 0)) == 0.0
    assert level(uv_da=_da(100.0, 0, 0, 100.0)) == 4.0
    # The bias alone sets the level directly.
    assert level(mip_level_bias=torch.full((1, 1, 1), 1.5)) == pytest.approx(1.5)
    assert level(mip_level_bias=torch.full((1, 1, 1), -3.0)) == 0.0
    assert level(mip_level_bias=torch.full((1, 1, 1), 9.0)) == 4.0
    # max_mip_level limits the levels used.
    assert level(mip_level_bias=torch.full((1, 1, 1), 9.0), max_mip_level=2) == 2.0


def test_mip_level_non_square_texture():
    tex, mip = _level_stack(8, 32, None)               # 32x8 -> 16x4 -> 8x2 -> 4x1 -> 2x1 -> 1x1
    assert [tuple(m.shape[1:3]) for m in mip] == [(4, 16), (2, 8), (1, 4), (1, 2), (1, 1)]
    out = dr.texture(tex, torch.full((1, 1, 1, 2), 0.4), uv_da=_da(4 / 32, 0, 0, 4 / 8), mip=mip)
    assert out.item() == pytest.approx(2.0)


def test_linear_mipmap_nearest_takes_the_level_below():
    """nvdiffrast's rule: level floor(lod), not the nearest level (which OpenGL would take)."""
    tex, mip = _level_stack(16, 16, None)
    uv = torch.full((1, 1, 8, 2), 0.6)
    bias = torch.tensor([0.0, 0.4, 0.5, 0.6, 0.999, 1.0, 2.51, 9.0]).reshape(1, 1, 8)
    out = dr.texture(tex, uv, mip_level_bias=bias, mip=mip, filter_mode="linear-mipmap-nearest")
    assert out.flatten().tolist() == [0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 2.0, 4.0]
    cube, cube_mip = _level_stack(4, 4, None, cube=True)
    d = torch.tensor([1.0, 0.3, -0.2]).expand(1, 1, 4, 3)
    bias = torch.tensor([0.9, 1.0, 1.99, 2.0]).reshape(1, 1, 4)
    out = dr.texture(cube, d, mip_level_bias=bias, mip=cube_mip, boundary_mode="cube",
                     filter_mode="linear-mipmap-nearest")
    assert out.flatten().tolist() == [0.0, 1.0, 1.0, 2.0]


def test_linear_mipmap_linear_blends_real_levels():
    torch.manual_seed(4)
    tex = torch.rand(1, 8, 8, 2)
    uv = torch.rand(1, 3, 3, 2)
    stack = dr.texture_construct_mip(tex)
    lin = lambda t: dr.texture(t, uv, filter_mode="linear")  # noqa: E731
    for lvl in (0.0, 1.3, 2.75):
        k, f = int(lvl), lvl - int(lvl)
        bias = torch.full((1, 3, 3), lvl)
        expect = (1 - f) * lin(([tex] + stack.levels)[k]) + f * lin(([tex] + stack.levels)[k + 1])
        torch.testing.assert_close(dr.texture(tex, uv, mip_level_bias=bias), expect)
    # 'auto' without level information is plain bilinear; mip levels beyond the stack are clamped.
    torch.testing.assert_close(dr.texture(tex, uv), lin(tex))
    top = dr.texture(tex, uv, mip_level_bias=torch.full((1, 3, 3), 50.0))
    torch.testing.assert_close(top, stack.levels[-1].expand(1, 3, 3, 2))


def test_mip_stack_argument_forms_agree():
    torch.manual_seed(5)
    tex = torch.rand(2, 12, 20, 3)
    uv = torch.rand(2, 4, 4, 2) * 3 - 1
    da = torch.randn(2, 4, 4, 4) * 0.2
    internal = dr.texture(tex, uv, uv_da=da)
    stack = dr.texture_construct_mip(tex)
    torch.testing.assert_close(dr.texture(tex, uv, uv_da=da, mip=stack), internal)
    torch.testing.assert_close(dr.texture(tex, uv, uv_da=da, mip=list(stack.levels)), internal)
    limited = dr.texture(tex, uv, uv_da=da, max_mip_level=2)
    torch.testing.assert_close(dr.texture(tex, uv, uv_da=da, mip=stack, max_mip_level=2), limited)
    torch.testing.assert_close(dr.texture(tex, uv, uv_da=da, mip=dr.texture_construct_mip(tex, 2)), limited)
    # A partial custom stack ends where it ends.
    torch.testing.assert_close(dr.texture(tex, uv, uv_da=da, mip=list(stack.levels[:2])), limited)


def test_gradients_through_mip_stack():
    torch.manual_seed(6)
    tex = torch.rand(1, 8, 8, 1, requires_grad=True)
    uv = torch.rand(1, 2, 2, 2)
    bias = torch.full((1, 2, 2), 2.5)
    stack = dr.texture_construct_mip(tex)
    dr.texture(tex, uv, mip_level_bias=bias, mip=stack).sum().backward()
    # Levels 2 and 3 are 2x2 and 1x1 averages: every texel gets gradient through them.
    assert (tex.grad > 0).all()
    # A custom stack receives its own gradients; the base texture gets none from it.
    tex.grad = None
    custom = [lvl.detach().clone().requires_grad_() for lvl in stack.levels]
    dr.texture(tex, uv, mip_level_bias=bias, mip=custom).sum().backward()
    assert tex.grad is None or (tex.grad == 0).all()
    assert custom[1].grad.sum() > 0 and custom[2].grad.sum() > 0
    assert custom[0].grad is None or (custom[0].grad == 0).all()


# ------------------------------------------------------------------------------------------------
# Mip construction


def test_mip_sizes_and_constant():
    tex = torch.full((2, 37, 53, 4), 0.7)
    stack = dr.texture_construct_mip(tex)
    assert isinstance(stack, TextureMipStack) and len(stack) == 5
    assert [tuple(m.shape) for m in stack.levels] == [
        (2, 18, 26, 4), (2, 9, 13, 4), (2, 4, 6, 4), (2, 2, 3, 4), (2, 1, 1, 4)]
    for lvl in stack.levels:
        torch.testing.assert_close(lvl, torch.full_like(lvl, 0.7))
    assert [tuple(m.shape) for m in dr.texture_construct_mip(tex, max_mip_level=2).levels] == [
        (2, 18, 26, 4), (2, 9, 13, 4)]
    assert len(dr.texture_construct_mip(tex, max_mip_level=0)) == 0
    assert len(dr.texture_construct_mip(torch.rand(1, 1, 1, 1))) == 0
    assert [tuple(m.shape[1:3]) for m in dr.texture_construct_mip(torch.rand(1, 1, 8, 1)).levels] == [
        (1, 4), (1, 2), (1, 1)]


@pytest.mark.parametrize("shape", [(37, 53), (5, 3), (7, 64), (33, 1), (2, 9)])
def test_mip_preserves_mean(shape):
    torch.manual_seed(7)
    tex = torch.rand(2, *shape, 3, dtype=torch.float64)
    prev = tex
    for lvl in dr.texture_construct_mip(tex).levels:
        torch.testing.assert_close(lvl.mean(dim=(1, 2)), prev.mean(dim=(1, 2)), rtol=0, atol=1e-12)
        prev = lvl
    assert prev.shape[1:3] == (1, 1)


def test_mip_filter_weights():
    # Even sides: plain 2x2 box averages.
    tex = torch.rand(1, 4, 6, 2)
    lvl = dr.texture_construct_mip(tex, max_mip_level=1).levels[0]
    torch.testing.assert_close(lvl, tex.reshape(1, 2, 2, 3, 2, 2).mean(dim=(2, 4)))
    # Odd side 5 -> 2: footprints [0, 2.5) and [2.5, 5).
    x = torch.tensor([1.0, 2.0, 4.0, 8.0, 16.0]).reshape(1, 1, 5, 1)
    lvl = dr.texture_construct_mip(x, max_mip_level=1).levels[0]
    assert lvl.flatten().tolist() == pytest.approx([(1 + 2 + 2) / 2.5, (2 + 8 + 16) / 2.5])
    # Odd side 3 -> 1: plain average.
    x = torch.tensor([1.0, 2.0, 6.0]).reshape(1, 3, 1, 1)
    assert dr.texture_construct_mip(x).levels[0].item() == pytest.approx(3.0)


def test_mip_cube_mode():
    torch.manual_seed(8)
    tex = torch.rand(1, 6, 8, 8, 2)
    stack = dr.texture_construct_mip(tex, cube_mode=True)
    assert stack.cube_mode and [m.shape[2] for m in stack.levels] == [4, 2, 1]
    for f in range(6):
        torch.testing.assert_close(stack.levels[0][:, f], dr.texture_construct_mip(tex[:, f], 1).levels[0])
    torch.testing.assert_close(stack.levels[-1][0, :, 0, 0], tex[0].mean(dim=(1, 2)))


def test_large_texture():
    torch.manual_seed(9)
    tex = torch.rand(1, 2048, 2048, 3, requires_grad=True)
    uv = torch.rand(1, 48, 48, 2)
    uv_da = torch.randn(1, 48, 48, 4) * (8.0 / 2048)
    out = dr.texture(tex, uv, uv_da=uv_da)
    assert out.shape == (1, 48, 48, 3) and out.isfinite().all()
    out.sum().backward()
    assert tex.grad.shape == tex.shape and tex.grad.isfinite().all()
    torch.testing.assert_close(tex.grad.sum(), torch.tensor(48.0 * 48 * 3), rtol=1e-4, atol=0)
    # Plain bilinear on the base level agrees with an independent computation at texel centres.
    with torch.no_grad():
        i = torch.randint(0, 2048, (2, 100))
        uvc = torch.stack([(i[0] + 0.5) / 2048, (i[1] + 0.5) / 2048], -1).reshape(1, 1, 100, 2)
        torch.testing.assert_close(dr.texture(tex, uvc)[0, 0], tex[0, i[1], i[0]])


# ------------------------------------------------------------------------------------------------
# Cube maps

# OpenGL's face table, written out independently of the implementation: for each face, the
# direction that reaches face coordinates (sc, tc) in [-1, 1] (with |ma| = 1).
_GL_FACE_DIR = [
    lambda sc, tc: (1.0, -tc, -sc),   # +x: sc = -rz, tc = -ry
    lambda sc, tc: (-1.0, -tc, sc),   # -x: sc = +rz, tc = -ry
    lambda sc, tc: (sc, 1.0, tc),     # +y: sc = +rx, tc = +rz
    lambda sc, tc: (sc, -1.0, -tc),   # -y: sc = +rx, tc = -rz
    lambda sc, tc: (sc, -tc, 1.0),    # +z: sc = +rx, tc = -ry
    lambda sc, tc: (-sc, -tc, -1.0),  # -z: sc = -rx, tc = -ry
]


def test_cube_axes_hit_face_centres():
    torch.manual_seed(10)
    tex = torch.rand(2, 6, 5, 5, 3)
    axes = torch.tensor([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=torch.float32)
    uv = (axes * torch.tensor([2.0, 0.5, 7.0, 1.0, 3.0, 0.1])[:, None]).reshape(1, 1, 6, 3).expand(2, 1, 6, 3)
    for fm in ("nearest", "linear"):
        out = dr.texture(tex, uv, filter_mode=fm, boundary_mode="cube")
        torch.testing.assert_close(out[:, 0], tex[:, :, 2, 2])


@pytest.mark.parametrize("filter_mode", ["nearest", "linear"])
def test_cube_texel_centres_follow_gl_table(filter_mode):
    torch.manual_seed(11)
    n = 4
    tex = torch.rand(1, 6, n, n, 2)
    dirs, expect = [], []
    for f in range(6):
        for j in range(n):
            for i in range(n):
                sc, tc = (2 * i + 1) / n - 1, (2 * j + 1) / n - 1
                dirs.append(_GL_FACE_DIR[f](sc, tc))
                expect.append(tex[0, f, j, i])
    uv = torch.tensor(dirs).reshape(1, 1, -1, 3) * 2.5
    out = dr.texture(tex, uv, filter_mode=filter_mode, boundary_mode="cube")
    torch.testing.assert_close(out[0, 0], torch.stack(expect))


def _edge_pairs(eps, m=64, seed=12):
    """Pairs of directions just either side of each of the 12 cube edges."""
    g = torch.Generator().manual_seed(seed)
    a_list, b_list = [], []
    for i in range(3):
        for k in range(i + 1, 3):
            j = 3 - i - k
            for si in (-1.0, 1.0):
                for sk in (-1.0, 1.0):
                    r = torch.rand(m, generator=g) * 1.98 - 0.99
                    a = torch.zeros(m, 3)
                    b = torch.zeros(m, 3)
                    a[:, i], a[:, k], a[:, j] = si, sk * (1 - eps), r
                    b[:, i], b[:, k], b[:, j] = si * (1 - eps), sk, r
                    a_list.append(a)
                    b_list.append(b)
    return torch.cat(a_list), torch.cat(b_list)


def test_cube_seams_continuous():
    torch.manual_seed(13)
    tex = torch.rand(1, 6, 8, 8, 3, dtype=torch.float64)
    a, b = _edge_pairs(1e-7)
    a, b = a.double().reshape(1, 1, -1, 3), b.double().reshape(1, 1, -1, 3)
    for fm in ("linear", "linear-mipmap-linear"):
        kw = {"mip_level_bias": torch.full(a.shape[:3], 1.4, dtype=torch.float64)} if "mipmap" in fm else {}
        fa = dr.texture(tex, a, filter_mode=fm, boundary_mode="cube", **kw)
        fb = dr.texture(tex, b, filter_mode=fm, boundary_mode="cube", **kw)
        torch.testing.assert_close(fa, fb, rtol=0, atol=1e-5)
    # Without seam handling the two sides would read different texels.
    assert (dr.texture(tex, a, filter_mode="nearest", boundary_mode="cube")
            - dr.texture(tex, b, filter_mode="nearest", boundary_mode="cube")).abs().max() > 0.1


def test_cube_corners():
    torch.manual_seed(14)
    n = 4
    tex = torch.rand(1, 6, n, n, 2, dtype=torch.float64)
    # Exactly at corner (+1, +1, +1): the average of the three texels meeting there.
    expect = (tex[0, 0, 0, 0] + tex[0, 2, n - 1, n - 1] + tex[0, 4, 0, n - 1]) / 3
    corner = torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64).reshape(1, 1, 1, 3)
    torch.testing.assert_close(dr.texture(tex, corner, boundary_mode="cube")[0, 0, 0], expect)
    # Continuity around every corner: approach it from each of its three faces.
    eps = 1e-7
    for sx in (-1, 1):
        for sy in (-1, 1):
            for sz in (-1, 1):
                s = torch.tensor([sx, sy, sz], dtype=torch.float64)
                near = [s * torch.tensor(v, dtype=torch.float64) for v in
                        ([1, 1 - eps, 1 - 2 * eps], [1 - 2 * eps, 1, 1 - eps], [1 - eps, 1 - 2 * eps, 1])]
                vals = dr.texture(tex, torch.stack(near).reshape(1, 1, 3, 3), boundary_mode="cube")[0, 0]
                torch.testing.assert_close(vals, vals[:1].expand(3, -1), rtol=0, atol=1e-5)


def test_cube_one_texel_faces():
    tex = torch.arange(6.0).reshape(1, 6, 1, 1, 1)
    d = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]).reshape(1, 1, 3, 3)
    out = dr.texture(tex, d, boundary_mode="cube").flatten().tolist()
    assert out == pytest.approx([0.0, 1.0, 2.0])   # centre; edge +x/+y: (0+2)/2; corner (0+2+4)/3


def test_cube_invalid_directions():
    torch.manual_seed(15)
    tex = torch.rand(1, 6, 4, 4, 3, requires_grad=True)
    uv = torch.tensor([[0.0, 0.0, 0.0], [float("nan"), 1.0, 0.0], [0.3, -0.2, 0.9]]).reshape(1, 1, 3, 3)
    uv.requires_grad_(True)
    da = torch.randn(1, 1, 3, 6, requires_grad=True)
    for fm in FILTERS:
        kw = {"uv_da": da} if "mipmap" in fm else {}
        out = dr.texture(tex, uv, filter_mode=fm, boundary_mode="cube", **kw)
        assert (out[0, 0, 0] == 0).all()
        assert out[0, 0, 1].isnan().all()
        assert out[0, 0, 2].isfinite().all()
        grads = torch.autograd.grad(out[0, 0, [0, 2]].sum(), [tex, uv] + ([da] if kw else []),
                                    allow_unused=True, materialize_grads=True)
        for g in grads:
            assert g.isfinite().all()
        assert (grads[1][0, 0, 0] == 0).all()


def test_cube_subnormal_components_count_as_zero():
    """Subnormal direction components read as 0 (as in the CUDA kernels, built with flush to
    zero): an all-subnormal direction is zero-length (output 0, no gradient); otherwise face and
    face coordinates are those of the direction with its subnormal components zeroed, and so is
    the gradient (it passes through the flush to the subnormal components unchanged)."""
    torch.manual_seed(16)
    tiny = torch.finfo(torch.float32).tiny
    tex = torch.rand(1, 6, 4, 4, 3)
    sub = [[1e-40, 0.0, 0.0], [-1e-45, 3e-39, -0.0], [tiny / 2, -tiny / 2, tiny / 4]]
    mixed = [[4e-37, 1e-38, -5e-39], [1.0, -1e-40, 5e-39], [-3e-39, 2e-37, -1.1e-38],
             [tiny, -tiny / 2, 0.0], [0.3, 0.2, -1e-39]]
    flushed = [[4e-37, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 2e-37, 0.0], [tiny, 0.0, 0.0],
               [0.3, 0.2, 0.0]]
    d = torch.tensor(sub + mixed).reshape(1, 1, -1, 3)
    d0 = torch.tensor(sub + flushed).reshape(1, 1, -1, 3)
    assert ((d != 0) & (d.abs() < tiny)).sum() == 14 and (d0[0, 0, 3:] != 0).sum() == 6
    da = torch.randn(1, 1, 8, 6) * 1e-3
    for fm in FILTERS:
        kw = {"uv_da": da} if "mipmap" in fm else {}
        outs, grads = [], []
        for x in (d, d0):
            t, u = tex.clone().requires_grad_(True), x.clone().requires_grad_(True)
            out = dr.texture(t, u, filter_mode=fm, boundary_mode="cube", **kw)
            outs.append(out)
            grads.append(torch.autograd.grad(out[0, 0, 3:].sum(), [t, u], allow_unused=True,
                                             materialize_grads=True, retain_graph=True))
            assert (out[0, 0, :3] == 0).all()
            g_t, g_u = torch.autograd.grad(out[0, 0, :3].sum(), [t, u], allow_unused=True,
                                           materialize_grads=True)
            assert (g_t == 0).all() and (g_u == 0).all()
        assert torch.equal(outs[0], outs[1]) and (outs[0][0, 0, 3:] != 0).all()
        for a, b in zip(*grads):
            assert torch.equal(a, b) and a.isfinite().all()
        if fm != "nearest":
            assert (grads[0][1][0, 0, 3:] != 0).sum() >= 5  # gradients reach the directions


def test_cube_mip_level():
    n = 16
    tex, mip = _level_stack(n, n, None, cube=True)
    d = torch.tensor([1.0, 0.0, 0.0]).reshape(1, 1, 1, 3)
    a = 0.5                                     # ds/dX = a / 2 -> a * n / 2 = 4 texels per pixel
    da = torch.tensor([0.0, 0.0, 0.0, -a, -a, 0.0]).reshape(1, 1, 1, 6)   # dd/dX = (0,0,-a), dd/dY = (0,-a,0)
    out = dr.texture(tex, d * 3.0, uv_da=da * 3.0, mip=mip, boundary_mode="cube")
    assert out.item() == pytest.approx(2.0)
    out = dr.texture(tex, d, uv_da=da, mip_level_bias=torch.full((1, 1, 1), 0.5), mip=mip, boundary_mode="cube")
    assert out.item() == pytest.approx(2.5)
    # Derivatives along the major axis do not change the face coordinates at the face centre.
    da_radial = torch.tensor([5.0, 5.0, 0.0, 0.0, 0.0, 0.0]).reshape(1, 1, 1, 6)
    assert dr.texture(tex, d, uv_da=da_radial, mip=mip, boundary_mode="cube").item() == 0.0


# ------------------------------------------------------------------------------------------------
# Gradients


def _gradcheck(fn, inputs, fast_mode=True):
    # fast_mode checks random projections v^T J u of the Jacobian: as strict for wrong
    # gradients, far fewer forward evaluations.
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=fast_mode)


def _grad_cases(lods):
    # Mipmapped modes need uv_da or mip_level_bias; 'nearest' and 'linear' ignore them (their
    # gradients must then be zero, which gradcheck checks too).
    return [(fm, lod) for fm in FILTERS for lod in lods if not ("mipmap" in fm and lod == "none")]


@pytest.mark.parametrize("filter_mode,lod", _grad_cases(["none", "uv_da", "bias", "both"]))
@pytest.mark.parametrize("boundary", BOUNDARIES_2D)
def test_gradcheck_2d(filter_mode, boundary, lod):
    g = torch.Generator().manual_seed(zlib.crc32(f"{filter_mode}/{boundary}/{lod}".encode()))
    d = torch.float64
    tex = torch.rand(2, 6, 10, 2, dtype=d, generator=g).requires_grad_()    # mips 3x5, 1x2, 1x1
    uv = (torch.rand(2, 2, 3, 2, dtype=d, generator=g) * 1.6 - 0.3).requires_grad_()
    uv_da = ((torch.rand(2, 2, 3, 4, dtype=d, generator=g) - 0.5) * 0.6).requires_grad_()
    bias = (torch.rand(2, 2, 3, dtype=d, generator=g) * 1.8 - 0.2).requires_grad_()
    use_da, use_bias = lod in ("uv_da", "both"), lod in ("bias", "both")

    def fn(tex, uv, uv_da, bias):
        return dr.texture(tex, uv, uv_da=uv_da if use_da else None, mip_level_bias=bias if use_bias else None,
                          filter_mode=filter_mode, boundary_mode=boundary)
    _gradcheck(fn, (tex, uv, uv_da, bias))


@pytest.mark.parametrize("filter_mode,lod", _grad_cases(["none", "uv_da", "bias", "both"]))
def test_gradcheck_cube(filter_mode, lod):
    g = torch.Generator().manual_seed(zlib.crc32(f"cube/{filter_mode}/{lod}".encode()))
    d = torch.float64
    tex = torch.rand(1, 6, 4, 4, 2, dtype=d, generator=g).requires_grad_()
    uv = torch.randn(2, 3, 3, 3, dtype=d, generator=g).requires_grad_()
    uv_da = (torch.randn(2, 3, 3, 6, dtype=d, generator=g) * 0.3).requires_grad_()
    bias = (torch.rand(2, 3, 3, dtype=d, generator=g) * 0.8).requires_grad_()

    def fn(tex, uv, uv_da, bias):
        return dr.texture(tex, uv, uv_da=uv_da if lod in ("uv_da", "both") else None,
                          mip_level_bias=bias if lod in ("bias", "both") else None,
                          filter_mode=filter_mode, boundary_mode="cube")
    _gradcheck(fn, (tex, uv, uv_da, bias))


@pytest.mark.parametrize("boundary", ["wrap", "zero", "cube"])
def test_gradcheck_full_jacobian(boundary):
    """Full (slow-mode) gradcheck of trilinear filtering on tiny inputs: every Jacobian entry."""
    g = torch.Generator().manual_seed(zlib.crc32(boundary.encode()))
    d = torch.float64
    if boundary == "cube":
        tex = torch.rand(1, 6, 2, 2, 1, dtype=d, generator=g).requires_grad_()
        uv = torch.randn(1, 1, 2, 3, dtype=d, generator=g).requires_grad_()
        uv_da = (torch.randn(1, 1, 2, 6, dtype=d, generator=g) * 0.5).requires_grad_()
    else:
        tex = torch.rand(1, 3, 4, 1, dtype=d, generator=g).requires_grad_()
        uv = (torch.rand(1, 1, 2, 2, dtype=d, generator=g) * 1.4 - 0.2).requires_grad_()
        uv_da = ((torch.rand(1, 1, 2, 4, dtype=d, generator=g) - 0.5) * 0.8).requires_grad_()
    bias = (torch.rand(1, 1, 2, dtype=d, generator=g) * 0.6).requires_grad_()
    _gradcheck(lambda t, u, a, b: dr.texture(t, u, uv_da=a, mip_level_bias=b, boundary_mode=boundary),
               (tex, uv, uv_da, bias), fast_mode=False)


def test_gradcheck_custom_mip_and_mip_construction():
    g = torch.Generator().manual_seed(16)
    d = torch.float64
    tex = torch.rand(1, 5, 7, 1, dtype=d, generator=g).requires_grad_()       # odd sides
    uv = torch.rand(1, 2, 2, 2, dtype=d, generator=g)
    bias = torch.rand(1, 2, 2, dtype=d, generator=g) * 2.0
    _gradcheck(lambda t: torch.cat([lvl.flatten() for lvl in dr.texture_construct_mip(t).levels]), (tex,))
    m1 = torch.rand(1, 2, 3, 1, dtype=d, generator=g).requires_grad_()
    m2 = torch.rand(1, 1, 1, 1, dtype=d, generator=g).requires_grad_()
    _gradcheck(lambda t, a, b: dr.texture(t, uv, mip_level_bias=bias, mip=[a, b]), (tex, m1, m2))
    cube = torch.rand(1, 6, 3, 3, 1, dtype=d, generator=g).requires_grad_()
    _gradcheck(lambda t: torch.cat([lvl.flatten() for lvl in dr.texture_construct_mip(t, cube_mode=True).levels]),
               (cube,))


def test_no_nan_gradients_for_degenerate_footprints():
    tex = torch.rand(1, 8, 8, 1, requires_grad=True)
    uv = torch.rand(1, 1, 3, 2, requires_grad=True)
    da = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.25, 0.0, 0.0, 0.25], [0.1, 0.1, -0.1, 0.1]]).reshape(1, 1, 3, 4)
    da.requires_grad_(True)
    out = dr.texture(tex, uv, uv_da=da)
    grads = torch.autograd.grad(out.sum(), [tex, uv, da])
    for g in grads:
        assert g.isfinite().all()


def test_huge_footprints_have_the_exact_level_of_detail_and_finite_gradients():
    """Footprints whose squared Jacobian overflows float32 are scaled by a power of two: the lod
    is still log2 of the major axis (checked in float64), continuous across the threshold, and
    differentiable (gradcheck) above it."""
    from diffrast.reference.texture import _lod_2d
    h, w = 16, 32
    for mag in (1e3, 16384.0, 16384.01, 1e6, 1e19, 3e38):
        da = torch.tensor([[mag, 0.5 * mag, -0.25 * mag, mag]])
        lod = _lod_2d(da, h, w)
        jac = torch.tensor([[mag * w, 0.5 * mag * w], [-0.25 * mag * h, mag * h]], dtype=torch.float64)
        exact = math.log2(torch.linalg.svdvals(jac)[0].item())
        assert torch.isfinite(lod).all() and abs(lod.item() - exact) < 1e-5 * max(1.0, abs(exact))
    da = torch.tensor([[1e7, 3e6, -2e6, 5e6]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda d: _lod_2d(d, h, w), (da,))
    tex = torch.rand(1, h, w, 1, requires_grad=True)
    da = torch.tensor([1e20, 1e19, -3e19, 2e20]).reshape(1, 1, 1, 4).requires_grad_(True)
    out = dr.texture(tex, torch.rand(1, 1, 1, 2), uv_da=da, filter_mode="linear-mipmap-linear")
    for g in torch.autograd.grad(out.sum(), [tex, da]):
        assert g.isfinite().all()


# ------------------------------------------------------------------------------------------------
# Bad input


def _base():
    return dict(tex=torch.rand(1, 8, 8, 3), uv=torch.rand(2, 4, 4, 2))


def _cube_base():
    return dict(tex=torch.rand(1, 6, 8, 8, 3), uv=torch.rand(2, 4, 4, 3), boundary_mode="cube")


BAD = [
    ("tex not a tensor", lambda: dict(_base(), tex=[[1.0]]), TypeError, "tex must be a torch.Tensor"),
    ("tex int32", lambda: dict(_base(), tex=torch.ones(1, 8, 8, 3, dtype=torch.int32)), TypeError,
     "tex must have dtype"),
    ("tex int", lambda: dict(_base(), tex=torch.ones(1, 8, 8, 3, dtype=torch.int32)), TypeError, "tex must have dtype"),
    ("tex rank", lambda: dict(_base(), tex=torch.rand(8, 8, 3)), ValueError, "tex must be 4-D"),
    ("tex empty", lambda: dict(_base(), tex=torch.rand(1, 0, 8, 3)), ValueError, "tex must have no empty"),
    ("uv rank", lambda: dict(_base(), uv=torch.rand(4, 4, 2)), ValueError, "uv must be 4-D"),
    ("uv channels", lambda: dict(_base(), uv=torch.rand(2, 4, 4, 3)), ValueError, "uv must have last dimension 2"),
    ("uv float16", lambda: dict(_base(), uv=torch.rand(2, 4, 4, 2).half()), TypeError, "uv must have dtype"),
    ("uv dtype mismatch", lambda: dict(_base(), uv=torch.rand(2, 4, 4, 2, dtype=torch.float64)), TypeError,
     "uv must have the same dtype as tex"),
    ("batch mismatch", lambda: dict(_base(), tex=torch.rand(3, 8, 8, 3)), ValueError, "tex minibatch size must be 1"),
    ("uv_da shape", lambda: dict(_base(), uv_da=torch.rand(2, 4, 4, 2)), ValueError, r"uv_da must have shape \(2, 4, 4, 4\)"),
    ("uv_da batch", lambda: dict(_base(), uv_da=torch.rand(1, 4, 4, 4)), ValueError, "uv_da must have shape"),
    ("uv_da rank", lambda: dict(_base(), uv_da=torch.rand(4, 4, 4)), ValueError, "uv_da must be 4-D"),
    ("uv_da type", lambda: dict(_base(), uv_da=1.0), TypeError, "uv_da must be a torch.Tensor"),
    ("bias shape", lambda: dict(_base(), mip_level_bias=torch.rand(2, 4, 5)), ValueError, "mip_level_bias must have shape"),
    ("bias rank", lambda: dict(_base(), mip_level_bias=torch.rand(2, 4, 4, 1)), ValueError, "mip_level_bias must be 3-D"),
    ("filter mode", lambda: dict(_base(), filter_mode="cubic"), ValueError, "filter_mode must be one of"),
    ("boundary mode", lambda: dict(_base(), boundary_mode="mirror"), ValueError, "boundary_mode must be one of"),
    ("mipmap without lod", lambda: dict(_base(), filter_mode="linear-mipmap-linear"), ValueError,
     "needs uv_da and/or mip_level_bias"),
    ("max_mip_level negative", lambda: dict(_base(), max_mip_level=-1), ValueError, "max_mip_level must be"),
    ("max_mip_level float", lambda: dict(_base(), max_mip_level=2.0), TypeError, "max_mip_level must be"),
    ("cube tex, wrap", lambda: dict(_cube_base(), boundary_mode="wrap"), ValueError, "needs boundary_mode='cube'"),
    ("2d tex, cube", lambda: dict(_base(), boundary_mode="cube"), ValueError, "boundary_mode='cube' needs a cube map"),
    ("cube uv channels", lambda: dict(_cube_base(), uv=torch.rand(2, 4, 4, 2)), ValueError,
     "uv must have last dimension 3"),
    ("cube faces", lambda: dict(_cube_base(), tex=torch.rand(1, 5, 8, 8, 3)), ValueError, "dimension 1 is not 6"),
    ("cube not square", lambda: dict(_cube_base(), tex=torch.rand(1, 6, 8, 4, 3)), ValueError, "square cube map faces"),
    ("cube uv_da", lambda: dict(_cube_base(), uv_da=torch.rand(2, 4, 4, 4)), ValueError, r"uv_da must have shape \(2, 4, 4, 6\)"),
    ("mip type", lambda: dict(_base(), mip_level_bias=torch.rand(2, 4, 4), mip="stack"), TypeError,
     "mip must be None, a TextureMipStack"),
    ("mip element type", lambda: dict(_base(), mip_level_bias=torch.rand(2, 4, 4), mip=[1.0]), TypeError,
     r"mip\[0\] must be a torch.Tensor"),
    ("mip level shape", lambda: dict(_base(), mip_level_bias=torch.rand(2, 4, 4), mip=[torch.rand(1, 4, 3, 3)]),
     ValueError, r"mip\[0\] \(mip level 1\) must have shape \(1, 4, 4, 3\)"),
    ("mip level channels", lambda: dict(_base(), mip_level_bias=torch.rand(2, 4, 4),
                                        mip=[torch.rand(1, 4, 4, 3), torch.rand(1, 2, 2, 1)]),
     ValueError, r"mip\[1\] \(mip level 2\) must have shape \(1, 2, 2, 3\)"),
    ("mip too many levels", lambda: dict(_base(), mip_level_bias=torch.rand(2, 4, 4),
                                         mip=[torch.rand(1, 1, 1, 3)] * 4), ValueError, "has only 3 mip levels"),
    ("mip dtype", lambda: dict(_base(), mip_level_bias=torch.rand(2, 4, 4),
                               mip=[torch.rand(1, 4, 4, 3, dtype=torch.float64)]), TypeError,
     "mip level 1 must have the same dtype as tex"),
    ("mip stack of other tex", lambda: dict(_base(), mip_level_bias=torch.rand(2, 4, 4),
                                            mip=dr.texture_construct_mip(torch.rand(1, 16, 16, 3))),
     ValueError, r"mip was built from a texture of shape \(1, 16, 16, 3\)"),
    ("mip stack cube vs 2d", lambda: dict(_base(), mip_level_bias=torch.rand(2, 4, 4),
                                          mip=dr.texture_construct_mip(torch.rand(1, 6, 8, 8, 3), cube_mode=True)),
     ValueError, "mip must be a mipmap stack of a 2D texture"),
]


@pytest.mark.parametrize("name,make,exc,match", BAD, ids=[b[0] for b in BAD])
def test_bad_input(name, make, exc, match):
    with pytest.raises(exc, match=match):
        dr.texture(**make())


def test_max_mip_level_takes_any_integer():
    tex = torch.rand(1, 16, 16, 3)
    uv, uv_da = torch.rand(1, 4, 4, 2), torch.rand(1, 4, 4, 4) * 4
    ref = dr.texture(tex, uv, uv_da, max_mip_level=2)
    for level in (np.int64(2), np.uint8(2), torch.tensor(2), torch.tensor([2], dtype=torch.int16)):
        assert torch.equal(dr.texture(tex, uv, uv_da, max_mip_level=level), ref)
        stack = dr.texture_construct_mip(tex, max_mip_level=level)
        assert torch.equal(dr.texture(tex, uv, uv_da, mip=stack, max_mip_level=2), ref)
    for level in (2.0, np.float32(2), torch.tensor(2.0), True, "2", torch.tensor([1, 2])):
        with pytest.raises(TypeError, match="max_mip_level must be None or a non-negative int"):
            dr.texture(tex, uv, uv_da, max_mip_level=level)
    with pytest.raises(ValueError, match="non-negative int, got -1"):
        dr.texture(tex, uv, uv_da, max_mip_level=np.int8(-1))


def test_construct_mip_bad_input():
    with pytest.raises(ValueError, match="pass cube_mode=True"):
        dr.texture_construct_mip(torch.rand(1, 6, 4, 4, 1))
    with pytest.raises(ValueError, match="cube_mode=True needs a cube map"):
        dr.texture_construct_mip(torch.rand(1, 4, 4, 1), cube_mode=True)
    with pytest.raises(TypeError, match="tex must have dtype"):
        dr.texture_construct_mip(torch.ones(1, 4, 4, 1, dtype=torch.int32))
    with pytest.raises(ValueError, match="tex must be 4-D"):
        dr.texture_construct_mip(torch.rand(4, 4, 1))
    with pytest.raises(ValueError, match="max_mip_level must be"):
        dr.texture_construct_mip(torch.rand(1, 4, 4, 1), max_mip_level=-2)
    with pytest.raises(TypeError, match="cube_mode must be a bool"):
        dr.texture_construct_mip(torch.rand(1, 4, 4, 1), cube_mode="yes")
    with pytest.raises(ValueError, match="square cube map faces"):
        dr.texture_construct_mip(torch.rand(1, 6, 4, 2, 1), cube_mode=True)


def test_device_mismatch():
    with pytest.raises(ValueError, match="uv must be on the same device as tex"):
        dr.texture(torch.rand(1, 4, 4, 1), torch.rand(1, 2, 2, 2, device="meta"))
    with pytest.raises(ValueError, match="mip level 1 must be on the same device as tex"):
        dr.texture(torch.rand(1, 4, 4, 1), torch.rand(1, 2, 2, 2), mip_level_bias=torch.rand(1, 2, 2),
                   mip=[torch.rand(1, 2, 2, 1, device="meta")])


def test_float32_matches_float64():
    torch.manual_seed(18)
    tex = torch.rand(2, 9, 13, 3, dtype=torch.float64)
    uv = torch.rand(2, 5, 5, 2, dtype=torch.float64) * 2 - 0.5
    da = torch.randn(2, 5, 5, 4, dtype=torch.float64) * 0.1
    ctex = torch.rand(1, 6, 8, 8, 2, dtype=torch.float64)
    dirs = torch.randn(2, 5, 5, 3, dtype=torch.float64)
    cda = torch.randn(2, 5, 5, 6, dtype=torch.float64) * 0.1
    for fm in FILTERS:
        for bm in BOUNDARIES_2D:
            a = dr.texture(tex, uv, uv_da=da, filter_mode=fm, boundary_mode=bm)
            b = dr.texture(tex.float(), uv.float(), uv_da=da.float(), filter_mode=fm, boundary_mode=bm)
            torch.testing.assert_close(b, a.float(), atol=1e-4, rtol=1e-4)
        a = dr.texture(ctex, dirs, uv_da=cda, filter_mode=fm, boundary_mode="cube")
        b = dr.texture(ctex.float(), dirs.float(), uv_da=cda.float(), filter_mode=fm, boundary_mode="cube")
        torch.testing.assert_close(b, a.float(), atol=1e-4, rtol=1e-4)


def test_non_contiguous_inputs_accepted():
    torch.manual_seed(17)
    tex = torch.rand(1, 3, 8, 8).permute(0, 2, 3, 1)
    uv = torch.rand(1, 2, 4, 4).permute(0, 2, 3, 1)
    torch.testing.assert_close(dr.texture(tex, uv), dr.texture(tex.contiguous(), uv.contiguous()))


def test_docstrings():
    for fn in (dr.texture, dr.texture_construct_mip, TextureMipStack):
        assert fn.__doc__ and len(fn.__doc__) > 200
