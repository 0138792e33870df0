"""Fit a planet's texture to views rendered with mipmapped (prefiltered) texturing.

A UV sphere wears a procedural "earth" texture (continents from smooth noise on the sphere,
oceans, deserts and vegetation in latitude bands, ice caps, fine terrain detail). Target images
are rendered from random orientations and distances with 'linear-mipmap-linear' filtering, the
level of detail coming from the texture-coordinate derivatives that `interpolate` computes from
`rasterize`'s barycentric derivatives. The model starts from a flat grey texture and learns it
from the images alone.

By default the model renders the same way. With --no-mip it samples with plain bilinear
filtering: a distant, minified view then reads four texels per pixel where the target averaged
hundreds, so the gradient reaches a sparse, aliased subset of texels and the fit is worse —
the texture error and the error in minified views stay higher. Prints both before and after.

    python examples/earth.py --outdir out/earth
    python examples/earth.py --outdir out/earth_nomip --no-mip
"""
from __future__ import annotations

import math
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import diffrast as dr  # noqa: E402
from diffrast import geometry  # noqa: E402
from common import base_parser, open_viewer, pick_device, save_png, show, show_final  # noqa: E402

NEAR, FAR = 3.0, 14.0   # camera distances (the sphere has radius 1; 40 degree field of view)


def sphere_noise(p, gen, terms, f_min, f_max, device):
    """Smooth random function on points ``p`` ``[..., 3]``: a sum of plane waves with random
    directions, phases and log-uniform frequencies, amplitude ~ 1/frequency, normalized to unit
    standard deviation. Seamless on the sphere because it lives in 3D."""
    d = torch.randn(terms, 3, generator=gen)
    d = (d / d.norm(dim=-1, keepdim=True)).to(device)
    f = torch.exp(torch.empty(terms).uniform_(math.log(f_min), math.log(f_max), generator=gen)).to(device)
    phase = (torch.rand(terms, generator=gen) * 2 * math.pi).to(device)
    flat = p.reshape(-1, 3)
    out = torch.empty(flat.shape[0], device=device)
    for i in range(0, flat.shape[0], 1 << 18):  # in chunks: no huge [texels, terms] temporary
        out[i:i + (1 << 18)] = torch.sin(flat[i:i + (1 << 18)] @ (d.T * f) + phase) @ (1 / f)
    out = out.reshape(p.shape[:-1])
    return (out - out.mean()) / out.std()


def earth_texture(size, seed=1, device="cpu"):
    """The procedural planet texture ``[1, size, size, 3]`` in [0, 1] for the UV sphere of
    :func:`diffrast.geometry.uv_sphere` (u = longitude, v = 0 at the south pole)."""
    gen = torch.Generator().manual_seed(seed)
    v = (torch.arange(size, device=device) + 0.5) / size
    u = (torch.arange(size, device=device) + 0.5) / size
    theta = math.pi * (1 - v)[:, None].expand(size, size)      # from the north pole
    phi = 2 * math.pi * u[None, :].expand(size, size)
    p = torch.stack([torch.sin(theta) * torch.cos(phi), torch.cos(theta),
                     -torch.sin(theta) * torch.sin(phi)], -1)
    lat = 90 - torch.rad2deg(theta)                              # degrees, + north

    height = sphere_noise(p, gen, 48, 1.5, 24.0, device)         # continents and basins
    moist = sphere_noise(p, gen, 24, 2.0, 16.0, device)          # vegetation vs desert
    detail = sphere_noise(p, gen, 64, 40.0, 160.0, device)       # fine terrain, for aliasing

    def c(r, g, b):
        return torch.tensor([r, g, b], device=device)

    land = height > 0.35
    depth = ((0.35 - height) / 2).clamp(0, 1)[..., None]
    ocean = c(0.10, 0.36, 0.62) * (1 - depth) + c(0.02, 0.07, 0.28) * depth
    # Deserts around +-25 degrees latitude, forests near the equator and at mid latitudes.
    dry = torch.exp(-((lat.abs() - 24) / 10) ** 2) - 0.6 * moist
    green = c(0.16, 0.42, 0.13) * (1 - 0.3 * (lat.abs() / 60).clamp(0, 1))[..., None]
    sand = c(0.80, 0.68, 0.42)
    ground = torch.where((dry > 0.85)[..., None], sand, green)
    rock = ((height - 1.3) / 0.8).clamp(0, 1)[..., None]          # mountains
    ground = ground * (1 - rock) + c(0.45, 0.38, 0.32) * rock
    img = torch.where(land[..., None], ground, ocean)
    img = img * (1 + 0.18 * detail.clamp(-2.5, 2.5)[..., None] * land[..., None])
    ice = (lat.abs() - 72 + 5 * moist + 2 * detail + 10 * (height - 0.35).clamp(min=0)) / 2
    ice = ice.clamp(0, 1)[..., None]
    img = img * (1 - ice) + c(0.93, 0.95, 0.98) * ice
    return img.clamp(0, 1)[None].contiguous()


