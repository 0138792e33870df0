"""Public ``antialias`` and ``antialias_construct_topology_hash`` (nvdiffrast's API).

The inputs are validated here, then the work goes to the backend that :mod:`diffrast.dispatch`
chooses for the tensors: float32 CUDA tensors run the kernels of ``cuda_ops/antialias_forward.cu``
and ``antialias_backward.cu`` through :mod:`diffrast.cuda_backend_antialias` (the topology too:
``cuda_ops/antialias_topology.cu``); everything else uses the plain-PyTorch reference in
:mod:`diffrast.reference.antialias` (on a CUDA device, the topology from torch ops without host
synchronization).

Under ``torch.compile`` both functions dispatch to ``torch.library`` custom ops instead
(``diffrast::antialias_construct_topology``, ``diffrast::antialias`` and its backward
``diffrast::antialias_backward``, see :mod:`diffrast.custom_ops`), which run the same backends.
"""
from __future__ import annotations

import math
import numbers
from typing import Optional

import torch

from . import checks, custom_ops, dispatch
from . import cuda_backend_antialias as _cuda
from .reference import antialias as _ref
from .reference.antialias import TopologyHash

__all__ = ["antialias", "antialias_construct_topology_hash", "TopologyHash"]


def _reference_topology(tri: torch.Tensor) -> TopologyHash:
    """The topology construction without the kernels: on a CUDA device the sync-free torch
    construction of :mod:`diffrast.cuda_backend_antialias`, elsewhere the reference's."""
    return _cuda.construct_topology(tri) if tri.is_cuda else _ref.construct_topology(tri)


def _reference_antialias(color, rast, pos, tri, topology: TopologyHash, pos_gradient_boost):
    """The reference ``antialias``, reading any topology hash without host synchronization."""
    return _ref.antialias(color, rast, pos, tri, _cuda.reference_topology(topology),
                          pos_gradient_boost)


dispatch.register("antialias_topology", reference=_reference_topology,
                  kernels=_cuda.construct_topology)
dispatch.register("antialias", reference=_reference_antialias, kernels=_cuda.antialias)


def _dtype(color: torch.Tensor, rast: torch.Tensor) -> torch.dtype:
    """The dtype that decides the backend: float32 only if ``color`` (and ``pos``, of the same
    dtype) and ``rast`` all are."""
    return torch.promote_types(color.dtype, rast.dtype)


def _check_tri_only(tri) -> torch.Tensor:
    """Check ``tri`` for ``antialias_construct_topology_hash``: int32 ``[T, 3]`` on a CPU or CUDA
    device, no negative index (:func:`diffrast.checks.check_triangles` without a vertex count:
    the reduction is cached per tensor object and version counter, and skipped under
    ``torch.compile``, where the kernels guard every index)."""
    tri = checks.check_tensor("tri", tri, dtypes=(torch.int32,), ndims=2, last_dim=3)
    checks.check_device("tri", tri)
    return checks.check_triangles("tri", tri)


def antialias_construct_topology_hash(tri: torch.Tensor) -> TopologyHash:
    """Construct a topology hash for a triangle tensor.

    This function can be used for constructing a topology hash for a triangle tensor that is
    known to remain constant. This avoids reconstructing it every time ``antialias()`` is called.

    In diffrast the topology "hash" is a ``TopologyHash`` object: the mesh's edge-to-triangle
    adjacency (undirected edges by vertex index, the triangles on each edge and the vertex each of
    them has opposite the edge), on the device of ``tri``. Treat it as opaque. On a CUDA device
    (and under ``torch.compile`` on any device) it is built without host synchronization, as a
    ``GpuTopologyHash`` (:mod:`diffrast.cuda_backend_antialias`) whose tables are sized from the
    number of triangles; only the validation of a ``tri`` not seen before reads one number back.

    Args:
        tri: Triangle tensor with shape [num_triangles, 3] and dtype ``torch.int32``. Any device.

    Returns:
        An opaque object containing the topology hash. This can be supplied in a call to
        ``antialias()`` in the ``topology_hash`` argument, together with the same ``tri``.

    Raises:
        TypeError: ``tri`` is not an int32 tensor.
        ValueError: ``tri`` is not ``[num_triangles, 3]`` or has negative indices.
    """
    tri = _check_tri_only(tri)
    if custom_ops.compiling():
        return _cuda.GpuTopologyHash(tri.shape[0], *_construct_topology_op(tri))
    return dispatch.backend("antialias_topology", tri.device)(tri)


