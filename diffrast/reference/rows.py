"""Row gathers whose backward pass sums in a fixed order on the CPU.

``table[index]`` is differentiated by ``index_put_(..., accumulate=True)``, which torch runs on
several CPU threads with float atomic additions when the index is large: indices that repeat (a
vertex shared by many pixels) then receive their contributions in an order that changes from run
to run, and so do the last bits of the gradient. ``index_select`` is differentiated by
``index_add_``, which on the CPU adds the rows in index order on any number of threads, so the
same inputs give bit-identical gradients (the values agree with the advanced-indexing form up to
float rounding). On CUDA the advanced-indexing form stays: its backward sorts the indices and
sums without atomics, where ``index_add_`` would use them.
"""
from __future__ import annotations

import torch

__all__ = ["take_rows"]


def take_rows(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows of ``table`` at ``index``: ``table[index]``, with a fixed-order backward pass.

    Args:
        table: ``[N, ...]`` tensor.
        index: int64 tensor of any shape with values in ``[0, N)``.

    Returns:
        ``[*index.shape, ...]``: ``table[index]``, differentiable with respect to ``table``.
    """
    if table.device.type != "cpu":
        return table[index]
    rows = table.index_select(0, index.reshape(-1))
    return rows.reshape(index.shape + table.shape[1:])
