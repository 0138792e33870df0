"""CUDA backend: ``torch.autograd.Function`` wrappers around the kernels of ``cuda_ops/``.

The public ops (``diffrast/<op>.py``) validate their arguments and pick a backend; for float32
CUDA tensors they call the functions here, which take validated, contiguous tensors, allocate
every output with torch (never through CuPy's memory pool), and launch the kernels of
``cuda_ops/<op>_forward.cu`` and ``cuda_ops/<op>_backward.cu`` on torch's current stream through
:mod:`diffrast.cuda_ops.loader`. Nothing here synchronizes with the host or reads a value back
from the device.

Every kernel takes one parameter struct (:mod:`diffrast.cuda_ops.params`), built here by
keyword; the kernel names are rows of :data:`diffrast.cuda_ops.kernels.KERNELS`.

Sections, one per op (each op's kernels live in ``cuda_ops/<op>_{forward,backward}.cu``):

* shared helpers, public for the other kernel backends (:mod:`diffrast.cuda_backend_texture`,
  :mod:`diffrast.cuda_backend_antialias`): :data:`THREADS`, :data:`INT32_MAX`,
  :func:`available`, :func:`deterministic`, :func:`launch` (one thread per item),
  :func:`aligned` (16-byte aligned tensors), :func:`needs_autograd` (whether a call goes
  through its autograd Function), :func:`row_segments` and :func:`check_entries`
  (deterministic accumulation), :func:`pixel_strides` (loss gradients read in place);
* ``interpolate``: forward and backward;
* ``rasterize``: the OpenGL context's resolve of triangle ids into ``rast`` and ``rast_db``
  (:mod:`diffrast.cuda_context` runs the CUDA rasterizer itself) and the backward to ``pos``.

Gradient accumulation into per-vertex tensors (``attr``, ``pos``) uses float ``atomicAdd`` after
a warp-level pre-reduction (``cuda_ops/accumulate.cuh``): fast, but the order of the additions,
hence the last bits of the result, varies from run to run. In deterministic mode
(:func:`diffrast.set_deterministic`, or ``torch.use_deterministic_algorithms(True)``) no float
atomics are used; see :func:`row_segments`.
"""
from __future__ import annotations

import threading

import torch
from torch.autograd import forward_ad as _forward_ad
from torch.autograd.function import once_differentiable

from .cuda_ops import loader
from .cuda_ops.params import InterpolateBackwardParams, InterpolateForwardParams, PixelTile, \
    RasterizeBackwardParams, RasterizeForwardParams

__all__ = ["available", "deterministic", "interpolate", "interpolate_backward", "rasterize_grad",
           "rasterize_resolve",
           "THREADS", "INT32_MAX", "launch", "launch_tiles", "aligned", "needs_autograd",
           "row_segments",
           "check_entries", "pixel_strides", "diff_table_values", "atomic_copies"]

# ==============================================================================================
# Shared helpers.

#: Threads per block of :func:`launch`; a multiple of 32 (the kernels' warp shuffles need full
#: warps).
THREADS = 256
#: The largest int32: the kernels' limit on fields kept 32-bit (vertex rows, triangle counts).
INT32_MAX = 2**31 - 1


def available() -> bool:
    """Whether the CUDA kernels can be used (CuPy importable; a GPU is checked by the caller)."""
    return loader.available()


def deterministic() -> bool:
    """Whether gradients must be bit-identical run to run (no float atomics)."""
    return loader.deterministic() or torch.are_deterministic_algorithms_enabled()


def launch(module: str, kernel: str, num_threads: int, kernel_params, device: torch.device) -> None:
    """Launch ``kernel`` of ``cuda_ops/<module>.cu`` with one thread per item, :data:`THREADS`
    per block, on torch's current stream (:func:`diffrast.cuda_ops.loader.launch`).

    Args:
        module: the kernel's module (``cuda_ops/<module>.cu``).
        kernel: its name (a row of :data:`diffrast.cuda_ops.kernels.KERNELS`).
        num_threads: threads to run (the grid is rounded up to whole blocks).
        kernel_params: the kernel's parameter struct (:mod:`diffrast.cuda_ops.params`).
        device: the device of the tensors.
    """
    blocks = loader.blocks(num_threads, THREADS)
    if blocks > INT32_MAX:
        raise ValueError(f"{kernel}: {num_threads} threads exceed the CUDA grid limit")
    loader.launch(module, kernel, blocks, THREADS, kernel_params, device)


