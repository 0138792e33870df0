"""``RasterizeGLContext``: an OpenGL context on a headless EGL device, as in nvdiffrast."""
from __future__ import annotations

import contextlib
import threading

import torch

from . import dispatch
from .checks import check_choice
from .log import logger
from .raster_context import ONE_CONTEXT_PER_DEVICE, RasterContext, resolve_device


class RasterizeGLContext(RasterContext):
    """Create a new OpenGL rasterizer context.

    Creating a context is expensive; create one and reuse it for all calls. The context is bound
    to a device: with a CUDA device, NVIDIA's EGL device of that GPU, and results reach CUDA
    tensors through CUDA–GL interop with no host copy; with the CPU, Mesa's software OpenGL
    (llvmpipe), for CPU tensors.

    Args:
        output_db (bool): Compute and output image-space derivatives of barycentrics.
        mode (str): OpenGL context handling mode, ``'automatic'`` or ``'manual'``. In automatic
            mode the context is made current for each call and released after it, so any thread
            may use the context (one at a time). In manual mode the user calls
            :meth:`set_context` once on the thread that will use the context, and
            :meth:`release_context` when done.
        device: CUDA device (``torch.device``, string or ordinal) whose GPU renders, or ``'cpu'``
            for Mesa's software renderer. ``None``: the current CUDA device when CUDA is
            available, otherwise the CPU.

    Raises:
        diffrast.gl_backend.egl.EGLError: EGL or OpenGL 4.5 is not available; the message says
            what to install.
    """

    def __init__(self, output_db=True, mode="automatic", device=None):
        check_choice("mode", mode, ("automatic", "manual"))
        self.output_db = bool(output_db)
        self.mode = mode
        self.device = resolve_device(device)
        self._lock = threading.RLock()
        self._owner = None  # thread holding the context in manual mode
        self._egl = self._pipeline = None
        super().__init__()
        from .gl_backend.egl import EGLContext
        from .gl_backend.raster_pipeline import RasterPipeline
        cuda_index = self.device.index if self.device.type == "cuda" else None
        if cuda_index is not None:
            torch.cuda.init()
            torch.zeros(1, device=self.device)  # the primary CUDA context exists before interop
        self._egl = EGLContext(cuda_index)
        self._egl.make_current()
        try:
            self._pipeline = RasterPipeline(self.device)
            from OpenGL import GL
            self.renderer = GL.glGetString(GL.GL_RENDERER).decode()
            version = GL.glGetString(GL.GL_VERSION).decode()
        finally:
            self._egl.release()
        height, width = self.max_resolution
        logger.info("RasterizeGLContext on %s: %s, OpenGL %s (EGL vendor %s); up to %d x %d "
                    "pixels, %d layers per batch", self.device, self.renderer, version,
                    self._egl.vendor, height, width, self.max_layers)

    # -- nvdiffrast's manual-mode API ------------------------------------------------------------
    def set_context(self):
        """Make the context current on the calling thread (manual mode only)."""
        if self.mode != "manual":
            raise RuntimeError("set_context() can only be called in manual mode; "
                               "this context was created with mode='automatic'")
        self._egl.make_current()
        self._owner = threading.get_ident()

    def release_context(self):
        """Release the context from the calling thread (manual mode only)."""
        if self.mode != "manual":
            raise RuntimeError("release_context() can only be called in manual mode; "
                               "this context was created with mode='automatic'")
        self._egl.release()
        self._owner = None

    # -- the RasterContext interface -------------------------------------------------------------
    @property
    def max_layers(self) -> int:
        """The GL limit on array texture layers: the most images a
        :class:`~diffrast.DepthPeeler` peels in one batch. :func:`~diffrast.rasterize` renders
        larger batches in parts."""
        return self._pipeline.max_layers

    @property
    def max_resolution(self) -> tuple:
        """The largest ``(height, width)`` of a render target (the GL limits)."""
        return self._pipeline.max_height, self._pipeline.max_width

    def check_usable(self) -> None:
        """Check that the context has not been released.

        Raises:
            RuntimeError: :meth:`release` was called.
        """
        if self._pipeline is None:
            raise RuntimeError("glctx has been released (RasterizeGLContext.release()); create a "
                               "new context")

    def check_device(self, pos: torch.Tensor) -> None:
        """Check that the context can take ``pos``: CPU tensors always (they go through host
        memory), CUDA tensors only on :attr:`device`.

        Raises:
            ValueError: ``pos`` is on another CUDA device.
        """
        if pos.device.type == "cuda" and self.device != pos.device:
            raise ValueError(f"pos is on {pos.device} but glctx renders on {self.device}; create "
                             f"the RasterizeGLContext with device={str(pos.device)!r}"
                             f"{ONE_CONTEXT_PER_DEVICE}")

    def render(self, pos, tri, resolution, ranges, layer_index, peel, rast, rast_db) -> None:
        """Render a batch of images into ``rast`` (and ``rast_db``), as
        :meth:`diffrast.raster_context.RasterContext.render` says. OpenGL decides visibility
        only: each image renders the id of its nearest triangle per pixel into a layer of the GL
        targets, in parts of at most :attr:`max_layers` images, which are copied into an int32
        buffer (through CUDA–GL interop for CUDA tensors); the resolve pass that
        :class:`~diffrast.RasterizeCudaContext` also runs then computes the barycentrics, z/w and
        derivatives of each pixel from its triangle (the ``resolve_ids`` kernel, or the torch
        reference for CPU tensors). Depth peeling alternates between two depth targets, reading
        the previous layer's depth from the other, and keeps each layer's reported ``z/w`` in a
        texture: a fragment of the next layer must lie strictly behind both.

        Raises:
            ValueError: ``peel`` with more than :attr:`max_layers` images.
        """
        height, width = resolution
        batch = rast.shape[0]
        if batch == 0:
            return
        chunk = self.max_layers
        if peel and batch > chunk:
            raise ValueError(f"DepthPeeler supports at most {chunk} images per batch (the GL "
                             f"layer limit), got {batch}")
        num_vertices = pos.shape[-2]
        range_list = ranges.tolist() if ranges is not None else None
        depth_index = layer_index % 2
        behind = peel and layer_index > 0
        ids = torch.empty((batch, height, width), dtype=torch.int32, device=rast.device)
        with self.current() as pipe:
            pipe.ensure_targets(width, height, min(batch, chunk))
            pipe.upload(pos, tri)
            for first in range(0, batch, chunk):
                count = min(chunk, batch - first)
                if range_list is None:
                    pipe.draw_instances(num_vertices, tri.shape[0], first, count, width, height,
                                        depth_index, behind)
                else:
                    pipe.draw_ranges(num_vertices, range_list[first:first + count], width,
                                     height, depth_index, behind)
                pipe.read_ids(ids[first:first + count])
            dispatch.backend("rasterize_resolve", rast.device)(pos, tri, ids, rast, rast_db)
            if peel:  # the next layer keeps only fragments behind this one's reported z/w too
                pipe.store_peel_depth(rast[..., 2].contiguous())

    # -- GL state --------------------------------------------------------------------------------
    @contextlib.contextmanager
    def current(self):
        """Hold the context current on this thread for the duration of a call; yields the
        ``RasterPipeline``."""
        if self._pipeline is None:
            raise RuntimeError("this RasterizeGLContext has been released")
        if self.mode == "manual":
            if self._owner != threading.get_ident():
                raise RuntimeError(
                    "manual-mode RasterizeGLContext is not current on this thread: call "
                    "glctx.set_context() on the thread that uses it (an OpenGL context is "
                    "current on one thread at a time; torch.nn.DataParallel, which calls the "
                    "module from a thread per GPU, is not supported: use "
                    "DistributedDataParallel)")
            yield self._pipeline
            return
        with self._lock:
            self._egl.make_current()
            try:
                yield self._pipeline
            finally:
                self._egl.release()

    def release(self):
        """Free the GL objects, interop registrations and the EGL context now, rather than at
        garbage collection. The context cannot be used afterwards."""
        if self._egl is None:
            return
        with self._lock:
            if self._pipeline is not None:
                try:
                    self._egl.make_current()
                    self._pipeline.release()
                finally:
                    self._pipeline = None
                    self._egl.release()
            self._egl.destroy()
            self._egl = None

    def __del__(self):
        try:
            self.release()
        except Exception:
            pass
