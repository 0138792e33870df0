"""The viewer's exceptions (see :mod:`diffrast.viewer`)."""


class ViewerError(RuntimeError):
    """The viewer could not open or use its window; the message says why."""


class NoDisplayError(ViewerError):
    """There is no display to open a window on (no ``DISPLAY``/``WAYLAND_DISPLAY``, or glfw could
    not connect to it). The message suggests running headless or under ``xvfb-run``."""
