"""Resource stability over long runs: prints one JSON line per check.

- contexts: create, use and drop N RasterizeGLContexts; open file descriptors and memory
  (host RSS, and GPU memory on CUDA) before and after.
- training: S training steps (rasterize -> interpolate -> texture -> antialias -> loss ->
  backward -> Adam) at a mid size; host and GPU memory at the start and the end.

    python benchmarks/stability.py --device cuda --contexts 1000 --steps 10000
"""
import argparse
import gc
import json
import math
import os
import time

import torch

import diffrast as dr
from diffrast import geometry


def fds():
    return len(os.listdir("/proc/self/fd"))


def rss_mib():
    with open("/proc/self/statm") as f:
        return round(int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


def gpu_mib(device):
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    return round(torch.cuda.memory_allocated(device) / 2**20, 1)


def contexts(device, n):
    pos, tri, _ = geometry.uv_sphere(16, 32, device=device)
    clip = geometry.transform(pos, geometry.perspective() @ geometry.translate(0, 0, -3))[None].contiguous()
    dr.rasterize(dr.RasterizeGLContext(device=device), clip, tri, (128, 128))
    gc.collect()
    start = dict(fds=fds(), rss_mib=rss_mib(), gpu_mib=gpu_mib(device))
    t0 = time.perf_counter()
    for _ in range(n):
        ctx = dr.RasterizeGLContext(device=device)
        dr.rasterize(ctx, clip, tri, (128, 128))
        del ctx
    gc.collect()
    end = dict(fds=fds(), rss_mib=rss_mib(), gpu_mib=gpu_mib(device))
    return dict(check="contexts", count=n, seconds=round(time.perf_counter() - t0, 1), start=start, end=end)


def training(device, steps, context):
    pos, tri, uv = geometry.uv_sphere(64, 128, device=device)
    glctx = dr.RasterizeCudaContext(device=device) if context == "cuda" else dr.RasterizeGLContext(device=device)
    tex = torch.rand(1, 512, 512, 3, device=device, requires_grad=True)
    target = torch.rand(1, 512, 512, 3, device=device)
    offset = torch.zeros_like(pos, requires_grad=True)
    opt = torch.optim.Adam([tex, offset], lr=1e-3)
    proj = geometry.perspective() @ geometry.translate(0, 0, -3)
    topo = dr.antialias_construct_topology_hash(tri)
    record = {}
    t0 = time.perf_counter()
    for step in range(steps):
        mvp = torch.stack([proj @ geometry.rotate_y(2 * math.pi * ((step * 4 + b) % 97) / 97) for b in range(4)])
        clip = geometry.transform(pos + offset, mvp).contiguous()
        rast, db = dr.rasterize(glctx, clip, tri, (256, 256))
        t, td = dr.interpolate(uv, rast, tri, rast_db=db, diff_attrs="all")
        c = dr.texture(tex, t, td, filter_mode="linear-mipmap-linear")
        want = dr.texture(target, t.detach(), td.detach(), filter_mode="linear-mipmap-linear")
        c = dr.antialias(torch.where(rast[..., 3:] > 0, c, torch.zeros_like(c)), rast, clip, tri, topology_hash=topo)
        loss = ((c - want) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step in (10, steps - 1):
            gc.collect()
            record["start" if step == 10 else "end"] = dict(step=step, rss_mib=rss_mib(), gpu_mib=gpu_mib(device),
                                                             loss=round(loss.item(), 6))
    return dict(check="training", context=context, steps=steps, seconds=round(time.perf_counter() - t0, 1), **record)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--contexts", type=int, default=1000)
    p.add_argument("--steps", type=int, default=10000)
    p.add_argument("--context", choices=["gl", "cuda"], default="gl", help="rasterizer for the training run")
    args = p.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if args.contexts:
        print(json.dumps(contexts(device, args.contexts)), flush=True)
    if args.steps:
        print(json.dumps(training(device, args.steps, args.context)), flush=True)


if __name__ == "__main__":
    main()
