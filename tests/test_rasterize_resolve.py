"""The resolve step: from the triangle each pixel shows to ``rast`` and ``rast_db``.

``RasterizeGLContext`` renders only triangle ids with OpenGL and resolves them with the
``resolve_ids`` kernel (``cuda_ops/rasterize_resolve.cu``) or, for CPU tensors, with the torch
reference (``diffrast.reference.rasterize.resolve``); ``RasterizeCudaContext`` resolves its own
visibility buffer with the same device function. Here: the kernel against the reference (on the
GPU and through the CPU emulator), the reference against a triangle whose barycentrics are
affine in the pixel, and, on the GPU, both contexts bit-identical wherever they show the same
triangle.
"""
import importlib

import pytest
import torch

import diffrast as dr
from diffrast import cuda_backend, dispatch, triangle_id
from helpers import kernel_emulator
from helpers.contexts import context

ref = importlib.import_module("diffrast.reference.rasterize")


@pytest.fixture(params=[pytest.param("cuda", marks=pytest.mark.gpu), "emulated"])
def kernels(request):
    """The device on which the resolve kernel runs (the GPU or the CPU emulator)."""
    return kernel_emulator.kernel_device(request.param, request)


def random_case(instanced, seed, B=3, H=13, W=17, V=40, T=30):
    g = torch.Generator().manual_seed(seed)
    shape = (B, V) if instanced else (V,)
    w = torch.rand(*shape, 1, generator=g) * 2 + 0.3
    pos = torch.cat([(torch.rand(*shape, 3, generator=g) * 2 - 1) * w, w], -1)
    tri = torch.randint(0, V, (T, 3), generator=g, dtype=torch.int32)
    tri[5] = torch.tensor([0, V, 1])  # an index out of range: its pixels resolve to zeros
    ids = torch.randint(0, T + 1, (B, H, W), generator=g, dtype=torch.int32)
    ids[0, 0, :3], ids[0, 1, :3] = 6, 0  # triangle 5 and none, whatever T
    return pos, tri, ids


def resolve(fn, pos, tri, ids, output_db=True):
    B, H, W = ids.shape
    rast = torch.full((B, H, W, 4), float("nan"), device=ids.device)  # every texel written
    db = torch.full_like(rast, float("nan")) if output_db else None
    fn(pos, tri, ids, rast, db)
    return rast, db


@pytest.mark.parametrize("instanced", [True, False])
@pytest.mark.parametrize("output_db", [True, False])
@pytest.mark.parametrize("T", [30, 5000])  # the reference's planes per triangle, per pixel
def test_kernel_matches_reference(kernels, instanced, output_db, T):
    pos, tri, ids = random_case(instanced, seed=3 + instanced, T=T)
    want, want_db = resolve(ref.resolve, pos, tri, ids, output_db)
    got, got_db = resolve(cuda_backend.rasterize_resolve, pos.to(kernels), tri.to(kernels),
                          ids.to(kernels), output_db)
    got = got.cpu()
    assert torch.equal(got[..., 3], want[..., 3])
    bad = (ids == 6) | (ids == 0)  # triangle 5 has an index out of range
    assert not want[bad].any() and want[~bad][..., 3].min() > 0 and bad.any()
    # Both compute in float64 and round once; they may differ where a contraction into a fused
    # multiply-add changed the last double bits before rounding. (Random indices repeat a
    # vertex now and then: such a triangle has no barycentrics, inf and NaN in both.)
    torch.testing.assert_close(got, want, rtol=2.4e-7, atol=1e-12, equal_nan=True)
    if output_db:
        torch.testing.assert_close(got_db.cpu(), want_db, rtol=1e-6, atol=1e-9, equal_nan=True)
        assert not want_db[bad].any()