def antialias(color: torch.Tensor, rast: torch.Tensor, pos: torch.Tensor, tri: torch.Tensor,
              topology_hash: TopologyHash | None = None,
              pos_gradient_boost: float = 1.0) -> torch.Tensor:
    """Perform antialiasing.

    Smooths the discontinuities at silhouette edges of the image ``color`` using an analytic
    approximation of pixel coverage, and so makes the colors of silhouette pixels depend
    continuously on the vertex positions: the backward pass propagates gradients to ``color``
    and to ``pos`` (the latter only at silhouette edges). A silhouette is any edge that connects
    to just one triangle, or connects two triangles so that one folds behind the other, against
    the background or against another surface.

    For every horizontally or vertically adjacent pixel pair with different triangle ids, the
    triangle of the pixel in front (smaller ``z/w``; empty pixels are farthest) is examined. If
    the edge through which the segment between the two pixel centres leaves it is a silhouette
    edge, steep relative to the pair (at least 45°), the pixel on whose side the crossing lies
    has the other pixel's color blended into it by the crossing's distance from the pixel
    boundary (0 to 1/2). As in nvdiffrast, a crossing up to 1/16 pixel outside the segment still
    counts, clamped to its end: that pixel then takes half of the other's color, and the pair
    passes no gradient to ``pos`` (this matters on overlapping or intersecting geometry, where
    the other pixel can lie just inside the front triangle yet show a surface in front of it,
    and where a pixel centre lies within a hair of an edge). See
    ``diffrast.reference.antialias`` for the exact rules.

    Silhouette edge determination is based on vertex indices in the triangle tensor. For it to
    work properly, a vertex belonging to multiple triangles must be referred to using the same
    vertex index in each triangle. Otherwise, all the adjacent edges are classified as
    silhouette edges, which is slower and gives wrong blends and gradients across them.

    Args:
        color: Input image to antialias with shape [minibatch_size, height, width,
            num_channels], dtype ``torch.float32`` (or ``torch.float64``, e.g. for gradient
            checks; then ``pos`` must be float64 too).
        rast: Main output tensor from ``rasterize()``, shape [minibatch_size, height, width, 4].
        pos: Vertex position tensor used in the rasterization operation: [minibatch_size,
            num_vertices, 4] in instanced mode or [num_vertices, 4] in range mode, same dtype
            as ``color``.
        tri: Triangle tensor used in the rasterization operation, shape [num_triangles, 3] and
            dtype ``torch.int32``.
        topology_hash: (Optional) Preconstructed topology hash for the triangle tensor, from
            ``antialias_construct_topology_hash(tri)``. If not specified, the topology hash is
            constructed internally and discarded afterwards.
        pos_gradient_boost: (Optional) Multiplier for gradients propagated to ``pos``.

    Returns:
        A tensor containing the antialiased image with the same shape as ``color`` input tensor.

    Raises:
        TypeError: an argument is not a tensor, has the wrong dtype, ``color`` and ``pos``
            differ in dtype, ``topology_hash`` is not a topology hash or ``pos_gradient_boost``
            is not a real number.
        ValueError: wrong ranks or shapes, mismatched minibatch or image sizes, tensors on
            different devices, triangle indices out of range, a ``topology_hash`` built for
            another triangle tensor, or a non-finite ``pos_gradient_boost``.

    Pixels whose triangle id is outside ``[0, num_triangles]`` are treated as empty. Vertices
    behind the camera, NaN positions and zero-area triangles do not raise: such edges simply do
    not blend.
    """
    color = checks.check_float("color", color, ndims=4)
    rast = checks.check_float("rast", rast, ndims=4, last_dim=4)
    pos = checks.check_float("pos", pos, ndims=(2, 3), last_dim=4)
    tri = checks.check_tensor("tri", tri, dtypes=(torch.int32,), ndims=2, last_dim=3)
    if rast.shape[:3] != color.shape[:3]:
        raise ValueError(
            f"rast must have shape [minibatch_size, height, width, 4] matching color "
            f"{tuple(color.shape[:3])}, got {tuple(rast.shape)}")
    if pos.ndim == 3 and pos.shape[0] != color.shape[0]:
        raise ValueError(
            f"pos in instanced mode must have minibatch size {color.shape[0]} (that of color), "
            f"got shape {tuple(pos.shape)}")
    checks.check_same_dtype(color=color, pos=pos)
    device = checks.check_same_device(color=color, rast=rast, pos=pos, tri=tri)
    tri = checks.check_triangles("tri", tri, pos.shape[-2])
    if isinstance(pos_gradient_boost, bool) or not isinstance(pos_gradient_boost, numbers.Real):
        raise TypeError(
            f"pos_gradient_boost must be a real number, got {type(pos_gradient_boost).__name__}")
    if not math.isfinite(float(pos_gradient_boost)):
        raise ValueError(f"pos_gradient_boost must be finite, got {pos_gradient_boost}")
    if topology_hash is not None:
        if not isinstance(topology_hash, TopologyHash):
            raise TypeError(
                "topology_hash must come from antialias_construct_topology_hash(), got "
                f"{type(topology_hash).__name__}")
        if topology_hash.num_triangles != tri.shape[0]:
            raise ValueError(
                f"topology_hash was built for {topology_hash.num_triangles} triangles, but tri "
                f"has {tri.shape[0]}")
        if topology_hash.device != device:
            raise ValueError(
                f"topology_hash must be on the same device as color ({device}), got "
                f"{topology_hash.device}")

    if custom_ops.compiling():
        tables = (_construct_topology_op(tri) if topology_hash is None
                  else _cuda.topology_tables(topology_hash))
        out, _, _ = _antialias_op(color, rast, pos, tri, *tables, float(pos_gradient_boost))
        return out
    if topology_hash is None:
        topology_hash = dispatch.backend("antialias_topology", device)(tri)
    run = dispatch.backend("antialias", device, _dtype(color, rast))
    return run(color, rast, pos, tri, topology_hash, float(pos_gradient_boost))


