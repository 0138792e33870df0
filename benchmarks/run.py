"""Performance scenarios of DESIGN.md: prints one JSON line per scenario.

A UV sphere of 2 * rows * cols triangles, rotated per batch item and perspective-projected, a
random RGB float32 texture, UVs from the sphere. Times are medians in milliseconds (CUDA events
on the GPU, wall clock on the CPU) after warm-up; peak GPU memory in MiB. With the CUDA
context, ``train_step_graph`` is the training step captured once in a CUDA graph and replayed;
with ``--compile``, ``train_step_compiled`` is the step under ``torch.compile(fullgraph=True)``
and ``train_step_compiled_cudagraphs`` the same with ``mode="reduce-overhead"`` (CUDA context).

The scale scenarios (issue 16) time one call chain at sizes where memory and many small images
matter: ``rasterize``, ``interpolate`` of a per-vertex colour and ``antialias`` without a
prebuilt topology hash, forward and backward (a ``.sum()`` loss), and its peak memory
(``scale_fwd_bwd``, ``scale_peak_mem_mb``).

    python benchmarks/run.py                       # the step scenarios on CUDA, both rasterizers
    python benchmarks/run.py --device cpu --scenarios small_1x512 --reps 3
    python benchmarks/run.py --scenarios small_1x512 --compile
    python benchmarks/run.py --scenarios scale     # the scale scenarios
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import torch

import diffrast as dr
from diffrast import geometry

SCENARIOS = {
    "small_1x512": dict(rows=16, cols=32, batch=1, res=512, tex=512),
    "mid_4x1024": dict(rows=128, cols=256, batch=4, res=1024, tex=2048),
    "big_8x1024_1M": dict(rows=500, cols=1000, batch=8, res=1024, tex=2048),
}
#: The scale rows of issue 16: 10M triangles at 8 x 1024^2, 1M at 1 and 4 x 4096^2, 1,024
#: triangles at 64 x 512^2 (a multi-view batch).
SCALE_SCENARIOS = {
    "scale_10M_8x1024": dict(rows=2237, cols=2237, batch=8, res=1024, tex=1),
    "scale_1M_1x4096": dict(rows=500, cols=1000, batch=1, res=4096, tex=1),
    "scale_1M_4x4096": dict(rows=500, cols=1000, batch=4, res=4096, tex=1),
    "scale_1k_64x512": dict(rows=16, cols=32, batch=64, res=512, tex=1),
}


def timer(device, reps, warmup):
    def measure(fn):
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(reps):
            if device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
        return round(statistics.median(times), 3)
    return measure


def scene(cfg, device, gen):
    pos, tri, uv = geometry.uv_sphere(cfg["rows"], cfg["cols"])
    proj = geometry.perspective(45.0) @ geometry.translate(0, 0, -3.0)
    mvp = torch.stack([proj @ geometry.rotate_y(2 * math.pi * b / cfg["batch"]) @ geometry.rotate_x(0.3)
                       for b in range(cfg["batch"])])
    clip = geometry.transform(pos, mvp).contiguous()
    tex = torch.rand(1, cfg["tex"], cfg["tex"], 3, generator=gen)
    return clip.to(device), tri.to(device), uv.to(device), tex.to(device)


def capture(step, warmup=3):
    """``step`` captured in a CUDA graph, after ``warmup`` eager runs on a side stream."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph


