"""Shared bits of the example programs: PNG output, devices, argument defaults."""
from __future__ import annotations

import argparse
import os
import struct
import zlib

import numpy as np
import torch


def save_png(path: str, image) -> str:
    """Write an image ``[H, W, 3|4]`` (float in [0, 1], rows bottom-up as diffrast renders them)
    to an 8-bit PNG, top row first. Needs nothing beyond zlib."""
    img = image.detach().float().cpu().clamp(0, 1).flip(0).numpy() if torch.is_tensor(image) \
        else np.asarray(image)[::-1]
    img = (img * 255 + 0.5).astype(np.uint8)
    h, w, c = img.shape
    color_type = {1: 0, 3: 2, 4: 6}[c]
    raw = b"".join(b"\x00" + img[y].tobytes() for y in range(h))

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color_type, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))
    return path


def base_parser(description: str, resolution: int, iterations: int) -> argparse.ArgumentParser:
    """The arguments every example takes."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--outdir", default="out", help="folder for the images (default: out)")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None,
                   help="where to run (default: cuda when available, else cpu)")
    p.add_argument("--resolution", type=int, default=resolution, help="image height and width")
    p.add_argument("--iterations", type=int, default=iterations, help="optimisation steps")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    return p


def pick_device(name):
    if name is None:
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)