# -- the custom ops torch.compile sees (diffrast.custom_ops) -------------------------------------
#
# The topology travels as its tensors (``_cuda.topology_tables``), never as the Python object.
# Under compile, the topology is built by ``diffrast::antialias_construct_topology`` on every
# device: the sync-free construction, whose outputs are sized from ``T`` alone (``edge_ptr``
# padded), so no size depends on data; it equals the reference's tables (on CUDA up to the
# numbering of edges, which no result depends on), and the reference reads the padded offsets the
# same, so compiled results equal eager ones.

@custom_ops.custom_op("antialias_construct_topology")
def _construct_topology_op(tri: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                       torch.Tensor, torch.Tensor]:
    """``antialias_construct_topology_hash`` on a validated ``tri``: the tables of
    :func:`diffrast.cuda_backend_antialias.construct_tables` ``(tri_edge, edge_ptr (padded),
    inc_tri, inc_opp, neighbor)``."""
    return _cuda.topology_tables(_cuda.construct_topology(tri.contiguous()))


@_construct_topology_op.register_fake
def _(tri):
    T = tri.shape[0]
    i32 = torch.int32
    return (tri.new_empty(T, 3, dtype=i32), tri.new_empty(3 * T + 1, dtype=i32),
            tri.new_empty(3 * T, dtype=i32), tri.new_empty(3 * T, dtype=i32),
            tri.new_empty(T, 3, dtype=i32))


def _uses_kernels(color: torch.Tensor, rast: torch.Tensor, pos: torch.Tensor) -> bool:
    """Whether ``antialias`` on these tensors runs the CUDA kernels (rather than the reference)."""
    return dispatch.uses_kernels(color.device, _dtype(color, rast))


def _is_trivial(color: torch.Tensor, tri: torch.Tensor) -> bool:
    """Whether ``antialias`` returns a copy of ``color`` (no pixel or no triangle); ``pos`` then
    gets no gradient, as in eager mode."""
    B, H, W, _ = color.shape
    return B * H * W == 0 or tri.shape[0] == 0


