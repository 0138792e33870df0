"""Where the time of ``rasterize`` goes on the GPU: per-kernel device time (torch.profiler, CUPTI
sees CuPy's launches too), host time per call, and the Python functions that make it (cProfile).

    python benchmarks/profile_rasterize.py                      # all scenarios, RasterizeCudaContext
    python benchmarks/profile_rasterize.py --scenarios big_8x1024_1M --context gl
"""
from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile

import diffrast as dr
from run import SCENARIOS, scene, timer


class _StandIn(torch.autograd.Function):
    """Returns a precomputed ``(rast, rast_db)`` and a zero gradient: what the benchmark's loss
    and autograd cost without any rasterizer (the floor of ``rasterize_fwd_bwd``)."""

    @staticmethod
    def forward(ctx, pos, rast, rast_db):
        ctx.save_for_backward(pos)
        return rast.clone(), rast_db.clone()

    @staticmethod
    def backward(ctx, grad_rast, grad_db):
        return torch.zeros_like(ctx.saved_tensors[0]), None, None


def host_time_ms(fn, calls):
    """Median milliseconds of host time to issue one call of ``fn``, the GPU idle at its start:
    back-to-back calls would fill the launch queue and then measure the GPU instead."""
    times = []
    for _ in range(calls):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    torch.cuda.synchronize()
    return statistics.median(times)


def kernel_table(fn, calls):
    """The profiler's table of device time per kernel over ``calls`` calls of ``fn``."""
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    return prof.key_averages().table(sort_by="self_device_time_total", row_limit=14,
                                     max_name_column_width=48)


def python_profile(fn, calls):
    """cProfile's costliest functions (own time, then cumulative) over ``calls`` calls of ``fn``."""
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(calls):
        fn()
    torch.cuda.synchronize()
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(18)
    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(30)
    return out.getvalue()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenarios", nargs="*", default=list(SCENARIOS))
    p.add_argument("--context", choices=("cuda", "gl"), default="cuda")
    p.add_argument("--calls", type=int, default=20)
    p.add_argument("--python", action="store_true", help="also print cProfile of the calls")
    args = p.parse_args()
    device = torch.device("cuda", torch.cuda.current_device())
    glctx = (dr.RasterizeCudaContext(device=device) if args.context == "cuda"
             else dr.RasterizeGLContext(device=device))
    for name in args.scenarios:
        cfg = SCENARIOS[name]
        clip, tri, _, _ = scene(cfg, device, torch.Generator().manual_seed(0))
        res = (cfg["res"], cfg["res"])
        pos_g = clip.clone().requires_grad_(True)

        def fwd():
            dr.rasterize(glctx, clip, tri, res)

        def fwd_bwd():
            rast, db = dr.rasterize(glctx, pos_g, tri, res)
            (rast[..., :2].sum() + db.sum()).backward()
        rast0, db0 = dr.rasterize(glctx, clip, tri, res)

        def floor():
            rast, db = _StandIn.apply(pos_g, rast0, db0)
            (rast[..., :2].sum() + db.sum()).backward()
        measure = timer(device, 20, 5)
        print(f"### {name} {args.context}: rasterize_fwd_bwd {measure(fwd_bwd):.3f} ms (CUDA events), "
              f"the same loss and backward around a stand-in that only copies rast: "
              f"{measure(floor):.3f} ms")
        for label, fn in (("fwd", fwd), ("fwd_bwd", fwd_bwd)):
            for _ in range(3):
                fn()
            host = host_time_ms(fn, 4 * args.calls)
            print(f"### {name} {args.context} rasterize {label}: host {host:.3f} ms per call")
            print(kernel_table(fn, args.calls))
            if args.python:
                print(python_profile(fn, 4 * args.calls))


if __name__ == "__main__":
    main()
