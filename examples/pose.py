"""Recover an object's orientation (a quaternion) from a single image.

The object is a cube whose eight corners carry eight different colours (the corner (x, y, z)
has the colour (r, g, b) ~ (x, y, z)), so every orientation looks different. One target image
shows it in a random orientation. The model renders the same cube under a rotation given by a
learnable quaternion and descends the image error; the renders are antialiased, so the
silhouette edges pass gradients to the vertex positions and from there to the quaternion.

Gradient descent on a rotation has local minima (a face that looks almost right after a
quarter turn), so several random starts are optimised at once — one batch, one rasterize call
per step — and the one with the lowest image error wins. Prints the angle between the recovered
and the true orientation, in degrees.

    python examples/pose.py --outdir out/pose
"""
from __future__ import annotations

import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import diffrast as dr  # noqa: E402
from diffrast import geometry  # noqa: E402
from common import base_parser, open_viewer, pick_device, save_png, show, show_final  # noqa: E402

BACKGROUND = 0.1


def render(glctx, proj, q, pos, col, tri, resolution):
    """The cube rotated by the quaternions ``q`` ``[B, 4]``: antialiased ``[B, H, W, 3]``."""
    clip = geometry.transform(pos, proj @ geometry.quaternion_to_matrix(q))
    rast, _ = dr.rasterize(glctx, clip, tri, resolution)
    color, _ = dr.interpolate(col, rast, tri)
    color = torch.where(rast[..., 3:] > 0, color, torch.full_like(color, BACKGROUND))
    return dr.antialias(color, rast, clip, tri)


def main(argv=None):
    p = base_parser(__doc__.splitlines()[0], resolution=96, iterations=150)
    p.add_argument("--restarts", type=int, default=8, help="random starts, optimised as one batch")
    p.add_argument("--lr", type=float, default=5e-2, help="Adam learning rate (decays 10x)")
    args = p.parse_args(argv)
    device = pick_device(args.device)
    res = (args.resolution, args.resolution)
    gen = torch.Generator().manual_seed(args.seed)
    glctx = dr.RasterizeGLContext(device=device)

    pos, tri = geometry.cube(device=device)
    pos = pos * 0.6
    col = 0.15 + 0.7 * (pos / 0.6 + 1) / 2                 # corner (x, y, z) -> colour
    proj = (geometry.perspective(40.0) @ geometry.translate(0, 0, -3.0)).to(device)

    q_true = geometry.random_quaternion(1, gen).to(device)
    with torch.no_grad():
        target = render(glctx, proj, q_true, pos, col, tri, res)          # [1, H, W, 3]
    q_opt = geometry.random_quaternion(args.restarts, gen).to(device).requires_grad_(True)

    def per_start_loss(q):
        return ((render(glctx, proj, q, pos, col, tri, res) - target) ** 2).mean(dim=(1, 2, 3))

    os.makedirs(args.outdir, exist_ok=True)
    with torch.no_grad():
        losses0 = per_start_loss(q_opt)
        angles0 = geometry.quaternion_angle(q_opt, q_true)
        initial = render(glctx, proj, q_opt[losses0.argmin()][None], pos, col, tri, res)[0]
    save_png(os.path.join(args.outdir, "target.png"), target[0])
    save_png(os.path.join(args.outdir, "initial.png"), initial)

    opt = torch.optim.Adam([q_opt], lr=args.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.1 ** (i / max(args.iterations, 1)))
    try:
        from tqdm import trange
    except ImportError:  # tqdm is optional
        trange = range
    win = open_viewer(args.display, "pose")
    t0 = time.perf_counter()
    bar = trange(args.iterations)
    for it in bar:
        losses = per_start_loss(q_opt)
        opt.zero_grad()
        losses.sum().backward()     # the starts are independent: each gets its own gradient
        opt.step()
        sched.step()
        with torch.no_grad():
            q_opt /= q_opt.norm(dim=-1, keepdim=True)
        if hasattr(bar, "set_postfix") and it % 10 == 0:
            bar.set_postfix(best_loss=f"{losses.min().item():.2e}")
        if win is not None and it % 5 == 0:  # --display: the target, then every start, tiled
            with torch.no_grad():
                starts = render(glctx, proj, q_opt.detach(), pos, col, tri, res)
            win = show(win, torch.cat([target, starts]), f"iteration {it}: target, then the starts")
    elapsed = time.perf_counter() - t0

    with torch.no_grad():
        losses1 = per_start_loss(q_opt)
        best = int(losses1.argmin())
        angles1 = geometry.quaternion_angle(q_opt, q_true)
        final = render(glctx, proj, q_opt[best][None], pos, col, tri, res)[0]
    save_png(os.path.join(args.outdir, "final.png"), final)
    angle0 = angles0[losses0.argmin()].item()
    angle1 = angles1[best].item()
    solved = int((angles1 < 2.0).sum())
    print(f"images written to {os.path.abspath(args.outdir)}")
    print(f"{args.iterations} iterations x {args.restarts} starts in {elapsed:.1f} s on {device}, "
          f"{res[0]}x{res[1]} images; {solved} of {args.restarts} starts reached the true pose")
    print(f"best image error {losses0.min().item():.3e} -> {losses1[best].item():.3e}; "
          f"angular error {angle0:.1f} -> {angle1:.3g} degrees")
    show_final(win, torch.cat([target[0], final], 1), "target | best start", args.hold)
    return {"loss0": losses0.min().item(), "loss1": losses1[best].item(),
            "angle0": angle0, "angle1": angle1, "solved": solved}


if __name__ == "__main__":
    main()
