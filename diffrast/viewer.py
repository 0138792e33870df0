"""``diffrast.viewer``: a window for watching an optimisation live, with an orbit camera.

A :class:`Viewer` is a glfw window that shows an image tensor ``[H, W, C]`` or a batch
``[B, H, W, C]`` (tiled in a grid), CPU or CUDA, with diffrast's row order (row 0 at the bottom),
so a rendered image appears upright. CUDA frames reach the window's texture through CUDA–GL
interop, device to device, when the window's OpenGL is NVIDIA's; CPU frames (and CUDA frames on
any other OpenGL, e.g. Mesa under Xvfb) go through ``glTexSubImage2D``. Its
:class:`OrbitCamera` turns left-button drags into yaw and pitch and the wheel into distance; a
program reads ``viewer.camera.mvp()`` each frame to render what the user looks at::

    import diffrast as dr
    from diffrast.viewer import maybe_viewer

    win = maybe_viewer(args.display)        # a Viewer, or None when headless
    for it in range(iterations):
        ...                                 # render with win.camera.mvp() if win else a fixed one
        if win is not None and not win.show(image, f"iteration {it}: loss {loss:.3e}"):
            win = None                      # the user closed the window; carry on headless

The window has an EGL context (OpenGL 4.5 core, else 3.3 core; GLX only if EGL fails), the API
diffrast's own headless contexts use, so both live in one process without mixing window-system
APIs on a thread. The viewer's context is current only inside its own calls: each call saves the
thread's current context (e.g. a manual-mode ``RasterizeGLContext``) and restores it on return.

Without a display (no ``DISPLAY``/``WAYLAND_DISPLAY``, or glfw cannot connect), ``Viewer()``
raises :class:`NoDisplayError`; :func:`maybe_viewer` turns that into a printed note and ``None``.
Use the viewer from the thread that created it.
"""
from __future__ import annotations

import atexit
import math
import os
import sys
import threading
import warnings
import weakref

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

import torch  # noqa: E402

from . import geometry  # noqa: E402

__all__ = ["Viewer", "OrbitCamera", "ViewerError", "NoDisplayError", "maybe_viewer", "frame_from_image",
           "grid_shape", "fit_viewport"]

_HEADLESS_HINT = (
    "Run headless instead (without --display: diffrast renders offscreen through EGL and needs no "
    "display), or give the program a virtual X server: `xvfb-run -a python ...` (package xvfb).")

# Longest side of a window sized automatically from the first frame (integer multiples of it).
_AUTO_SIZE = 768
_BACKGROUND = (0.12, 0.12, 0.12, 1.0)


class ViewerError(RuntimeError):
    """The viewer could not open or use its window; the message says why."""


class NoDisplayError(ViewerError):
    """There is no display to open a window on (no ``DISPLAY``/``WAYLAND_DISPLAY``, or glfw could
    not connect to it). The message suggests running headless or under ``xvfb-run``."""


# ------------------------------------------------------------------------------------------------
# Orbit camera
# ------------------------------------------------------------------------------------------------

