"""``RasterizeGLContext``: an OpenGL context on a headless EGL device, as in nvdiffrast."""
from __future__ import annotations

import contextlib
import threading

import torch

from . import _library
from ._checks import check_choice


def resolve_device(device, kinds=("cpu", "cuda")) -> torch.device:
    """The ``torch.device`` a context renders on, from its ``device`` argument (a
    ``torch.device``, a string, a CUDA ordinal or ``None``: the current CUDA device if there is
    one and ``kinds`` allows it, else the CPU), checked against the device types in ``kinds``."""
    what = " or ".join(k.upper() for k in kinds)
    if device is None:
        if "cuda" in kinds and torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")
    if isinstance(device, bool) or not isinstance(device, (int, str, torch.device)):
        raise TypeError(f"device must be a torch.device, a string or a CUDA ordinal, "
                        f"got {type(device).__name__}")
    try:
        dev = torch.device("cuda", device) if isinstance(device, int) else torch.device(device)
    except RuntimeError as exc:  # an unknown device string, a negative ordinal
        raise ValueError(f"device must be a {what} device, got {device!r}") from exc
    if dev.type not in kinds:
        raise ValueError(f"device must be a {what} device, got {device!r}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device must be 'cpu' (Mesa's software OpenGL) on a machine without "
                             f"CUDA, got {device!r}")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        elif dev.index >= torch.cuda.device_count():
            raise ValueError(f"device must be one of the {torch.cuda.device_count()} CUDA devices, "
                             f"got {device!r}")
    return dev


class RasterizeGLContext:
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
        self.active_peeler = None
        self._egl = self._pipeline = None
        _library.context_handle(self)  # how custom ops name it under torch.compile
        from .gl_backend.egl import EGLContext
        from .gl_backend.raster_pipeline import RasterPipeline
        cuda_index = self.device.index if self.device.type == "cuda" else None
        if cuda_index is not None:
            torch.cuda.init()
            torch.zeros(1, device=self.device)  # the primary CUDA context exists before interop
        self._egl = EGLContext(cuda_index)
        self._egl.make_current()
        try:
            self._pipeline = RasterPipeline(self.output_db)
            from OpenGL import GL
            self.renderer = GL.glGetString(GL.GL_RENDERER).decode()
        finally:
            self._egl.release()

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

    # -- used by the ops -------------------------------------------------------------------------
    @property
    def max_layers(self) -> int:
        return self._pipeline.max_layers

    @property
    def max_resolution(self) -> tuple:
        return self._pipeline.max_height, self._pipeline.max_width

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
