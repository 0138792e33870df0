"""Public ``antialias`` and ``antialias_construct_topology_hash`` (nvdiffrast's API).

The inputs are validated here, then the work goes to the backend for the tensors' device
(``_backend_for``): float32 CUDA tensors run the kernels of ``cuda_ops/antialias.cu`` through
``diffrast.cuda_backend_antialias``; everything else uses the plain-PyTorch reference in
``diffrast.reference.antialias``.
"""
from __future__ import annotations

import math
import numbers

import torch

from . import _checks
from .reference import antialias as _ref
from .reference.antialias import TopologyHash

__all__ = ["antialias", "antialias_construct_topology_hash", "TopologyHash"]


def _backend_for(device: torch.device):
    """The ``(construct_topology, antialias)`` implementation for tensors on ``device``.

    CUDA tensors: the topology is built on the GPU (:mod:`diffrast.cuda_backend_antialias`, torch
    ops, a result equal to the reference's) and ``antialias`` runs the CUDA kernels of
    ``cuda_ops/antialias.cu`` when CuPy is available; there, only float32 inputs take the kernels,
    float64 ones the reference. CPU tensors use the plain-PyTorch reference."""
    if device.type == "cuda":
        from . import cuda_backend_antialias as _cuda
        return _cuda.construct_topology, (_cuda.antialias if _cuda.available() else _ref.antialias)
    return _ref.construct_topology, _ref.antialias


def _check_tri_only(tri) -> torch.Tensor:
    tri = _checks.check_tensor("tri", tri, dtypes=(torch.int32,), ndims=2, last_dim=3)
    _checks.check_device("tri", tri)
    if tri.numel() and int(tri.min()) < 0:
        raise ValueError(f"tri indices must be non-negative, got a minimum of {int(tri.min())}")
    return tri


def antialias_construct_topology_hash(tri: torch.Tensor) -> TopologyHash:
    """Construct a topology hash for a triangle tensor.

    This function can be used for constructing a topology hash for a triangle tensor that is
    known to remain constant. This avoids reconstructing it every time ``antialias()`` is called.

    In diffrast the topology "hash" is a ``TopologyHash`` object: the mesh's edge-to-triangle
    adjacency (undirected edges by vertex index, the triangles on each edge and the vertex each of
    them has opposite the edge), on the device of ``tri``. Treat it as opaque.

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
    construct, _ = _backend_for(tri.device)
    return construct(tri)


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
    one of its silhouette edges crosses the segment between the two pixel centres, the pixel on
    whose side the crossing lies has the other pixel's color blended into it by the crossing's
    distance from the pixel boundary (0 to 1/2). See ``diffrast.reference.antialias`` for the
    exact rules.

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
    color = _checks.check_float("color", color, ndims=4)
    rast = _checks.check_float("rast", rast, ndims=4, last_dim=4)
    pos = _checks.check_float("pos", pos, ndims=(2, 3), last_dim=4)
    tri = _checks.check_tensor("tri", tri, dtypes=(torch.int32,), ndims=2, last_dim=3)
    if rast.shape[:3] != color.shape[:3]:
        raise ValueError(
            f"rast must have shape [minibatch_size, height, width, 4] matching color "
            f"{tuple(color.shape[:3])}, got {tuple(rast.shape)}")
    if pos.ndim == 3 and pos.shape[0] != color.shape[0]:
        raise ValueError(
            f"pos in instanced mode must have minibatch size {color.shape[0]} (that of color), "
            f"got shape {tuple(pos.shape)}")
    _checks.check_same_dtype(color=color, pos=pos)
    device = _checks.check_same_device(color=color, rast=rast, pos=pos, tri=tri)
    tri = _checks.check_triangles("tri", tri, pos.shape[-2])
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

    construct, run = _backend_for(device)
    if topology_hash is None:
        topology_hash = construct(tri)
    return run(color, rast, pos, tri, topology_hash, float(pos_gradient_boost))
