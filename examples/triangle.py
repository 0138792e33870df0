"""The smallest diffrast program: one triangle with red, green and blue corners, to a PNG.

Rasterize a clip-space triangle, interpolate the vertex colours with the barycentrics, save the
image (rows are bottom-up in diffrast; save_png flips them). Prints how many pixels it covers.

    python examples/triangle.py --outdir out/triangle
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import diffrast as dr  # noqa: E402
from common import (add_display_arguments, open_viewer, pick_device,  # noqa: E402
                    save_png, show_final)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--outdir", default="out", help="folder for the image (default: out)")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None,
                   help="where to run (default: cuda when available, else cpu)")
    p.add_argument("--resolution", type=int, default=256,
                   help="image height and width (default: %(default)s)")
    add_display_arguments(p, "also show the image in a window")
    args = p.parse_args(argv)
    device = pick_device(args.device)

    glctx = dr.RasterizeGLContext(device=device)
    # Clip-space positions (x, y, z, w) of the corners, [batch 1, 3 vertices, 4].
    pos = torch.tensor([[[-0.8, -0.8, 0.0, 1.0],
                         [0.8, -0.8, 0.0, 1.0],
                         [0.0, 0.8, 0.0, 1.0]]], device=device)
    tri = torch.tensor([[0, 1, 2]], dtype=torch.int32, device=device)
    col = torch.tensor([[1.0, 0.0, 0.0],
                        [0.0, 1.0, 0.0],
                        [0.0, 0.0, 1.0]], device=device)

    rast, _ = dr.rasterize(glctx, pos, tri, resolution=(args.resolution, args.resolution))
    img, _ = dr.interpolate(col, rast, tri)  # [1, H, W, 3]; zeros outside the triangle

    path = save_png(os.path.join(args.outdir, "triangle.png"), img[0])
    covered = int((rast[..., 3] > 0).sum().item())
    fraction = covered / args.resolution ** 2
    print(f"image written to {os.path.abspath(path)}")
    print(f"triangle covers {covered} of {args.resolution ** 2} pixels ({100 * fraction:.1f} %; "
          f"exact area 32.0 %)")

    show_final(open_viewer(args.display, "triangle"), img[0], "", args.hold)
    return {"path": path, "covered_pixels": covered, "coverage": fraction}


if __name__ == "__main__":
    main()
