"""CUDA backend of ``antialias`` and of the topology construction (float32, ``cuda_ops/antialias.cu``).

:func:`diffrast.antialias` validates its arguments and, for CUDA tensors, calls the two functions
here (see ``_backend_for`` in :mod:`diffrast.antialias`):

* :func:`construct_topology` builds the edge-to-triangle adjacency with torch GPU ops (a stable
  sort of the undirected edge keys, no hashing, so its speed and result do not depend on how
  vertices are duplicated). It returns a :class:`GpuTopologyHash`: the reference's
  :class:`~diffrast.reference.antialias.TopologyHash` (the same tensors, equal to what the
  reference builds) plus the kernels' neighbour table. Its only host round trip is one size read
  (the number of distinct edges, which sizes ``edge_ptr``); build it once per mesh with
  :func:`diffrast.antialias_construct_topology_hash`.
* :func:`antialias` runs the kernels for float32 ``color``, ``pos`` and ``rast`` (anything else
  goes to the reference), as a ``torch.autograd.Function``: outputs and scratch buffers allocated
  by torch, kernels launched on torch's current stream through :mod:`diffrast.cuda_ops.loader`, no
  host synchronization and no Python loop over the batch.

Kernel passes (details in the header of ``cuda_ops/antialias.cu``): one thread per pixel evaluates
the pixel's pair with its right neighbour and with the neighbour above and records, per pair, the
crossing parameter ``t`` and a byte of flags (blends, which pixel is in front, which is the
target, the crossing edge); a second pass gathers the pairs that blend into each pixel and writes
the output, so the forward pass has no atomics and is deterministic. The backward pass gathers
``grad_color`` the same way, and accumulates the position gradient of each blending pair (through
``t``, into the two vertices of the crossing edge, times ``pos_gradient_boost``) with float
``atomicAdd``, or, in deterministic mode, without float atomics as described in
:func:`_row_segments`.
"""
from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from .cuda_backend import (_INT32_MAX, _aligned, _grad_strides, _launch, _row_segments, _unused,
                           available, deterministic)
from .reference import antialias as _ref
from .reference.antialias import TopologyHash

__all__ = ["available", "GpuTopologyHash", "construct_topology", "neighbor_table", "antialias"]

_NO_ROW = 0x7FFFFFFF


# ==============================================================================================
# Topology.

class GpuTopologyHash(TopologyHash):
    """A :class:`~diffrast.reference.antialias.TopologyHash` with the neighbour table that the
    CUDA kernels read.

    Attributes (besides those of ``TopologyHash``):
        neighbor: int32 ``[num_triangles, 3]``. For edge ``k`` of triangle ``t`` (from vertex
            ``k`` to vertex ``k + 1``): the vertex opposite that edge in the one other triangle
            on the same undirected edge; ``-1`` if no other triangle can continue the surface
            across it (a boundary edge, or its only other incidence is in ``t`` itself); or
            ``-2 - e`` when the edge ``e`` has three or more incidences (the kernel then reads
            them from the CSR tables ``edge_ptr``, ``inc_tri``, ``inc_opp``).
    """

    __slots__ = ("neighbor",)

    def __init__(self, num_triangles, tri_edge, edge_ptr, inc_tri, inc_opp, neighbor):
        super().__init__(num_triangles, tri_edge, edge_ptr, inc_tri, inc_opp)
        self.neighbor = neighbor


def neighbor_table(topology: TopologyHash) -> torch.Tensor:
    """The int32 ``[T, 3]`` neighbour table of :class:`GpuTopologyHash` from the CSR tensors of
    any ``TopologyHash`` (torch ops on its device, no host synchronization)."""
    T = topology.num_triangles
    dev = topology.device
    if T == 0:
        return torch.zeros(0, 3, dtype=torch.int32, device=dev)
    e = topology.tri_edge.reshape(-1)
    start = topology.edge_ptr[e]
    count = topology.edge_ptr[e + 1] - start
    tri_of_slot = torch.arange(3 * T, device=dev, dtype=torch.int64) // 3
    # With two incidences, the other one is the incidence whose triangle is not this slot's (if
    # both are in this triangle, the edge occurs twice in it and nothing continues across).
    second = torch.clamp(start + 1, max=3 * T - 1)
    other = torch.where(topology.inc_tri[start] == tri_of_slot, second, start)
    opp = torch.where(topology.inc_tri[other] != tri_of_slot, topology.inc_opp[other],
                      torch.full_like(start, -1))
    nbr = torch.where(count == 2, opp, torch.where(count == 1, torch.full_like(e, -1), -2 - e))
    return nbr.to(torch.int32).reshape(T, 3)