def render(glctx, mvp, pos, tri, uv, tex, resolution, mip: bool):
    """Render the textured sphere: [B, H, W, 3], black background. With ``mip``, filter with
    'linear-mipmap-linear' using uv derivatives; otherwise plain bilinear ('linear')."""
    clip = geometry.transform(pos, mvp)
    rast, rast_db = dr.rasterize(glctx, clip, tri, resolution)
    if mip:
        texc, texd = dr.interpolate(uv, rast, tri, rast_db=rast_db, diff_attrs="all")
        color = dr.texture(tex, texc, texd, filter_mode="linear-mipmap-linear")
    else:
        texc, _ = dr.interpolate(uv, rast, tri)
        color = dr.texture(tex, texc, filter_mode="linear")
    return torch.where(rast[..., 3:] > 0, color, torch.zeros_like(color))


def random_views(n, gen, device, dist=None):
    """``n`` view-projection matrices: random orientation, distance log-uniform in
    [NEAR, FAR] (or the given one)."""
    proj = geometry.perspective(40.0, near=0.5, far=50.0)
    q = geometry.random_quaternion(n, gen)
    if dist is None:
        dist = torch.exp(torch.empty(n).uniform_(math.log(NEAR), math.log(FAR), generator=gen)).tolist()
    else:
        dist = [dist] * n
    return torch.stack([proj @ geometry.translate(0, 0, -d) @ geometry.quaternion_to_matrix(q[i])
                        for i, d in enumerate(dist)]).to(device)


