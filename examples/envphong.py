"""Fit an environment map and a Phong exponent to images of a glossy sphere.

A shiny sphere reflects a procedural cube-map environment (sky with a sun and clouds, mountains
on the horizon, a checkered ground): each pixel looks the environment up in the reflected view
direction (`texture` with boundary_mode='cube', seamless across faces), plus a Phong highlight
max(r.l, 0)^n from a point light whose direction l changes from view to view. Since the light
moves, the highlight cannot be baked into the environment and the exponent n is identifiable.

The model starts from a flat grey cube map and n = 4 and learns both from target images from
random camera orbits. Prints the image error, the environment error and the
exponent before and after; writes the target, initial and final views and the environment maps
(true above learned, as latitude-longitude panoramas) to --outdir.

    python examples/envphong.py --outdir out/envphong
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

# Face bases of the cube map in OpenGL's order +x, -x, +y, -y, +z, -z: outward normal N and the
# axes S (texel columns) and T (texel rows), as in OpenGL's face selection table.
FACE_N = ((1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1))
FACE_S = ((0, 0, -1), (0, 0, 1), (1, 0, 0), (1, 0, 0), (1, 0, 0), (-1, 0, 0))
FACE_T = ((0, -1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1), (0, -1, 0), (0, -1, 0))

REFLECTIVITY = 0.8   # environment reflection weight
HIGHLIGHT = 0.7      # Phong highlight weight
DIST = 3.0           # camera distance (sphere radius 1)


def cube_directions(size, device):
    """Unit directions ``[6, size, size, 3]`` through the texel centres of a cube map."""
    c = (torch.arange(size, device=device, dtype=torch.float32) + 0.5) / size * 2 - 1
    tc, sc = torch.meshgrid(c, c, indexing="ij")   # rows follow T, columns follow S
    n, s, t = (torch.tensor(x, dtype=torch.float32, device=device) for x in (FACE_N, FACE_S, FACE_T))
    d = n[:, None, None] + sc[None, ..., None] * s[:, None, None] + tc[None, ..., None] * t[:, None, None]
    return d / d.norm(dim=-1, keepdim=True)


def environment(d):
    """Procedural environment radiance in [0, 1] for unit directions ``d`` ``[..., 3]`` (y up)."""
    x, y, z = d.unbind(-1)
    elev = torch.asin(y.clamp(-1, 1))
    azim = torch.atan2(z, x)

    def c(r, g, b):
        return torch.tensor([r, g, b], device=d.device)

    up = y.clamp(min=0)[..., None]
    sky = c(0.78, 0.84, 0.93) * (1 - up.sqrt()) + c(0.16, 0.36, 0.80) * up.sqrt()
    cloud = (torch.sin(9 * x + 2 * z + 1.0) * torch.sin(7 * z - 3 * y + 0.5)
             + 0.6 * torch.sin(17 * x - 11 * z + 2.0) * torch.sin(13 * y + 5 * x))
    cloud = ((cloud - 0.25) * 3).clamp(0, 1) * (y * 4).clamp(0, 1)
    sky = sky * (1 - cloud[..., None]) + c(0.97, 0.97, 0.97) * cloud[..., None]
    sun_dir = torch.tensor([0.55, 0.55, -0.63], device=d.device)
    sun_dir = sun_dir / sun_dir.norm()
    cos_sun = (d * sun_dir).sum(-1)
    sun = ((cos_sun - 0.995) * 1000).clamp(0, 1)[..., None]           # a disk of ~6 degrees
    glow = 0.5 * torch.exp((cos_sun - 1) * 30)[..., None]
    sky = sky * (1 - glow) + c(1.0, 0.85, 0.55) * glow
    sky = sky * (1 - sun) + c(1.0, 1.0, 0.9) * sun
    ridge = 0.10 + 0.05 * torch.sin(3 * azim + 1.0) + 0.035 * torch.sin(8 * azim + 2.0) \
        + 0.015 * torch.sin(21 * azim)
    mountain = ((ridge - elev) * 60).clamp(0, 1)[..., None]
    rock = c(0.33, 0.35, 0.40) * (0.7 + 0.3 * torch.sin(40 * azim + 30 * elev)[..., None] ** 2)
    sky = sky * (1 - mountain) + rock * mountain
    # The ground: a checkerboard on the plane y = -1, hazier toward the horizon.
    gx, gz = x / (-y).clamp(min=1e-3), z / (-y).clamp(min=1e-3)
    check = ((torch.floor(gx * 1.5) + torch.floor(gz * 1.5)) % 2)[..., None]
    ground = c(0.42, 0.30, 0.17) * check + c(0.20, 0.38, 0.14) * (1 - check)
    haze = torch.exp(-(-y).clamp(min=0) * 5)[..., None]
    ground = ground * (1 - haze) + c(0.60, 0.62, 0.60) * haze
    return torch.where((y >= 0)[..., None], sky, ground).clamp(0, 1)


def panorama(env, height):
    """Look the cube map up over a latitude-longitude grid: ``[height, 2 * height, 3]`` (row 0
    looks straight down), for pictures of the environment."""
    dev = env.device
    elev = ((torch.arange(height, device=dev) + 0.5) / height - 0.5) * math.pi
    azim = ((torch.arange(2 * height, device=dev) + 0.5) / (2 * height)) * 2 * math.pi
    e, a = torch.meshgrid(elev, azim, indexing="ij")
    d = torch.stack([torch.cos(e) * torch.cos(a), torch.sin(e), torch.cos(e) * torch.sin(a)], -1)
    return dr.texture(env.detach(), d[None].contiguous(), filter_mode="linear", boundary_mode="cube")[0]


def render(glctx, view, light, pos, tri, env, log_exponent, resolution):
    """The glossy sphere from the cameras ``view`` ``[B, 4, 4]`` (world to camera) lit by
    ``light`` ``[B, 3]``: [B, H, W, 3], black background."""
    proj = geometry.perspective(40.0, near=0.5, far=20.0).to(pos.device)
    clip = geometry.transform(pos, proj @ view)
    rast, _ = dr.rasterize(glctx, clip, tri, resolution)
    p, _ = dr.interpolate(pos, rast, tri)                       # world position on the sphere
    normal = p / p.norm(dim=-1, keepdim=True).clamp(min=1e-8)
    rot = view[:, :3, :3]
    eye = -(rot.transpose(1, 2) @ view[:, :3, 3:])[..., 0]        # camera centre in world space
    v = p - eye[:, None, None]
    v = v / v.norm(dim=-1, keepdim=True).clamp(min=1e-8)
    r = v - 2 * (v * normal).sum(-1, keepdim=True) * normal     # reflected view direction
    refl = dr.texture(env, r.contiguous(), filter_mode="linear", boundary_mode="cube")
    rl = (r * light[:, None, None]).sum(-1, keepdim=True).clamp(min=0)
    spec = rl ** torch.exp(log_exponent)
    color = REFLECTIVITY * refl + HIGHLIGHT * spec
    # No antialias: the geometry is fixed, so silhouettes carry no information to learn here.
    return torch.where(rast[..., 3:] > 0, color, torch.zeros_like(color))


def random_cameras(n, gen, device):
    """``n`` world-to-camera matrices orbiting the origin at DIST and ``n`` unit light directions."""
    q = geometry.random_quaternion(n, gen)
    view = geometry.translate(0, 0, -DIST) @ geometry.quaternion_to_matrix(q)
    light = torch.randn(n, 3, generator=gen)
    light = light / light.norm(dim=-1, keepdim=True)
    return view.to(device), light.to(device)


def main(argv=None):
    p = base_parser(__doc__.splitlines()[0], resolution=128, iterations=300)
    p.add_argument("--env-size", type=int, default=None,
                   help="cube map face size (default: 256 on cuda, 48 on cpu)")
    p.add_argument("--exponent", type=float, default=40.0, help="true Phong exponent")
    p.add_argument("--batch", type=int, default=4, help="views per iteration")
    p.add_argument("--lr", type=float, default=3e-2, help="Adam learning rate (decays 10x)")
    args = p.parse_args(argv)
    device = pick_device(args.device)
    res = (args.resolution, args.resolution)
    esize = args.env_size or (256 if device.type == "cuda" else 48)
    gen = torch.Generator().manual_seed(args.seed)
    glctx = dr.RasterizeGLContext(device=device)

    pos, tri, _ = geometry.uv_sphere(32, 64, device=device)
    env_true = environment(cube_directions(esize, device))[None].contiguous()   # [1, 6, S, S, 3]
    log_n_true = torch.tensor(math.log(args.exponent), device=device)
    env_opt = torch.full_like(env_true, 0.5).requires_grad_(True)
    log_n_opt = torch.tensor(math.log(4.0), device=device).requires_grad_(True)

    eval_view, eval_light = random_cameras(6, gen, device)
    with torch.no_grad():
        target_eval = render(glctx, eval_view, eval_light, pos, tri, env_true, log_n_true, res)

    def errors():
        with torch.no_grad():
            img = render(glctx, eval_view, eval_light, pos, tri, env_opt, log_n_opt, res)
            return (((img - target_eval) ** 2).mean().item(), ((env_opt - env_true) ** 2).mean().item(),
                    math.exp(log_n_opt.item()))

    def montage(env, log_n):
        with torch.no_grad():
            img = render(glctx, eval_view[:3], eval_light[:3], pos, tri, env, log_n, res)
        return torch.cat(list(img), 1)

    def side_by_side(win):
        """Target and model seen from the viewer's orbit camera (the camera sits farther away
        than DIST by default; any distance works), lit by the first evaluation light."""
        view = win.camera.view_matrix()[None].to(device)
        with torch.no_grad():
            return torch.cat([render(glctx, view, eval_light[:1], pos, tri, env, log_n, res)[0]
                              for env, log_n in ((env_true, log_n_true), (env_opt, log_n_opt))], 1)

    os.makedirs(args.outdir, exist_ok=True)
    save_png(os.path.join(args.outdir, "target.png"), montage(env_true, log_n_true))
    save_png(os.path.join(args.outdir, "initial.png"), montage(env_opt, log_n_opt))
    img0, env0, n0 = errors()

    opt = torch.optim.Adam([{"params": [env_opt], "lr": args.lr},
                            {"params": [log_n_opt], "lr": args.lr * 2}])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.1 ** (i / max(args.iterations, 1)))
    try:
        from tqdm import trange
    except ImportError:  # tqdm is optional
        trange = range
    win = open_viewer(args.display, "envphong")
    t0 = time.perf_counter()
    bar = trange(args.iterations)
    for it in bar:
        view, light = random_cameras(args.batch, gen, device)
        with torch.no_grad():
            target = render(glctx, view, light, pos, tri, env_true, log_n_true, res)
        loss = ((render(glctx, view, light, pos, tri, env_opt, log_n_opt, res) - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            env_opt.clamp_(0, 1)
        if hasattr(bar, "set_postfix") and it % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.2e}", n=f"{math.exp(log_n_opt.item()):.1f}")
        if win is not None and it % 5 == 0:  # --display: target | current, from the orbit camera
            win = show(win, side_by_side(win), f"iteration {it}: target | model")
    elapsed = time.perf_counter() - t0

    save_png(os.path.join(args.outdir, "final.png"), montage(env_opt, log_n_opt))
    ph = 128
    # Rows are bottom-up: the true environment ends up on top of the file, the learned one below.
    save_png(os.path.join(args.outdir, "environment.png"),
             torch.cat([panorama(env_opt, ph), panorama(env_true, ph)], 0))
    img1, env1, n1 = errors()
    print(f"images written to {os.path.abspath(args.outdir)}")
    print(f"{args.iterations} iterations in {elapsed:.1f} s on {device}, {res[0]}x{res[1]} images, "
          f"6x{esize}x{esize} cube map")
    print(f"image error {img0:.3e} -> {img1:.3e}; environment error {env0:.3e} -> {env1:.3e}; "
          f"Phong exponent {n0:.1f} -> {n1:.1f} (true {args.exponent:g})")
    if win is not None:  # --display
        show_final(win, side_by_side(win), "target | result", args.hold)
    # loss0/loss1: the image error over the evaluation views, before and after.
    return {"loss0": img0, "loss1": img1, "image_error0": img0, "image_error1": img1,
            "env_error0": env0, "env_error1": env1, "exponent0": n0, "exponent1": n1,
            "exponent_true": args.exponent}


if __name__ == "__main__":
    main()
