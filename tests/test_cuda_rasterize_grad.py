"""The CUDA kernels of the rasterize backward (cuda_ops/rasterize_backward.cu through
diffrast.cuda_backend.rasterize_grad) against the reference.

Every test that takes the ``kernels`` fixture runs twice: on a GPU (``cuda``, marked ``gpu``) and
on the CPU through the warp emulator (``emulated``, tests/helpers/kernel_emulator.py; skipped without a
C++ compiler). Rasterizer outputs are synthetic (tests/helpers/kernel_cases.py: a projected grid mesh
whose coverage is known exactly), except for the end-to-end test through OpenGL.
"""
import importlib

import pytest
import torch

import diffrast as dr
from helpers import kernel_cases as cases
from helpers import kernel_emulator
from diffrast import cuda_backend, dispatch, triangle_id

ref = importlib.import_module("diffrast.reference.rasterize")
wrapper = importlib.import_module("diffrast.rasterize")


@pytest.fixture(params=[pytest.param("cuda", marks=pytest.mark.gpu), "emulated"])
def kernels(request, monkeypatch):
    """The device on which cuda_backend.rasterize_grad runs its kernels."""
    device = kernel_emulator.kernel_device(request.param, request)
    assert dispatch.backend("rasterize_backward", device) is cuda_backend.rasterize_grad
    return device


@pytest.fixture
def deterministic():
    saved = dr.is_deterministic()
    yield dr.set_deterministic
    dr.set_deterministic(saved)


def make_case(mode, device, *, B=3, H=16, W=40, cells=5, seed=0):
    """(pos, tri, rast, grad_rast, grad_db) on ``device``; upstream gradients are random on
    covered pixels and garbage (large values) on empty ones, which must be ignored."""
    pos, tri, _, rast, _ = cases.grid_scene(B, H, W, cells, range_mode=(mode == "range"),
                                            seed=seed, device=device)
    g = torch.Generator().manual_seed(seed + 1)
    covered = (rast[..., 3] > 0).cpu()
    grad_rast = torch.randn(B, H, W, 4, generator=g)
    grad_db = torch.randn(B, H, W, 4, generator=g)
    grad_rast[~covered] = 1e6
    grad_db[~covered] = -1e6
    return pos, tri, rast, grad_rast.to(device), grad_db.to(device)


def reference64(pos, tri, rast, grad_rast, grad_db):
    return ref.rasterize_grad(pos.double(), tri, rast, grad_rast.double(),
                              None if grad_db is None else grad_db.double())


def close(got, want, tol=2e-5):
    """Float32 kernel vs a float64 (or float32) reference, relative to the gradient's scale."""
    scale = max(1e-3, float(want.abs().max()))
    torch.testing.assert_close(got.to(want.dtype), want, rtol=tol, atol=tol * scale)


# ----------------------------------------------------------------------------------------------
# Against the reference.

@pytest.mark.parametrize("det", [False, True], ids=["atomic", "deterministic"])
@pytest.mark.parametrize("with_db", [False, True], ids=["uv", "uv+db"])
@pytest.mark.parametrize("mode", ["instance", "range"])
def test_matches_reference(kernels, deterministic, mode, with_db, det):
    deterministic(det)
    pos, tri, rast, grad_rast, grad_db = make_case(mode, kernels, seed=1)
    gdb = grad_db if with_db else None
    got = cuda_backend.rasterize_grad(pos, tri, rast, grad_rast, gdb)
    assert got.shape == pos.shape and got.dtype == torch.float32 and got.device.type == kernels.type
    assert not got[..., 2].any()  # z carries no gradient
    close(got, reference64(pos, tri, rast, grad_rast, gdb))
    # And the float32 reference on the same device (same formulas, different rounding).
    close(got, ref.rasterize_grad(pos, tri, rast, grad_rast, gdb), 1e-4)


def test_small_triangles_many_per_warp(kernels):
    """Many small triangles: short runs of equal ids within a warp."""
    pos, tri, rast, grad_rast, grad_db = make_case("instance", kernels, B=2, H=24, W=64,
                                                   cells=24, seed=2)
    close(cuda_backend.rasterize_grad(pos, tri, rast, grad_rast, grad_db),
          reference64(pos, tri, rast, grad_rast, grad_db))


@pytest.mark.parametrize("mode", ["instance", "range"])
def test_long_runs_of_one_triangle(kernels, mode):
    """Few large triangles: whole warps of pixels on one triangle (the longest warp runs)."""
    pos, tri, rast, grad_rast, grad_db = make_case(mode, kernels, B=2, H=8, W=96, cells=1, seed=13)
    close(cuda_backend.rasterize_grad(pos, tri, rast, grad_rast, grad_db),
          reference64(pos, tri, rast, grad_rast, grad_db))


