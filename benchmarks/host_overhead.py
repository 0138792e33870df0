"""diffrast's own host time per op, measurable without a GPU.

Runs the benchmark's training step (rasterize, interpolate with derivatives, mipmapped texture,
antialias with a prebuilt topology hash, backward) on CPU tensors with every op's CUDA path
forced (:func:`diffrast.dispatch.force`) and a launcher that launches nothing, through a
rasterizer context that renders nothing. What remains is the Python and torch work diffrast
does around its kernels: validation, allocation, autograd, argument packing (when the launcher
packs). Prints the median host time per stage and the number of launches, and with
``--python`` the functions that cost the most. ``--compiled`` compares the whole step's host
time in eager mode with the step compiled by ``torch.compile(fullgraph=True)`` (calls
interleaved, medians). ``--no-grad`` times the forward stages under ``torch.no_grad()``, as
rendering without training calls them.

    python benchmarks/host_overhead.py                  # small_1x512
    python benchmarks/host_overhead.py --res 16 --tex 16 --no-grad
    python benchmarks/host_overhead.py --scenario mid_4x1024 --python
    python benchmarks/host_overhead.py --res 16 --tex 16 --compiled
    python benchmarks/host_overhead.py --res 16 --tex 16 --compiled --no-size-asserts

Only ratios between runs on one machine mean anything (the GPU's host is another CPU).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import diffrast as dr
from diffrast import dispatch
from diffrast.cuda_ops import kernels, loader
from diffrast.raster_context import RasterContext
from profile_step import staged_step
from run import SCENARIOS, disable_size_asserts, scene


class NullContext(RasterContext):
    """A rasterizer context on the CPU that leaves ``rast`` as allocated (no rendering)."""

    capturable = True
    max_resolution = (1 << 15, 1 << 15)
    max_layers = 1 << 30

    def __init__(self):
        self.device = torch.device("cpu")
        self.output_db = True
        super().__init__()

    def render(self, pos, tri, resolution, ranges, layer_index, peel, rast, rast_db):
        pass


def compare_compiled(ctx, clip, tri, uv, tex, res, topo, target, calls):
    """Print the median host time of the step (forward and backward) in eager mode and compiled
    with ``torch.compile(fullgraph=True)``, the two called in turn."""
    def loss():
        stages, state = staged_step(ctx, clip, tri, uv, tex, res, topo, target)
        for name, fn in stages:
            if name != "backward":
                fn()
        return state["loss"]

    compiled = torch.compile(loss, fullgraph=True)
    steps = {"eager": lambda: loss().backward(), "compiled": lambda: compiled().backward()}
    times = {name: [] for name in steps}
    for call in range(calls + 10):
        for name, step in steps.items():
            t0 = time.perf_counter()
            step()
            if call >= 10:
                times[name].append(time.perf_counter() - t0)
    print(f"step, forward and backward (median of {calls}, µs):")
    for name, ts in times.items():
        print(f"  {name:12s} {statistics.median(ts) * 1e6:8.1f}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenario", default="small_1x512", choices=sorted(SCENARIOS))
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--pack", action="store_true",
                   help="the null launcher packs the arguments as the real one does")
    p.add_argument("--python", action="store_true", help="also print a cProfile of the step")
    p.add_argument("--res", type=int, default=None,
                   help="another image size (e.g. 16: the CPU's own math then costs nothing, "
                        "so the backward stage shows diffrast's host time alone)")
    p.add_argument("--tex", type=int, default=None,
                   help="another texture size (the CPU zero-fills the texture gradient)")
    p.add_argument("--compiled", action="store_true",
                   help="also compare the step's host time, eager against torch.compile")
    p.add_argument("--no-size-asserts", action="store_true",
                   help="compile with torch._inductor.config.size_asserts = False (no check of "
                        "each custom op output's sizes and strides in the compiled code)")
    p.add_argument("--no-grad", action="store_true",
                   help="the forward stages under torch.no_grad() (rendering), no backward")
    args = p.parse_args()
    if args.no_size_asserts:
        disable_size_asserts()

    launches = []

    def null_launch(module, kernel, grid, block, kernel_args, device, shared_mem=0):
        launches.append(kernel)
        if args.pack:
            loader.pack(kernels.params_for(kernels.get(kernel), kernel_args))

    cfg = dict(SCENARIOS[args.scenario])
    cfg["res"] = args.res or cfg["res"]
    cfg["tex"] = args.tex or cfg["tex"]
    gen = torch.Generator().manual_seed(0)
    clip, tri, uv, tex = scene(cfg, torch.device("cpu"), gen)
    clip.requires_grad_(True)
    tex.requires_grad_(True)
    res = (cfg["res"], cfg["res"])
    target = torch.zeros(cfg["batch"], *res, 3)
    ctx = NullContext()
    times = {}
    with dispatch.force(dispatch.KERNELS, launch=null_launch):
        topo = dr.antialias_construct_topology_hash(tri)
        for call in range(args.calls + 10):
            stages, _ = staged_step(ctx, clip, tri, uv, tex, res, topo, target)
            launches.clear()
            for name, fn in stages:
                if args.no_grad and name == "backward":
                    continue
                t0 = time.perf_counter()
                with torch.set_grad_enabled(not args.no_grad):
                    fn()
                if call >= 10:
                    times.setdefault(name, []).append(time.perf_counter() - t0)
            count = len(launches)
        print(f"{args.scenario}: host time per stage (median of {args.calls}, µs), "
              f"{count} launches per step")
        total = 0.0
        for name, ts in times.items():
            med = statistics.median(ts) * 1e6
            if name not in ("mask", "loss"):
                total += med
            print(f"  {name:12s} {med:8.1f}")
        print(f"  {'diffrast':12s} {total:8.1f}  (all stages but the user's mask and loss)")
        if args.compiled:
            compare_compiled(ctx, clip, tri, uv, tex, res, topo, target, args.calls)
        if args.python:
            import cProfile
            import pstats
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(50):
                stages, _ = staged_step(ctx, clip, tri, uv, tex, res, topo, target)
                for _, fn in stages:
                    fn()
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
