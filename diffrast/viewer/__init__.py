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

The package's modules, one concern each (the names above are re-exported here):

- ``camera``: :class:`OrbitCamera` and its matrices (torch, no window).
- ``frame``: :func:`frame_from_image`, :func:`grid_shape`, :func:`fit_viewport` (torch, no window).
- ``window``: glfw (one initialisation while windows are open), window and context creation
  (EGL, else native), saving and restoring the thread's current context around each call (through
  ``diffrast.gl_backend.egl``), and closing open viewers at exit.
- ``upload``: the frame texture (CUDA–GL interop or host upload), drawing it, reading it back.
- ``viewer``: :class:`Viewer` (input, show/poll/wait/close) and :func:`maybe_viewer`.
- ``errors``: :class:`ViewerError`, :class:`NoDisplayError`.
"""
from __future__ import annotations

import os

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

from .camera import OrbitCamera  # noqa: E402
from .errors import NoDisplayError, ViewerError  # noqa: E402
from .frame import fit_viewport, frame_from_image, grid_shape  # noqa: E402
from .viewer import Viewer, maybe_viewer  # noqa: E402

__all__ = ["Viewer", "OrbitCamera", "ViewerError", "NoDisplayError", "maybe_viewer", "frame_from_image",
           "grid_shape", "fit_viewport"]