@pytest.mark.parametrize("mode", ["instance", "range"])
def test_runs_across_image_boundaries(kernels, mode):
    """One triangle everywhere and images of 35 pixels: warps span images, and in instance mode
    the same triangle of two images must not be merged into one pos row."""
    pos, tri, _, rast, _ = cases.one_triangle_scene(5, 5, 7, range_mode=(mode == "range"),
                                                    seed=14, device=kernels)
    g = torch.Generator().manual_seed(15)
    grad_rast = torch.randn(rast.shape, generator=g).to(kernels)
    grad_db = torch.randn(rast.shape, generator=g).to(kernels)
    close(cuda_backend.rasterize_grad(pos, tri, rast, grad_rast, grad_db),
          reference64(pos, tri, rast, grad_rast, grad_db))


# ----------------------------------------------------------------------------------------------
# Empty and corrupt input.

@pytest.mark.parametrize("det", [False, True], ids=["atomic", "deterministic"])
def test_all_empty_image_gives_zeros(kernels, deterministic, det):
    deterministic(det)
    pos, tri, rast, grad_rast, grad_db = make_case("instance", kernels, seed=3)
    got = cuda_backend.rasterize_grad(pos, tri, torch.zeros_like(rast), grad_rast, grad_db)
    assert got.shape == pos.shape and not got.any()


@pytest.mark.parametrize("det", [False, True], ids=["atomic", "deterministic"])
@pytest.mark.parametrize("mode", ["instance", "range"])
def test_corrupt_ids_contribute_nothing(kernels, deterministic, mode, det):
    deterministic(det)
    pos, tri, rast, grad_rast, grad_db = make_case(mode, kernels, seed=4)
    bad = cases.corrupt_mask(rast, seed=5, fraction=0.25)
    got = cuda_backend.rasterize_grad(pos, cases.with_valid_rows_beyond(tri),
                                      cases.with_corrupt_ids(rast, bad, tri.shape[0]),
                                      grad_rast, grad_db)
    clean = cases.emptied(rast, bad)
    same = cuda_backend.rasterize_grad(pos, tri, clean, grad_rast, grad_db)
    if det:
        assert torch.equal(got, same)  # the same entries, summed in the same order
    close(got, same)
    close(got, reference64(pos, tri, clean, grad_rast, grad_db))


@pytest.mark.parametrize("det", [False, True], ids=["atomic", "deterministic"])
def test_vertex_indices_out_of_range_are_skipped(kernels, deterministic, det):
    deterministic(det)
    pos, tri, rast, grad_rast, grad_db = make_case("instance", kernels, seed=6)
    V = pos.shape[-2]
    broken = tri.clone()
    broken[5, 0] = -1
    broken[12, 1] = V
    ids = triangle_id.decode(rast[..., 3])
    bad = (ids == 6) | (ids == 13)
    assert bad.any()
    got = cuda_backend.rasterize_grad(pos, broken, rast, grad_rast, grad_db)
    close(got, reference64(pos, tri, cases.emptied(rast, bad), grad_rast, grad_db))


def test_misaligned_gradient_views(kernels):
    pos, tri, rast, grad_rast, grad_db = make_case("instance", kernels, seed=7)
    storage = torch.zeros(grad_rast.numel() + 2, device=kernels)
    odd = storage[2:].view(grad_rast.shape)  # contiguous, 8 bytes past a 16-byte boundary
    odd.copy_(grad_rast)
    assert odd.data_ptr() % 16 != 0
    close(cuda_backend.rasterize_grad(pos, tri, rast, odd, grad_db),
          reference64(pos, tri, rast, grad_rast, grad_db))



@pytest.mark.parametrize("deterministic_mode", [False, True])
def test_gradients_of_any_strides_are_read_in_place(kernels, deterministic, deterministic_mode):
    """Autograd hands over expanded (stride 0), sliced and permuted gradients; the kernels read
    them through their strides and must give what the dense copies give."""
    deterministic(deterministic_mode)
    pos, tri, rast, grad_rast, grad_db = make_case("instance", kernels, seed=8)
    B, H, W, _ = rast.shape
    expanded = torch.tensor([0.7, -1.3, 5.0, 9.0], device=kernels).expand(B, H, W, 4)
    assert expanded.stride() == (0, 0, 0, 1)
    scalar = torch.tensor(0.25, device=kernels).expand(B, H, W, 4)  # all strides 0
    wide = torch.randn(B, H, W + 3, 6, device=kernels)[:, :, 1:W + 1, 1:5]  # a slice of a bigger image
    permuted = grad_db.permute(0, 2, 1, 3).contiguous().permute(0, 2, 1, 3)  # x-major rows
    for g_rast, g_db in ((expanded, scalar), (wide, permuted), (grad_rast, None)):
        assert not g_rast.is_contiguous() or g_db is None
        got = cuda_backend.rasterize_grad(pos, tri, rast, g_rast, g_db)
        want = cuda_backend.rasterize_grad(pos, tri, rast, g_rast.contiguous(),
                                           None if g_db is None else g_db.contiguous())
        close(got, want, 1e-6)
        close(got, reference64(pos, tri, rast, g_rast, g_db))