@custom_ops.custom_op("antialias")
def _antialias_op(color: torch.Tensor, rast: torch.Tensor, pos: torch.Tensor, tri: torch.Tensor,
                  tri_edge: torch.Tensor, edge_ptr: torch.Tensor, inc_tri: torch.Tensor,
                  inc_opp: torch.Tensor, neighbor: Optional[torch.Tensor],
                  pos_gradient_boost: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``antialias`` on validated tensors and the tables of a topology hash: ``(out, pair_t,
    pair_meta)``; the last two are the kernels' pair records for the backward (float32 ``[N,
    2]`` and int32 ``[N]``, ``N = B * H * W``) or, on the reference, empty (``[0, 2]``,
    ``[0]``)."""
    color, rast, pos, tri = (t.contiguous() for t in (color, rast, pos, tri))
    T = tri.shape[0]
    if _uses_kernels(color, rast, pos):
        B, H, W, _ = color.shape
        if not _is_trivial(color, tri):
            _cuda.check_kernel_sizes(B * H * W, pos.numel() // 4, T)
            tables = _cuda.kernel_tables(tri_edge, edge_ptr, inc_tri, inc_opp, neighbor, T)
        else:
            tables = (neighbor, edge_ptr, inc_tri, inc_opp)
        return _cuda.antialias_forward(color, rast, pos, tri, *tables)
    topology = TopologyHash(T, tri_edge, edge_ptr, inc_tri, inc_opp)
    with torch.no_grad():
        out = _reference_antialias(color, rast, pos, tri, topology, pos_gradient_boost)
    return (out, color.new_empty(0, 2, dtype=torch.float32),
            color.new_empty(0, dtype=torch.int32))


@_antialias_op.register_fake
def _(color, rast, pos, tri, tri_edge, edge_ptr, inc_tri, inc_opp, neighbor, pos_gradient_boost):
    B, H, W, _ = color.shape
    N = B * H * W if _uses_kernels(color, rast, pos) else 0
    return (color.new_empty(color.shape), color.new_empty(N, 2, dtype=torch.float32),
            color.new_empty(N, dtype=torch.int32))


@custom_ops.custom_op("antialias_backward")
def _antialias_backward_op(color: torch.Tensor, rast: torch.Tensor, pos: torch.Tensor,
                           tri: torch.Tensor, tri_edge: torch.Tensor, edge_ptr: torch.Tensor,
                           inc_tri: torch.Tensor, inc_opp: torch.Tensor,
                           neighbor: Optional[torch.Tensor], pos_gradient_boost: float,
                           pair_t: torch.Tensor, pair_meta: torch.Tensor, grad_out: torch.Tensor,
                           needs: list[bool]) -> list[torch.Tensor]:
    """Gradients of :func:`_antialias_op` with respect to those of ``(color, pos)`` flagged in
    ``needs``, in that order (only the flagged ones). The kernels' backward reads the pair
    records of the forward; the reference is differentiated again (``custom_ops.vjp``)."""
    color, rast, pos, tri = (t.contiguous() for t in (color, rast, pos, tri))
    if _is_trivial(color, tri):
        grads = (grad_out.to(color.dtype, memory_format=torch.contiguous_format, copy=True),
                 torch.zeros_like(pos))
    elif _uses_kernels(color, rast, pos):
        grads = _cuda.antialias_backward(color, rast, pos, tri, pair_t, pair_meta, grad_out,
                                         pos_gradient_boost, *needs)
    else:
        topology = TopologyHash(tri.shape[0], tri_edge, edge_ptr, inc_tri, inc_opp)
        grads = custom_ops.vjp(
            lambda c, p: _reference_antialias(c, rast, p, tri, topology, pos_gradient_boost),
            [color, pos], [grad_out], needs)
    return [_fresh(g, grad_out) for g, n in zip(grads, needs) if n]


def _fresh(grad: torch.Tensor, grad_out: torch.Tensor) -> torch.Tensor:
    """``grad`` contiguous and sharing no memory with ``grad_out`` (a custom op's output may not
    alias an input; autograd can hand an output gradient through unchanged)."""
    grad = grad.contiguous()
    if grad.numel() and grad.untyped_storage().data_ptr() == grad_out.untyped_storage().data_ptr():
        grad = grad.clone()
    return grad


@_antialias_backward_op.register_fake
def _(color, rast, pos, tri, tri_edge, edge_ptr, inc_tri, inc_opp, neighbor, pos_gradient_boost,
      pair_t, pair_meta, grad_out, needs):
    return [t.new_empty(t.shape) for t, n in zip((color, pos), needs) if n]


def _antialias_setup(ctx, inputs, output):
    color, rast, pos, tri, tri_edge, edge_ptr, inc_tri, inc_opp, neighbor, boost = inputs
    _, pair_t, pair_meta = output
    ctx.mark_non_differentiable(pair_t, pair_meta)
    ctx.save_for_backward(color, rast, pos, tri, tri_edge, edge_ptr, inc_tri, inc_opp, neighbor,
                          pair_t, pair_meta)
    ctx.boost = boost
    ctx.trivial = _is_trivial(color, tri)


def _antialias_autograd(ctx, grad_out, _grad_pair_t, _grad_pair_meta):
    saved = ctx.saved_tensors
    needs = [ctx.needs_input_grad[0], ctx.needs_input_grad[2] and not ctx.trivial]
    if not any(needs):
        return (None,) * 10
    grads = iter(_antialias_backward_op(*saved[:9], ctx.boost, *saved[9:], grad_out, needs))
    grad_color, grad_pos = (next(grads) if n else None for n in needs)
    return (grad_color, None, grad_pos) + (None,) * 7


_antialias_op.register_autograd(_antialias_autograd, setup_context=_antialias_setup)
