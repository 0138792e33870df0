"""Long fuzz run: the properties of tests/test_fuzz.py for many examples, with a JSON summary.

Run it as a module from the repository root (it imports the tests' strategies as
``tests.helpers``):

    python -m benchmarks.fuzz_long --examples 10000 --device cpu
    python -m benchmarks.fuzz_long --examples 10000 --device cuda          # both rasterizers
    python -m benchmarks.fuzz_long --examples 10000 --device cuda --max-seconds 90
    python -m benchmarks.fuzz_long --examples 2000 --properties rasterize,texture --seed 3
    python -m benchmarks.fuzz_long --examples 2000 --device emulated      # kernels on the CPU
    python -m benchmarks.fuzz_long --examples 2000 --device emulated --reverse

The strategies and properties are those of ``tests/helpers/fuzz_strategies.py``. The examples are split
evenly over the properties (on CUDA, the properties that rasterize are split again between
``RasterizeGLContext(device='cuda')`` and ``RasterizeCudaContext``). ``--device emulated`` runs
the CUDA kernels of interpolate, texture, antialias and the rasterize backward on the CPU through
the tests' kernel emulators and compares them with the reference (needs g++); with ``--reverse``
the emulator runs every kernel's blocks, warps and lanes in the reverse order (another order of
the atomics, and of the warps between a block's barriers, than its usual one). Unlike the tests, a
failing example does not stop the run: failures are counted, the first few are reported with the
case that caused them (``repr`` of the drawn case: every case rebuilds its tensors from its
fields), and the run goes on. No shrinking. A call that hangs for ``--hang-seconds`` aborts the
process with the Python traceback of every thread (faulthandler), which counts as a failure of
the run. ``--max-seconds`` bounds the run (each property gets an equal share of the time left and
stops when it is spent); SIGTERM (e.g. from ``timeout``) ends it after the current example. Either
way the summary reports the examples actually run (``stopped_early``, ``interrupted``).

Prints one JSON object: ``{"examples", "failures", "seconds", "device", "properties": {name:
{"examples", "failures", "seconds"}}, "failure_samples": [...]}``; the exit status is 1 when
there were failures.
"""
from __future__ import annotations

import argparse
import collections
import faulthandler
import json
import os
import signal
import sys
import time
import traceback

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

import torch  # noqa: E402
from hypothesis import HealthCheck, Phase, Verbosity, given, settings  # noqa: E402
from hypothesis import seed as hypothesis_seed  # noqa: E402

from tests.helpers import fuzz_strategies as fs  # noqa: E402

# Properties that use the rasterizer context of the environment (run with both on CUDA).
RASTER_PROPERTIES = ("rasterize", "depth_peeler", "pipeline", "invalid")


class _Stop(Exception):
    """Raised instead of running an example once the time is up: hypothesis then stops drawing
    (it takes this for a failure; with shrinking off it reruns that example once, which raises
    again)."""


_STOPPING = [False]


def _on_sigterm(signum, frame):  # `timeout` sends SIGTERM: finish the example, print a summary
    _STOPPING[0] = True


