"""A whole training step with RasterizeCudaContext captured in a CUDA graph and replayed with new
input values gives the results of eager calls; a steady-state eager step never synchronizes
with the host."""
import os
import subprocess
import sys

import pytest
import torch

import diffrast as dr
from diffrast import geometry


def scene(batch=2, res=64):
    gen = torch.Generator().manual_seed(0)
    pos, tri, uv = geometry.uv_sphere(16, 32)
    proj = geometry.perspective(45.0) @ geometry.translate(0, 0, -3.0)

    def clip(seed):
        g = torch.Generator().manual_seed(seed)
        mvp = torch.stack([proj @ geometry.rotate_y(float(torch.rand(1, generator=g)) * 6.28)
                           @ geometry.rotate_x(0.3 + 0.2 * b) for b in range(batch)])
        return geometry.transform(pos, mvp).contiguous().cuda()

    tex = torch.rand(1, 32, 32, 3, generator=gen).cuda()
    target = torch.rand(batch, res, res, 3, generator=gen).cuda()
    return clip, tri.cuda(), uv.cuda(), tex, target, (res, res)


def make_step(glctx, tri, uv, topology, res):
    def step(clip, tex, target):
        rast, rast_db = dr.rasterize(glctx, clip, tri, res)
        t, t_da = dr.interpolate(uv, rast, tri, rast_db=rast_db, diff_attrs="all")
        c = dr.texture(tex, t, t_da, filter_mode="linear-mipmap-linear")
        c = torch.where(rast[..., 3:] > 0, c, torch.zeros_like(c))
        c = dr.antialias(c, rast, clip, tri, topology_hash=topology)
        return (c - target).square().mean()
    return step


def eager_grads(step, clip, tex, target):
    clip = clip.clone().requires_grad_()
    tex = tex.clone().requires_grad_()
    loss = step(clip, tex, target)
    loss.backward()
    return loss.detach(), clip.grad, tex.grad


@pytest.mark.gpu
@pytest.mark.parametrize("det", [False, True])
def test_training_step_replays_from_a_cuda_graph(det, deterministic):
    deterministic(det)
    clip_of, tri, uv, tex0, target, res = scene()
    glctx = dr.RasterizeCudaContext()
    step = make_step(glctx, tri, uv, dr.antialias_construct_topology_hash(tri), res)
    clip = clip_of(0).requires_grad_()
    tex = tex0.clone().requires_grad_()

    def run():
        clip.grad = None if clip.grad is None else clip.grad.zero_()
        tex.grad = None if tex.grad is None else tex.grad.zero_()
        loss = step(clip, tex, target)
        loss.backward()
        return loss

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            run()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        loss = run()
    # A larger eager call on the same context afterwards must not free the graph's scratch.
    big = clip_of(9).detach()
    dr.rasterize(glctx, torch.cat([big, big, big]), tri, (300, 300))
    for seed in (1, 2, 3):
        new_clip = clip_of(seed)
        with torch.no_grad():
            clip.copy_(new_clip)
        graph.replay()
        want = eager_grads(step, new_clip, tex0, target)
        got = (loss, clip.grad, tex.grad)
        for a, b in zip(want, got):
            if det:
                assert torch.equal(a, b)
            else:
                torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)


@pytest.mark.gpu
def test_steady_state_eager_step_does_not_synchronize():
    clip_of, tri, uv, tex0, target, res = scene()
    glctx = dr.RasterizeCudaContext()
    step = make_step(glctx, tri, uv, dr.antialias_construct_topology_hash(tri), res)
    clip = clip_of(0)
    eager_grads(step, clip, tex0, target)  # warm-up: kernels, index check, plans, scratch
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        eager_grads(step, clip, tex0, target)
    finally:
        torch.cuda.set_sync_debug_mode("default")


EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples",
                       "cuda_graph.py")


@pytest.mark.gpu
def test_cuda_graph_example_runs(tmp_path):
    out = subprocess.run([sys.executable, EXAMPLE,
                          "--iterations", "60", "--resolution", "128", "--compare",
                          "--outdir", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "CUDA graph" in out.stdout and (tmp_path / "final.png").exists()


def test_cuda_graph_example_says_it_needs_cuda():
    out = subprocess.run([sys.executable, EXAMPLE, "--device", "cpu"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2 and "CUDA" in out.stdout
