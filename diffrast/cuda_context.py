"""``RasterizeCudaContext``: rasterization in CUDA kernels (``cuda_ops/rasterize_cuda.cu``).

Data-centre GPUs (H100 and the like) carry almost no fixed-function graphics hardware, so their
OpenGL rasterizer is slow; this context rasterizes with CuPy RawKernels into exactly the same
``rast`` / ``rast_db`` buffers as :class:`RasterizeGLContext`, so every other op, the backward
passes and depth peeling work unchanged with either context.
"""
from __future__ import annotations

import numpy as np
import torch

from .cuda_ops import loader

_THREADS = 256


class RasterizeCudaContext:
    """Create a new CUDA rasterizer context.

    The design is a visibility buffer: each covered pixel keeps the 64-bit minimum of
    (depth, triangle id), so the result is deterministic and ties go to the lower id; a resolve
    pass then computes barycentrics and derivatives exactly as the OpenGL path does. Coverage
    uses OpenGL's rules (8 sub-pixel bits, a top-left fill rule, clipping at the near and far
    planes), so both contexts agree on all but a few edge pixels.

    Args:
        device: CUDA device (``torch.device``, string or ordinal). ``None``: the current CUDA
            device.
        output_db (bool): Compute and output image-space derivatives of barycentrics.
    """

    def __init__(self, device=None, output_db=True):
        if not torch.cuda.is_available():
            raise RuntimeError("RasterizeCudaContext needs a CUDA device; use RasterizeGLContext "
                               "(Mesa's software OpenGL) on a machine without one")
        if not loader.available():
            raise ImportError("RasterizeCudaContext needs CuPy: install diffrast[cuda13] (or [cuda12])")
        if device is None:
            device = torch.device("cuda", torch.cuda.current_device())
        else:
            if isinstance(device, bool) or not isinstance(device, (int, str, torch.device)):
                raise TypeError(f"device must be a torch.device, a string or a CUDA ordinal, "
                                f"got {type(device).__name__}")
            try:
                device = (torch.device("cuda", device) if isinstance(device, int)
                          else torch.device(device))
            except RuntimeError as exc:  # an unknown device string, a negative ordinal
                raise ValueError(f"device must be a CUDA device, got {device!r}") from exc
            if device.type != "cuda":
                raise ValueError(f"device must be a CUDA device, got {device}")
            if device.index is None:
                device = torch.device("cuda", torch.cuda.current_device())
            elif device.index >= torch.cuda.device_count():
                raise ValueError(f"device must be one of the {torch.cuda.device_count()} CUDA "
                                 f"devices, got {device}")
        self.device = device
        self.output_db = bool(output_db)
        self.active_peeler = None
        self._peel_keys = None
        self._dummy = torch.zeros(1, dtype=torch.int64, device=device)  # unused range arguments
        props = torch.cuda.get_device_properties(device)
        self._persistent_blocks = props.multi_processor_count * 8
        # Any size whose pixel indices fit the kernels' 64-bit arithmetic; bounded for sanity.
        self.max_resolution = (1 << 15, 1 << 15)
        self.max_layers = 1 << 30

    def _render(self, pos, tri, resolution, ranges, layer_index=0, peel=False):
        """Rasterize all images; returns ``(rast, rast_db or None)``. Inputs are validated."""
        height, width = resolution
        dev = self.device
        instanced = ranges is None
        num_vertices, num_triangles = pos.shape[-2], tri.shape[0]
        if instanced:
            num_images = pos.shape[0]
            num_items = num_images * num_triangles
            offsets = starts = self._dummy
        else:
            num_images = ranges.shape[0]
            counts = ranges[:, 1].long()
            offs = torch.zeros(num_images + 1, dtype=torch.int64)
            offs[1:] = torch.cumsum(counts, 0)
            num_items = int(offs[-1])
            offsets = offs.to(dev, non_blocking=True)
            starts = ranges[:, 0].to(dev, non_blocking=True)
        rast = torch.empty(num_images, height, width, 4, dtype=torch.float32, device=dev)
        rast_db = torch.empty_like(rast) if self.output_db else None
        if num_images == 0:
            return rast, rast_db
        keys = torch.full((num_images, height, width), -1, dtype=torch.int64, device=dev)
        prev = self._peel_keys if (peel and layer_index > 0) else None
        use_prev = prev is not None
        if prev is None:
            prev = keys
        if num_items > 0:
            big_items = torch.empty(num_items, dtype=torch.int64, device=dev)
            counters = torch.zeros(num_items + 1, dtype=torch.int64, device=dev)  # one fill
            big_tiles, big_count = counters[:num_items], counters[num_items:]
            common = (pos, tri, num_vertices, num_triangles, int(instanced), offsets, starts, num_images)
            loader.launch("rasterize_cuda", "setup_and_raster_small", loader.blocks(num_items, _THREADS),
                          _THREADS, common + (np.int64(num_items), width, height, keys, prev, use_prev,
                                              big_items, big_tiles, big_count), dev)
            tiles_end = torch.cumsum(big_tiles, 0)
            loader.launch("rasterize_cuda", "raster_big", self._persistent_blocks, (16, 16, 1),
                          common + (width, height, keys, prev, use_prev, big_items, tiles_end, big_count), dev)
        pixels = num_images * height * width
        loader.launch("rasterize_cuda", "resolve", loader.blocks(pixels, _THREADS), _THREADS,
                      (pos, tri, num_vertices, num_triangles, int(instanced), keys, num_images, width, height,
                       rast, rast_db if rast_db is not None else rast, int(self.output_db)), dev)
        if self.active_peeler is not None:  # the next layer keeps only keys behind these
            self._peel_keys = keys
        return rast, rast_db
