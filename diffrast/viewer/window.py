"""The viewer's window and OpenGL context: glfw, initialised once per process while windows are
open (a count of users, glfw terminated with the last), windows created with an EGL context (else
the window system's native one), the calling thread's current context saved and restored around
each viewer call, and the viewers still open at exit closed by an ``atexit`` hook.

The EGL side (what is current on the thread, releasing and restoring it) is
``diffrast.gl_backend.egl``'s, shared with diffrast's headless contexts.
"""
from __future__ import annotations

import atexit
import os
import sys
import threading
import warnings
import weakref

from ..gl_backend import egl
from .errors import NoDisplayError, ViewerError

_HEADLESS_HINT = (
    "Run headless instead (without --display: diffrast renders offscreen through EGL and needs no "
    "display), or give the program a virtual X server: `xvfb-run -a python ...` (package xvfb).")

# (context creation API, major, minor) in order of preference; see diffrast.viewer's docstring.
_CONTEXT_ATTEMPTS = (("EGL", 4, 5), ("EGL", 3, 3), ("native", 4, 5), ("native", 3, 3))

_glfw_module = None
_glfw_users = 0
_glfw_lock = threading.Lock()


def load_glfw():
    """The ``glfw`` module (pyGLFW), imported on first use.

    Returns:
        The ``glfw`` module.

    Raises:
        ViewerError: glfw is not installed or its shared library does not load.
    """
    global _glfw_module
    if _glfw_module is None:
        try:
            import glfw
        except Exception as exc:  # ImportError, or the shared library failing to load
            raise ViewerError(f"the viewer needs glfw (pip install glfw): {exc}") from exc
        _glfw_module = glfw
    return _glfw_module


def glfw_user_count() -> int:
    """How many windows from :func:`open_window` are open (glfw is initialised while > 0).

    Returns:
        The number of open windows.
    """
    return _glfw_users


class _GlfwErrors:
    """Silence pyglfw's warnings inside a block; ``last()`` gives the latest GLFW error text."""

    def __enter__(self):
        glfw = load_glfw()
        self._saved = glfw.ERROR_REPORTING
        glfw.ERROR_REPORTING = "ignore"
        return self

    def __exit__(self, *exc):
        load_glfw().ERROR_REPORTING = self._saved
        return False

    @staticmethod
    def last() -> str:
        code, desc = load_glfw().get_error()
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
    glfw = load_glfw()
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
            with SavedContext():
                load_glfw().terminate()


def _create_window(width, height, title, visible):
    glfw = load_glfw()
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


def open_window(width, height, title, visible):
    """Open a glfw window with an OpenGL 3.3+ core context, initialising glfw if no other window
    is open. The context is tried through EGL (4.5, then 3.3), then through the window system's
    native API; ``DIFFRAST_VIEWER_CONTEXT`` set to ``egl`` or ``native`` keeps one of them. The
    calling thread's current context is left as it was.

    Args:
        width (int): Window width in pixels.
        height (int): Window height in pixels.
        title (str): Window title.
        visible (bool): Show the window at once (else it stays hidden until shown).

    Returns:
        ``(window, context_api)``: the glfw window handle and how its context was created, e.g.
        ``'EGL OpenGL 4.5 core'``. Close it with :func:`close_window`.

    Raises:
        NoDisplayError: There is no display, or glfw cannot connect to it.
        ViewerError: glfw is missing, or no context could be created.
        ValueError: ``DIFFRAST_VIEWER_CONTEXT`` is neither ``egl`` nor ``native``.
    """
    _acquire_glfw()
    try:
        with SavedContext():  # glfw makes the new context current while creating it
            return _create_window(width, height, title, visible)
    except BaseException:
        _release_glfw()
        raise


def close_window(window, release=None) -> None:
    """Destroy a window from :func:`open_window`, and terminate glfw if it was the last open one.

    Args:
        window: The glfw window handle.
        release: Called with the window's context current before the window is destroyed (to
            free GL objects), or ``None``.
    """
    glfw = load_glfw()
    try:
        with SavedContext(window):
            try:
                if release is not None:
                    release()
            finally:
                glfw.destroy_window(window)
    finally:
        _release_glfw()


class SavedContext:
    """Save the calling thread's current OpenGL context for a block and restore it afterwards: an
    EGL context (diffrast's own, or any other) exactly, else another viewer's glfw context, else
    nothing. With ``window``, that window's context is made current inside the block.

    Args:
        window: A glfw window whose context to make current inside the block, or ``None``.
    """

    def __init__(self, window=None):
        self.window = window

    def __enter__(self):
        glfw = load_glfw()
        self.prev = egl.current_binding()
        if self.prev is not None:
            # Release it first: a GLX context (the fallback) cannot be made current on a thread
            # while an EGL context is (libglvnd refuses, and X reports BadAccess).
            egl.release_current(self.prev[0])
        self.prev_window = glfw.get_current_context()
        self.own_ctx = 0
        if self.window is not None:
            glfw.make_context_current(self.window)
            binding = egl.current_binding()
            self.own_ctx = egl.handle_value(binding[3]) if binding is not None else 0
        return self

    def __exit__(self, *exc):
        glfw = load_glfw()
        if _glfw_users > 0:  # not after glfw.terminate(), which released its contexts itself
            glfw.make_context_current(None)
        if self.prev is not None and egl.handle_value(self.prev[3]) != self.own_ctx:
            try:
                egl.restore_binding(self.prev)
            except egl.EGLError as err:
                warnings.warn("diffrast.viewer could not restore the previously current EGL "
                              f"context: {err}", RuntimeWarning)
        elif _glfw_users > 0 and self.prev is None and self.prev_window \
                and (self.window is None
                     or egl.handle_value(self.prev_window) != egl.handle_value(self.window)):
            # A glfw window with a native (GLX) context; glfw forgets destroyed windows, so it
            # is alive.
            glfw.make_context_current(self.prev_window)
        return False


# Viewers (anything with close()) to close at exit; a Viewer adds itself while open.
open_viewers: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _close_all():
    # Close viewers still open at exit while the interpreter (and PyOpenGL) still works.
    for viewer in list(open_viewers):
        try:
            viewer.close()
        except Exception:
            pass