class OrbitCamera:
    """A camera orbiting a target point, driven by the viewer's mouse input.

    The camera sits at ``distance`` from ``target`` and looks at it; ``yaw`` turns the scene about
    the world's y axis and ``pitch`` tilts it about the camera's x axis (both in radians, pitch
    limited to ±89°). With ``yaw = pitch = 0`` it looks down the world's -z axis from
    ``(0, 0, distance)``. In a :class:`Viewer`, dragging with the left mouse button calls
    :meth:`drag` and the wheel calls :meth:`zoom`; a program reads the matrices each frame.

    Args:
        distance (float): Distance from the target (> 0).
        yaw (float): Initial yaw in radians.
        pitch (float): Initial pitch in radians.
        fov_y (float): Vertical field of view in degrees.
        near (float): Near clipping distance (> 0).
        far (float): Far clipping distance (> near).
        target: The point orbited, a 3-sequence in world coordinates.
        rotate_speed (float): Radians of yaw/pitch per pixel dragged.
        zoom_factor (float): Factor on the distance per wheel step towards the target (< 1).
        min_distance (float), max_distance (float): Limits of the distance.

    Attributes:
        version (int): Incremented on every change, so a program can re-render only when the
            camera moved.
    """

    def __init__(self, distance=3.5, yaw=0.0, pitch=0.0, fov_y=45.0, near=0.1, far=100.0,
                 target=(0.0, 0.0, 0.0), rotate_speed=0.01, zoom_factor=0.9,
                 min_distance=1e-3, max_distance=1e4):
        if not distance > 0:
            raise ValueError(f"distance must be positive, got {distance!r}")
        if not (0 < near < far):
            raise ValueError(f"near and far must satisfy 0 < near < far, got near={near!r}, far={far!r}")
        if not 0 < zoom_factor < 1:
            raise ValueError(f"zoom_factor must be in (0, 1), got {zoom_factor!r}")
        self.fov_y, self.near, self.far = float(fov_y), float(near), float(far)
        self.rotate_speed, self.zoom_factor = float(rotate_speed), float(zoom_factor)
        self.min_distance, self.max_distance = float(min_distance), float(max_distance)
        self.target = tuple(float(v) for v in target)
        if len(self.target) != 3:
            raise ValueError(f"target must have 3 coordinates, got {target!r}")
        self._initial = (float(distance), float(yaw), float(pitch))
        self.version = 0
        self.reset()

    _PITCH_LIMIT = math.radians(89.0)

    def reset(self) -> None:
        """Return to the distance, yaw and pitch given at construction."""
        self.distance, self.yaw, self.pitch = self._initial
        self.pitch = min(max(self.pitch, -self._PITCH_LIMIT), self._PITCH_LIMIT)
        self.version += 1

    def drag(self, dx: float, dy: float) -> None:
        """Rotate as a mouse drag of ``(dx, dy)`` pixels does (window coordinates: ``dy > 0`` is
        downwards). Dragging right turns the scene to the right (yaw grows); dragging down tilts
        its top towards the viewer (pitch grows).

        Args:
            dx (float): Horizontal motion in pixels.
            dy (float): Vertical motion in pixels.
        """
        self.yaw = math.remainder(self.yaw + float(dx) * self.rotate_speed, 2 * math.pi)
        self.pitch = min(max(self.pitch + float(dy) * self.rotate_speed, -self._PITCH_LIMIT),
                         self._PITCH_LIMIT)
        self.version += 1

    def zoom(self, steps: float) -> None:
        """Move towards the target by ``steps`` wheel steps (negative: away): the distance is
        multiplied by ``zoom_factor ** steps`` and kept within its limits.

        Args:
            steps (float): Wheel steps, as glfw's scroll offset reports them.
        """
        log_d = math.log(self.distance) + float(steps) * math.log(self.zoom_factor)  # no overflow
        self.distance = min(max(math.exp(min(log_d, 700.0)), self.min_distance), self.max_distance)
        self.version += 1

    def view_matrix(self) -> torch.Tensor:
        """World-to-camera matrix (OpenGL conventions: the camera looks down its -z axis).

        Returns:
            ``[4, 4]`` float32 tensor on the CPU:
            ``translate(0, 0, -distance) @ rotate_x(pitch) @ rotate_y(yaw) @ translate(-target)``.
        """
        tx, ty, tz = self.target
        return (geometry.translate(0.0, 0.0, -self.distance) @ geometry.rotate_x(self.pitch)
                @ geometry.rotate_y(self.yaw) @ geometry.translate(-tx, -ty, -tz))

    def projection_matrix(self, aspect: float = 1.0) -> torch.Tensor:
        """OpenGL perspective projection with the camera's ``fov_y``, ``near`` and ``far``.

        Args:
            aspect (float): Width over height of the image rendered with it.

        Returns:
            ``[4, 4]`` float32 tensor on the CPU.
        """
        return geometry.perspective(self.fov_y, float(aspect), self.near, self.far)

    def mvp(self, aspect: float = 1.0) -> torch.Tensor:
        """Projection times view: the matrix that takes world positions to clip space, as
        ``geometry.transform(pos, camera.mvp())`` uses it.

        Args:
            aspect (float): Width over height of the image rendered with it.

        Returns:
            ``[4, 4]`` float32 tensor on the CPU.
        """
        return self.projection_matrix(aspect) @ self.view_matrix()

    def eye(self) -> torch.Tensor:
        """The camera's position in world coordinates, ``[3]`` float32 (e.g. for lighting)."""
        return torch.linalg.inv(self.view_matrix().double())[:3, 3].float()


# ------------------------------------------------------------------------------------------------
# Frames: validation, quantisation and tiling (torch, on the image's device)
# ------------------------------------------------------------------------------------------------

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


# ------------------------------------------------------------------------------------------------
# glfw: import, one init per process while viewers are open, error messages
# ------------------------------------------------------------------------------------------------

