"""diffrast's messages and their level: nvdiffrast's ``get_log_level`` and ``set_log_level``.

diffrast reports through the standard :mod:`logging` module, on the logger ``"diffrast"``
(:data:`logger`). :func:`set_log_level` takes nvdiffrast's integer levels (those of Torch's C++
side) and sets that logger's level:

=====  ==========  =======================
level  nvdiffrast  :mod:`logging` level
=====  ==========  =======================
0      Info        ``logging.INFO``
1      Warning     ``logging.WARNING`` (the default)
2      Error       ``logging.ERROR``
3      Fatal       ``logging.CRITICAL``
=====  ==========  =======================

A level below 0 prints everything a level of 0 prints; above 3, nothing.

Where the application has not configured logging (the root logger has no handler), messages
are printed to ``sys.stderr`` as ``diffrast INFO: ...``, as nvdiffrast prints its own; once it
has (``logging.basicConfig``, a framework's set-up, pytest's capture), they go to the
application's handlers only, like any library's records.

What is reported at Info: the creation of each rasterizer context (device; for OpenGL, the
renderer, its version and limits), every growth of an OpenGL context's render targets or
geometry buffer (their new size) and the first use of each CUDA kernel module in a process
(compiled by NVRTC or loaded from CuPy's kernel cache, and the time it took). Nothing is reported
per call.
"""
from __future__ import annotations

import logging
import sys

from .checks import as_integer

__all__ = ["get_log_level", "set_log_level", "logger"]

logger = logging.getLogger("diffrast")

# nvdiffrast's levels 0..3 as logging's levels
_LOGGING_LEVELS = (logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL)
_DEFAULT_LEVEL = 1
_level = _DEFAULT_LEVEL


class _StderrUnlessConfigured(logging.Handler):
    """Writes a record to ``sys.stderr`` (looked up when it writes, so redirections apply) when
    the root logger has no handler; otherwise leaves the record to the application's handlers,
    which it reaches by propagation. (Python's own fallback handler would print warnings only.)"""

    def emit(self, record: logging.LogRecord) -> None:
        if logging.getLogger().handlers:
            return
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:  # (as logging.StreamHandler: a broken stream must not raise here)
            self.handleError(record)


_handler = _StderrUnlessConfigured()
_handler.setFormatter(logging.Formatter("diffrast %(levelname)s: %(message)s"))
logger.addHandler(_handler)


def _logging_level(level: int) -> int:
    if level >= len(_LOGGING_LEVELS):
        return logging.CRITICAL + 1
    return _LOGGING_LEVELS[max(level, 0)]


def size_text(nbytes: int) -> str:
    """``nbytes`` for a message: ``"268 bytes"``, ``"24.0 KiB"``, ``"3.5 MiB"``, ``"1.2 GiB"``."""
    if nbytes < 1024:
        return f"{nbytes} bytes"
    for unit in ("KiB", "MiB", "GiB"):
        nbytes /= 1024
        if nbytes < 1024 or unit == "GiB":
            return f"{nbytes:.1f} {unit}"


def get_log_level() -> int:
    """Get current log level.

    Returns:
        Current log level in diffrast, an ``int``. See :func:`set_log_level` for possible
        values.
    """
    return _level


def set_log_level(level: int) -> None:
    """Set log level.

    Log levels follow the convention on the C++ side of Torch, as in nvdiffrast: 0 = Info,
    1 = Warning, 2 = Error, 3 = Fatal. The default log level is 1. The level is process-wide;
    it sets the level of the ``logging`` logger ``"diffrast"``.

    Args:
        level: New log level as an integer (an ``int``, a NumPy integer or a one-element
            integer tensor). diffrast's messages of this severity or higher are printed,
            messages of lower severity are silent.

    Raises:
        TypeError: ``level`` is not an integer (a ``bool`` is not taken for one).
    """
    global _level
    value = as_integer(level)
    if value is None:
        raise TypeError(f"level must be an int (0 = Info, 1 = Warning, 2 = Error, 3 = Fatal), "
                        f"got {type(level).__name__}")
    _level = value
    logger.setLevel(_logging_level(_level))


logger.setLevel(_logging_level(_DEFAULT_LEVEL))