def run_property(name, env, examples, seed, hang_seconds, samples, max_samples, deadline):
    strategy, prop = fs.PROPERTIES[name]
    stats = collections.Counter()
    messages = collections.Counter()

    @hypothesis_seed(seed)
    @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), derandomize=False,
              verbosity=Verbosity.quiet)
    @given(case=strategy)
    def check(case):
        if _STOPPING[0] or time.perf_counter() > deadline:
            raise _Stop()
        stats["examples"] += 1
        faulthandler.dump_traceback_later(hang_seconds, exit=True)
        try:
            prop(env, case)
        except Exception as exc:  # noqa: BLE001 - every failure is counted, the run goes on
            stats["failures"] += 1
            msg = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            messages[msg] += 1
            if messages[msg] == 1 and len(samples) < max_samples:
                samples.append(dict(property=name, context=env.raster_kind, device=str(env.device),
                                    error=msg, case=repr(case)[:2000],
                                    traceback=traceback.format_exc()[-3000:]))
        finally:
            faulthandler.cancel_dump_traceback_later()

    start = time.perf_counter()
    try:
        check()
    except _Stop:
        stats["stopped"] = 1
    return dict(examples=stats["examples"], failures=stats["failures"],
                seconds=round(time.perf_counter() - start, 2),
                distinct_errors=len(messages), stopped_early=bool(stats["stopped"]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--examples", type=int, default=10000, help="examples in total (default 10000)")
    ap.add_argument("--device", choices=("cpu", "cuda", "emulated"), default="cpu")
    ap.add_argument("--kind", choices=("gl", "cudarast", "both"), default="both",
                    help="rasterizer(s) on CUDA (default both); the CPU has only 'gl' (Mesa)")
    ap.add_argument("--properties", default=",".join(fs.PROPERTIES),
                    help="comma-separated subset of: " + ", ".join(fs.PROPERTIES))
    ap.add_argument("--seed", type=int, default=0, help="hypothesis seed (runs repeat)")
    ap.add_argument("--hang-seconds", type=float, default=300.0,
                    help="abort with tracebacks if one example takes longer")
    ap.add_argument("--max-samples", type=int, default=10, help="failure samples reported")
    ap.add_argument("--reverse", action="store_true",
                    help="--device emulated: run every kernel's blocks, warps and lanes in the "
                         "reverse order")
    ap.add_argument("--max-seconds", type=float, default=None,
                    help="time budget: each property gets its share and stops when it is spent "
                         "(the summary reports the examples actually run)")
    args = ap.parse_args(argv)

    names = [n.strip() for n in args.properties.split(",") if n.strip()]
    unknown = [n for n in names if n not in fs.PROPERTIES]
    if unknown:
        ap.error(f"unknown properties {unknown}; choose from {list(fs.PROPERTIES)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: CUDA is not available")
    if args.reverse:
        if args.device != "emulated":
            ap.error("--reverse: only with --device emulated (the emulator's order of warps)")
        from diffrast.cuda_ops import kernels
        from tests.helpers import kernel_emulator
        kernel_emulator.reversed_kernels = frozenset(kernels.BY_NAME)
    if args.device != "cuda":
        kinds = ["gl"]
    else:
        kinds = ["gl", "cudarast"] if args.kind == "both" else [args.kind]
    envs = {k: fs.Env(args.device, k) for k in kinds}

    # Split the examples: evenly over the properties, then over the contexts where it matters.
    runs = []
    per_property = max(1, args.examples // len(names))
    for i, name in enumerate(names):
        n = per_property + (1 if i < args.examples - per_property * len(names) else 0)
        ks = kinds if name in RASTER_PROPERTIES else kinds[:1]
        for j, k in enumerate(ks):
            runs.append((name, k, n // len(ks) + (1 if j < n % len(ks) else 0)))

    samples = []
    results = {}
    signal.signal(signal.SIGTERM, _on_sigterm)
    start = time.perf_counter()
    runs = [r for r in runs if r[2] > 0]
    for i, (name, kind, n) in enumerate(runs):
        key = name if len(kinds) == 1 else f"{name}[{kind}]"
        if args.max_seconds is None:
            deadline = float("inf")
        else:  # an equal share of what is left
            left = args.max_seconds - (time.perf_counter() - start)
            deadline = time.perf_counter() + max(left, 0.0) / (len(runs) - i)
        results[key] = run_property(name, envs[kind], n, args.seed, args.hang_seconds, samples,
                                    args.max_samples, deadline)
        print(f"# {key}: {json.dumps(results[key])}", file=sys.stderr, flush=True)
        if _STOPPING[0]:
            break
    summary = dict(
        examples=sum(r["examples"] for r in results.values()),
        failures=sum(r["failures"] for r in results.values()),
        seconds=round(time.perf_counter() - start, 1),
        stopped_early=any(r["stopped_early"] for r in results.values()),
        interrupted=_STOPPING[0],
        device=args.device,
        device_name=torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        contexts=kinds,
        seed=args.seed,
        reverse=args.reverse,
        properties=results,
        failure_samples=samples,
    )
    print(json.dumps(summary, indent=1))
    for env in envs.values():
        env.release()
    return 1 if summary["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
