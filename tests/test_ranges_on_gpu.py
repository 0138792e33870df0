"""Range mode with ``ranges`` on the GPU (nvdiffrast requires them on the CPU): the same results
as CPU ranges in both contexts, no host synchronization after the first use of a tensor, and a
range-mode call captured in a CUDA graph."""
import pytest
import torch

import diffrast as dr
from diffrast import geometry


def soup(num=300, seed=0):
    """A range-mode scene: ``pos [V, 4]`` and ``tri [T, 3]`` on the GPU."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(num, 1, 2, generator=g) * 1.8 - 0.9
    xy = centres + (torch.rand(num, 3, 2, generator=g) - 0.5) * 0.5
    z = torch.rand(num, 1, 1, generator=g).expand(num, 3, 1) * 1.6 - 0.8
    pos = torch.cat([xy, z, torch.ones(num, 3, 1)], -1).reshape(-1, 4)
    tri = torch.arange(3 * num, dtype=torch.int32).reshape(num, 3)
    return pos.cuda(), tri.cuda()


RANGES = [[0, 100], [50, 250], [0, 0], [299, 1], [0, 300]]


@pytest.fixture(scope="module", params=["cuda", "gl"])
def glctx(request):
    return dr.RasterizeCudaContext() if request.param == "cuda" else \
        dr.RasterizeGLContext(device="cuda")


@pytest.mark.gpu
def test_gpu_ranges_equal_cpu_ranges(glctx, deterministic):
    deterministic(True)  # the gradients' sums in one order, to compare them bit for bit
    pos, tri = soup()
    cpu = torch.tensor(RANGES, dtype=torch.int32)
    want = dr.rasterize(glctx, pos, tri, (64, 96), ranges=cpu)
    got = dr.rasterize(glctx, pos, tri, (64, 96), ranges=cpu.cuda())
    for a, b in zip(want, got):
        assert torch.equal(a, b)
    # gradients too
    p = pos.clone().requires_grad_()
    dr.rasterize(glctx, p, tri, (64, 96), ranges=cpu.cuda())[0][..., :2].sum().backward()
    q = pos.clone().requires_grad_()
    dr.rasterize(glctx, q, tri, (64, 96), ranges=cpu)[0][..., :2].sum().backward()
    assert torch.equal(p.grad, q.grad)


@pytest.mark.gpu
@pytest.mark.parametrize("bad, match", [
    ([[0, 10], [-1, 5]], "non-negative"),
    ([[0, 10], [5, -2]], "non-negative"),
    ([[250, 100]], "run past the end of tri"),
])
def test_bad_gpu_ranges_raise(glctx, bad, match):
    pos, tri = soup()
    with pytest.raises(ValueError, match=match):
        dr.rasterize(glctx, pos, tri, (16, 16), ranges=torch.tensor(bad, dtype=torch.int32).cuda())


@pytest.mark.gpu
def test_gpu_ranges_on_another_device_raise():
    pos, tri = soup()
    with pytest.raises(ValueError, match="ranges must be on the CPU or on the device of pos"):
        dr.rasterize(dr.RasterizeGLContext(device="cpu"), pos.cpu(), tri.cpu(), (16, 16),
                     ranges=torch.tensor(RANGES, dtype=torch.int32).cuda())


@pytest.mark.gpu
def test_gpu_ranges_are_checked_again_after_an_in_place_change():
    pos, tri = soup()
    ctx = dr.RasterizeCudaContext()
    ranges = torch.tensor(RANGES, dtype=torch.int32).cuda()
    dr.rasterize(ctx, pos, tri, (16, 16), ranges=ranges)
    ranges[0, 1] = 1000  # bumps the version counter: checked again
    with pytest.raises(ValueError, match="run past the end"):
        dr.rasterize(ctx, pos, tri, (16, 16), ranges=ranges)


@pytest.mark.gpu
def test_range_mode_call_replays_from_a_cuda_graph():
    """Captured with GPU ranges, replayed with new ranges and positions in the same tensors: the
    results of eager calls with CPU ranges. Ranges that were never checked (written into the
    captured tensor) are clamped to ``tri`` by the kernels, never read out of bounds."""
    pos, tri = soup()
    ctx = dr.RasterizeCudaContext()
    ranges = torch.tensor(RANGES, dtype=torch.int32).cuda()
    static_pos = pos.clone()
    out = {}

    def call():
        out["rast"], out["db"] = dr.rasterize(ctx, static_pos, tri, (48, 64), ranges=ranges)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            call()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        call()
    for seed, rows in ((1, [[10, 20], [0, 300], [100, 0], [5, 5], [200, 100]]),
                       (2, [[0, 1], [1, 1], [2, 1], [3, 297], [150, 150]])):
        new_pos, _ = soup(seed=seed)
        static_pos.copy_(new_pos)
        ranges.copy_(torch.tensor(rows, dtype=torch.int32))
        graph.replay()
        torch.cuda.synchronize()
        want = dr.rasterize(ctx, new_pos, tri, (48, 64), ranges=torch.tensor(rows, dtype=torch.int32))
        assert torch.equal(out["rast"], want[0]) and torch.equal(out["db"], want[1])
    # out-of-range values written behind the check: clamped ([-5, 10] -> [0, 10], [290, 50] ->
    # [290, 10])
    ranges.copy_(torch.tensor([[-5, 10], [290, 50], [0, 300], [0, 0], [10, -3]], dtype=torch.int32))
    graph.replay()
    torch.cuda.synchronize()
    clamped = torch.tensor([[0, 10], [290, 10], [0, 300], [0, 0], [10, 0]], dtype=torch.int32)
    want = dr.rasterize(ctx, static_pos.clone(), tri, (48, 64), ranges=clamped)
    assert torch.equal(out["rast"], want[0])


@pytest.mark.gpu
def test_steady_state_gpu_range_call_does_not_synchronize():
    pos, tri = soup()
    ctx = dr.RasterizeCudaContext()
    ranges = torch.tensor(RANGES, dtype=torch.int32).cuda()
    dr.rasterize(ctx, pos, tri, (32, 32), ranges=ranges)  # first use: checked (reads back)
    torch.cuda.set_sync_debug_mode("error")
    try:
        dr.rasterize(ctx, pos, tri, (32, 32), ranges=ranges)
    finally:
        torch.cuda.set_sync_debug_mode("default")
