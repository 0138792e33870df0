"""Which implementation runs an op: the one place where diffrast chooses a backend.

Every op has two implementations of its math:

* the **reference** (:mod:`diffrast.reference`): plain PyTorch, differentiated by autograd, for
  any device and dtype (float64 included, for gradient checks);
* the **kernels** (``cuda_ops/*.cu`` through :mod:`diffrast.cuda_backend`,
  :mod:`diffrast.cuda_backend_texture` and :mod:`diffrast.cuda_backend_antialias`): CuPy
  RawKernels with hand-written backward passes, for float32 tensors on CUDA devices.

Each op module registers its two backends once (:func:`register`); the public functions and
the ``torch.library`` custom ops that ``torch.compile`` sees then ask :func:`backend` (or
:func:`uses_kernels`) for the tensors at hand. The rule: the kernels run float32 CUDA tensors when
CuPy and cuda-bindings are importable; everything else runs the reference.

Tests change the rule for a block with :func:`force`: ``force("reference")`` runs the reference
everywhere (CUDA tensors included), ``force("kernels", launch=...)`` runs the kernels for
float32 tensors on any device, with ``launch`` standing in for
:func:`diffrast.cuda_ops.loader.launch` (the tests' CPU kernel emulator); other dtypes keep the
reference either way, as on a GPU.

The backends registered per op (each a callable or an object with named entry points, the same
for both kinds):

=====================  ==========================================================================
``"rasterize_resolve"``   ``fn(pos, tri, ids, rast, rast_db)``: fills ``rast`` (and ``rast_db``)
                          from triangle ids (the OpenGL context's visibility)
``"rasterize_backward"``  ``fn(pos, tri, rast, grad_rast, grad_db, grad_depth) -> grad_pos``
``"interpolate"``         ``fn(attr, rast, tri, rast_db, diff_attrs) -> (out, out_da)``
``"texture"``             ``.texture(tex, uv, uv_da, bias, levels, filter, boundary)``,
                          ``.texture_own_mip(tex, uv, uv_da, bias, max_mip_level, filter,
                          boundary)`` (mipmapped, the levels built from ``tex``),
                          ``.construct_mip(tex, max_mip_level, cube_mode)``
``"antialias"``           ``fn(color, rast, pos, tri, topology, pos_gradient_boost) -> out``
``"antialias_topology"``  ``fn(tri) -> TopologyHash`` (chosen by the device: ``tri`` is int32)
=====================  ==========================================================================
"""
from __future__ import annotations

import contextlib
from typing import Callable, Optional

import torch

from .cuda_ops import loader

__all__ = ["REFERENCE", "KERNELS", "register", "backend", "uses_kernels", "force"]

REFERENCE = "reference"
KERNELS = "kernels"

_backends: dict = {}  # op -> (reference, kernels)
_forced: Optional[str] = None  # None (the rule), REFERENCE or KERNELS


def register(op: str, *, reference, kernels) -> None:
    """Declare the two backends of ``op`` (see the table in this module's docstring)."""
    _backends[op] = (reference, kernels)


def uses_kernels(device: torch.device, dtype: torch.dtype = torch.float32) -> bool:
    """Whether an op on tensors of ``dtype`` on ``device`` runs the kernels (else the reference).

    Args:
        device: the device of the op's tensors.
        dtype: their floating-point dtype (default float32: ops whose choice depends on the
            device only, such as the topology construction of ``tri``).

    Returns:
        ``True`` for float32 on a CUDA device when the kernels can be loaded, or for float32
        anywhere inside ``force("kernels")``; ``False`` otherwise.
    """
    if dtype != torch.float32:
        return False
    if _forced is None:
        return device.type == "cuda" and loader.available()
    return _forced == KERNELS


def backend(op: str, device: torch.device, dtype: torch.dtype = torch.float32):
    """The backend registered for ``op`` that runs tensors of ``dtype`` on ``device``
    (:func:`uses_kernels` decides which)."""
    return _backends[op][uses_kernels(device, dtype)]


@contextlib.contextmanager
def force(kind: str, launch: Optional[Callable] = None):
    """Within the block, run every op's ``kind`` backend (``"reference"`` or ``"kernels"``)
    wherever the rule would not; for tests.

    Args:
        kind: ``REFERENCE`` or ``KERNELS``.
        launch: (kernels only) a replacement for :func:`diffrast.cuda_ops.loader.launch` with the
            same signature, e.g. an emulator running the kernels on CPU tensors.

    Not thread-safe: the switch is process-wide, as a test fixture needs.
    """
    global _forced
    if kind not in (REFERENCE, KERNELS):
        raise ValueError(f"kind must be {REFERENCE!r} or {KERNELS!r}, got {kind!r}")
    if launch is not None and kind != KERNELS:
        raise ValueError("a launch function only applies to the kernels")
    saved = (_forced, loader.launch)
    _forced = kind
    if launch is not None:
        loader.launch = launch
    try:
        yield
    finally:
        _forced, loader.launch = saved
