"""``RasterizeCudaContext``: rasterization in CUDA kernels (``cuda_ops/rasterize_forward.cu``).

Data-centre GPUs (H100 and the like) carry almost no fixed-function graphics hardware, so their
OpenGL rasterizer is slow; this context rasterizes with CuPy RawKernels into exactly the same
``rast`` / ``rast_db`` buffers as :class:`RasterizeGLContext`, so every other op, the backward
passes and depth peeling work unchanged with either context.
"""
from __future__ import annotations

import torch

from .cuda_ops import loader
from .cuda_ops.params import RasterizeForwardParams
from .log import logger
from .raster_context import RasterContext, resolve_device

_THREADS = 256
_SETUP_THREADS = 128  # kSetupThreads of cuda_ops/rasterize_forward.cu
_LARGE_TRIANGLE_PIXELS = 64  # pixels per work item from which a warp sets up each triangle


class RasterizeCudaContext(RasterContext):
    """Create a new CUDA rasterizer context.

    The design is a visibility buffer: each covered pixel keeps the 64-bit minimum of
    (depth, triangle id), so the result is deterministic and ties go to the lower id; a resolve
    pass then computes barycentrics and derivatives with the same device code as the OpenGL
    path's resolve, so both give the same bits for the same visible triangle. Coverage
    uses OpenGL's rules (8 sub-pixel bits, a top-left fill rule, clipping at the near and far
    planes), so both contexts agree on all but a few edge pixels.

    Args:
        device: CUDA device (``torch.device``, string or ordinal). ``None``: the current CUDA
            device.
        output_db (bool): Compute and output image-space derivatives of barycentrics.
    """

    #: Rendering may be captured in a CUDA graph (see the README's "CUDA graphs").
    capturable = True
    #: Any size whose pixel indices fit the kernels' 64-bit arithmetic; bounded for sanity.
    max_resolution = (1 << 15, 1 << 15)
    #: No limit of its own on the images a :class:`~diffrast.DepthPeeler` peels at once.
    max_layers = 1 << 30

    def __init__(self, device=None, output_db=True):
        if not torch.cuda.is_available():
            raise RuntimeError("RasterizeCudaContext needs a CUDA device; use RasterizeGLContext "
                               "(Mesa's software OpenGL) on a machine without one")
        if not loader.available():
            raise ImportError("RasterizeCudaContext needs CuPy and cuda-bindings: install diffrast[cuda13] "
                              "(or [cuda12])")
        self.device = resolve_device(device, kinds=("cuda",))
        self.output_db = bool(output_db)
        self._dummy = torch.zeros(1, dtype=torch.int64, device=self.device)  # unused range arguments
        props = torch.cuda.get_device_properties(self.device)
        self._persistent_blocks = props.multi_processor_count * 8
        # Fewer work items than this would leave most of the GPU idle with a thread per item.
        self._few_items = props.multi_processor_count * 256
        # Scratch kept between calls, grown when a call needs more: two key buffers (the one a
        # call rasterizes into, and the previous depth layer's when peeling), the big-triangle
        # list and its counters (left at zero by the resolve kernel).
        self._keys = None
        self._peel_index = None
        self._big = None
        self._states = None
        self._stream = None
        self._plans = None  # _plan's results by call shape
        self._captured_scratch = {}  # scratch buffers CUDA graphs captured (kept alive)
        super().__init__()
        logger.info("RasterizeCudaContext on %s: %s, %d SMs", self.device, props.name,
                    props.multi_processor_count)

    def _follow_stream(self) -> bool:
        """Keeps the scratch usable on torch's current stream (it waits for the stream that
        used it last, and the allocator learns the scratch is used on it); returns whether the
        stream is being captured into a CUDA graph. While it is, nothing is done:
        ``torch.cuda.graph`` synchronizes before capturing, and a captured stream may not wait on
        work outside the capture; the buffers the capture uses are kept for the graph's lifetime
        instead (:meth:`render`)."""
        handle = loader.raw_stream(self.device.index)
        if torch.cuda.is_current_stream_capturing():
            return True
        if self._stream is None:
            self._stream = (handle, torch.cuda.current_stream(self.device))
        elif handle != self._stream[0]:
            current = torch.cuda.current_stream(self.device)
            current.wait_stream(self._stream[1])
            for t in (self._keys, self._big, self._states):
                if t is not None:
                    t.record_stream(current)
            self._stream = (handle, current)
        return False

    def _scratch(self, pixels, items, chunks):
        """Key buffers of at least ``pixels``, big lists of ``items``, ``chunks`` counters; a
        reallocation forgets the plans (views of the old buffers)."""
        dev = self.device
        # The plans hold views of the buffers: drop them with a buffer before allocating its
        # successor, so that the old memory is free for it.
        if self._keys is None or self._keys.shape[1] < pixels:
            self._keys = self._plans = None
            self._keys = torch.empty((2, pixels), dtype=torch.int64, device=dev)
            self._peel_index = None
        if self._big is None or self._big.shape[1] < items:
            self._big = self._plans = None
            self._big = torch.empty((2, items), dtype=torch.int64, device=dev)
        if self._states is None or self._states.shape[0] < chunks:
            self._plans = None
            self._states = torch.zeros(chunks, dtype=torch.int64, device=dev)
        if self._plans is None or len(self._plans) >= 64:
            self._plans = {}

    def _plan(self, num_items, width, height, pixels, cur, peel_prev):
        """What a call of this shape launches: ``(keys, setup kernel, params, launches)``:
        ``params`` the kernels' parameters of the shape (a ``RasterizeForwardParams`` set for the
        first chunk of work items, without the call's tensors), ``launches`` one launch per chunk
        as ``(setup blocks, first work item, work items, the chunk's list counter)``. The scratch
        views are made once per shape (tensor indexing costs host time on every call). A key
        buffer reallocated here (a larger call) forgets the previous depth layer, so peeling
        callers size the scratch at layer 0."""
        key = (num_items, width, height, pixels, cur, peel_prev)
        plan = self._plans.get(key) if self._plans is not None else None
        if plan is not None:
            return plan
        chunk, tile_bits = _chunking(num_items, width, height)
        chunks = max(1, -(-num_items // chunk))
        self._scratch(pixels, min(num_items, chunk), chunks)
        keys = self._keys[cur, :pixels]
        prev = self._keys[1 - cur, :pixels] if peel_prev else keys
        big_items, big_start = self._big[0], self._big[1]
        # A warp per triangle (boxes of up to 4096 pixels) for few work items, and for large
        # triangles: with a mesh covering the images, pixels / items is about a triangle's area,
        # and at 64 or more a thread per triangle would send most of them to the tiled list
        # (64 x 512^2 images of 1,024 triangles: 0.79 instead of 1.94 ms on an H100).
        if num_items < self._few_items or pixels >= _LARGE_TRIANGLE_PIXELS * num_items:
            setup, lanes, big_area = "setup_and_raster_by_warp", 32, 4096
        else:  # a thread per triangle; its warp shares boxes of up to 256 pixels
            setup, lanes, big_area = "setup_and_raster_small", 1, 256
        launches = []
        for k in range(chunks):
            first = k * chunk
            n = min(chunk, num_items - first)
            launches.append((loader.blocks(n * lanes, _SETUP_THREADS), first, n, self._states[k]))
        params = RasterizeForwardParams(
            keys=keys, prev=prev, big_items=big_items, big_start=big_start,
            big_state=launches[0][3], big_states=self._states, item_offset=0,
            num_items=launches[0][2], width=width, height=height, big_area=big_area,
            tile_bits=tile_bits, num_states=chunks, use_prev=peel_prev)
        plan = self._plans[key] = (keys, setup, params, launches)
        return plan

    def render(self, pos, tri, resolution, ranges, layer_index, peel, rast, rast_db) -> None:
        """Render a batch of images into ``rast`` (and ``rast_db``), as
        :meth:`diffrast.raster_context.RasterContext.render` says: every triangle of every image
        writes the 64-bit minimum of (depth, triangle id) into a key per pixel, then a resolve
        pass computes each pixel's outputs from its key. Peeling keeps the previous layer's keys
        and drops fragments not behind them."""
        height, width = resolution
        num_images = rast.shape[0]
        if num_images == 0:
            return
        dev = self.device
        instanced = ranges is None
        num_vertices, num_triangles = pos.shape[-2], tri.shape[0]
        if instanced:
            num_items = num_images * num_triangles
            offsets = starts = self._dummy
        elif ranges.is_cuda:
            # Ranges on the GPU, without host synchronization: clamped to tri and turned into
            # offsets on the device; the setup covers an upper bound of the work items (an image
            # draws at most every triangle), and items past the last range draw nothing.
            start = ranges[:, 0].long().clamp(0, num_triangles)
            count = torch.minimum(ranges[:, 1].long().clamp(min=0), num_triangles - start)
            offsets = torch.zeros(num_images + 1, dtype=torch.int64, device=dev)
            torch.cumsum(count, 0, out=offsets[1:])
            starts = start.to(torch.int32)
            num_items = num_images * num_triangles
        else:
            counts = ranges[:, 1].long()
            offs = torch.zeros(num_images + 1, dtype=torch.int64)
            offs[1:] = torch.cumsum(counts, 0)
            num_items = int(offs[-1])
            offsets = offs.to(dev, non_blocking=True)
            starts = ranges[:, 0].to(dev, non_blocking=True)
        capturing = self._follow_stream()
        pixels = num_images * height * width
        peel_prev = peel and layer_index > 0 and self._peel_index is not None
        cur = 1 - self._peel_index if peel_prev else 0
        keys, setup, params, launches = self._plan(max(num_items, 0), width, height, pixels, cur,
                                                   peel_prev)
        if capturing:
            # A captured graph keeps raw pointers to the scratch it uses: never free those
            # buffers (a later, larger call allocates new ones beside them).
            self._captured_scratch.update(
                {id(t): t for t in (self._keys, self._big, self._states)})
        keys.fill_(-1)  # (a fill kernel is ~3x faster than emptying the keys in resolve)
        kp = params._replace(pos=pos, tri=tri, range_offsets=offsets, range_starts=starts,
                             rast=rast, rast_db=rast_db, num_vertices=num_vertices,
                             num_triangles=num_triangles, num_images=num_images,
                             instanced=instanced, output_db=rast_db is not None)
        for k, (blocks, first, n, state) in enumerate(launches):
            if blocks > 0:
                chunk = kp if k == 0 else kp._replace(item_offset=first, num_items=n,
                                                      big_state=state)
                loader.launch("rasterize_forward", setup, blocks, _SETUP_THREADS, chunk, dev)
                loader.launch("rasterize_forward", "raster_big", self._persistent_blocks,
                              (16, 16, 1), chunk, dev)
        loader.launch("rasterize_forward", "resolve",
                      loader.blocks(max(pixels, kp.num_states), _THREADS), _THREADS, kp, dev)
        # Peeling: the next layer keeps only keys behind these.
        self._peel_index = cur if peel else None


#: The most work items (triangle x image) per launch: the big-triangle list holds two int64 per
#: item of a chunk, kept between calls, so this caps it at 128 MiB (a 10M-triangle batch of 8
#: images runs in 10 chunks; every benchmark scene up to 1M triangles x 8 images in one).
MAX_CHUNK = 1 << 23


def _chunking(num_items, width, height):
    """``(chunk, tile_bits)``: work items per launch (at most :data:`MAX_CHUNK`) and the bits of
    the big list's tile count in its 64-bit counter ((count << tile_bits) + tiles), so that
    neither part overflows."""
    max_tiles = -(-width // 16) * -(-height // 16)
    chunk = min(max(num_items, 1), MAX_CHUNK)
    while True:
        tile_bits = (chunk * max_tiles).bit_length()
        if chunk.bit_length() + tile_bits <= 64:
            return chunk, tile_bits
        chunk = (chunk + 1) // 2