_glfw_module = None
_glfw_users = 0
_glfw_lock = threading.Lock()


def _glfw():
    global _glfw_module
    if _glfw_module is None:
        try:
            import glfw
        except Exception as exc:  # ImportError, or the shared library failing to load
            raise ViewerError(f"the viewer needs glfw (pip install glfw): {exc}") from exc
        _glfw_module = glfw
    return _glfw_module


class _GlfwErrors:
    """Silence pyglfw's warnings inside a block; ``last()`` gives the latest GLFW error text."""

    def __enter__(self):
        glfw = _glfw()
        self._saved = glfw.ERROR_REPORTING
        glfw.ERROR_REPORTING = "ignore"
        return self

    def __exit__(self, *exc):
        _glfw().ERROR_REPORTING = self._saved
        return False

    @staticmethod
    def last() -> str:
        code, desc = _glfw().get_error()
        if not code:
            return "no error reported"
        return desc.decode(errors="replace") if isinstance(desc, bytes) else str(desc)


def _display_missing() -> str | None:
    """Why there is certainly no display (Linux/BSD without DISPLAY and WAYLAND_DISPLAY), else None."""
    if sys.platform.startswith(("linux", "freebsd", "openbsd", "netbsd")):
        if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
            return "neither DISPLAY nor WAYLAND_DISPLAY is set"
    return None


def _acquire_glfw():
    global _glfw_users
    glfw = _glfw()
    with _glfw_lock:
        if _glfw_users == 0:
            why = _display_missing()
            if why is not None:
                raise NoDisplayError(f"no display to open a window on: {why}. {_HEADLESS_HINT}")
            with _GlfwErrors() as errs:
                if not glfw.init():
                    shown = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
                    raise NoDisplayError(
                        f"glfw could not connect to the display {shown!r} ({errs.last()}). "
                        f"{_HEADLESS_HINT}")
        _glfw_users += 1


def _release_glfw():
    global _glfw_users
    with _glfw_lock:
        _glfw_users -= 1
        if _glfw_users == 0:
            with _SavedContext():
                _glfw().terminate()


# (context creation API, major, minor) in order of preference; see the module docstring.
_CONTEXT_ATTEMPTS = (("EGL", 4, 5), ("EGL", 3, 3), ("native", 4, 5), ("native", 3, 3))


def _create_window(width, height, title, visible):
    glfw = _glfw()
    failures = []
    attempts = _CONTEXT_ATTEMPTS
    forced = os.environ.get("DIFFRAST_VIEWER_CONTEXT", "").strip().lower()
    if forced:
        if forced not in ("egl", "native"):
            raise ValueError(f"DIFFRAST_VIEWER_CONTEXT must be 'egl' or 'native', got {forced!r}")
        attempts = tuple(a for a in attempts if a[0].lower() == forced)
    with _GlfwErrors() as errs:
        for api, major, minor in attempts:
            glfw.default_window_hints()
            glfw.window_hint(glfw.CLIENT_API, glfw.OPENGL_API)
            glfw.window_hint(glfw.CONTEXT_CREATION_API,
                             glfw.EGL_CONTEXT_API if api == "EGL" else glfw.NATIVE_CONTEXT_API)
            glfw.window_hint(glfw.CONTEXT_VERSION_MAJOR, major)
            glfw.window_hint(glfw.CONTEXT_VERSION_MINOR, minor)
            glfw.window_hint(glfw.OPENGL_PROFILE, glfw.OPENGL_CORE_PROFILE)
            glfw.window_hint(glfw.OPENGL_FORWARD_COMPAT, True)
            for hint in (glfw.RED_BITS, glfw.GREEN_BITS, glfw.BLUE_BITS, glfw.ALPHA_BITS):
                glfw.window_hint(hint, 8)
            glfw.window_hint(glfw.DEPTH_BITS, 0)
            glfw.window_hint(glfw.STENCIL_BITS, 0)
            glfw.window_hint(glfw.SAMPLES, 0)
            glfw.window_hint(glfw.SRGB_CAPABLE, False)
            glfw.window_hint(glfw.DOUBLEBUFFER, True)
            glfw.window_hint(glfw.VISIBLE, bool(visible))
            window = glfw.create_window(int(width), int(height), title, None, None)
            if window:
                return window, f"{api} OpenGL {major}.{minor} core"
            failures.append(f"{api} {major}.{minor} core: {errs.last()}")
        glfw.default_window_hints()
    raise ViewerError("could not create a window with an OpenGL context; tried " + "; ".join(failures))


