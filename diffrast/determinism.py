"""Run-to-run reproducible gradients of the CUDA kernels."""
from __future__ import annotations

from .cuda_ops import loader

__all__ = ["set_deterministic", "is_deterministic"]


def set_deterministic(enabled: bool) -> None:
    """Make the gradients computed by diffrast's CUDA kernels bit-identical from run to run.

    By default the backward passes that sum per-pixel contributions into per-vertex gradients
    (``interpolate`` into ``attr``, ``rasterize`` into ``pos``, ...) use float atomic additions:
    fast, but the order of the additions depends on the GPU's scheduling, so two runs on
    identical inputs can differ in the last bits (forward outputs never do). With
    ``set_deterministic(True)`` those sums are taken in a fixed order instead (entries sorted by
    vertex with a stable sort, then reduced one vertex per thread): identical inputs on the same
    GPU, software versions and settings give bit-identical gradients, at some extra time and
    scratch memory in the backward pass. The setting is process-wide and takes effect at the next
    call. ``torch.use_deterministic_algorithms(True)`` turns the same mode on.

    The CPU path (the PyTorch reference) needs no setting: it always sums in a fixed order, so
    its gradients are bit-identical from run to run whatever the number of threads. float64 CUDA
    tensors (which use the reference) follow ``torch.use_deterministic_algorithms``.

    Args:
        enabled: ``True`` for deterministic gradients, ``False`` (the default) for the fast path.
    """
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be a bool, got {type(enabled).__name__}")
    loader.set_deterministic(enabled)


def is_deterministic() -> bool:
    """Whether :func:`set_deterministic` has turned deterministic gradients on."""
    return loader.deterministic()
