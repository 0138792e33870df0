"""CUDA backend: ``torch.autograd.Function`` wrappers around the kernels of ``cuda_ops/``.

The public ops (``diffrast/<op>.py``) validate their arguments and pick a backend; for float32
CUDA tensors they call the functions here, which take validated, contiguous tensors, allocate
every output with torch (never through CuPy's memory pool), and launch the kernels of
``cuda_ops/<op>_forward.cu`` and ``cuda_ops/<op>_backward.cu`` on torch's current stream through
:mod:`diffrast.cuda_ops.loader`. Nothing here synchronizes with the host or reads a value back
from the device.

Sections, one per op (each op's kernels live in ``cuda_ops/<op>_{forward,backward}.cu``):

* shared helpers: launch geometry, alignment, deterministic accumulation;
* ``interpolate``: forward and backward;
* ``rasterize``: the backward to ``pos`` (the forward is OpenGL, see :mod:`diffrast.rasterize`).

Gradient accumulation into per-vertex tensors (``attr``, ``pos``) uses float ``atomicAdd`` after
a warp-level pre-reduction (``cuda_ops/accumulate.cuh``): fast, but the order of the additions,
hence the last bits of the result, varies from run to run. In deterministic mode
(:func:`diffrast.set_deterministic`, or ``torch.use_deterministic_algorithms(True)``) no float
atomics are used; see :func:`_row_segments`.
"""
from __future__ import annotations

import threading

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from .cuda_ops import loader

__all__ = ["available", "interpolate", "rasterize_grad"]

# ==============================================================================================
# Shared helpers.

THREADS = 256  # threads per block; a multiple of 32 (the kernels' warp shuffles need full warps)
_INT32_MAX = 2**31 - 1


def available() -> bool:
    """Whether the CUDA kernels can be used (CuPy importable; a GPU is checked by the caller)."""
    return loader.available()


def deterministic() -> bool:
    """Whether gradients must be bit-identical run to run (no float atomics)."""
    return loader.deterministic() or torch.are_deterministic_algorithms_enabled()


def _launch(module: str, kernel: str, num_threads: int, args, device: torch.device) -> None:
    """One thread per item, ``THREADS`` per block, on torch's current stream."""
    blocks = loader.blocks(num_threads, THREADS)
    if blocks > _INT32_MAX:
        raise ValueError(f"{kernel}: {num_threads} threads exceed the CUDA grid limit")
    loader.launch(module, kernel, blocks, THREADS, args, device)


def _aligned(t: torch.Tensor) -> torch.Tensor:
    """``t`` (contiguous) with a 16-byte aligned data pointer, as the kernels' float4 loads need.
    Tensors from torch's allocator are; only views at odd storage offsets need a copy."""
    return t if t.data_ptr() % 16 == 0 else t.clone()


_placeholders: dict = {}


def _unused(device: torch.device, dtype=torch.float32) -> torch.Tensor:
    """Placeholder (empty tensor) for a pointer argument the kernel does not read in this
    configuration."""
    key = (device, dtype)
    t = _placeholders.get(key)
    if t is None:
        t = _placeholders[key] = torch.empty(0, dtype=dtype, device=device)
    return t


def _check_sizes(num_pixels: int, num_rows: int) -> None:
    if num_pixels > _INT32_MAX - THREADS:
        raise ValueError(f"the image batch has {num_pixels} pixels; the CUDA kernels support "
                         f"at most {_INT32_MAX - THREADS}")
    if num_rows >= _INT32_MAX:
        raise ValueError(f"{num_rows} vertex rows exceed the CUDA kernels' limit of "
                         f"{_INT32_MAX - 1}")