# ------------------------------------------------------------------------------------------------
# The thread's current context, saved and restored around each viewer call
# ------------------------------------------------------------------------------------------------

def _egl():
    from OpenGL import EGL
    return EGL


def _handle(h) -> int:
    """A ctypes/PyOpenGL handle as an int (0 for null)."""
    import ctypes
    if h is None:
        return 0
    if isinstance(h, int):
        return h
    try:
        return ctypes.cast(h, ctypes.c_void_p).value or 0
    except (TypeError, ctypes.ArgumentError):
        return int(getattr(h, "value", 0) or 0)


class _SavedContext:
    """Save the calling thread's current OpenGL context for a block and restore it afterwards: an
    EGL context (diffrast's own, or any other) exactly, else another viewer's glfw context, else
    nothing. With ``window``, that window's context is made current inside the block."""

    def __init__(self, window=None):
        self.window = window

    def __enter__(self):
        EGL, glfw = _egl(), _glfw()
        self.prev = None
        ctx = EGL.eglGetCurrentContext()
        if _handle(ctx):
            self.prev = (EGL.eglGetCurrentDisplay(), EGL.eglGetCurrentSurface(EGL.EGL_DRAW),
                         EGL.eglGetCurrentSurface(EGL.EGL_READ), ctx)
            # Release it first: a GLX context (the fallback) cannot be made current on a thread
            # while an EGL context is (libglvnd refuses, and X reports BadAccess).
            EGL.eglMakeCurrent(self.prev[0], EGL.EGL_NO_SURFACE, EGL.EGL_NO_SURFACE, EGL.EGL_NO_CONTEXT)
        self.prev_window = glfw.get_current_context()
        self.own_ctx = 0
        if self.window is not None:
            glfw.make_context_current(self.window)
            self.own_ctx = _handle(EGL.eglGetCurrentContext())
        return self

    def __exit__(self, *exc):
        EGL, glfw = _egl(), _glfw()
        if _glfw_users > 0:  # not after glfw.terminate(), which released its contexts itself
            glfw.make_context_current(None)
        if self.prev is not None and _handle(self.prev[3]) != self.own_ctx:
            if not EGL.eglMakeCurrent(*self.prev):
                warnings.warn("diffrast.viewer could not restore the previously current EGL "
                              f"context (EGL error 0x{EGL.eglGetError():x})", RuntimeWarning)
        elif _glfw_users > 0 and self.prev is None and self.prev_window \
                and (self.window is None or _handle(self.prev_window) != _handle(self.window)):
            # A glfw window with a native (GLX) context; glfw forgets destroyed windows, so it
            # is alive.
            glfw.make_context_current(self.prev_window)
        return False


_open_viewers = weakref.WeakSet()


@atexit.register
def _close_all():
    # Close viewers still open at exit while the interpreter (and PyOpenGL) still works.
    for viewer in list(_open_viewers):
        try:
            viewer.close()
        except Exception:
            pass


# ------------------------------------------------------------------------------------------------
# The viewer
# ------------------------------------------------------------------------------------------------

