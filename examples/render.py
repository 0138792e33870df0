"""Headless server rendering: a mesh to PNG images from many views, batched, timed.

Loads an OBJ file (positions, texture coordinates and normals; polygons are triangulated) or
takes a built-in sphere or cube, centres and scales it to the unit sphere, and renders it from
--views cameras on an orbit around it. The views go through rasterize as one batch (instance
mode: one `[views, vertices, 4]` position tensor per call), in chunks of --batch. Shading:
normals from the file (else smooth ones; flat for the cube), a key light and a fill light, a
checker texture with mipmapped filtering where the mesh has texture coordinates, antialiased
silhouettes and an alpha channel. Prints the time per frame (rendering only, PNG writing
excluded, after a warm-up batch).

    python examples/render.py --outdir out/render                  # examples/data/knot.obj
    python examples/render.py --mesh sphere --views 64 --batch 16 --outdir out/sphere
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import diffrast as dr  # noqa: E402
from diffrast import geometry  # noqa: E402
from common import (add_display_arguments, open_viewer, pick_device,  # noqa: E402
                    save_png, show, show_final)
from objload import ObjMesh, face_normals, load_obj, vertex_normals  # noqa: E402

DEFAULT_MESH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "knot.obj")


def builtin_mesh(name: str) -> ObjMesh:
    """The built-in sphere (smooth, with uvs) or cube (flat-shaded)."""
    if name == "sphere":
        pos, tri, uv = geometry.uv_sphere(32, 64)
        return ObjMesh(pos, tri, uv, tri, pos.clone(), tri)
    pos, tri = geometry.cube()
    nrm, tri_nrm = face_normals(pos, tri)
    return ObjMesh(pos, tri, None, None, nrm, tri_nrm)


def prepare(mesh: ObjMesh) -> ObjMesh:
    """Centre the mesh on its bounding box, scale it into the unit sphere, make sure it has unit
    normals."""
    lo, hi = mesh.pos.min(0).values, mesh.pos.max(0).values
    pos = mesh.pos - (lo + hi) / 2
    pos = pos / pos.norm(dim=-1).max().clamp(min=1e-12)
    if mesh.normals is None:
        normals, tri_nrm = vertex_normals(pos, mesh.tri_pos), mesh.tri_pos
    else:
        normals = mesh.normals / mesh.normals.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        tri_nrm = mesh.tri_nrm
    return ObjMesh(pos, mesh.tri_pos, mesh.uv, mesh.tri_uv, normals, tri_nrm)


def checker(size=256, squares=8, device=None):
    """A two-tone checker texture ``[1, size, size, 3]``."""
    i = torch.arange(size, device=device) * squares // size
    c = ((i[:, None] + i[None, :]) % 2).float()[None, ..., None]
    return (torch.tensor([0.85, 0.55, 0.25], device=device) * c
            + torch.tensor([0.95, 0.92, 0.85], device=device) * (1 - c)).contiguous()


def orbit(n, dist=3.0, fov=40.0):
    """``n`` view matrices ``[n, 4, 4]`` on a wavy orbit around the origin, and the projection."""
    views = []
    for k in range(n):
        azim = 2 * math.pi * k / n
        elev = math.radians(25) * math.sin(2 * math.pi * k / max(n, 1) * 2 + 0.5)
        eye = (dist * math.cos(elev) * math.sin(azim), dist * math.sin(elev),
               dist * math.cos(elev) * math.cos(azim))
        views.append(geometry.look_at(eye))
    return torch.stack(views), geometry.perspective(fov, near=0.5, far=10.0)


class Renderer:
    """Everything that stays the same from batch to batch: the mesh on the device, the texture
    and its mip stack, the antialiasing topology."""

    def __init__(self, glctx, mesh: ObjMesh, device, resolution):
        self.glctx, self.res = glctx, (resolution, resolution)
        self.mesh = mesh.to(device)
        self.topology = dr.antialias_construct_topology_hash(self.mesh.tri_pos)
        self.tex = checker(device=device) if mesh.uv is not None else None
        self.mip = dr.texture_construct_mip(self.tex) if self.tex is not None else None
        self.albedo = torch.tensor([0.80, 0.62, 0.45], device=device)

    @torch.no_grad()
    def __call__(self, view, proj):
        """RGBA images ``[B, H, W, 4]`` of the mesh seen through ``view`` ``[B, 4, 4]``."""
        m = self.mesh
        clip = geometry.transform(m.pos, proj.to(view.device) @ view)
        rast, rast_db = dr.rasterize(self.glctx, clip, m.tri_pos, self.res)
        nrm, _ = dr.interpolate(m.normals, rast, m.tri_nrm)
        nrm = nrm / nrm.norm(dim=-1, keepdim=True).clamp(min=1e-8)
        # Lights fixed to the camera: key from the upper left, fill from the right.
        rot = view[:, None, None, :3, :3]                     # world -> camera
        n_cam = (rot @ nrm[..., None])[..., 0]
        n_cam = n_cam / n_cam.norm(dim=-1, keepdim=True).clamp(min=1e-8)
        key = torch.tensor([-0.5, 0.6, 0.62], device=view.device)
        fill = torch.tensor([0.7, -0.1, 0.7], device=view.device)
        light = (0.25 + 0.75 * (n_cam @ (key / key.norm())).clamp(min=0)
                 + 0.2 * (n_cam @ (fill / fill.norm())).clamp(min=0))
        if self.tex is not None:
            uv, uv_da = dr.interpolate(m.uv, rast, m.tri_uv, rast_db=rast_db, diff_attrs="all")
            albedo = dr.texture(self.tex, uv, uv_da, mip=self.mip, filter_mode="linear-mipmap-linear")
        else:
            albedo = self.albedo.expand(rast.shape[:3] + (3,))
        covered = (rast[..., 3:] > 0).float()
        rgba = torch.cat([albedo * light[..., None] * covered, covered], -1)
        return dr.antialias(rgba.contiguous(), rast, clip, m.tri_pos, topology_hash=self.topology)


def preview(win, renderer, device, name: str) -> None:
    """Interactive preview with the viewer's orbit camera, until the window is closed."""
    drawn = None
    while win is not None:
        if drawn != win.camera.version:  # re-render only when the camera moved
            drawn = win.camera.version
            img = renderer(win.camera.view_matrix()[None].to(device),
                           win.camera.projection_matrix().to(device))
            win = show(win, img[0], name)
        elif not win.wait(0.05):
            win = None


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mesh", default=DEFAULT_MESH,
                   help="an OBJ file, or 'sphere' or 'cube' (default: examples/data/knot.obj)")
    p.add_argument("--views", type=int, default=24, help="number of views on the orbit")
    p.add_argument("--batch", type=int, default=8, help="views per rasterize call")
    p.add_argument("--outdir", default="out", help="folder for the images (default: out)")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None,
                   help="where to run (default: cuda when available, else cpu)")
    p.add_argument("--resolution", type=int, default=256,
                   help="image height and width (default: %(default)s)")
    add_display_arguments(p, "afterwards, show the first view in a window (with --hold, an "
                             "interactive preview with an orbit camera)")
    args = p.parse_args(argv)
    if args.views < 1 or args.batch < 1:
        p.error("--views and --batch must be positive")
    device = pick_device(args.device)
    glctx = dr.RasterizeGLContext(device=device)

    if args.mesh in ("sphere", "cube"):
        mesh, name = builtin_mesh(args.mesh), args.mesh
    else:
        mesh, name = load_obj(args.mesh), os.path.basename(args.mesh)
    mesh = prepare(mesh)
    renderer = Renderer(glctx, mesh, device, args.resolution)
    views, proj = orbit(args.views)
    views, proj = views.to(device), proj.to(device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    renderer(views[:args.batch], proj)          # warm-up: GL buffers, kernels, caches
    sync()
    images, elapsed = [], 0.0
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is optional
        def tqdm(x, **kw):
            return x
    for start in tqdm(range(0, args.views, args.batch), desc="batches"):
        t0 = time.perf_counter()
        out = renderer(views[start:start + args.batch], proj)
        sync()
        elapsed += time.perf_counter() - t0
        images.append(out.cpu())
    images = torch.cat(images)

    os.makedirs(args.outdir, exist_ok=True)
    paths = [save_png(os.path.join(args.outdir, f"view_{k:03d}.png"), img) for k, img in enumerate(images)]
    save_png(os.path.join(args.outdir, "sheet.png"), torch.cat(list(images[:4]), 1))
    ms = 1000 * elapsed / args.views
    print(f"{name}: {mesh.tri_pos.shape[0]} triangles, {args.views} views written to "
          f"{os.path.abspath(args.outdir)}")
    print(f"{args.views} views at {args.resolution}x{args.resolution} on {device}, batch {args.batch}: "
          f"{ms:.2f} ms/frame ({1000 / max(ms, 1e-9):.1f} frames/s)")

    win = open_viewer(args.display, f"render: {name}")
    if win is not None and args.hold:
        print("interactive preview: drag to orbit, wheel to zoom, R to reset; "
              "close the window to exit")
        preview(win, renderer, device, name)
        win.close()
    else:
        show_final(win, images[0], name)       # --display without --hold: shown, then closed
    return {"ms_per_frame": ms, "views": args.views, "paths": paths,
            "coverage": images[..., 3].mean().item()}


if __name__ == "__main__":
    main()