def _row_segments(entry_rows: torch.Tensor, num_rows: int):
    """Deterministic accumulation, step 2: group gradient entries by the vertex row they add to.

    A backward kernel's first pass writes, for every entry (interpolate and rasterize: ``3 *
    pixel + corner``; antialias: ``4 * pixel + 2 * pair + edge end``), the vertex row the entry
    contributes to, ``0x7fffffff`` where it contributes nothing. A stable sort orders the entries
    by row and, within a row, by entry index: a unique, run-independent order. ``row_start`` (a
    CSR pointer array of ``num_rows + 1`` entries, by binary search) delimits each row's entries;
    entries without a row sort behind the last row and are never visited. The ``*_reduce``
    kernels then recompute each entry's contribution and add a row's entries in this order
    (interpolate and rasterize: one warp per row, lane ``l`` taking entries ``l, l + 32, ...``,
    then a fixed butterfly of shuffles; antialias: one thread per row), so every addition has a
    fixed place and the result is bit-identical run to run. Cost: a sort of the int32 row keys and
    ~16 bytes of scratch per entry instead of atomics; no host synchronization.

    Returns ``(order, row_start)``, both int64.
    """
    sorted_rows, order = torch.sort(entry_rows, stable=True)
    bounds = torch.arange(num_rows + 1, dtype=torch.int32, device=entry_rows.device)
    row_start = torch.searchsorted(sorted_rows, bounds)
    return order, row_start


def _pixel_strides(grad: torch.Tensor):
    """``(grad, (pixel stride, channel stride))`` of a ``[B, H, W, C]`` loss gradient, as int64
    kernel arguments: read in place when its pixels are evenly spaced (contiguous: ``(C, 1)``;
    the expanded gradient of a sum: ``(0, 0)``), otherwise a contiguous copy."""
    sb, sy, sx, sc = grad.stride()
    _, H, W, _ = grad.shape
    if not (sx >= 0 and sc >= 0 and (H == 1 or sy == W * sx) and (grad.shape[0] == 1
                                                                  or sb == H * W * sx)):
        grad = grad.contiguous()
        sx, sc = grad.stride(2), grad.stride(3)
    return grad, (np.int64(sx), np.int64(sc))


def _grad_strides(grad: torch.Tensor):
    """``grad`` and its element strides, as int32 kernel arguments: a loss gradient is read in
    place whatever its layout, so an expanded one (stride 0, e.g. of ``out.sum()``) costs no
    copy. Only strides beyond int32 make a contiguous copy."""
    strides = grad.stride()
    if any(s < 0 or s > _INT32_MAX for s in strides):
        grad = grad.contiguous()
        strides = grad.stride()
    return grad, strides


# ==============================================================================================
# interpolate (cuda_ops/interpolate_forward.cu, cuda_ops/interpolate_backward.cu).

_diff_tables: dict = {}
_diff_tables_lock = threading.Lock()


def _diff_table(diff_attrs, num_attrs: int, device: torch.device) -> torch.Tensor:
    """The int32 device table of the selected attributes that the kernels read.

    Layout: ``sel[0:K]`` (the ``diff_attrs`` list), then the inverse map in CSR form,
    ``inv_ptr[0:A + 1]`` and ``inv_k[0:K]``, such that ``inv_k[inv_ptr[i]:inv_ptr[i + 1]]`` are
    the positions ``k`` (increasing) with ``sel[k] == i``. Built on the host from the (host) list
    and cached per list, attribute count and device, so a training loop uploads it once.
    """
    key = (tuple(diff_attrs), num_attrs, device)
    table = _diff_tables.get(key)
    if table is None:
        table = torch.tensor(diff_table_values(diff_attrs, num_attrs), dtype=torch.int32)
        table = table.to(device)
        with _diff_tables_lock:
            if len(_diff_tables) > 256:
                _diff_tables.clear()
            _diff_tables[key] = table
    return table


def diff_table_values(diff_attrs, num_attrs: int) -> list:
    """The values of :func:`_diff_table` as a Python list (pure; tested on the CPU)."""
    sel = [int(j) for j in diff_attrs]
    if not sel:
        return []
    counts = [0] * num_attrs
    for j in sel:
        counts[j] += 1
    inv_ptr = [0]
    for c in counts:
        inv_ptr.append(inv_ptr[-1] + c)
    fill = list(inv_ptr[:-1])
    inv_k = [0] * len(sel)
    for k, j in enumerate(sel):
        inv_k[fill[j]] = k
        fill[j] += 1
    return sel + inv_ptr + inv_k


