"""CUDA backend of ``antialias`` (``cuda_ops/antialias_forward.cu``, ``antialias_backward.cu``)
and of its topology construction (``cuda_ops/antialias_topology.cu``).

:func:`diffrast.antialias` validates its arguments and, for CUDA tensors, calls the two functions
here (chosen by :mod:`diffrast.dispatch`):

* :func:`construct_topology` builds the edge-to-triangle adjacency on the device of ``tri``:
  on CUDA with four kernels of ``cuda_ops/antialias_topology.cu`` (a hash table of the undirected
  edges and a single-pass scan, no sort), elsewhere (and without the kernels) with torch ops (a
  stable sort of the edge keys). It returns a :class:`GpuTopologyHash`: the reference's
  :class:`~diffrast.reference.antialias.TopologyHash` (the tables the reference builds; the
  kernels number the edges in another order, which nothing reading them depends on) plus the
  kernels' neighbour table. It never synchronizes with the host: every table is sized from the
  number of triangles ``T`` (the CSR offsets are padded, see :func:`construct_tables`), so the
  number of distinct edges is never read back, and its result is the same run to run.
* :func:`antialias` runs the kernels for float32 ``color``, ``pos`` and ``rast`` (anything else
  goes to the reference), as a ``torch.autograd.Function``: outputs and scratch buffers allocated
  by torch, kernels launched on torch's current stream through :mod:`diffrast.cuda_ops.loader`, no
  host synchronization and no Python loop over the batch. :func:`antialias_forward` and
  :func:`antialias_backward` are the same two halves outside autograd (for the custom ops that
  ``torch.compile`` sees, see :mod:`diffrast.antialias`).

Kernel passes (details in ``cuda_ops/antialias_pairs.cuh`` and the headers of
``cuda_ops/antialias_forward.cu`` and ``antialias_backward.cu``): a block per tile of pixels
lists the pixel pairs (each pixel with its right neighbour and with the neighbour above) that need
evaluating, about one in eight, and its threads share them out; each evaluation records the pair's
crossing parameter ``t`` and a byte of flags (blends, which pixel is in front, which is the
target, the crossing edge) in shared memory; after a barrier each thread gathers the pairs that
blend into its pixel, writes the output and, for the backward pass, the pixel's records in global
memory, so the forward pass has no atomics and is deterministic. The backward pass gathers
``grad_color`` the same way, and accumulates the position gradient of each blending pair (through
``t``, into the two vertices of the crossing edge, times ``pos_gradient_boost``) with float
``atomicAdd``, or, in deterministic mode, without float atomics as described in
:func:`diffrast.cuda_backend.row_segments`.
"""
from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from .cuda_backend import INT32_MAX, aligned, available, check_entries, deterministic, \
    launch_tiles, needs_autograd, row_segments
# (module-level _launch: tests drive single topology passes through it)
from .cuda_backend import launch as _launch
from .cuda_ops.params import (AntialiasBackwardParams, AntialiasForwardParams,
                              AntialiasTopologyParams)
from . import dispatch
from .reference import antialias as _ref
from .reference.antialias import TopologyHash

__all__ = ["available", "GpuTopologyHash", "construct_tables", "construct_topology",
           "neighbor_table", "topology_tables", "renumbered_like_reference", "antialias",
           "antialias_forward", "antialias_backward"]

_NO_ROW = 0x7FFFFFFF


# ==============================================================================================
# Topology.

