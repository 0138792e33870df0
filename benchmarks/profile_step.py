"""Where the time of the benchmark's training step goes: host time of each op's forward and of
the backward (GPU idle at each call's start), the step's GPU time, the number of kernels it
launches, and the Python functions that cost the most host time.

    python benchmarks/profile_step.py                     # small_1x512, RasterizeCudaContext
    python benchmarks/profile_step.py --scenarios mid_4x1024 --python
    python benchmarks/profile_step.py --functions         # host time of each autograd Function
    python benchmarks/profile_step.py --scenarios mid_4x1024 --kernels   # GPU time per kernel

cProfile sees only the calling thread; on CUDA tensors the autograd engine runs the backward
functions on its own device thread, so ``--functions`` times diffrast's autograd Functions
(forward and backward) by wrapping them, whichever thread runs them.
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile

import diffrast as dr
from profile_rasterize import python_profile
from run import SCENARIOS, scene, timer


def staged_step(glctx, clip, tri, uv, tex, res, topo, target):
    """The training step, split into stages: ``([(name, fn)], state)``, the stages passing
    their results along in the dict ``state``."""
    state = {}

    def rasterize():
        state["r"], state["db"] = dr.rasterize(glctx, clip, tri, res)

    def interpolate():
        state["t"], state["td"] = dr.interpolate(uv, state["r"], tri, rast_db=state["db"],
                                                 diff_attrs="all")

    def texture():
        state["c"] = dr.texture(tex, state["t"], state["td"], filter_mode="linear-mipmap-linear")

    def mask():
        state["c"] = torch.where(state["r"][..., 3:] > 0, state["c"], torch.zeros_like(state["c"]))

    def antialias():
        state["c"] = dr.antialias(state["c"], state["r"], clip, tri, topology_hash=topo)

    def loss():
        state["loss"] = ((state["c"] - target) ** 2).mean()

    def backward():
        state["loss"].backward()

    return [("rasterize", rasterize), ("interpolate", interpolate), ("texture", texture),
            ("mask", mask), ("antialias", antialias), ("loss", loss), ("backward", backward)], state


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenarios", nargs="*", default=["small_1x512"])
    p.add_argument("--context", choices=("cuda", "gl"), default="cuda")
    p.add_argument("--calls", type=int, default=30)
    p.add_argument("--python", action="store_true", help="also print cProfile of the step")
    p.add_argument("--functions", action="store_true",
                   help="also print the host time of each of diffrast's autograd Functions, "
                        "forward and backward (medians per step)")
    p.add_argument("--kernels", action="store_true",
                   help="also print the GPU time of each kernel of the step (torch.profiler, "
                        "mean over --calls steps)")
    p.add_argument("--compiled", action="store_true",
                   help="also time the step compiled with torch.compile (host time of forward "
                        "and backward per backend: none, eager, aot_eager, inductor) and "
                        "cProfile it")
    args = p.parse_args()
    device = torch.device("cuda", torch.cuda.current_device())
    glctx = (dr.RasterizeCudaContext(device=device) if args.context == "cuda"
             else dr.RasterizeGLContext(device=device))
    for name in args.scenarios:
        cfg = SCENARIOS[name]
        clip, tri, uv, tex = scene(cfg, device, torch.Generator().manual_seed(0))
        clip, uv, tex = (t.clone().requires_grad_() for t in (clip, uv, tex))
        res = (cfg["res"], cfg["res"])
        topo = dr.antialias_construct_topology_hash(tri)
        target = torch.zeros(cfg["batch"], *res, 3, device=device)
        stages, state = staged_step(glctx, clip, tri, uv, tex, res, topo, target)

        def step():
            for _, fn in stages:
                fn()
        for _ in range(5):
            step()
        host = {n: [] for n, _ in stages}
        for _ in range(args.calls):
            for n, fn in stages:
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                fn()
                host[n].append((time.perf_counter() - t0) * 1e3)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            step()
            torch.cuda.synchronize()
        kernels = sum(e.count for e in prof.key_averages() if e.device_type.name == "CUDA")
        gpu = timer(device, args.calls, 3)(step)
        row = {n: round(statistics.median(v), 3) for n, v in host.items()}
        print(f"{name} ({args.context}): step {gpu} ms (CUDA events), host ms per stage {row}, "
              f"host total {round(sum(row.values()), 3)} ms, {kernels} GPU activities per step")
        if args.kernels:
            print(kernel_table(step, args.calls))
        if args.python:
            print(python_profile(step, args.calls))
        if args.functions:
            with function_times() as times:
                for _ in range(args.calls):
                    torch.cuda.synchronize()
                    step()
            print(f"{name}: host ms per call of diffrast's autograd Functions (medians): "
                  + ", ".join(f"{k} {statistics.median(v) * 1e3:.3f}"
                              for k, v in sorted(times.items())))
        if args.compiled:
            def loss():
                for n, fn in stages[:-1]:
                    fn()
                return state["loss"]
            # Where compiling adds host time: Dynamo alone (backend "eager": the graph runs the
            # custom ops through their autograd), with AOTAutograd ("aot_eager"), and inductor.
            for backend in ("none", "eager", "aot_eager", "inductor"):
                fn = loss if backend == "none" else torch.compile(loss, fullgraph=True,
                                                                   backend=backend)
                print(f"{name} compiled with backend {backend}: {phase_times(fn, args.calls)}, "
                      f"step {timer(device, args.calls, 3)(lambda: fn().backward())} ms")
            # (the last one, inductor: torch.compile's default)
            print(python_profile(lambda: fn().backward(), args.calls))


def kernel_table(step, calls, rows=30):
    """The GPU time of each kernel (and copy or fill) of ``step()``, mean µs per step over
    ``calls`` steps, with its launches per step, largest first, as a string."""
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            step()
        torch.cuda.synchronize()
    found = sorted(((e.device_time_total / calls, e.count / calls, e.key)
                    for e in prof.key_averages() if e.device_time_total > 0), reverse=True)
    lines = [f"GPU µs per step (mean of {calls}), launches per step, kernel:"]
    lines += [f"{t:10.1f} {c:5.1f}  {k[:100]}" for t, c, k in found[:rows]]
    return "\n".join(lines)


def _autograd_functions():
    """diffrast's ``torch.autograd.Function`` subclasses (those of its modules)."""
    found, todo = [], [torch.autograd.Function]
    while todo:
        for cls in todo.pop().__subclasses__():
            todo.append(cls)
            if cls.__module__.startswith("diffrast.") and "forward" in vars(cls):
                found.append(cls)
    return found