class Viewer:
    """Create a window that shows image tensors, with an orbit camera.

    The window opens at once (so a missing display is reported before any work). Without
    ``width`` and ``height`` it is sized from the first frame shown: the largest integer multiple
    of the frame whose longer side is at most 768 pixels (a larger frame: its own size, shrunk to
    fit the screen), and it is shown only then. A frame is drawn letterboxed into the window, nearest-neighbour when magnified, so at
    an integer scale the window shows the quantised image pixel for pixel.

    Mouse and keyboard: drag with the left button to orbit (:meth:`OrbitCamera.drag`), turn the
    wheel to zoom (:meth:`OrbitCamera.zoom`), ``R`` resets the camera, ``Esc`` closes the window.
    Events are handled inside :meth:`show`, :meth:`poll` and :meth:`wait`.

    Usable as a context manager (``with Viewer() as v: ...`` closes it on exit). Use it from the
    thread that created it.

    The window's context is created through EGL (OpenGL 4.5 core, else 3.3 core), else through
    the window system's native API (GLX). The environment variable ``DIFFRAST_VIEWER_CONTEXT``
    set to ``egl`` or ``native`` restricts the choice to one of them.

    Args:
        width (int): Window width in pixels, or ``None`` to size it from the first frame (the
            aspect ratio of the frame sets a missing one of ``width``, ``height``).
        height (int): Window height in pixels, or ``None`` (see ``width``).
        title (str): Window title; :meth:`show` appends a status line to it.
        visible (bool): Show the window on screen. A hidden window still renders (for tests).
        camera (OrbitCamera): The camera to drive; ``None`` for a default ``OrbitCamera()``.

    Attributes:
        camera (OrbitCamera): The orbit camera that the mouse drives.
        context_api (str): How the window's context was created, e.g. ``'EGL OpenGL 4.5 core'``.
        renderer (str): ``GL_RENDERER`` of the window's context.
        vendor (str): ``GL_VENDOR`` of the window's context (CUDA frames use interop only when
            it is NVIDIA).
        upload_path (str): How the last frame reached the window: ``'interop'`` (CUDA–GL, device
            to device), ``'host'`` (``glTexSubImage2D`` from host memory) or ``None`` before the
            first frame.

    Raises:
        NoDisplayError: There is no display (no ``DISPLAY``/``WAYLAND_DISPLAY``, or glfw cannot
            connect to it). Run headless or under ``xvfb-run``; :func:`maybe_viewer` does the
            fallback.
        ViewerError: glfw is missing, or no window with an OpenGL 3.3+ core context could be
            created.
        ValueError: ``width`` or ``height`` is not a positive int, or ``DIFFRAST_VIEWER_CONTEXT``
            is set to something else than ``egl`` or ``native``.
    """

    def __init__(self, width=None, height=None, title="diffrast", visible=True, camera=None):
        for name, v in (("width", width), ("height", height)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
                raise ValueError(f"{name} must be a positive int or None, got {v!r}")
        self.camera = camera if camera is not None else OrbitCamera()
        self._base_title = str(title)
        self._visible = bool(visible)
        self._size_request = (width, height)
        self._auto_size = width is None or height is None
        self._thread = threading.get_ident()
        self._window = None
        self._registered = None  # (CUDA device, RegisteredTexture2D) once a CUDA frame came
        self._tex = self._vao = 0
        self._program = None
        self._frame_size = None  # (width, height) of the texture's content
        self._dirty = False
        self._drag_from = None  # cursor position at the last drag step, while dragging
        self._cursor = None  # cursor position of the last motion event
        self._interop_failed = False
        self.upload_path = None

        _acquire_glfw()
        try:
            w0 = width or height or 256
            h0 = height or width or 256
            with _SavedContext():  # glfw makes the new context current while creating it
                window, self.context_api = _create_window(w0, h0, self._base_title,
                                                          visible and not self._auto_size)
        except BaseException:
            _release_glfw()
            raise
        self._window = window
        _open_viewers.add(self)
        try:
            self._init_gl()
        except BaseException:
            self.close()
            raise
        self._install_callbacks()

    # -- set-up ----------------------------------------------------------------------------------
    def _init_gl(self):
        from OpenGL import GL

        from .gl_backend.program import Program
        glfw = _glfw()
        with _SavedContext(self._window):
            glfw.swap_interval(0)  # never throttle the optimisation to the monitor
            self.renderer = GL.glGetString(GL.GL_RENDERER).decode(errors="replace")
            self.vendor = GL.glGetString(GL.GL_VENDOR).decode(errors="replace")
            self._max_texture = int(GL.glGetIntegerv(GL.GL_MAX_TEXTURE_SIZE))
            self._program = Program(["viewer.vert", "viewer.frag"])
            GL.glUseProgram(self._program.name)
            GL.glUniform1i(self._program.location("u_image"), 0)
            GL.glUseProgram(0)
            self._vao = GL.glGenVertexArrays(1)
            self._tex = GL.glGenTextures(1)
            GL.glBindTexture(GL.GL_TEXTURE_2D, self._tex)
            GL.glTexParameteri(GL.GL_TEXTURE_2D, GL.GL_TEXTURE_MIN_FILTER, GL.GL_LINEAR)
            GL.glTexParameteri(GL.GL_TEXTURE_2D, GL.GL_TEXTURE_MAG_FILTER, GL.GL_NEAREST)
            GL.glTexParameteri(GL.GL_TEXTURE_2D, GL.GL_TEXTURE_WRAP_S, GL.GL_CLAMP_TO_EDGE)
            GL.glTexParameteri(GL.GL_TEXTURE_2D, GL.GL_TEXTURE_WRAP_T, GL.GL_CLAMP_TO_EDGE)
            GL.glBindTexture(GL.GL_TEXTURE_2D, 0)

    def _install_callbacks(self):
        glfw = _glfw()
        ref = weakref.ref(self)  # the callbacks must not keep the viewer alive

        def bound(method):
            def callback(*args):
                viewer = ref()
                if viewer is not None:
                    getattr(viewer, method)(*args)
            return callback

        glfw.set_mouse_button_callback(self._window, bound("_on_mouse_button"))
        glfw.set_cursor_pos_callback(self._window, bound("_on_cursor_pos"))
        glfw.set_scroll_callback(self._window, bound("_on_scroll"))
        glfw.set_key_callback(self._window, bound("_on_key"))
        glfw.set_framebuffer_size_callback(self._window, bound("_on_refresh"))
        glfw.set_window_refresh_callback(self._window, bound("_on_refresh"))

    # -- input (glfw callbacks; called inside poll_events) ---------------------------------------
    def _on_mouse_button(self, window, button, action, mods):
        glfw = _glfw()
        if button != glfw.MOUSE_BUTTON_LEFT:
            return
        if action == glfw.PRESS:
            # Where the last motion event put the cursor (events queue up between polls, so
            # querying the pointer now could be later than the press).
            self._drag_from = self._cursor if self._cursor is not None else glfw.get_cursor_pos(window)
        elif action == glfw.RELEASE:
            self._drag_from = None

    def _on_cursor_pos(self, window, x, y):
        self._cursor = (x, y)
        if self._drag_from is not None:
            x0, y0 = self._drag_from
            self._drag_from = (x, y)
            self.camera.drag(x - x0, y - y0)

    def _on_scroll(self, window, xoffset, yoffset):
        self.camera.zoom(yoffset)

    def _on_key(self, window, key, scancode, action, mods):
        glfw = _glfw()
        if action != glfw.PRESS:
            return
        if key == glfw.KEY_ESCAPE:
            glfw.set_window_should_close(window, True)
        elif key == glfw.KEY_R:
            self.camera.reset()

    def _on_refresh(self, window, *args):
        self._dirty = True

    # -- public API ------------------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        """Whether the window is open (``False`` after :meth:`close` or once the user closed
        it and :meth:`show`, :meth:`poll` or :meth:`wait` noticed)."""
        return self._window is not None

    @property
    def framebuffer_size(self) -> tuple:
        """``(width, height)`` of the window's framebuffer in pixels (``(0, 0)`` when closed)."""
        if self._window is None:
            return (0, 0)
        return tuple(_glfw().get_framebuffer_size(self._window))

    @property
    def frame_size(self) -> tuple | None:
        """``(width, height)`` of the last frame (a batch: its whole grid), or ``None``."""
        return self._frame_size

    def show(self, image, title=None) -> bool:
        """Show an image (or a batch tiled in a grid), handle window events, and report whether
        the window is still open.

        Args:
            image: ``[H, W, C]`` or ``[B, H, W, C]`` tensor (or NumPy array), ``C`` in 1, 3, 4;
                float in ``[0, 1]`` (clamped) or uint8; CPU or CUDA; rows bottom-up as diffrast
                renders them. CUDA tensors are copied device to device (CUDA–GL interop) when the
                window's OpenGL is NVIDIA's, through host memory otherwise. See
                :func:`frame_from_image` for quantisation and tiling.
            title (str): Status line shown after the window title (e.g. iteration and loss);
                ``None`` keeps the current one.

        Returns:
            ``True`` while the window is open; ``False`` once it has been closed (by the user,
            ``Esc`` or :meth:`close`), after which calls do nothing and return ``False``.

        Raises:
            TypeError, ValueError: ``image`` has an unsupported type, dtype or shape, or is larger
                than the GL texture size limit.
        """
        if self._window is None:
            return False
        self._check_thread()
        frame = frame_from_image(image)
        height, width = int(frame.shape[0]), int(frame.shape[1])
        if max(width, height) > self._max_texture:
            raise ValueError(f"image must fit the GL texture size limit of {self._max_texture} "
                             f"pixels per side (as a grid of its batch), got a grid of "
                             f"{width}x{height} pixels")
        glfw = _glfw()
        if title is not None:
            glfw.set_window_title(self._window, f"{self._base_title} — {title}" if title else self._base_title)
        first = self._frame_size is None
        if first and self._auto_size:
            glfw.set_window_size(self._window, *self._auto_window_size(width, height))
            if self._visible:
                glfw.show_window(self._window)
        with _SavedContext(self._window):
            self._upload(frame)
            self._draw()
            glfw.swap_buffers(self._window)
        self._dirty = False
        return self.poll()

    def poll(self) -> bool:
        """Handle pending window events (camera input, resizes, close requests) without a new
        frame, redrawing the last frame if the window needs it. Call it to keep the window
        responsive while the program is busy between frames.

        Returns:
            Whether the window is still open (see :meth:`show`).
        """
        if self._window is None:
            return False
        self._check_thread()
        glfw = _glfw()
        glfw.poll_events()
        return self._after_events()

    def wait(self, timeout=None) -> bool:
        """Keep the window responsive until the user closes it (or ``timeout`` seconds pass),
        e.g. to look at the result at the end of a program.

        Args:
            timeout (float): Seconds to wait at most; ``None`` waits until the window is closed.

        Returns:
            Whether the window is still open.
        """
        import time
        glfw = _glfw()
        end = None if timeout is None else time.monotonic() + float(timeout)
        while self._window is not None:
            self._check_thread()
            left = 0.1 if end is None else min(0.1, end - time.monotonic())
            if left <= 0:
                break
            glfw.wait_events_timeout(left)
            if not self._after_events():
                break
        return self.is_open

    def read_pixels(self) -> torch.Tensor:
        """Draw the last frame into the window's back buffer again and read the whole default
        framebuffer back with ``glReadPixels``: what the window shows (without presenting).

        Returns:
            ``[height, width, 3]`` uint8 CPU tensor of the framebuffer, rows bottom-up
            (``framebuffer_size`` gives ``width`` and ``height``).

        Raises:
            RuntimeError: The viewer is closed.
        """
        if self._window is None:
            raise RuntimeError("read_pixels() on a closed Viewer")
        self._check_thread()
        from OpenGL import GL
        import numpy as np
        with _SavedContext(self._window):
            bw, bh = self._draw()
            GL.glReadBuffer(GL.GL_BACK)
            GL.glPixelStorei(GL.GL_PACK_ALIGNMENT, 1)
            data = GL.glReadPixels(0, 0, bw, bh, GL.GL_RGB, GL.GL_UNSIGNED_BYTE)
        arr = np.frombuffer(data, dtype=np.uint8).reshape(bh, bw, 3)
        return torch.from_numpy(arr.copy())

    def close(self) -> None:
        """Close the window and free its GL objects, interop registration and context; terminate
        glfw when no other viewer is open. Safe to call more than once."""
        window, self._window = self._window, None
        if window is None:
            return
        _open_viewers.discard(self)
        glfw = _glfw()
        try:
            with _SavedContext(window):
                try:
                    self._release_gl()
                finally:
                    glfw.destroy_window(window)
        finally:
            _release_glfw()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        try:
            if self._window is not None and threading.get_ident() == self._thread:
                self.close()
        except Exception:
            pass

    # -- internals -------------------------------------------------------------------------------
    def _check_thread(self):
        if threading.get_ident() != self._thread:
            raise RuntimeError("a Viewer must be used from the thread that created it")

    def _auto_window_size(self, width, height):
        w_req, h_req = self._size_request
        if w_req is not None:
            return w_req, max(1, round(w_req * height / width))
        if h_req is not None:
            return max(1, round(h_req * width / height)), h_req
        k = _AUTO_SIZE // max(width, height)
        if k >= 1:
            return k * width, k * height
        # Larger than the automatic size: as is, or shrunk to 90 % of the screen if it is larger.
        try:
            glfw = _glfw()
            mode = glfw.get_video_mode(glfw.get_primary_monitor())
            s = min(1.0, 0.9 * mode.size.width / width, 0.9 * mode.size.height / height)
        except Exception:  # no monitor information
            s = 1.0
        return max(1, int(width * s)), max(1, int(height * s))

    def _after_events(self) -> bool:
        if self._window is None:
            return False
        glfw = _glfw()
        if glfw.window_should_close(self._window):
            self.close()
            return False
        if self._dirty and self._frame_size is not None:
            with _SavedContext(self._window):
                self._draw()
                glfw.swap_buffers(self._window)
            self._dirty = False
        return True

    def _upload(self, frame: torch.Tensor) -> None:
        from OpenGL import GL
        height, width = int(frame.shape[0]), int(frame.shape[1])
        if self._frame_size != (width, height):
            self._release_registration()
            GL.glBindTexture(GL.GL_TEXTURE_2D, self._tex)
            GL.glTexImage2D(GL.GL_TEXTURE_2D, 0, GL.GL_RGBA8, width, height, 0, GL.GL_RGBA,
                            GL.GL_UNSIGNED_BYTE, None)
            GL.glBindTexture(GL.GL_TEXTURE_2D, 0)
            self._frame_size = (width, height)
        if frame.is_cuda and self._interop_usable():
            try:
                if self._registered is not None and self._registered[0] != frame.device:
                    self._release_registration()
                with torch.cuda.device(frame.device):
                    if self._registered is None:
                        from .gl_backend.interop import RegisteredTexture2D
                        self._registered = (frame.device, RegisteredTexture2D(self._tex))
                    self._registered[1].write(frame)
                self.upload_path = "interop"
                return
            except Exception as exc:  # e.g. the window's GPU is not the tensor's GPU
                self._interop_failed = True
                self._release_registration()
                warnings.warn(f"diffrast.viewer: CUDA–GL interop failed ({exc}); CUDA frames go "
                              "through host memory from now on", RuntimeWarning)
        data = frame.cpu().numpy()
        GL.glBindTexture(GL.GL_TEXTURE_2D, self._tex)
        GL.glPixelStorei(GL.GL_UNPACK_ALIGNMENT, 1)
        GL.glPixelStorei(GL.GL_UNPACK_ROW_LENGTH, 0)
        GL.glTexSubImage2D(GL.GL_TEXTURE_2D, 0, 0, 0, width, height, GL.GL_RGBA, GL.GL_UNSIGNED_BYTE, data)
        GL.glBindTexture(GL.GL_TEXTURE_2D, 0)
        self.upload_path = "host"

    def _interop_usable(self) -> bool:
        # CUDA can only register textures of NVIDIA's OpenGL (not Mesa's, e.g. under Xvfb).
        return not self._interop_failed and "NVIDIA" in self.vendor.upper()

    def _draw(self):
        """Clear the framebuffer and draw the frame letterboxed; returns the framebuffer size."""
        from OpenGL import GL
        bw, bh = _glfw().get_framebuffer_size(self._window)
        GL.glViewport(0, 0, max(bw, 1), max(bh, 1))
        GL.glClearColor(*_BACKGROUND)
        GL.glClear(GL.GL_COLOR_BUFFER_BIT)
        if self._frame_size is not None and bw > 0 and bh > 0:
            GL.glViewport(*fit_viewport(self._frame_size, (bw, bh)))
            GL.glUseProgram(self._program.name)
            GL.glBindVertexArray(self._vao)
            GL.glActiveTexture(GL.GL_TEXTURE0)
            GL.glBindTexture(GL.GL_TEXTURE_2D, self._tex)
            GL.glDrawArrays(GL.GL_TRIANGLE_STRIP, 0, 4)
            GL.glBindTexture(GL.GL_TEXTURE_2D, 0)
            GL.glBindVertexArray(0)
            GL.glUseProgram(0)
        return bw, bh

    def _release_registration(self):
        reg, self._registered = self._registered, None
        if reg is not None:
            device, registered = reg
            try:
                with torch.cuda.device(device):
                    registered.release()
            except Exception as exc:  # nothing to recover; the texture is deleted next anyway
                warnings.warn(f"diffrast.viewer: unregistering the frame texture failed ({exc})",
                              RuntimeWarning)

    def _release_gl(self):
        from OpenGL import GL
        self._release_registration()
        if self._program is not None:
            self._program.release()
            self._program = None
        if self._tex:
            GL.glDeleteTextures(1, [self._tex])
            self._tex = 0
        if self._vao:
            GL.glDeleteVertexArrays(1, [self._vao])
            self._vao = 0


def maybe_viewer(enabled: bool, **kwargs):
    """A :class:`Viewer` for an example's ``--display`` flag, or ``None`` to run headless.

    Args:
        enabled (bool): Whether a window was asked for; ``False`` returns ``None`` at once
            (glfw is not touched).
        **kwargs: Passed to :class:`Viewer` (``width``, ``height``, ``title``, ``visible``,
            ``camera``).

    Returns:
        An open :class:`Viewer`, or ``None`` when not enabled or when no window can be opened
        (no display, no glfw, no usable OpenGL); then a one-line note on stderr says why and that
        the program continues headless.
    """
    if not enabled:
        return None
    try:
        return Viewer(**kwargs)
    except ViewerError as exc:
        print(f"diffrast.viewer: {exc}\ndiffrast.viewer: continuing headless.", file=sys.stderr)
        return None