def test_reference_is_exact_on_an_affine_triangle():
    """w = 1 everywhere: the barycentrics are affine in the pixel centre. Corners (-1, -1),
    (1, -1), (-1, 1) in NDC give v = (x + 1) / 2, u = 1 - v - (y + 1) / 2 at NDC point (x, y),
    du/dX = -1/W, du/dY = -1/H, dv/dX = 1/W, dv/dY = 0 per pixel, and z/w = z."""
    H, W = 8, 16
    pos = torch.tensor([[-1.0, -1.0, 0.25, 1.0], [1.0, -1.0, 0.25, 1.0], [-1.0, 1.0, 0.25, 1.0]])
    tri = torch.tensor([[0, 1, 2]], dtype=torch.int32)
    ids = torch.ones(1, H, W, dtype=torch.int32)
    rast, db = resolve(ref.resolve, pos, tri, ids)
    y, x = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64),
                          indexing="ij")
    qx, qy = (x + 0.5) * 2 / W - 1, (y + 0.5) * 2 / H - 1
    v = (qx + 1) / 2
    u = 1 - v - (qy + 1) / 2
    torch.testing.assert_close(rast[0, ..., 0], u.float(), rtol=0, atol=1e-7)
    torch.testing.assert_close(rast[0, ..., 1], v.float(), rtol=0, atol=1e-7)
    assert (rast[0, ..., 2] == 0.25).all() and (rast[0, ..., 3] == 1).all()
    expect = torch.tensor([-1 / W, -1 / H, 1 / W, 0.0])
    torch.testing.assert_close(db[0], expect.expand(H, W, 4), rtol=1e-6, atol=1e-9)


def test_large_ids_keep_their_encoding():
    """Ids above 2^24 are stored as nvdiffrast's bit pattern, as the kernels write them."""
    T = (1 << 24) + 3
    tri = torch.zeros(T, 3, dtype=torch.int32)
    tri[-1] = torch.tensor([0, 1, 2])
    pos = torch.tensor([[-1.0, -1.0, 0.0, 1.0], [1.0, -1.0, 0.0, 1.0], [-1.0, 1.0, 0.0, 1.0]])
    ids = torch.full((1, 2, 2), T, dtype=torch.int32)
    rast, _ = resolve(ref.resolve, pos, tri, ids, output_db=False)
    assert torch.equal(triangle_id.decode(rast[..., 3]), ids.long())


def test_gl_context_with_kernels_equals_it_with_the_reference(kernels):
    """A whole rasterize call of the OpenGL context on the CPU (Mesa), resolved by the kernel,
    against the same call resolved by the reference."""
    if kernels.type == "cuda":
        pytest.skip("the CPU context's ids are resolved on the CPU")
    glctx = context("cpu")
    pos, tri, _ = random_case(True, seed=11, V=60, T=80)
    tri[5] = torch.tensor([0, 1, 2])
    got, got_db = dr.rasterize(glctx, pos, tri, (24, 40))
    with dispatch.force(dispatch.REFERENCE):
        want, want_db = dr.rasterize(glctx, pos, tri, (24, 40))
    assert (want[..., 3] > 0).float().mean() > 0.3
    assert torch.equal(got[..., 3], want[..., 3])
    torch.testing.assert_close(got, want, rtol=2.4e-7, atol=1e-12)
    torch.testing.assert_close(got_db, want_db, rtol=1e-6, atol=1e-9)


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["instance", "range", "peel"])
def test_both_contexts_are_bit_identical_where_they_show_the_same_triangle(mode):
    gl, cu = context("cuda"), context("cudarast")
    pos, tri, _ = random_case(mode != "range", seed=5, B=4, V=300, T=400)
    pos, tri = pos.cuda(), tri.cuda()
    tri[5] = torch.tensor([0, 1, 2], device="cuda")
    res = (97, 131)
    ranges = torch.tensor([[0, 150], [100, 300], [0, 400], [399, 1]], dtype=torch.int32)

    def run(ctx):
        if mode == "peel":
            with dr.DepthPeeler(ctx, pos, tri, res) as peeler:
                return [peeler.rasterize_next_layer() for _ in range(3)]
        return [dr.rasterize(ctx, pos, tri, res, ranges=ranges if mode == "range" else None)]

    for (r_gl, d_gl), (r_cu, d_cu) in zip(run(gl), run(cu)):
        same = (r_gl[..., 3] == r_cu[..., 3]) & (r_gl[..., 3] > 0)
        assert same.float().mean() > 0.2 and (r_gl[..., 3] == r_cu[..., 3]).float().mean() > 0.995
        assert torch.equal(r_gl[same], r_cu[same]) and torch.equal(d_gl[same], d_cu[same])
