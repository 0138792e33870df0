"""Shared bits of the example programs: PNG output, devices, argument defaults."""
from __future__ import annotations

import argparse
import importlib.util
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
    """The arguments every fitting example takes."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--outdir", default="out", help="folder for the images (default: out)")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None,
                   help="where to run (default: cuda when available, else cpu)")
    p.add_argument("--resolution", type=int, default=resolution,
                   help="image height and width (default: %(default)s)")
    p.add_argument("--iterations", type=int, default=iterations,
                   help="optimisation steps (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    add_display_arguments(p, "show progress in a window (diffrast.viewer; needs a display)")
    return p


def add_display_arguments(p: argparse.ArgumentParser, display_help: str) -> None:
    """``--display`` and ``--hold``: a window during the run, closed at the end unless held."""
    p.add_argument("--display", action="store_true", help=display_help)
    p.add_argument("--hold", action="store_true",
                   help="with --display: keep the window open after the run until you close it "
                        "(default: close it and exit)")


def pick_device(name):
    if name is None:
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def viewer_available() -> bool:
    """Whether the optional interactive viewer module ``diffrast.viewer`` exists."""
    import diffrast
    if hasattr(diffrast, "viewer"):
        return True
    try:
        return importlib.util.find_spec("diffrast.viewer") is not None
    except (ImportError, ValueError):
        return False


def open_viewer(enabled: bool, title: str = "diffrast"):
    """The window for ``--display`` (a ``diffrast.viewer.Viewer``), or None: when not asked for,
    or when the viewer is missing or cannot open a window (then a note says so and the example
    goes on headless)."""
    if not enabled:
        return None
    if not viewer_available():
        print("--display: the viewer (diffrast.viewer) is unavailable; continuing headless")
        return None
    try:
        from diffrast.viewer import maybe_viewer
        return maybe_viewer(True, title=title)   # None (with a note on stderr) if no window
    except Exception as e:  # anything unexpected: never let the window stop the work
        print(f"--display: the viewer could not open a window ({e}); continuing headless")
        return None


def show(win, image, title: str = ""):
    """Show ``image`` (``[H, W, C]`` or a batch ``[B, H, W, C]``, tiled; rows bottom-up as
    rendered) in ``win``; returns ``win``, or None once the window has been closed (or when
    ``win`` is None), so callers write ``win = show(win, img, "...")`` and stop drawing after a
    close."""
    if win is None:
        return None
    return win if win.show(image.detach(), title) else None


def show_final(win, image, title: str = "", hold: bool = False) -> None:
    """At the end of a program run with ``--display``: show the result, and with ``hold``
    (``--hold``) keep the window open until the user closes it. Then close the window, so the
    program ends. Does nothing when ``win`` is None."""
    if win is None:
        return
    try:
        if show(win, image, title) is not None:
            if hold:
                print("close the window (or press Esc) to exit")
                win.wait()
            else:
                print("--display: the window closes at the end of the run (--hold keeps it open)")
    finally:
        win.close()