def main(argv=None):
    p = base_parser(__doc__.splitlines()[0], resolution=0, iterations=300)
    p.set_defaults(resolution=None)
    for action in p._actions:
        if action.dest == "resolution":
            action.help = "image height and width (default: 512 on cuda, 128 on cpu)"
    p.add_argument("--texture-size", type=int, default=None,
                   help="texture side (default: 2048 on cuda, 512 on cpu)")
    p.add_argument("--batch", type=int, default=4, help="views per iteration")
    p.add_argument("--lr", type=float, default=3e-2, help="Adam learning rate (decays 10x)")
    p.add_argument("--no-mip", action="store_true",
                   help="train with plain bilinear filtering instead of linear-mipmap-linear")
    args = p.parse_args(argv)
    device = pick_device(args.device)
    cuda = device.type == "cuda"
    res = args.resolution or (512 if cuda else 128)
    tsize = args.texture_size or (2048 if cuda else 512)
    mip = not args.no_mip
    gen = torch.Generator().manual_seed(args.seed)
    glctx = dr.RasterizeGLContext(device=device)

    pos, tri, uv = geometry.uv_sphere(48, 96, device=device)
    tex_true = earth_texture(tsize, device=device)
    tex_opt = torch.full_like(tex_true, 0.5).requires_grad_(True)
    mip_true = dr.texture_construct_mip(tex_true)

    # Area weights of the texel rows (a lat-long texture crowds texels at the poles).
    rows = (torch.arange(tsize, device=device) + 0.5) / tsize
    w_area = torch.sin(math.pi * rows)[None, :, None, None]
    w_area = w_area / w_area.mean()

    def texture_error():
        return (((tex_opt.detach() - tex_true) ** 2) * w_area).mean().item()

    def target_render(mvp, with_mask=False):
        """Targets: always mipmapped, from the true texture's prebuilt stack."""
        with torch.no_grad():
            clip = geometry.transform(pos, mvp)
            rast, rast_db = dr.rasterize(glctx, clip, tri, (res, res))
            texc, texd = dr.interpolate(uv, rast, tri, rast_db=rast_db, diff_attrs="all")
            color = dr.texture(tex_true, texc, texd, mip=mip_true, filter_mode="linear-mipmap-linear")
            color = torch.where(rast[..., 3:] > 0, color, torch.zeros_like(color))
            return (color, rast[..., 3:] > 0) if with_mask else color

    # Fixed evaluation views: four near (the globe fills the frame) and four far (a few dozen
    # pixels across, the texture minified ~20x).
    eval_near = random_views(4, gen, device, dist=NEAR)
    eval_far = random_views(4, gen, device, dist=FAR * 0.8)
    target_near, mask_near = target_render(eval_near, with_mask=True)
    target_far, mask_far = target_render(eval_far, with_mask=True)

    def image_errors():
        """Mean squared error over the pixels the globe covers, near and far views."""
        with torch.no_grad():
            errs = []
            for mvp, target, mask in ((eval_near, target_near, mask_near), (eval_far, target_far, mask_far)):
                sq = (render(glctx, mvp, pos, tri, uv, tex_opt, (res, res), mip) - target) ** 2
                errs.append((sq * mask).sum().item() / (3 * mask.sum().item()))
        return errs

    def montage(tex):
        with torch.no_grad():
            near = render(glctx, eval_near[:2], pos, tri, uv, tex, (res, res), mip)
            far = render(glctx, eval_far[:2], pos, tri, uv, tex, (res, res), mip)
        return torch.cat([near[0], near[1], far[0], far[1]], 1)

    def side_by_side(win):
        """Target and model seen from the viewer's orbit camera (wheel: zoom out to minify)."""
        cam = win.camera.mvp()[None].to(device)
        with torch.no_grad():
            return torch.cat([target_render(cam)[0],
                              render(glctx, cam, pos, tri, uv, tex_opt, (res, res), mip)[0]], 1)

    os.makedirs(args.outdir, exist_ok=True)
    save_png(os.path.join(args.outdir, "target.png"),
             torch.cat([target_near[0], target_near[1], target_far[0], target_far[1]], 1))
    save_png(os.path.join(args.outdir, "initial.png"), montage(tex_opt))
    tex0 = texture_error()
    near0, far0 = image_errors()

    opt = torch.optim.Adam([tex_opt], lr=args.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.1 ** (i / max(args.iterations, 1)))
    try:
        from tqdm import trange
    except ImportError:  # tqdm is optional
        trange = range
    win = open_viewer(args.display, "earth")
    t0 = time.perf_counter()
    bar = trange(args.iterations)
    for it in bar:
        mvp = random_views(args.batch, gen, device)
        target = target_render(mvp)
        loss = ((render(glctx, mvp, pos, tri, uv, tex_opt, (res, res), mip) - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            tex_opt.clamp_(0, 1)
        if hasattr(bar, "set_postfix") and it % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.2e}")
        if win is not None and it % 5 == 0:  # --display: target | current, from the orbit camera
            win = show(win, side_by_side(win), f"iteration {it}: target | model")
    elapsed = time.perf_counter() - t0

    final = montage(tex_opt)
    save_png(os.path.join(args.outdir, "final.png"), final)
    small = max(tsize // 4, 1)

    def thumb(t):
        t = F.interpolate(t.detach().permute(0, 3, 1, 2), size=(small, small), mode="area")
        return t[0].permute(1, 2, 0)
    save_png(os.path.join(args.outdir, "texture.png"), torch.cat([thumb(tex_true), thumb(tex_opt)], 1))
    tex1 = texture_error()
    near1, far1 = image_errors()
    mode = "linear-mipmap-linear" if mip else "linear (--no-mip)"
    print(f"images written to {os.path.abspath(args.outdir)}")
    print(f"{args.iterations} iterations in {elapsed:.1f} s on {device}, {res}x{res} images, "
          f"{tsize}x{tsize} texture, trained with {mode}")
    print(f"texture error {tex0:.3e} -> {tex1:.3e}; image error near {near0:.3e} -> {near1:.3e}, "
          f"far {far0:.3e} -> {far1:.3e}")
    if win is not None:  # --display
        show_final(win, side_by_side(win), "target | result", args.hold)
    # loss0/loss1: the image error over all evaluation views, before and after.
    return {"loss0": (near0 + far0) / 2, "loss1": (near1 + far1) / 2,
            "texture_error0": tex0, "texture_error1": tex1,
            "image_error_near0": near0, "image_error_near1": near1,
            "image_error_far0": far0, "image_error_far1": far1}


if __name__ == "__main__":
    main()