class GpuTopologyHash(TopologyHash):
    """A :class:`~diffrast.reference.antialias.TopologyHash` with the neighbour table that the
    CUDA kernels read, built without host synchronization by :func:`construct_topology`. Built
    by the kernels (CUDA tensors), its edges are numbered in the order of their first incidence
    ``3 * triangle + k`` rather than by vertex keys as in the reference (see
    :func:`construct_tables`); the incidences of each edge are in the reference's order.

    Attributes (besides those of ``TopologyHash``):
        neighbor: int32 ``[num_triangles, 3]``. For edge ``k`` of triangle ``t`` (from vertex
            ``k`` to vertex ``k + 1``): the vertex opposite that edge in the one other triangle
            on the same undirected edge; ``-1`` if no other triangle can continue the surface
            across it (a boundary edge, or its only other incidence is in ``t`` itself); or
            ``-2 - e`` when the edge ``e`` has three or more incidences (the kernel then reads
            them from the CSR tables ``edge_ptr``, ``inc_tri``, ``inc_opp``).
        edge_ptr_padded: int32 ``[3 * num_triangles + 1]``, the CSR offsets padded to a size
            known without reading the data: ``edge_ptr`` followed by copies of
            ``3 * num_triangles`` (empty edges). The kernels and the custom ops read this one.
        edge_ptr: int32 ``[num_edges + 1]``, as in ``TopologyHash``: the prefix of
            ``edge_ptr_padded``, trimmed on first access (which reads the edge count back to the
            host once; nothing in diffrast's own paths does).
    """

    __slots__ = ("neighbor", "edge_ptr_padded", "_edge_ptr")

    def __init__(self, num_triangles, tri_edge, edge_ptr_padded, inc_tri, inc_opp, neighbor):
        # Every field set here, none through a property setter: torch.compile traces this
        # constructor when the hash is built inside a compiled function.
        self.num_triangles = int(num_triangles)
        self.tri_edge = tri_edge
        self.edge_ptr_padded = edge_ptr_padded
        self._edge_ptr = None
        self.inc_tri = inc_tri
        self.inc_opp = inc_opp
        self.device = tri_edge.device
        self.neighbor = neighbor

    @property
    def edge_ptr(self) -> torch.Tensor:
        if self._edge_ptr is None:
            num_edges = int(self.tri_edge.max()) + 1 if self.tri_edge.numel() else 0
            self._edge_ptr = self.edge_ptr_padded[:num_edges + 1]
        return self._edge_ptr


def topology_tables(topology: TopologyHash):
    """The tensors of any ``TopologyHash`` that the kernels and the custom ops read, without host
    synchronization: ``(tri_edge, edge_ptr, inc_tri, inc_opp, neighbor)``, where ``edge_ptr`` is
    the padded table of a :class:`GpuTopologyHash` (the exact one otherwise) and ``neighbor`` is
    ``None`` for a plain ``TopologyHash``."""
    if isinstance(topology, GpuTopologyHash):
        return (topology.tri_edge, topology.edge_ptr_padded, topology.inc_tri, topology.inc_opp,
                topology.neighbor)
    return topology.tri_edge, topology.edge_ptr, topology.inc_tri, topology.inc_opp, None


def neighbor_table(topology: TopologyHash) -> torch.Tensor:
    """The int32 ``[T, 3]`` neighbour table of :class:`GpuTopologyHash` from the CSR tensors of
    any ``TopologyHash`` (torch ops on its device, no host synchronization)."""
    tri_edge, edge_ptr, inc_tri, inc_opp, _ = topology_tables(topology)
    T = topology.num_triangles
    dev = tri_edge.device
    if T == 0:
        return torch.zeros(0, 3, dtype=torch.int32, device=dev)
    e = tri_edge.reshape(-1)
    start = edge_ptr[e]
    count = edge_ptr[e + 1] - start
    tri_of_slot = torch.arange(3 * T, device=dev, dtype=torch.int32) // 3
    # With two incidences, the other one is the incidence whose triangle is not this slot's (if
    # both are in this triangle, the edge occurs twice in it and nothing continues across).
    second = torch.clamp(start + 1, max=3 * T - 1)
    other = torch.where(inc_tri[start] == tri_of_slot, second, start)
    opp = torch.where(inc_tri[other] != tri_of_slot, inc_opp[other], -1)
    nbr = torch.where(count == 2, opp, torch.where(count == 1, -1, -2 - e))
    return nbr.to(torch.int32).reshape(T, 3)