_TILE_W, _TILE_H = int(PixelTile.TILE_WIDTH), int(PixelTile.TILE_HEIGHT)
assert _TILE_W * _TILE_H == THREADS, "launch_tiles runs blocks of THREADS: a tile each"


def launch_tiles(module: str, kernel: str, batch: int, height: int, width: int, kernel_params,
                 device: torch.device) -> None:
    """Launch ``kernel`` (:func:`launch`'s arguments) with a block per :class:`PixelTile` of
    ``batch`` images of ``height x width`` pixels, a thread per pixel of the tile (the kernel
    finds its pixel with ``tile_pixel`` of ``cuda_ops/pixel_tile.cuh``)."""
    tiles = batch * -(-height // _TILE_H) * -(-width // _TILE_W)
    launch(module, kernel, tiles * THREADS, kernel_params, device)


def aligned(t: torch.Tensor) -> torch.Tensor:
    """``t`` (contiguous) with a 16-byte aligned data pointer, as the kernels' float4 loads need.
    Tensors from torch's allocator are; only views at odd storage offsets need a copy."""
    return t if t.data_ptr() % 16 == 0 else t.clone()


def needs_autograd(*tensors) -> bool:
    """Whether a call on ``tensors`` (``None`` entries ignored) must go through its
    ``autograd.Function``: grad mode is on and one of them requires a gradient, or forward-mode
    AD is active (dual tensors, ``torch.func.jvp``), where the Function raises for want of a
    ``jvp`` rather than return an output without its tangent. Otherwise (inference, rendering
    under ``torch.no_grad()``, constant inputs) the backends launch their forward kernels
    directly: ``apply`` would record nothing, at a cost of host time."""
    if _forward_ad._current_level >= 0:
        return True
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _check_sizes(num_rows: int) -> None:
    # Pixels are indexed in 64 bits (only the grid limits them, see launch); vertex rows are
    # stored as int32 in the deterministic entry_rows, with 0x7fffffff as "no row".
    if num_rows >= INT32_MAX:
        raise ValueError(f"{num_rows} vertex rows exceed the CUDA kernels' limit of "
                         f"{INT32_MAX - 1}")


def check_entries(num_entries: int, op: str) -> None:
    """Deterministic accumulation sorts its entries with ``torch.sort`` (:func:`row_segments`),
    which on CUDA takes at most ``INT32_MAX`` elements: a clear error before any kernel runs."""
    if num_entries > INT32_MAX:
        raise ValueError(f"deterministic {op} gradients would sort {num_entries} entries, "
                         f"more than torch.sort's limit of {INT32_MAX}: use fewer pixels per "
                         f"call or non-deterministic mode")


def row_segments(entry_rows: torch.Tensor, num_rows: int):
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


def pixel_strides(grad: torch.Tensor):
    """``(grad, (pixel stride, channel stride))`` of a ``[B, H, W, C]`` loss gradient, for the
    kernels' ``long long`` stride fields: read in place when its pixels are evenly spaced
    (contiguous: ``(C, 1)``; the expanded gradient of a sum: ``(0, 0)``), otherwise a contiguous
    copy."""
    sb, sy, sx, sc = grad.stride()
    _, H, W, _ = grad.shape
    if not (sx >= 0 and sc >= 0 and (H == 1 or sy == W * sx) and (grad.shape[0] == 1
                                                                  or sb == H * W * sx)):
        grad = grad.contiguous()
        sx, sc = grad.stride(2), grad.stride(3)
    return grad, (sx, sc)


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


def _interpolate_forward(attr, rast, rast_db, tri, diff_attrs):
    """The forward kernel on contiguous inputs: ``(out, out_da, saved)``, ``saved`` the tensors
    the backward reads, ``(attr, rast, rast_db, tri, diff table)``."""
    device = attr.device
    B, H, W, _ = rast.shape
    N, per_image, V, A, batched, num_rows = _interpolate_shapes(attr, rast)
    _check_sizes(num_rows)
    K = len(diff_attrs)
    rast = aligned(rast)
    rast_db = aligned(rast_db) if K else None
    table = _diff_table(diff_attrs, A, device) if K else None
    out = torch.empty(B, H, W, A, dtype=attr.dtype, device=device)
    out_da = torch.empty(B, H, W, 2 * K, dtype=attr.dtype, device=device)
    launch("interpolate_forward", "interpolate_fwd", N, InterpolateForwardParams(
        attr=attr, rast=rast, tri=tri, rast_db=rast_db, diff_table=table, out=out,
        out_da=out_da, num_pixels=N, pixels_per_image=per_image, num_vertices=V,
        num_attrs=A, num_triangles=tri.shape[0], num_diff=K, attr_batched=batched), device)
    return out, out_da, (attr, rast, rast_db, tri, table)


class _Interpolate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, attr, rast, rast_db, tri, diff_attrs):
        out, out_da, saved = _interpolate_forward(attr, rast, rast_db, tri, diff_attrs)
        ctx.save_for_backward(*saved)
        ctx.num_diff = len(diff_attrs)
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
    if det:
        check_entries(3 * N, "interpolate")

    grad_out, (g_sp, g_sc) = pixel_strides(grad_out)
    grad_out_da, (gda_sp, gda_sc) = pixel_strides(grad_out_da) if K else (None, (0, 0))
    grad_attr = None
    copies = 1 if det or not want_attr else atomic_copies(N, V)
    if want_attr:
        grad_attr = (torch.empty_like(attr) if det else torch.zeros_like(attr) if copies == 1
                     else torch.zeros((copies, *attr.shape), dtype=attr.dtype, device=device))
    grad_rast = torch.empty_like(rast) if want_rast else None
    grad_rast_db = torch.empty_like(rast_db) if want_db else None
    entry_rows = torch.empty(3 * N, dtype=torch.int32, device=device) if det else None
    kp = InterpolateBackwardParams(
        attr=attr, rast=rast, tri=tri, rast_db=rast_db if K else None, diff_table=table,
        grad_out=grad_out, grad_out_da=grad_out_da, grad_attr=grad_attr, grad_rast=grad_rast,
        grad_rast_db=grad_rast_db, entry_rows=entry_rows, g_sp=g_sp, g_sc=g_sc, gda_sp=gda_sp,
        gda_sc=gda_sc, num_pixels=N, pixels_per_image=per_image, num_vertices=V, num_attrs=A,
        num_triangles=tri.shape[0], num_diff=K, num_rows=num_rows, copy_mask=copies - 1,
        attr_batched=batched, want_attr=want_attr, want_rast=want_rast, want_db=want_db,
        deterministic=det)
    launch("interpolate_backward", "interpolate_bwd", N, kp, device)
    if det:
        order, row_start = row_segments(entry_rows, num_rows)
        launch("interpolate_backward", "interpolate_bwd_reduce", 32 * num_rows * A,  # warp each
               kp._replace(order=order, row_start=row_start), device)
    elif copies > 1:
        grad_attr = grad_attr.sum(0)
    return grad_attr, grad_rast, grad_rast_db


