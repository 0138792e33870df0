"""Resource stability of the rasterizer contexts: no leaks, buffers reused, processes and threads."""
import gc
import os

import pytest
import torch
import torch.multiprocessing as mp

import diffrast as dr

TRI = torch.tensor([[0, 1, 2]], dtype=torch.int32)
POS = torch.tensor([[[-1, -1, 0, 1], [1, -1, 0, 1], [-1, 1, 0, 1]]], dtype=torch.float32)


def open_fds():
    return len(os.listdir("/proc/self/fd"))


def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_creating_and_dropping_contexts_leaks_nothing():
    # Warm up (first context loads the driver), then 200 more must not grow fds or memory.
    for _ in range(3):
        dr.rasterize(dr.RasterizeGLContext(device="cpu"), POS, TRI, (64, 64))
    gc.collect()
    fds, rss = open_fds(), rss_mib()
    for i in range(200):
        ctx = dr.RasterizeGLContext(device="cpu")
        dr.rasterize(ctx, POS, TRI, (64, 64))
        if i % 2:
            ctx.release()  # explicit release and garbage collection both free everything
        del ctx
    gc.collect()
    assert open_fds() <= fds
    assert rss_mib() - rss < 20, "200 contexts must not keep memory"


def test_resolution_that_grows_then_shrinks_reuses_buffers():
    ctx = dr.RasterizeGLContext(device="cpu")
    sizes = [(32, 48), (200, 100), (16, 16), (200, 100), (64, 64)]
    allocated = []
    for h, w in sizes:
        rast, _ = dr.rasterize(ctx, POS, TRI, (h, w))
        # Correct output at every size (the half of the image below the diagonal is covered).
        assert rast.shape == (1, h, w, 4) and rast[0, 0, 0, 3] == 1 and rast[0, -1, -1, 3] == 0
        allocated.append(ctx._pipeline.size)
    assert allocated[1:] == [(100, 200, 1)] * 4, "targets grow once and are then reused"
    ctx.release()


def _render_in_process(rank, results):
    ctx = dr.RasterizeGLContext(device="cpu")
    pos = POS.clone()
    pos[..., :2] *= 1 + rank  # different geometry per process
    rast, _ = dr.rasterize(ctx, pos, TRI, (16, 16))
    results[rank] = rast.clone()


def test_one_context_per_spawned_process():
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_render_in_process, args=(results,), nprocs=2, join=True)
        got = dict(results)
    for rank in range(2):
        pos = POS.clone()
        pos[..., :2] *= 1 + rank
        want, _ = dr.rasterize(dr.RasterizeGLContext(device="cpu"), pos, TRI, (16, 16))
        assert torch.equal(got[rank], want)


@pytest.mark.gpu
def test_cuda_contexts_leak_no_gpu_memory_or_registrations():
    pos, tri = POS.cuda(), TRI.cuda()
    for _ in range(3):
        dr.rasterize(dr.RasterizeGLContext(device="cuda"), pos, tri, (64, 64))
    gc.collect()
    torch.cuda.synchronize()
    fds, mem = open_fds(), torch.cuda.memory_allocated()
    for _ in range(50):
        ctx = dr.RasterizeGLContext(device="cuda")
        dr.rasterize(ctx, pos, tri, (64, 64))
        ctx.release()
    gc.collect()
    torch.cuda.synchronize()
    assert open_fds() <= fds + 2 and torch.cuda.memory_allocated() <= mem