def _interpolate_shapes(attr: torch.Tensor, rast: torch.Tensor):
    """``(num_pixels, pixels_per_image, V, A, attr_batched, num_rows)``."""
    B, H, W, _ = rast.shape
    V, A = attr.shape[-2], attr.shape[-1]
    batched = attr.ndim == 3 and attr.shape[0] > 1
    num_rows = (attr.shape[0] if attr.ndim == 3 else 1) * V
    return B * H * W, H * W, V, A, batched, num_rows


class _Interpolate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, attr, rast, rast_db, tri, diff_attrs):
        device = attr.device
        B, H, W, _ = rast.shape
        N, per_image, V, A, batched, num_rows = _interpolate_shapes(attr, rast)
        _check_sizes(N, num_rows)
        K = len(diff_attrs)
        rast = _aligned(rast)
        rast_db = _aligned(rast_db) if K else None
        table = _diff_table(diff_attrs, A, device) if K else _unused(device, torch.int32)
        out = torch.empty(B, H, W, A, dtype=attr.dtype, device=device)
        out_da = torch.empty(B, H, W, 2 * K, dtype=attr.dtype, device=device)
        _launch("interpolate_forward", "interpolate_fwd", N,
                (attr, rast, tri, rast_db if K else _unused(device), table, out, out_da,
                 N, per_image, V, A, tri.shape[0], batched, K), device)
        ctx.save_for_backward(attr, rast, rast_db, tri, table)
        ctx.num_diff = K
        return out, out_da

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, grad_out_da):
        attr, rast, rast_db, tri, table = ctx.saved_tensors
        grads = _interpolate_backward(attr, rast, rast_db, tri, table, ctx.num_diff, grad_out,
                                      grad_out_da, *ctx.needs_input_grad[:3])
        return (*grads, None, None)


def _interpolate_backward(attr, rast, rast_db, tri, table, K, grad_out, grad_out_da,
                          want_attr, want_rast, want_db):
    """``(grad_attr, grad_rast, grad_rast_db)`` of the interpolate kernels, ``None`` where not
    wanted; ``rast`` and ``rast_db`` 16-byte aligned, ``table`` the forward's diff table."""
    want_db = want_db and K > 0
    device = attr.device
    N, per_image, V, A, batched, num_rows = _interpolate_shapes(attr, rast)
    det = want_attr and deterministic()

    grad_out, g_strides = _pixel_strides(grad_out)
    grad_out_da, gda_strides = _pixel_strides(grad_out_da) if K else (_unused(device), (0, 0))
    grad_attr = None
    if want_attr:
        grad_attr = torch.empty_like(attr) if det else torch.zeros_like(attr)
    grad_rast = torch.empty_like(rast) if want_rast else None
    grad_rast_db = torch.empty_like(rast_db) if want_db else None
    entry_rows = (torch.empty(3 * N, dtype=torch.int32, device=device) if det
                  else _unused(device, torch.int32))
    null = _unused(device)
    _launch("interpolate_backward", "interpolate_bwd", N,
            (attr, rast, tri, rast_db if K else null, table, grad_out, *g_strides, grad_out_da,
             *gda_strides, grad_attr if want_attr else null, grad_rast if want_rast else null,
             grad_rast_db if want_db else null, entry_rows,
             N, per_image, V, A, tri.shape[0], batched, K,
             want_attr, want_rast, want_db, det), device)
    if det:
        order, row_start = _row_segments(entry_rows, num_rows)
        _launch("interpolate_backward", "interpolate_bwd_reduce", 32 * num_rows * A,  # warp each
                (rast, rast_db if K else null, table, grad_out, *g_strides, grad_out_da,
                 *gda_strides, order, row_start, grad_attr, num_rows, A, K), device)
    return grad_attr, grad_rast, grad_rast_db