def construct_topology(tri: torch.Tensor) -> GpuTopologyHash:
    """Build the topology of a validated int32 ``[T, 3]`` triangle tensor on its device.

    Equal, tensor for tensor, to :func:`diffrast.reference.antialias.construct_topology`: edges
    are numbered in the order of their ``(min vertex, max vertex)`` keys, and each edge's
    incidences are listed by increasing ``3 * triangle + k``. Method: a stable sort of the ``3T``
    keys ``min << 32 | max`` (a radix sort on the GPU), a scan of the key changes for the edge
    ids, a scatter back to the triangles and a binary search for the CSR offsets. Reads one
    number back to the host: the edge count."""
    dev = tri.device
    T = tri.shape[0]
    if T == 0:
        empty = torch.zeros(0, dtype=torch.int64, device=dev)
        return GpuTopologyHash(0, empty.reshape(0, 3), torch.zeros(1, dtype=torch.int64, device=dev),
                               empty, empty, torch.zeros(0, 3, dtype=torch.int32, device=dev))
    if 3 * T >= _INT32_MAX:
        raise ValueError(f"tri has {T} triangles; the CUDA antialias supports fewer than "
                         f"{_INT32_MAX // 3}")
    t = tri.to(torch.int64)
    a, b, opp = t, t.roll(-1, dims=1), t.roll(-2, dims=1)
    key = (torch.minimum(a, b) << 32) | torch.maximum(a, b)
    sorted_key, order = torch.sort(key.reshape(-1), stable=True)
    new_edge = torch.ones_like(sorted_key, dtype=torch.bool)
    new_edge[1:] = sorted_key[1:] != sorted_key[:-1]
    edge_of_sorted = torch.cumsum(new_edge, 0) - 1
    num_edges = int(edge_of_sorted[-1]) + 1  # the one size read
    tri_edge = torch.empty_like(edge_of_sorted).scatter_(0, order, edge_of_sorted).reshape(T, 3)
    edge_ptr = torch.searchsorted(
        edge_of_sorted, torch.arange(num_edges + 1, dtype=torch.int64, device=dev))
    topo = GpuTopologyHash(T, tri_edge, edge_ptr, order // 3, opp.reshape(-1)[order], None)
    topo.neighbor = neighbor_table(topo)
    return topo


# ==============================================================================================
# antialias.

class _Antialias(torch.autograd.Function):
    @staticmethod
    def forward(ctx, color, pos, rast, tri, nbr, edge_ptr, inc_tri, inc_opp, boost):
        device = color.device
        B, H, W, C = color.shape
        N = B * H * W
        V = pos.shape[-2]
        num_rows = pos.numel() // 4
        T = tri.shape[0]
        pos, rast = _aligned(pos), _aligned(rast)
        pair_t = torch.empty(N, 2, dtype=torch.float32, device=device)
        pair_meta = torch.empty(N, dtype=torch.int32, device=device)
        _launch("antialias", "antialias_fwd_pairs", N,
                (rast, pos, tri, nbr, edge_ptr, inc_tri, inc_opp, pair_t, pair_meta,
                 N, W, H, V, T, edge_ptr.shape[0] - 1, pos.ndim == 3), device)
        out = torch.empty_like(color)
        _launch("antialias", "antialias_fwd_blend", N, (color, pair_t, pair_meta, out, N, W, H, C),
                device)
        ctx.save_for_backward(color, pos, rast, tri, pair_t, pair_meta)
        ctx.boost = boost
        ctx.num_rows = num_rows
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        color, pos, rast, tri, pair_t, pair_meta = ctx.saved_tensors
        want_color, want_pos = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        device = color.device
        B, H, W, C = color.shape
        N = B * H * W
        V = pos.shape[-2]
        T = tri.shape[0]
        num_rows = ctx.num_rows
        det = want_pos and deterministic()
        grad_out, gs = _grad_strides(grad_out.to(torch.float32))
        null = _unused(device)
        grad_color = torch.empty_like(color) if want_color else None
        grad_pos = None
        if want_pos:
            grad_pos = torch.empty_like(pos) if det else torch.zeros_like(pos)
        pair_grad = torch.empty(2 * N, dtype=torch.float32, device=device) if det else null
        entry_rows = (torch.empty(4 * N, dtype=torch.int32, device=device) if det
                      else _unused(device, torch.int32))
        _launch("antialias", "antialias_bwd", N,
                (color, grad_out, rast, pos, tri, pair_t, pair_meta,
                 grad_color if want_color else null, grad_pos if want_pos else null,
                 pair_grad, entry_rows, N, W, H, C, V, T, pos.ndim == 3,
                 gs[0], gs[1], gs[2], gs[3], want_color, want_pos, det, float(ctx.boost)),
                device)
        if det:
            order, row_start = _row_segments(entry_rows, num_rows)
            _launch("antialias", "antialias_bwd_pos_reduce", num_rows,
                    (rast, pos, tri, pair_meta, pair_grad, order, row_start, grad_pos,
                     num_rows, W, H, V, T, pos.ndim == 3), device)
        return grad_color, grad_pos, None, None, None, None, None, None, None


def _check_topology_tables(topology: TopologyHash, nbr, T: int) -> None:
    """The kernels trust these sizes and dtypes for their bounds; a hand-made or altered
    ``TopologyHash`` that breaks them is refused rather than read out of bounds. (Shape checks
    only: the values are guarded in the kernels.)"""
    ok = topology.edge_ptr.ndim == 1 and topology.edge_ptr.numel() >= 1
    ok = ok and tuple(topology.tri_edge.shape) == (T, 3)
    if nbr is not None:
        ok = ok and nbr.dtype == torch.int32 and tuple(nbr.shape) == (T, 3) and nbr.is_contiguous()
    for t in (topology.edge_ptr, topology.inc_tri, topology.inc_opp):
        ok = ok and t.dtype == torch.int64 and t.is_contiguous()
    ok = ok and topology.inc_tri.numel() == 3 * T and topology.inc_opp.numel() == 3 * T
    if not ok:
        raise ValueError(f"topology_hash is inconsistent with a mesh of {T} triangles; build it "
                         "with antialias_construct_topology_hash(tri)")


def antialias(color: torch.Tensor, rast: torch.Tensor, pos: torch.Tensor, tri: torch.Tensor,
              topology: TopologyHash | None = None, pos_gradient_boost: float = 1.0) -> torch.Tensor:
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
        return _ref.antialias(color, rast, pos, tri, topology, pos_gradient_boost)
    B, H, W, C = color.shape
    N = B * H * W
    T = tri.shape[0]
    if N == 0 or T == 0:
        return color.clone()
    if N > _INT32_MAX // 4:
        raise ValueError(f"the image batch has {N} pixels; the CUDA antialias supports at most "
                         f"{_INT32_MAX // 4}")
    if pos.numel() // 4 >= _INT32_MAX:
        raise ValueError(f"pos has {pos.numel() // 4} vertex rows; the CUDA antialias supports "
                         f"fewer than {_INT32_MAX}")
    if 3 * T >= _INT32_MAX:
        raise ValueError(f"tri has {T} triangles; the CUDA antialias supports fewer than "
                         f"{_INT32_MAX // 3}")
    _check_topology_tables(topology, None, T)
    nbr = topology.neighbor if isinstance(topology, GpuTopologyHash) else neighbor_table(topology)
    _check_topology_tables(topology, nbr, T)
    return _Antialias.apply(color.contiguous(), pos.contiguous(), rast.contiguous(),
                            tri.contiguous(), nbr, topology.edge_ptr, topology.inc_tri,
                            topology.inc_opp, float(pos_gradient_boost))