#: :func:`atomic_copies`: at most this many copies of a gradient, ...
MAX_ATOMIC_COPIES = 32
#: ... one per this many pixels in flight per vertex row (more pixels adding into one address at
#: a time serialize its atomics), ...
PIXELS_PER_ROW_COPY = 16
#: ... counting at most this many pixels in flight (a few images' worth fill an H100 or H200) ...
PIXELS_IN_FLIGHT = 1 << 18
#: ... and none below this many pixels in all (the sum of the copies, one more kernel, would
#: cost more than the contention it saves).
MIN_PIXELS_FOR_COPIES = 1 << 20


def atomic_copies(num_pixels: int, rows_per_image: int) -> int:
    """Copies of a gradient over which a fast-mode scatter of ``num_pixels`` pixels into
    ``rows_per_image`` vertex rows per image spreads its atomics (warp ``w`` adding into copy
    ``w % copies``; the caller zeroes the copies and sums them): a power of two from 1 to
    :data:`MAX_ATOMIC_COPIES`, large where many pixels share few vertices (a small mesh seen in
    many views, whose shared attribute rows every image's pixels add into)."""
    if num_pixels < MIN_PIXELS_FOR_COPIES:
        return 1
    per_row = min(num_pixels, PIXELS_IN_FLIGHT) // (PIXELS_PER_ROW_COPY * max(rows_per_image, 1))
    copies = 1
    while copies * 2 <= min(per_row, MAX_ATOMIC_COPIES):
        copies *= 2
    return copies


def interpolate_backward(attr, rast, tri, grad_out, rast_db=None, diff_attrs=None,
                         grad_out_da=None, needs=(True, True, True)):
    """The CUDA kernels' backward of :func:`interpolate`, outside autograd (for the custom op).

    Same contract as :func:`diffrast.reference.interpolate.interpolate_backward`, plus ``needs``:
    which of ``(attr, rast, rast_db)`` get a gradient (``None`` for the others)."""
    K = len(diff_attrs or ())
    table = _diff_table(diff_attrs, attr.shape[-1], attr.device) if K else None
    rast = aligned(rast.contiguous())
    rast_db = aligned(rast_db.contiguous()) if K else None
    return _interpolate_backward(attr.contiguous(), rast, rast_db, tri.contiguous(), table, K,
                                 grad_out, grad_out_da, *needs)