@contextlib.contextmanager
def function_times():
    """Within the block, every call of a diffrast autograd Function's ``forward`` and ``backward``
    appends its host time (s) to ``times["<Function>.<forward|backward>"]`` (the dict yielded);
    the originals are restored after it."""
    times = {}
    saved = []
    for cls in _autograd_functions():
        for method in ("forward", "backward"):
            original = vars(cls)[method]
            fn = original.__func__ if isinstance(original, staticmethod) else original

            def timed(*args, _fn=fn, _key=f"{cls.__name__}.{method}"):
                t0 = time.perf_counter()
                out = _fn(*args)
                times.setdefault(_key, []).append(time.perf_counter() - t0)
                return out
            saved.append((cls, method, original))
            setattr(cls, method, staticmethod(timed))
    try:
        yield times
    finally:
        for cls, method, original in saved:
            setattr(cls, method, original)


def phase_times(loss_fn, calls):
    """Median host time (ms) of ``loss_fn()`` (the forward) and of the loss's ``backward()``, the
    GPU idle at each start, as a string."""
    for _ in range(5):
        loss_fn().backward()
    fwd, bwd = [], []
    for _ in range(calls):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss = loss_fn()
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        fwd.append((t1 - t0) * 1e3)
        bwd.append((t2 - t1) * 1e3)
    torch.cuda.synchronize()
    return (f"forward host {statistics.median(fwd):.3f} ms, backward host "
            f"{statistics.median(bwd):.3f} ms")


if __name__ == "__main__":
    main()