def construct_tables(tri: torch.Tensor):
    """The topology tables of a validated int32 ``[T, 3]`` triangle tensor, on its device, with
    no host synchronization (every output size depends on ``T`` alone).

    On a CUDA device with the kernels available, the kernels of ``cuda_ops/antialias_topology.cu``
    (:func:`_construct_tables_kernels`, four launches and no sort); elsewhere torch ops
    (:func:`_construct_tables_torch`). Both give the reference's tables
    (:func:`diffrast.reference.antialias.construct_topology`, only ``edge_ptr`` padded) up to the
    numbering of the edges: the torch ops number them in the order of their ``(min vertex, max
    vertex)`` keys, as the reference; the kernels in the order of their first incidence
    ``3 * triangle + k``. In both, each edge's incidences are listed by increasing
    ``3 * triangle + k``. Nothing that reads the tables depends on the numbering.

    Args:
        tri: int32 ``[T, 3]`` (any device).

    Returns:
        ``(tri_edge, edge_ptr, inc_tri, inc_opp, neighbor)``, all int32: ``[T, 3]``, ``[3T + 1]``
        (the CSR offsets of the ``E`` edges, then ``3T - E`` entries equal to ``3T``), ``[3T]``,
        ``[3T]`` and ``[T, 3]``, as documented in :class:`GpuTopologyHash`.
    """
    if tri.shape[0] == 0:
        dev = tri.device
        return (torch.zeros(0, 3, dtype=torch.int32, device=dev),
                torch.zeros(1, dtype=torch.int32, device=dev),
                torch.zeros(0, dtype=torch.int32, device=dev),
                torch.zeros(0, dtype=torch.int32, device=dev),
                torch.zeros(0, 3, dtype=torch.int32, device=dev))
    if dispatch.uses_kernels(tri.device):  # (tests run the kernels on the CPU too)
        return _construct_tables_kernels(tri)
    return _construct_tables_torch(tri)


_SCAN_TILE = 256  # slots per tile of the kernel topology_scan (kScanTile in antialias_topology.cu)