def interpolate(attr, rast, tri, rast_db=None, diff_attrs=None):
    """CUDA backend of :func:`diffrast.interpolate` (float32 CUDA tensors, validated, contiguous).

    Same contract as :func:`diffrast.reference.interpolate.interpolate`: returns ``(out, out_da)``
    differentiable with respect to ``attr``, ``rast`` (channels u, v) and ``rast_db``.
    """
    diff_attrs = tuple(int(i) for i in (diff_attrs or ()))
    rast_db = rast_db.contiguous() if diff_attrs else None
    attr, rast, tri = attr.contiguous(), rast.contiguous(), tri.contiguous()
    if not needs_autograd(attr, rast, rast_db):
        return _interpolate_forward(attr, rast, rast_db, tri, diff_attrs)[:2]
    return _Interpolate.apply(attr, rast, rast_db, tri, diff_attrs)


# ==============================================================================================
# rasterize: the OpenGL context's resolve (cuda_ops/rasterize_resolve.cu) and the backward
# (cuda_ops/rasterize_backward.cu).

def rasterize_resolve(pos, tri, ids, rast, rast_db=None) -> None:
    """Fill ``rast`` (and ``rast_db``) from the triangle each pixel shows (CUDA kernel
    ``resolve_ids``, float32 CUDA tensors).

    Same contract as :func:`diffrast.reference.rasterize.resolve`: ``pos`` ``[B, V, 4]``
    (instance mode) or ``[V, 4]`` (range mode), ``tri`` int32 ``[T, 3]``, ``ids`` int32
    ``[B, H, W]`` (triangle id + 1, 0: none), outputs ``[B, H, W, 4]`` contiguous.
    """
    B, H, W = ids.shape
    kp = RasterizeForwardParams(
        pos=aligned(pos.contiguous()), tri=tri.contiguous(), ids=ids, rast=rast, rast_db=rast_db,
        num_vertices=pos.shape[-2], num_triangles=tri.shape[0], num_images=B, width=W,
        height=H, instanced=pos.ndim == 3, output_db=rast_db is not None)
    launch("rasterize_resolve", "resolve_ids", B * H * W, kp, pos.device)


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
    _check_sizes(num_rows)
    det = deterministic()
    if det:
        check_entries(3 * N, "rasterize")
    pos, rast = aligned(pos.contiguous()), aligned(rast.contiguous())
    tri = tri.contiguous()
    has_db = grad_db is not None
    # Read in place whatever the layout (the kernel's strides are 64-bit; torch's are never
    # negative): an expanded gradient costs no copy.
    r_sb, r_sy, r_sx, r_sc = grad_rast.stride()
    d_sb, d_sy, d_sx, d_sc = grad_db.stride() if has_db else (0, 0, 0, 0)
    grad_pos = torch.empty_like(pos) if det else torch.zeros_like(pos)
    entry_rows = torch.empty(3 * N, dtype=torch.int32, device=device) if det else None
    kp = RasterizeBackwardParams(
        pos=pos, tri=tri, rast=rast, grad_rast=grad_rast, grad_db=grad_db, grad_pos=grad_pos,
        entry_rows=entry_rows, grad_rast_sb=r_sb, grad_rast_sy=r_sy, grad_rast_sx=r_sx,
        grad_rast_sc=r_sc, grad_db_sb=d_sb, grad_db_sy=d_sy, grad_db_sx=d_sx, grad_db_sc=d_sc,
        num_pixels=N, num_rows=num_rows, width=W, height=H, num_vertices=V,
        num_triangles=tri.shape[0],
        sx=2.0 / W, sy=2.0 / H,  # rounded to float32 in the struct, as torch rounds the scalar
        instance_mode=instance, has_db=has_db, has_depth=bool(grad_depth), deterministic=det)
    launch("rasterize_backward", "rasterize_grad", N, kp, device)
    if det:
        order, row_start = row_segments(entry_rows, num_rows)
        launch("rasterize_backward", "rasterize_grad_reduce", 32 * num_rows,  # a warp per row
               kp._replace(order=order, row_start=row_start), device)
    return grad_pos
