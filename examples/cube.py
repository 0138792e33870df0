"""Fit a cube's vertex positions and colours to target images from random views.

The nvdiffrast "cube" task: the target is a coloured cube; the model starts from the same
topology with its vertices displaced and its colours random, and learns both from antialiased
renders alone — silhouettes are differentiable through `antialias`. Prints the image error and
the vertex error before and after, writes target/initial/final images to --outdir.

    python examples/cube.py --outdir out/cube
"""
from __future__ import annotations

import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import diffrast as dr  # noqa: E402
from diffrast import geometry  # noqa: E402
from common import base_parser, open_viewer, pick_device, save_png, show, show_final  # noqa: E402


def random_rotation(gen):
    """A uniformly random rotation matrix [4, 4] (from a random unit quaternion)."""
    q = torch.randn(4, generator=gen, dtype=torch.float64)
    w, x, y, z = (q / q.norm()).tolist()
    m = torch.eye(4)
    m[:3, :3] = torch.tensor([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                              [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                              [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
    return m


def render(glctx, mvp, pos, col, tri, resolution):
    """Antialiased render of a vertex-coloured mesh: [B, H, W, 3]."""
    clip = geometry.transform(pos, mvp)
    rast, _ = dr.rasterize(glctx, clip, tri, resolution)
    color, _ = dr.interpolate(col, rast, tri)
    color = torch.where(rast[..., 3:] > 0, color, torch.zeros_like(color))
    return dr.antialias(color, rast, clip, tri)


def main(argv=None):
    p = base_parser(__doc__.splitlines()[0], resolution=64, iterations=600)
    p.add_argument("--batch", type=int, default=4, help="views per iteration")
    p.add_argument("--lr", type=float, default=2e-2, help="Adam learning rate")
    args = p.parse_args(argv)
    device = pick_device(args.device)
    gen = torch.Generator().manual_seed(args.seed)
    glctx = dr.RasterizeGLContext(device=device)
    res = (args.resolution, args.resolution)

    pos_target, tri = geometry.cube()
    pos_target = pos_target * 0.5
    col_target = torch.rand(8, 3, generator=gen)
    pos_opt = (pos_target + (torch.rand(8, 3, generator=gen) - 0.5) * 0.4).to(device).requires_grad_(True)
    col_opt = torch.rand(8, 3, generator=gen).to(device).requires_grad_(True)
    pos_target, col_target, tri = pos_target.to(device), col_target.to(device), tri.to(device)
    proj = geometry.perspective(40.0) @ geometry.translate(0, 0, -3.0)

    def views(n):
        return torch.stack([proj @ random_rotation(gen) for _ in range(n)]).to(device)

    def vertex_error():
        return (pos_opt.detach() - pos_target).norm(dim=-1).mean().item()

    eval_mvp = views(8)
    with torch.no_grad():
        target_eval = render(glctx, eval_mvp, pos_target, col_target, tri, res)

    def image_error():
        with torch.no_grad():
            return ((render(glctx, eval_mvp, pos_opt, col_opt, tri, res) - target_eval) ** 2).mean().item()

    os.makedirs(args.outdir, exist_ok=True)
    save_png(os.path.join(args.outdir, "target.png"), target_eval[0])
    with torch.no_grad():
        save_png(os.path.join(args.outdir, "initial.png"), render(glctx, eval_mvp, pos_opt, col_opt, tri, res)[0])
    img0, vtx0 = image_error(), vertex_error()

    opt = torch.optim.Adam([pos_opt, col_opt], lr=args.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.1 ** (i / max(args.iterations, 1)))
    try:
        from tqdm import trange
    except ImportError:  # tqdm is optional
        trange = range
    win = open_viewer(args.display, "cube")
    t0 = time.perf_counter()
    bar = trange(args.iterations)
    for it in bar:
        mvp = views(args.batch)
        with torch.no_grad():
            target = render(glctx, mvp, pos_target, col_target, tri, res)
        loss = ((render(glctx, mvp, pos_opt, col_opt, tri, res) - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if hasattr(bar, "set_postfix") and it % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.2e}")
        if win is not None and it % 10 == 0:  # --display: target | current fit, first eval view
            with torch.no_grad():
                cur = render(glctx, eval_mvp[:1], pos_opt, col_opt, tri, res)[0]
            win = show(win, torch.cat([target_eval[0], cur], 1), f"cube: iteration {it}")
    elapsed = time.perf_counter() - t0

    with torch.no_grad():
        final = render(glctx, eval_mvp, pos_opt, col_opt, tri, res)
    save_png(os.path.join(args.outdir, "final.png"), final[0])
    img1, vtx1 = image_error(), vertex_error()
    print(f"images written to {os.path.abspath(args.outdir)}")
    print(f"{args.iterations} iterations in {elapsed:.1f} s on {device}")
    print(f"image error {img0:.3e} -> {img1:.3e}; vertex error {vtx0:.4f} -> {vtx1:.4f}")
    show_final(win, torch.cat([target_eval[0], final[0]], 1), "target | result", args.hold)
    return img0, img1, vtx0, vtx1


if __name__ == "__main__":
    main()
