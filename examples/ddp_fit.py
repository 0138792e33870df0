"""Fit the cube (see cube.py) with DistributedDataParallel: each process renders its share of views.

Launch one process per GPU with torchrun; each builds its own rasterizer context on its own
device, renders views[rank::world_size] of every iteration's batch, and DDP all-reduces the
gradients. Run without torchrun it is a single process rendering all views, and gives the same
parameters to float tolerance (the views of each step are drawn from one seeded generator that
every process shares). Process 0 shows the progress bar, writes target/initial/final images of
one view to --outdir, shows the fit with --display, and prints the final line of metrics (JSON).

    torchrun --nproc-per-node 2 examples/ddp_fit.py --backend nccl --device cuda
    torchrun --nproc-per-node 2 examples/ddp_fit.py --backend gloo --device cpu   # CPU, CI
    python examples/ddp_fit.py --device cpu                                       # one process
"""
from __future__ import annotations

import json
import os
import sys
import time

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import diffrast as dr  # noqa: E402
from diffrast import geometry  # noqa: E402
from common import base_parser, open_viewer, save_png, show, show_final  # noqa: E402
from cube import random_rotation, render  # noqa: E402


class CubeModel(torch.nn.Module):
    """Vertex positions and colours of a cube, rendered with antialiasing."""

    def __init__(self, pos, col, tri, glctx, resolution):
        super().__init__()
        self.pos = torch.nn.Parameter(pos)
        self.col = torch.nn.Parameter(col)
        self.register_buffer("tri", tri)
        self.glctx, self.resolution = glctx, resolution

    def forward(self, mvp):
        return render(self.glctx, mvp, self.pos, self.col, self.tri, self.resolution)


def main(argv=None):
    p = base_parser(__doc__.splitlines()[0], resolution=64, iterations=100)
    p.add_argument("--views", type=int, default=8,
                   help="views per iteration, split over the processes (default: %(default)s)")
    p.add_argument("--backend", default=None,
                   help="torch.distributed backend (nccl, gloo; default: nccl on cuda, else gloo)")
    p.add_argument("--context", choices=["gl", "cuda"], default="gl",
                   help="rasterizer (cuda: RasterizeCudaContext; default: gl)")
    p.add_argument("--result", default=None, help="save the final parameters (torch.save) here")
    args = p.parse_args(argv)

    distributed = "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = (args.device or ("cuda" if torch.cuda.is_available() else "cpu")) == "cuda"
    device = torch.device("cuda", local_rank % torch.cuda.device_count()) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if distributed:
        dist.init_process_group(args.backend or ("nccl" if use_cuda else "gloo"))
    if args.views % world:
        raise SystemExit(f"--views ({args.views}) must be divisible by the number of processes ({world})")

    glctx = dr.RasterizeCudaContext(device=device) if args.context == "cuda" else dr.RasterizeGLContext(device=device)
    gen = torch.Generator().manual_seed(args.seed)
    pos_target, tri = geometry.cube()
    pos_target = pos_target * 0.5
    col_target = torch.rand(8, 3, generator=gen)
    pos_init = pos_target + (torch.rand(8, 3, generator=gen) - 0.5) * 0.4
    col_init = torch.rand(8, 3, generator=gen)
    res = (args.resolution, args.resolution)
    model = CubeModel(pos_init.to(device), col_init.to(device), tri.to(device), glctx, res)
    if distributed:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if use_cuda else None)
    pos_target, col_target, tri = pos_target.to(device), col_target.to(device), tri.to(device)
    proj = geometry.perspective(40.0) @ geometry.translate(0, 0, -3.0)
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    core = model.module if distributed else model

    # Process 0's view for images and the window: its own generator, so that the views of the
    # training steps stay the same on every process.
    eval_mvp = torch.stack([proj @ random_rotation(torch.Generator().manual_seed(args.seed + 1))])
    eval_mvp = eval_mvp.to(device)

    def snapshot(pos, col):
        with torch.no_grad():
            return render(glctx, eval_mvp, pos, col, tri, res)[0]

    win, bar = None, range(args.iterations)
    if rank == 0:
        target_img = snapshot(pos_target, col_target)
        save_png(os.path.join(args.outdir, "target.png"), target_img)
        save_png(os.path.join(args.outdir, "initial.png"), snapshot(core.pos, core.col))
        win = open_viewer(args.display, "ddp_fit")
        try:
            from tqdm import trange
            bar = trange(args.iterations)
        except ImportError:  # tqdm is optional
            pass

    warmup = max(0, min(5, args.iterations - 1))  # not timed: the first calls load the kernels
    t0 = time.perf_counter()
    for it in bar:
        if it == warmup:
            if use_cuda:
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
        mvp_all = torch.stack([proj @ random_rotation(gen) for _ in range(args.views)])  # same on every rank
        mvp = mvp_all[rank::world].to(device)
        with torch.no_grad():
            target = render(glctx, mvp, pos_target, col_target, tri, res)
        loss = ((model(mvp) - target) ** 2).mean()  # DDP averages the ranks' gradients
        opt.zero_grad()
        loss.backward()
        opt.step()
        if hasattr(bar, "set_postfix") and it % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.2e}")
        if win is not None and it % 10 == 0:  # --display: target | current fit
            win = show(win, torch.cat([target_img, snapshot(core.pos, core.col)], 1),
                       f"ddp_fit: iteration {it}")
    if use_cuda:
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - t0

    vertex_error = (core.pos.detach() - pos_target).norm(dim=-1).mean().item()
    if rank == 0:
        final_img = snapshot(core.pos, core.col)
        save_png(os.path.join(args.outdir, "final.png"), final_img)
        print(f"images written to {os.path.abspath(args.outdir)}")
        if args.result:
            torch.save({"pos": core.pos.detach().cpu(), "col": core.col.detach().cpu()}, args.result)
        views_per_s = (args.iterations - warmup) * args.views / elapsed
        print(json.dumps({"processes": world, "device": str(device), "context": args.context,
                          "iterations": args.iterations, "views_per_iteration": args.views,
                          "seconds": round(elapsed, 2), "views_per_s": round(views_per_s, 1),
                          "views_per_s_per_process": round(views_per_s / world, 1),
                          "vertex_error": round(vertex_error, 5)}))
        show_final(win, torch.cat([target_img, final_img], 1), "target | result", args.hold)
    if distributed:
        dist.destroy_process_group()
    return vertex_error


if __name__ == "__main__":
    main()
