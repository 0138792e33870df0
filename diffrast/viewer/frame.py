"""Frames for the viewer: an image or batch validated, quantised to 8 bits, made RGBA and tiled
into a grid (:func:`frame_from_image`), and the letterboxed rectangle it is drawn into
(:func:`fit_viewport`). Pure torch on the image's device; no window needed."""
from __future__ import annotations

import math

import torch


def grid_shape(batch: int) -> tuple:
    """Rows and columns of the grid a batch of ``batch`` images is tiled into: ``columns =
    ceil(sqrt(batch))``, ``rows = ceil(batch / columns)``.

    Args:
        batch (int): Number of images (>= 1).

    Returns:
        ``(rows, columns)``.
    """
    cols = max(1, math.ceil(math.sqrt(batch)))
    return math.ceil(batch / cols), cols


def frame_from_image(image) -> torch.Tensor:
    """The texture a :class:`Viewer` shows for ``image``: quantised to 8 bits, made opaque RGBA,
    and a batch tiled into a grid, on the image's device.

    Item ``i`` of a batch goes to grid cell ``(i // columns, i % columns)`` counted from the top
    left, as one reads; cells past the batch are black. Rows stay bottom-up.

    Args:
        image: Tensor (or NumPy array) ``[H, W, C]`` or ``[B, H, W, C]`` with ``C`` in 1 (grey),
            3 (RGB) or 4 (RGBA; alpha is not shown). Floating point values are clamped to
            ``[0, 1]`` and rounded to the nearest of 256 levels (``round(255 * x)``; NaN shows as
            0); ``uint8`` is taken as is.

    Returns:
        ``[rows * H, columns * W, 4]`` uint8 contiguous tensor (alpha 255) on ``image``'s
        device, rows bottom-up.

    Raises:
        TypeError: ``image`` is not a tensor or array, or its dtype is neither floating point
            nor uint8.
        ValueError: ``image`` has the wrong rank, channel count or an empty dimension.
    """
    if not isinstance(image, torch.Tensor):
        try:
            import numpy as np
            if not isinstance(image, np.ndarray):
                raise TypeError
            image = torch.from_numpy(np.ascontiguousarray(image))
        except (TypeError, ImportError):
            raise TypeError(f"image must be a torch.Tensor or numpy.ndarray, got {type(image).__name__}") from None
    image = image.detach()
    desc = f"shape {tuple(image.shape)}, dtype {str(image.dtype).replace('torch.', '')}, device {image.device}"
    if image.ndim not in (3, 4):
        raise ValueError(f"image must be [H, W, C] or [B, H, W, C], got {desc}")
    if image.shape[-1] not in (1, 3, 4):
        raise ValueError(f"image must have 1, 3 or 4 channels (last dimension), got {desc}")
    if image.numel() == 0:
        raise ValueError(f"image must not be empty, got {desc}")
    if image.dtype == torch.uint8:
        img8 = image
    elif image.is_floating_point():
        img8 = torch.round(image.float().nan_to_num(0.0).clamp(0.0, 1.0) * 255.0).to(torch.uint8)
    else:
        raise TypeError(f"image must have a floating point dtype or uint8, got {desc}")
    if img8.ndim == 3:
        img8 = img8.unsqueeze(0)
    b, h, w, c = img8.shape
    if c == 1:
        img8 = img8.expand(b, h, w, 3)
    if c != 4:
        img8 = torch.cat([img8, torch.full((b, h, w, 1), 255, dtype=torch.uint8, device=img8.device)], -1)
    if b == 1:
        return img8[0].contiguous()
    rows, cols = grid_shape(b)
    if rows * cols > b:
        pad = torch.zeros((rows * cols - b, h, w, 4), dtype=torch.uint8, device=img8.device)
        pad[..., 3] = 255
        img8 = torch.cat([img8, pad], 0)
    # Grid row 0 is the top; storage row 0 is the bottom: flip the grid rows, keep each image's.
    grid = img8.reshape(rows, cols, h, w, 4).flip(0).permute(0, 2, 1, 3, 4)
    return grid.reshape(rows * h, cols * w, 4).contiguous()


def fit_viewport(frame_size, framebuffer_size) -> tuple:
    """The rectangle a frame is drawn into: the largest one with the frame's aspect ratio that
    fits the framebuffer, centred (letterboxed). A framebuffer that is an integer multiple of the
    frame gets exactly that multiple, pixel for pixel.

    Args:
        frame_size: ``(width, height)`` of the frame.
        framebuffer_size: ``(width, height)`` of the window's framebuffer.

    Returns:
        ``(x, y, width, height)`` in framebuffer pixels, origin at the bottom left.
    """
    fw, fh = frame_size
    bw, bh = framebuffer_size
    s = min(bw / fw, bh / fh)
    vw, vh = max(1, round(fw * s)), max(1, round(fh * s))
    return (bw - vw) // 2, (bh - vh) // 2, vw, vh