def interpolate_backward(attr, rast, tri, grad_out, rast_db=None, diff_attrs=None,
                         grad_out_da=None, needs=(True, True, True)):
    """The CUDA kernels' backward of :func:`interpolate`, outside autograd (for the custom op).

    Same contract as :func:`diffrast.reference.interpolate.interpolate_backward`, plus ``needs``:
    which of ``(attr, rast, rast_db)`` get a gradient (``None`` for the others)."""
    K = len(diff_attrs or ())
    table = (_diff_table(diff_attrs, attr.shape[-1], attr.device) if K
             else _unused(attr.device, torch.int32))
    rast = _aligned(rast.contiguous())
    rast_db = _aligned(rast_db.contiguous()) if K else None
    return _interpolate_backward(attr.contiguous(), rast, rast_db, tri.contiguous(), table, K,
                                 grad_out, grad_out_da, *needs)


def interpolate(attr, rast, tri, rast_db=None, diff_attrs=None):
    """CUDA backend of :func:`diffrast.interpolate` (float32 CUDA tensors, validated, contiguous).

    Same contract as :func:`diffrast.reference.interpolate.interpolate`: returns ``(out, out_da)``
    differentiable with respect to ``attr``, ``rast`` (channels u, v) and ``rast_db``.
    """
    diff_attrs = tuple(int(i) for i in (diff_attrs or ()))
    rast_db = rast_db.contiguous() if diff_attrs else None
    return _Interpolate.apply(attr.contiguous(), rast.contiguous(), rast_db, tri.contiguous(),
                              diff_attrs)


# ==============================================================================================
# rasterize backward (cuda_ops/rasterize_backward.cu).

def rasterize_grad(pos, tri, rast, grad_rast, grad_db=None, grad_depth=False):
    """Gradient of ``rasterize`` with respect to ``pos`` (CUDA kernels, float32).

    Same contract as :func:`diffrast.reference.rasterize.rasterize_grad`:

    Args:
        pos: clip-space positions, ``[B, V, 4]`` (instance mode) or ``[V, 4]`` (range mode).
        tri: ``[T, 3]`` int32 triangle indices.
        rast: the forward output ``[B, H, W, 4]``; only the triangle ids are read.
        grad_rast: ``[B, H, W, 4]`` gradient with respect to ``rast`` (channels u, v are used),
            any strides (read in place).
        grad_db: ``[B, H, W, 4]`` gradient with respect to ``rast_db`` (any strides), or ``None``.
        grad_depth: also propagate the gradient of the z/w channel of ``grad_rast``.

    Returns:
        The gradient with respect to ``pos``, shaped like ``pos`` (its z column is zero without
        ``grad_depth``).
    """
    device = pos.device
    B, H, W, _ = rast.shape
    instance = pos.ndim == 3
    if instance and pos.shape[0] != B:
        raise ValueError(f"pos has {pos.shape[0]} images but rast has {B}")
    N = B * H * W
    V = pos.shape[-2]
    num_rows = pos.numel() // 4
    _check_sizes(N, num_rows)
    det = deterministic()
    pos, rast = _aligned(pos.contiguous()), _aligned(rast.contiguous())
    tri = tri.contiguous()
    has_db = grad_db is not None
    sx, sy = 2.0 / W, 2.0 / H  # rounded to float32 at the launch, as torch rounds the scalar
    grad_rast, gr_strides = _grad_strides(grad_rast)
    grad_db, gd_strides = _grad_strides(grad_db) if has_db else (_unused(device), (0, 0, 0, 0))
    grads = (grad_rast, *gr_strides, grad_db, *gd_strides)
    grad_pos = torch.empty_like(pos) if det else torch.zeros_like(pos)
    entry_rows = (torch.empty(3 * N, dtype=torch.int32, device=device) if det
                  else _unused(device, torch.int32))
    _launch("rasterize_backward", "rasterize_grad", N,
            (pos, tri, rast) + grads + (grad_pos, entry_rows,
             N, W, H, V, tri.shape[0], instance, has_db, bool(grad_depth), det, sx, sy), device)
    if det:
        order, row_start = _row_segments(entry_rows, num_rows)
        _launch("rasterize_backward", "rasterize_grad_reduce", 32 * num_rows,  # a warp per row
                (pos, tri, rast) + grads + (order, row_start, grad_pos,
                 num_rows, W, H, V, tri.shape[0], instance, has_db, bool(grad_depth), sx, sy),
                device)
    return grad_pos