# ----------------------------------------------------------------------------------------------
# GPU only.

@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["instance", "range"])
def test_deterministic_mode_is_bit_identical_run_to_run(deterministic, mode):
    dev = torch.device("cuda")
    deterministic(True)
    pos, tri, rast, grad_rast, grad_db = make_case(mode, dev, B=4, H=256, W=256, cells=4, seed=8)
    first = cuda_backend.rasterize_grad(pos, tri, rast, grad_rast, grad_db)
    for _ in range(3):
        assert torch.equal(first, cuda_backend.rasterize_grad(pos, tri, rast, grad_rast, grad_db))
    deterministic(False)
    fast = cuda_backend.rasterize_grad(pos, tri, rast, grad_rast, grad_db)
    close(fast, first)
    close(first, reference64(pos, tri, rast, grad_rast, grad_db), 1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize("det", [False, True], ids=["atomic", "deterministic"])
def test_runs_on_a_non_default_stream(deterministic, det):
    deterministic(det)
    dev = torch.device("cuda")
    pos, tri, rast, grad_rast, grad_db = make_case("instance", dev, B=4, H=128, W=128, cells=9,
                                                   seed=9)
    want = reference64(pos, tri, rast, grad_rast, grad_db)
    torch.cuda.synchronize()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        pos2, gr2, gd2 = pos * 1.0, grad_rast * 1.0, grad_db * 1.0  # written on this stream
        got = cuda_backend.rasterize_grad(pos2, tri, rast, gr2, gd2) * 1.0
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    close(got, want)


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["instance", "range"])
def test_end_to_end_through_opengl(mode):
    """rasterize (OpenGL, CUDA interop) then backward: the CUDA kernels give the reference's
    gradient on the same rasterizer output."""
    dev = torch.device("cuda")
    pos, tri, ranges, _, _ = cases.grid_scene(3, 64, 96, 7, range_mode=(mode == "range"),
                                              seed=10, device=dev)
    glctx = dr.RasterizeGLContext(device=dev)
    p = pos.clone().requires_grad_(True)
    rast, db = dr.rasterize(glctx, p, tri, (64, 96), ranges=ranges)
    g = torch.Generator().manual_seed(11)
    wr = torch.randn(rast.shape, generator=g).to(dev)
    wd = torch.randn(db.shape, generator=g).to(dev)
    ((rast * wr).sum() + (db * wd).sum()).backward()
    close(p.grad, reference64(pos, tri, rast, wr, wd), 1e-4)


@pytest.mark.gpu
def test_large_batch_matches_reference():
    dev = torch.device("cuda")
    pos, tri, rast, grad_rast, grad_db = make_case("instance", dev, B=4, H=512, W=512, cells=60,
                                                   seed=12)
    close(cuda_backend.rasterize_grad(pos, tri, rast, grad_rast, grad_db),
          reference64(pos, tri, rast, grad_rast, grad_db), 1e-4)


@pytest.mark.parametrize("det", [False, True], ids=["atomic", "deterministic"])
@pytest.mark.parametrize("mode", ["instance", "range"])
def test_depth_gradient_matches_reference(kernels, deterministic, mode, det):
    """rasterize(..., grad_depth=True): the z/w channel's gradient reaches x, y, z and w."""
    deterministic(det)
    pos, tri, rast, grad_rast, grad_db = make_case(mode, kernels, seed=4)
    got = cuda_backend.rasterize_grad(pos, tri, rast, grad_rast, grad_db, grad_depth=True)
    assert got[..., 2].any()
    want = ref.rasterize_grad(pos.double(), tri, rast, grad_rast.double(), grad_db.double(),
                              grad_depth=True)
    close(got, want)
    # Without it, exactly the gradient of before (z column zero).
    plain = cuda_backend.rasterize_grad(pos, tri, rast, grad_rast, grad_db)
    assert not plain[..., 2].any()
    if det:
        assert torch.equal(plain, cuda_backend.rasterize_grad(pos, tri, rast, grad_rast, grad_db,
                                                              grad_depth=False))