def run_scenario(name, cfg, device, glctx, reps, warmup, context_name, compile_step=False):
    gen = torch.Generator().manual_seed(0)
    clip, tri, uv, tex = scene(cfg, device, gen)
    res = (cfg["res"], cfg["res"])
    measure = timer(device, reps, warmup)
    out = {"scenario": name, "context": context_name, "device": str(torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"),
           "triangles": tri.shape[0]}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    pos_g = clip.clone().requires_grad_(True)
    out["rasterize_fwd"] = measure(lambda: dr.rasterize(glctx, clip, tri, res))

    def rast_fwd_bwd():
        rast, db = dr.rasterize(glctx, pos_g, tri, res)
        (rast[..., :2].sum() + db.sum()).backward()
    out["rasterize_fwd_bwd"] = measure(rast_fwd_bwd)

    rast, rast_db = dr.rasterize(glctx, clip, tri, res)
    uv_g = uv.clone().requires_grad_(True)
    out["interpolate_da_fwd"] = measure(lambda: dr.interpolate(uv, rast, tri, rast_db=rast_db, diff_attrs="all"))

    def interp_fwd_bwd():
        a, da = dr.interpolate(uv_g, rast, tri, rast_db=rast_db, diff_attrs="all")
        (a.sum() + da.sum()).backward()
    out["interpolate_da_fwd_bwd"] = measure(interp_fwd_bwd)

    texc, texd = dr.interpolate(uv, rast, tri, rast_db=rast_db, diff_attrs="all")
    tex_g = tex.clone().requires_grad_(True)
    texc_g = texc.clone().requires_grad_(True)

    def tex_linear():
        dr.texture(tex_g, texc_g, filter_mode="linear").sum().backward()
    out["texture_linear_fwd_bwd"] = measure(tex_linear)
    out["texture_mip_fwd"] = measure(lambda: dr.texture(tex, texc, texd, filter_mode="linear-mipmap-linear"))
    stack = dr.texture_construct_mip(tex)  # a constant texture's levels, built once
    out["texture_mip_prebuilt_fwd"] = measure(
        lambda: dr.texture(tex, texc, texd, mip=stack, filter_mode="linear-mipmap-linear"))

    def tex_mip():
        dr.texture(tex_g, texc_g, texd, filter_mode="linear-mipmap-linear").sum().backward()
    out["texture_mip_fwd_bwd"] = measure(tex_mip)

    color = dr.texture(tex, texc, texd, filter_mode="linear-mipmap-linear")
    topo = dr.antialias_construct_topology_hash(tri)
    color_g = color.clone().requires_grad_(True)
    out["antialias_fwd"] = measure(lambda: dr.antialias(color, rast, clip, tri, topology_hash=topo))
    out["topology_hash"] = measure(lambda: dr.antialias_construct_topology_hash(tri))
    out["antialias_fwd_nohash"] = measure(lambda: dr.antialias(color, rast, clip, tri))

    def aa_fwd_bwd():
        dr.antialias(color_g, rast, pos_g, tri, topology_hash=topo).sum().backward()
    out["antialias_fwd_bwd"] = measure(aa_fwd_bwd)

    target = color.detach() * 0.5

    def train_loss():
        r, db = dr.rasterize(glctx, pos_g, tri, res)
        t, td = dr.interpolate(uv_g, r, tri, rast_db=db, diff_attrs="all")
        c = dr.texture(tex_g, t, td, filter_mode="linear-mipmap-linear")
        c = torch.where(r[..., 3:] > 0, c, torch.zeros_like(c))
        c = dr.antialias(c, r, pos_g, tri, topology_hash=topo)
        return ((c - target) ** 2).mean()

    def train_step():
        train_loss().backward()
    out["train_step"] = measure(train_step)
    leaves = (pos_g, uv_g, tex_g)

    def step_zeroed(step):
        def run():
            for t in leaves:  # in place: a captured graph keeps the gradient buffers
                if t.grad is not None:
                    t.grad.zero_()
            step()
        return run
    if context_name == "cuda":
        graph = capture(step_zeroed(train_step))
        out["train_step_graph"] = measure(graph.replay)
        del graph
    if compile_step:  # (after the capture: inductor's graphs keep state of their own)
        compiled = torch.compile(train_loss, fullgraph=True)  # (timed as the eager step is)
        out["train_step_compiled"] = measure(lambda: compiled().backward())
        if context_name == "cuda":  # inductor's own CUDA graphs (GL work cannot be captured)
            torch._dynamo.reset()
            graphed = torch.compile(train_loss, fullgraph=True, mode="reduce-overhead")
            out["train_step_compiled_cudagraphs"] = measure(
                step_zeroed(lambda: graphed().backward()))
    if device.type == "cuda":
        out["peak_mem_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20)
    return out


def scale_chain(cfg, device, glctx):
    """``(chain, tri)``: ``chain()`` runs rasterize + interpolate of a per-vertex colour +
    antialias (no topology hash), forward and backward (a ``.sum()`` loss), on the mesh and
    views of the scale scenario ``cfg``."""
    gen = torch.Generator().manual_seed(0)
    clip, tri, _, _ = scene(cfg, device, gen)
    res = (cfg["res"], cfg["res"])
    pos_g = clip.clone().requires_grad_(True)
    colour = torch.rand(clip.shape[-2], 3, generator=gen).to(device).requires_grad_(True)

    def chain():
        rast, _ = dr.rasterize(glctx, pos_g, tri, res, grad_db=False)
        c, _ = dr.interpolate(colour, rast, tri)
        dr.antialias(c, rast, pos_g, tri).sum().backward()
    return chain, tri


def run_scale_scenario(name, cfg, device, glctx, reps, warmup, context_name):
    """Time and peak memory of :func:`scale_chain` on one scale scenario."""
    chain, tri = scale_chain(cfg, device, glctx)
    out = {"scenario": name, "context": context_name,
           "device": str(torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"),
           "triangles": tri.shape[0], "images": cfg["batch"], "res": cfg["res"]}
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    out["scale_fwd_bwd"] = timer(device, reps, warmup)(chain)
    if device.type == "cuda":
        out["scale_peak_mem_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20)
    return out


def disable_size_asserts():
    """Compile without inductor's checks of each custom op output's sizes and strides
    (``torch._inductor.config.size_asserts = False``; see the README's torch.compile notes)."""
    import torch._inductor.config
    torch._inductor.config.size_asserts = False


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--scenarios", nargs="*", default=list(SCENARIOS),
                   help=f"names of {list(SCENARIOS) + list(SCALE_SCENARIOS)}, or 'scale' for "
                        f"all the scale ones")
    p.add_argument("--contexts", nargs="*", default=["gl", "cuda"],
                   help="rasterizers: gl (RasterizeGLContext), cuda (RasterizeCudaContext; GPU only)")
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--compile", action="store_true",
                   help="also time the training step compiled with torch.compile(fullgraph=True)")
    p.add_argument("--no-size-asserts", action="store_true",
                   help="with --compile: torch._inductor.config.size_asserts = False")
    args = p.parse_args()
    if args.no_size_asserts:
        disable_size_asserts()
    device = torch.device(args.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    contexts = {"gl": lambda: dr.RasterizeGLContext(device=device),
                "cuda": lambda: dr.RasterizeCudaContext(device=device)}
    names = [n for a in args.scenarios for n in (SCALE_SCENARIOS if a == "scale" else [a])]
    unknown = [n for n in names if n not in SCENARIOS and n not in SCALE_SCENARIOS]
    if unknown:
        p.error(f"unknown scenarios {unknown}")
    for ctx_name in args.contexts if device.type == "cuda" else ["gl"]:
        glctx = contexts[ctx_name]()
        for name in names:
            if name in SCALE_SCENARIOS:
                row = run_scale_scenario(name, SCALE_SCENARIOS[name], device, glctx, args.reps,
                                         args.warmup, ctx_name)
            else:
                row = run_scenario(name, SCENARIOS[name], device, glctx, args.reps, args.warmup,
                                   ctx_name, args.compile)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
