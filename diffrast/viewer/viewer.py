"""The :class:`Viewer` itself: a window (from :mod:`~diffrast.viewer.window`) showing frames (made
by :mod:`~diffrast.viewer.frame`, uploaded and drawn by :mod:`~diffrast.viewer.upload`), whose
mouse and keyboard input drive an :class:`~diffrast.viewer.camera.OrbitCamera`; and
:func:`maybe_viewer`, the headless fallback for an example's ``--display`` flag."""
from __future__ import annotations

import sys
import threading
import weakref

import torch

from .camera import OrbitCamera
from .errors import ViewerError
from .frame import frame_from_image
from .upload import FrameTexture, read_framebuffer
from .window import SavedContext, close_window, load_glfw, open_viewers, open_window

# Longest side of a window sized automatically from the first frame (integer multiples of it).
_AUTO_SIZE = 768


class Viewer:
    """Create a window that shows image tensors, with an orbit camera.

    The window opens at once (so a missing display is reported before any work). Without
    ``width`` and ``height`` it is sized from the first frame shown: the largest integer multiple
    of the frame whose longer side is at most 768 pixels (a larger frame: its own size, shrunk to
    fit the screen), and it is shown only then. A frame is drawn letterboxed into the window,
    nearest-neighbour when magnified, so at an integer scale the window shows the quantised image
    pixel for pixel.

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
        self._texture = None  # the FrameTexture, once the context is set up
        self._dirty = False
        self._drag_from = None  # cursor position at the last drag step, while dragging
        self._cursor = None  # cursor position of the last motion event
        self.upload_path = None

        w0 = width or height or 256
        h0 = height or width or 256
        self._window, self.context_api = open_window(w0, h0, self._base_title,
                                                     visible and not self._auto_size)
        open_viewers.add(self)
        try:
            self._init_gl()
        except BaseException:
            self.close()
            raise
        self._install_callbacks()

    # -- set-up ----------------------------------------------------------------------------------
    def _init_gl(self):
        from OpenGL import GL
        glfw = load_glfw()
        with SavedContext(self._window):
            glfw.swap_interval(0)  # never throttle the optimisation to the monitor
            self.renderer = GL.glGetString(GL.GL_RENDERER).decode(errors="replace")
            self.vendor = GL.glGetString(GL.GL_VENDOR).decode(errors="replace")
            self._texture = FrameTexture(self.vendor)

    def _install_callbacks(self):
        glfw = load_glfw()
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
        glfw = load_glfw()
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
        glfw = load_glfw()
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
        return tuple(load_glfw().get_framebuffer_size(self._window))

    @property
    def frame_size(self) -> tuple | None:
        """``(width, height)`` of the last frame (a batch: its whole grid), or ``None``."""
        return self._texture.size if self._texture is not None else None

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
        if max(width, height) > self._texture.max_size:
            raise ValueError(f"image must fit the GL texture size limit of {self._texture.max_size} "
                             f"pixels per side (as a grid of its batch), got a grid of "
                             f"{width}x{height} pixels")
        glfw = load_glfw()
        if title is not None:
            glfw.set_window_title(self._window, f"{self._base_title} — {title}" if title else self._base_title)
        first = self.frame_size is None
        if first and self._auto_size:
            glfw.set_window_size(self._window, *self._auto_window_size(width, height))
            if self._visible:
                glfw.show_window(self._window)
        with SavedContext(self._window):
            self.upload_path = self._texture.upload(frame)
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
        glfw = load_glfw()
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
        glfw = load_glfw()
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
        with SavedContext(self._window):
            bw, bh = self._draw()
            return read_framebuffer(bw, bh)

    def close(self) -> None:
        """Close the window and free its GL objects, interop registration and context; terminate
        glfw when no other viewer is open. Safe to call more than once."""
        window, self._window = self._window, None
        if window is None:
            return
        open_viewers.discard(self)
        close_window(window, self._release_gl)

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
            glfw = load_glfw()
            mode = glfw.get_video_mode(glfw.get_primary_monitor())
            s = min(1.0, 0.9 * mode.size.width / width, 0.9 * mode.size.height / height)
        except Exception:  # no monitor information
            s = 1.0
        return max(1, int(width * s)), max(1, int(height * s))

    def _after_events(self) -> bool:
        if self._window is None:
            return False
        glfw = load_glfw()
        if glfw.window_should_close(self._window):
            self.close()
            return False
        if self._dirty and self.frame_size is not None:
            with SavedContext(self._window):
                self._draw()
                glfw.swap_buffers(self._window)
            self._dirty = False
        return True

    def _draw(self):
        """Clear the framebuffer and draw the frame letterboxed; returns the framebuffer size."""
        bw, bh = load_glfw().get_framebuffer_size(self._window)
        self._texture.draw((bw, bh))
        return bw, bh

    def _release_gl(self):
        if self._texture is not None:
            self._texture.release()


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