def _topology_buffers(T: int, device: torch.device):
    """The kernels' work buffers for ``T`` triangles: ``(table, lists, capacity, num_tiles)``:
    the hash table of ``capacity`` 8-byte entries followed by the scan's tile status and ticket
    (int64, zeroed), and the lists of the edges of three or more incidences (int32 ``[3T]``,
    uninitialized); see the header of ``cuda_ops/antialias_topology.cu``. 20 bytes per incidence
    (the outputs, which also serve as scratch, another 20)."""
    n = 3 * T
    capacity = min(2 * n, INT32_MAX)  # at most half full: E <= n
    num_tiles = -(-n // _SCAN_TILE)
    table = torch.zeros(capacity + num_tiles + 1, dtype=torch.int64, device=device)
    lists = torch.empty(n, dtype=torch.int32, device=device)
    return table, lists, capacity, num_tiles


def _construct_tables_kernels(tri: torch.Tensor):
    """:func:`construct_tables` by the kernels (``T >= 1``): an open-addressing hash table of the
    undirected edges, a single-pass scan over the incidences that numbers the edges in the order
    of their first incidence and gives their CSR offsets, then the tables; deterministic, since
    no output depends on the order of the atomics (see ``cuda_ops/antialias_topology.cu``). Four
    kernel launches, one fill (the zeroed table) and no host synchronization."""
    dev = tri.device
    T = tri.shape[0]
    n = 3 * T
    if n >= INT32_MAX:
        raise ValueError(f"tri has {T} triangles; the topology kernels support fewer than "
                         f"{INT32_MAX // 3}")
    tri = tri.contiguous()
    table, lists, capacity, num_tiles = _topology_buffers(T, dev)
    tri_edge = torch.empty(T, 3, dtype=torch.int32, device=dev)
    edge_ptr = torch.empty(n + 1, dtype=torch.int32, device=dev)
    inc_tri = torch.empty(n, dtype=torch.int32, device=dev)
    inc_opp = torch.empty(n, dtype=torch.int32, device=dev)
    neighbor = torch.empty(T, 3, dtype=torch.int32, device=dev)
    kp = AntialiasTopologyParams(tri=tri, table=table, list=lists, edge_ptr=edge_ptr,
                                 tri_edge=tri_edge, inc_tri=inc_tri, inc_opp=inc_opp,
                                 nbr=neighbor, num_slots=n, capacity=capacity,
                                 num_tiles=num_tiles)
    _launch("antialias_topology", "topology_insert", n, kp, dev)
    _launch("antialias_topology", "topology_scan", 32 * num_tiles, kp, dev)
    _launch("antialias_topology", "topology_place", n, kp, dev)
    _launch("antialias_topology", "topology_rank", n, kp, dev)
    return tri_edge, edge_ptr, inc_tri, inc_opp, neighbor


def _construct_tables_torch(tri: torch.Tensor):
    """:func:`construct_tables` by torch ops (``T >= 1``), equal to the reference's tables:
    edges are numbered in the order of their ``(min vertex, max vertex)`` keys, and each edge's
    incidences are listed by increasing ``3 * triangle + k``; only ``edge_ptr`` is padded.
    Method: a stable sort of the ``3T`` keys ``min * 2**32 + max`` (a radix sort on the GPU), a
    scan of the key changes for the edge ids, a scatter back to the triangles, a binary search
    for the CSR offsets and, for the neighbour table, the other incidence of each two-incidence
    edge, next to it in the sorted order. About 27 torch ops, none of which synchronizes (no
    ``nonzero``, ``unique``, boolean masks, ``.item()`` or sizes read back)."""
    dev = tri.device
    T = tri.shape[0]
    n = 3 * T
    i32 = torch.int32
    t = tri.to(torch.int64).repeat(1, 2)          # v0 v1 v2 v0 v1 v2
    a, b = t[:, 0:3], t[:, 1:4]                   # edge k: (v_k, v_k+1), opposite v_k+2
    key = torch.add(torch.maximum(a, b), torch.minimum(a, b), alpha=1 << 32)
    del t, a, b
    sorted_key, order = torch.sort(key.reshape(-1), stable=True)
    del key
    edge = torch.zeros(n, dtype=i32, device=dev)  # edge id of each sorted slot
    torch.cumsum(sorted_key[1:] != sorted_key[:-1], 0, out=edge[1:])
    del sorted_key
    tri_edge = torch.empty_like(edge).scatter_(0, order, edge).reshape(T, 3)
    slots = torch.arange(n + 1, dtype=i32, device=dev)
    edge_ptr = torch.searchsorted(edge, slots, out_int32=True)  # past the last edge id: n
    inc_tri = torch.div(order, 3, rounding_mode="floor").to(i32)
    inc_opp = torch.take(tri[:, [2, 0, 1]], order)
    # Neighbour table, in the sorted order, where the incidences of an edge are adjacent: the
    # mirror image of slot i in its edge's run [start, end) is the other incidence of a
    # two-incidence edge, and i itself for a single incidence (-1 then, as i's own triangle).
    bounds = edge_ptr.unfold(0, 2, 1)[edge]       # [n, 2]: (start, end) of each slot's edge
    other = (bounds[:, 1] - slots[1:]).add_(bounds[:, 0])  # start + end - 1 - i, in int32
    across = torch.where(inc_tri[other] != inc_tri, inc_opp[other], -1)
    many = bounds[:, 1] - bounds[:, 0] > 2
    nbr = torch.where(many, -2 - edge, across)
    neighbor = torch.empty_like(nbr).scatter_(0, order, nbr).reshape(T, 3)
    return tri_edge, edge_ptr, inc_tri, inc_opp, neighbor


def renumbered_like_reference(tri: torch.Tensor, tables):
    """The tables of :func:`construct_tables` (or :func:`topology_tables`) with their edges
    renumbered in the reference's order, that of their ``(min vertex, max vertex)`` keys: equal,
    tensor for tensor, to the torch ops' tables (:func:`_construct_tables_torch`) for the same
    ``tri``. For tests and comparisons; reads the edge count back to the host.

    Args:
        tri: the int32 ``[T, 3]`` triangle tensor the tables were built from.
        tables: ``(tri_edge, edge_ptr, inc_tri, inc_opp, neighbor)``, ``edge_ptr`` padded or
            exact, ``neighbor`` possibly ``None``.

    Returns:
        ``(tri_edge, edge_ptr, inc_tri, inc_opp, neighbor)`` renumbered (``edge_ptr`` padded to
        ``3T + 1`` entries; ``neighbor`` ``None`` if it was).
    """
    tri_edge, edge_ptr, inc_tri, inc_opp, neighbor = tables
    dev = tri_edge.device
    T = tri.shape[0]
    n = 3 * T
    edge = tri_edge.reshape(-1).long()
    E = int(edge.max()) + 1 if n else 0
    t = tri.to(device=dev, dtype=torch.int64).repeat(1, 2)
    a, b = t[:, 0:3].reshape(-1), t[:, 1:4].reshape(-1)
    slot_key = torch.add(torch.maximum(a, b), torch.minimum(a, b), alpha=1 << 32)
    key = torch.zeros(E, dtype=torch.int64, device=dev).scatter_(0, edge, slot_key)
    order = torch.argsort(key)                   # new id -> old id
    new_id = torch.empty_like(order)
    new_id[order] = torch.arange(E, device=dev)  # old id -> new id
    start = edge_ptr[:E].long()
    count = edge_ptr[1:E + 1].long() - start
    ptr = torch.full((n + 1,), n, dtype=torch.int64, device=dev)
    ptr[0] = 0
    ptr[1:E + 1] = torch.cumsum(count[order], 0)
    old_edge = torch.repeat_interleave(torch.arange(E, device=dev), count)  # of each position
    pos = ptr[new_id[old_edge]] + torch.arange(n, device=dev) - start[old_edge]
    new_tri = torch.empty_like(inc_tri).scatter_(0, pos, inc_tri)
    new_opp = torch.empty_like(inc_opp).scatter_(0, pos, inc_opp)
    nbr = None
    if neighbor is not None:
        many = neighbor <= -2
        nbr = torch.where(many, -2 - new_id[torch.where(many, -2 - neighbor, 0).long()],
                          neighbor).to(neighbor.dtype)
    return (new_id[edge].to(tri_edge.dtype).reshape(tri_edge.shape), ptr.to(edge_ptr.dtype),
            new_tri, new_opp, nbr)


def construct_topology(tri: torch.Tensor) -> GpuTopologyHash:
    """Build the topology of a validated int32 ``[T, 3]`` triangle tensor on its device, without
    host synchronization (see :func:`construct_tables`).

    The tables of :func:`diffrast.reference.antialias.construct_topology` (its ``edge_ptr`` is
    trimmed from ``edge_ptr_padded`` when first read), plus the neighbour table: tensor for
    tensor on the CPU, up to the numbering of the edges where the kernels build them
    (:func:`renumbered_like_reference` gives the reference's numbering).
    """
    T = tri.shape[0]
    if 3 * T >= INT32_MAX:
        raise ValueError(f"tri has {T} triangles; the CUDA antialias supports fewer than "
                         f"{INT32_MAX // 3}")
    return GpuTopologyHash(T, *construct_tables(tri))


# ==============================================================================================
# antialias.

def antialias_forward(color, rast, pos, tri, nbr, edge_ptr, inc_tri, inc_opp, records=True):
    """The forward kernel on validated, contiguous float32 tensors, outside autograd.

    Args:
        color: ``[B, H, W, C]``.
        rast: ``[B, H, W, 4]``.
        pos: ``[B, V, 4]`` or ``[V, 4]``.
        tri: int32 ``[T, 3]``.
        nbr, edge_ptr, inc_tri, inc_opp: the topology tables (see :class:`GpuTopologyHash`;
            ``edge_ptr`` exact or padded), checked by :func:`_check_topology_tables`.
        records: whether to write the pair records for the backward pass (a forward-only call
            needs none).

    Returns:
        ``(out, pair_t, pair_meta)``: the output ``[B, H, W, C]`` and the per-pixel pair records
        that :func:`antialias_backward` reads, float32 ``[N, 2]`` and int32 ``[N]``
        (``N = B * H * W``; zeros when ``N`` or ``T`` is 0, where ``out`` is a copy of
        ``color``; ``pair_t`` is 0 for a pair that does not blend), or ``None`` for both
        without ``records``.
    """
    device = color.device
    B, H, W, C = color.shape
    N = B * H * W
    V = pos.shape[-2]
    T = tri.shape[0]
    if N == 0 or T == 0:
        return (color.clone(), torch.zeros(N, 2, dtype=torch.float32, device=device),
                torch.zeros(N, dtype=torch.int32, device=device))
    pos, rast = aligned(pos), aligned(rast)
    pair_t = torch.empty(N, 2, dtype=torch.float32, device=device) if records else None
    pair_meta = torch.empty(N, dtype=torch.int32, device=device) if records else None
    out = torch.empty_like(color)
    kp = AntialiasForwardParams(
        rast=rast, pos=pos, tri=tri, nbr=nbr, edge_ptr=edge_ptr, inc_tri=inc_tri,
        inc_opp=inc_opp, color=color, pair_t=pair_t, pair_meta=pair_meta, out=out, width=W,
        height=H, channels=C, num_vertices=V, num_triangles=T, num_edges=edge_ptr.shape[0] - 1,
        pos_batched=pos.ndim == 3)
    launch_tiles("antialias_forward", "antialias_fwd", B, H, W, kp, device)
    return out, pair_t, pair_meta


def antialias_backward(color, rast, pos, tri, pair_t, pair_meta, grad_out, pos_gradient_boost,
                       want_color=True, want_pos=True):
    """The backward kernels, outside autograd: the gradients of :func:`antialias_forward`.

    Args:
        color, rast, pos, tri: the forward's inputs (float32, contiguous).
        pair_t, pair_meta: the forward's pair records.
        grad_out: ``[B, H, W, C]`` gradient of the output (any strides).
        pos_gradient_boost: multiplier of the gradient of ``pos``.
        want_color, want_pos: which gradients to compute.

    Returns:
        ``(grad_color, grad_pos)`` shaped like ``color`` and ``pos``, ``None`` where not wanted.
        ``grad_pos`` is bit-identical run to run only in deterministic mode.
    """
    device = color.device
    B, H, W, C = color.shape
    N = B * H * W
    V = pos.shape[-2]
    T = tri.shape[0]
    if N == 0 or T == 0:
        return (grad_out.to(color.dtype, memory_format=torch.contiguous_format, copy=True)
                if want_color else None,
                torch.zeros_like(pos) if want_pos else None)
    pos, rast = aligned(pos), aligned(rast)
    num_rows = pos.numel() // 4
    det = want_pos and deterministic()
    if det:
        check_entries(4 * N, "antialias")
    # Read in place whatever the layout (the kernel's strides are 64-bit; torch's are never
    # negative): an expanded gradient costs no copy.
    grad_out = grad_out.to(torch.float32)
    g_sb, g_sy, g_sx, g_sc = grad_out.stride()
    grad_color = torch.empty_like(color) if want_color else None
    grad_pos = None
    if want_pos:
        grad_pos = torch.empty_like(pos) if det else torch.zeros_like(pos)
    pair_grad = torch.empty(2 * N, dtype=torch.float32, device=device) if det else None
    entry_rows = torch.empty(4 * N, dtype=torch.int32, device=device) if det else None
    kp = AntialiasBackwardParams(
        color=color, grad_out=grad_out, rast=rast, pos=pos, tri=tri, pair_t=pair_t,
        pair_meta=pair_meta, grad_color=grad_color, grad_pos=grad_pos, pair_grad=pair_grad,
        entry_rows=entry_rows, num_pixels=N, num_rows=num_rows, width=W, height=H, channels=C,
        num_vertices=V, num_triangles=T, g_stride_b=g_sb, g_stride_y=g_sy, g_stride_x=g_sx,
        g_stride_c=g_sc, boost=float(pos_gradient_boost), pos_batched=pos.ndim == 3,
        want_color=bool(want_color), want_pos=bool(want_pos), deterministic=det)
    _launch("antialias_backward", "antialias_bwd", N, kp, device)
    if det:
        order, row_start = row_segments(entry_rows, num_rows)
        _launch("antialias_backward", "antialias_bwd_pos_reduce", num_rows,
                kp._replace(order=order, row_start=row_start), device)
    return grad_color, grad_pos


class _Antialias(torch.autograd.Function):
    @staticmethod
    def forward(ctx, color, pos, rast, tri, nbr, edge_ptr, inc_tri, inc_opp, boost):
        pos, rast = aligned(pos), aligned(rast)
        out, pair_t, pair_meta = antialias_forward(color, rast, pos, tri, nbr, edge_ptr, inc_tri,
                                                   inc_opp)
        ctx.save_for_backward(color, pos, rast, tri, pair_t, pair_meta)
        ctx.boost = boost
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        color, pos, rast, tri, pair_t, pair_meta = ctx.saved_tensors
        grad_color, grad_pos = antialias_backward(color, rast, pos, tri, pair_t, pair_meta,
                                                  grad_out, ctx.boost, ctx.needs_input_grad[0],
                                                  ctx.needs_input_grad[1])
        return grad_color, grad_pos, None, None, None, None, None, None, None


def _check_topology_tables(tri_edge, edge_ptr, inc_tri, inc_opp, nbr, T: int) -> None:
    """The kernels trust these sizes and dtypes for their bounds; a hand-made or altered
    ``TopologyHash`` that breaks them is refused rather than read out of bounds. (Shape checks
    only: the values are guarded in the kernels.)"""
    ok = edge_ptr.ndim == 1 and edge_ptr.numel() >= 1
    ok = ok and tuple(tri_edge.shape) == (T, 3)
    if nbr is not None:
        ok = ok and nbr.dtype == torch.int32 and tuple(nbr.shape) == (T, 3) and nbr.is_contiguous()
    for t in (edge_ptr, inc_tri, inc_opp):
        ok = ok and t.dtype == torch.int32 and t.is_contiguous()
    ok = ok and inc_tri.numel() == 3 * T and inc_opp.numel() == 3 * T
    if not ok:
        raise ValueError(f"topology_hash is inconsistent with a mesh of {T} triangles; build it "
                         "with antialias_construct_topology_hash(tri)")


def check_kernel_sizes(N: int, num_rows: int, T: int) -> None:
    """Raise ``ValueError`` unless ``num_rows`` vertex rows and ``T`` triangles fit the antialias
    kernels' 32-bit fields (``num_rows`` and ``3 T`` below 2^31). Pixels are indexed in 64 bits:
    only the grid limits ``N`` (see :func:`diffrast.cuda_backend.launch`), and the deterministic
    backward its ``4 N`` sorted entries (see :func:`antialias_backward`)."""
    if num_rows >= INT32_MAX:
        raise ValueError(f"pos has {num_rows} vertex rows; the CUDA antialias supports "
                         f"fewer than {INT32_MAX}")
    if 3 * T >= INT32_MAX:
        raise ValueError(f"tri has {T} triangles; the CUDA antialias supports fewer than "
                         f"{INT32_MAX // 3}")


def kernel_tables(tri_edge, edge_ptr, inc_tri, inc_opp, nbr, T: int):
    """Checked tables for the kernels, ``(nbr, edge_ptr, inc_tri, inc_opp)``, from those of
    :func:`topology_tables` (``nbr`` ``None``: derived from the CSR tables by
    :func:`neighbor_table`, int32 ``[T, 3]`` by construction). Raises ``ValueError`` for tables
    of another mesh size."""
    _check_topology_tables(tri_edge, edge_ptr, inc_tri, inc_opp, nbr, T)
    if nbr is None:
        nbr = neighbor_table(TopologyHash(T, tri_edge, edge_ptr, inc_tri, inc_opp))
    return nbr, edge_ptr, inc_tri, inc_opp


def reference_topology(topology: TopologyHash) -> TopologyHash:
    """A plain ``TopologyHash`` view of ``topology`` that the reference reads without host
    synchronization (the padded ``edge_ptr`` of a :class:`GpuTopologyHash`; the reference only
    reads the offsets of edges that ``tri_edge`` names, so the result is the same)."""
    if not isinstance(topology, GpuTopologyHash):
        return topology
    return TopologyHash(topology.num_triangles, topology.tri_edge, topology.edge_ptr_padded,
                        topology.inc_tri, topology.inc_opp)


def antialias(color: torch.Tensor, rast: torch.Tensor, pos: torch.Tensor, tri: torch.Tensor,
              topology: TopologyHash | None = None,
              pos_gradient_boost: float = 1.0) -> torch.Tensor:
    """CUDA backend of :func:`diffrast.antialias` on validated, contiguous inputs.

    Same contract as :func:`diffrast.reference.antialias.antialias`. float32 ``color``, ``pos``
    and ``rast`` run the kernels; other dtypes (float64 for gradient checks) use the reference.

    Args:
        color: ``[B, H, W, C]``.
        rast: ``[B, H, W, 4]`` (``u, v, z/w, triangle_id + 1``).
        pos: ``[B, V, 4]`` (instance mode) or ``[V, 4]`` (range mode).
        tri: int32 ``[T, 3]``.
        topology: a ``TopologyHash`` of ``tri`` on the same device (built here when ``None``).
        pos_gradient_boost: multiplier for the gradient propagated to ``pos``.

    Returns:
        ``[B, H, W, C]``, differentiable with respect to ``color`` and ``pos``.
    """
    if topology is None:
        topology = construct_topology(tri)
    if not (color.dtype == pos.dtype == rast.dtype == torch.float32):
        return _ref.antialias(color, rast, pos, tri, reference_topology(topology),
                              pos_gradient_boost)
    B, H, W, C = color.shape
    N = B * H * W
    T = tri.shape[0]
    if N == 0 or T == 0:
        return color.clone()
    check_kernel_sizes(N, pos.numel() // 4, T)
    tables = kernel_tables(*topology_tables(topology), T)
    color, pos, rast, tri = color.contiguous(), pos.contiguous(), rast.contiguous(), \
        tri.contiguous()
    if not needs_autograd(color, pos):
        return antialias_forward(color, rast, pos, tri, *tables, records=False)[0]  # (no node)
    return _Antialias.apply(color, pos, rast, tri, *tables, float(pos_gradient_boost))
