"""``rasterize`` and ``DepthPeeler``: triangles to per-pixel (u, v, z/w, triangle_id + 1)."""
from __future__ import annotations

import weakref
from typing import Optional

import numpy as np
import torch

from . import custom_ops, cuda_backend, dispatch, triangle_id
from .checks import as_integer, check_same_device, check_tensor, check_triangles
from .raster_context import RasterContext
from .reference import rasterize as _reference

dispatch.register("rasterize_resolve", reference=_reference.resolve,
                  kernels=cuda_backend.rasterize_resolve)
dispatch.register("rasterize_backward", reference=_reference.rasterize_grad,
                  kernels=cuda_backend.rasterize_grad)


def _check_resolution(resolution):
    """``(height, width)`` as Python ints from a pair of integers: a tuple or list (a
    ``torch.Size`` included) of ints, NumPy integers or one-element tensors, or a 1-D array or
    tensor of two."""
    if isinstance(resolution, (torch.Tensor, np.ndarray)) and resolution.ndim == 1:
        resolution = list(resolution)
    if isinstance(resolution, (tuple, list)) and len(resolution) == 2:
        sides = [as_integer(r) for r in resolution]
        if None not in sides:
            return tuple(sides)
    raise TypeError(f"resolution must be a (height, width) pair of ints, got {resolution!r}")


def _validate(glctx, pos, tri, resolution, ranges):
    """The checked ``(pos, tri, (height, width), ranges)`` of a call with context ``glctx``."""
    if not isinstance(glctx, RasterContext):
        raise TypeError(f"glctx must be a RasterizeGLContext or RasterizeCudaContext, "
                        f"got {type(glctx).__name__}")
    glctx.check_usable()
    pos = check_tensor("pos", pos, dtypes=(torch.float32,), ndims=(2, 3), last_dim=4)
    check_same_device(pos=pos, tri=tri if isinstance(tri, torch.Tensor) else None)
    tri = check_triangles("tri", tri, pos.shape[-2])
    height, width = _check_resolution(resolution)
    max_h, max_w = glctx.max_resolution
    if not (0 < height <= max_h and 0 < width <= max_w):
        raise ValueError(
            f"resolution must be within [1, {max_h}] x [1, {max_w}] (the GL limits), "
            f"got {height} x {width}")
    if tri.shape[0] > triangle_id.MAX_TRIANGLES:
        raise ValueError(f"tri has {tri.shape[0]} triangles; ids are stored as floats and stay "
                         f"unique only up to {triangle_id.MAX_TRIANGLES}")
    glctx.check_device(pos)
    if pos.ndim == 3:
        if ranges is not None:
            got = (f"shape {tuple(ranges.shape)}" if isinstance(ranges, torch.Tensor)
                   else type(ranges).__name__)
            raise ValueError(f"ranges must be None in instance mode (pos [B, V, 4]); ranges are "
                             f"for range mode (pos [V, 4]); got ranges of {got}")
        return pos, tri, (height, width), None
    if ranges is None:
        raise ValueError("range mode (pos [V, 4]) needs ranges, an int32 tensor [B, 2] of "
                         "(first triangle, triangle count), got ranges=None")
    ranges = check_tensor("ranges", ranges, dtypes=(torch.int32,), ndims=2, last_dim=2)
    if ranges.device.type != "cpu" and ranges.device != pos.device:
        raise ValueError(f"ranges must be on the CPU or on the device of pos ({pos.device}), "
                         f"got {ranges.device}")
    _check_range_values(ranges, tri.shape[0])
    return pos, tri, (height, width), ranges


# id(ranges) -> (weak reference, version counter, triangle count) of CUDA ranges already checked
_checked_ranges: dict = {}


def _check_range_values(ranges: torch.Tensor, num_triangles: int) -> None:
    """Check that every row of ``ranges`` is a non-negative ``(first, count)`` within ``tri``.

    CPU ranges are checked on every call. CUDA ranges need a read back from the device: it is
    done once per tensor object and version counter (a tensor reused across iterations is read
    once), and not at all under ``torch.compile`` or while a CUDA graph is being captured, where
    no host synchronization may happen; the kernels clamp every range to ``tri`` anyway, so
    unchecked ranges never read out of bounds (call once eagerly to get the error message)."""
    if ranges.shape[0] == 0 or custom_ops.compiling():
        return
    if ranges.is_cuda:
        hit = _checked_ranges.get(id(ranges))
        if hit is not None and hit[0]() is ranges and hit[1:] == (ranges._version, num_triangles):
            return
        if torch.cuda.is_current_stream_capturing():
            return
    start, count = ranges[:, 0].long(), ranges[:, 1].long()
    negative = (start < 0) | (count < 0)
    if bool(negative.any()):
        row = int(torch.nonzero(negative)[0, 0])
        raise ValueError("ranges must hold non-negative (first triangle, count) pairs, got "
                         f"{tuple(ranges[row].tolist())} in row {row}")
    ends = start + count
    if bool((ends > num_triangles).any()):
        row = int(torch.argmax(ends))
        raise ValueError(f"ranges run past the end of tri: range {row} "
                         f"{tuple(ranges[row].tolist())} ends at triangle {int(ends[row])}, "
                         f"but tri has {num_triangles} triangles")
    if ranges.is_cuda:
        if len(_checked_ranges) > 64:
            _checked_ranges.clear()
        _checked_ranges[id(ranges)] = (weakref.ref(ranges), ranges._version, num_triangles)


def _render(glctx, pos, tri, resolution, ranges, layer_index=0, peel=False):
    """Render all batch items; returns ``(rast, rast_db or None)`` on the device of ``pos``.
    ``peel``: a ``DepthPeeler`` layer (``layer_index`` from 0), each layer behind the one before
    (passed explicitly rather than read from ``glctx.active_peeler``, which ``torch.compile``
    updates only after its graph has run)."""
    height, width = resolution
    batch = pos.shape[0] if ranges is None else ranges.shape[0]
    rast = torch.empty(batch, height, width, 4, dtype=torch.float32, device=pos.device)
    rast_db = torch.empty_like(rast) if glctx.output_db else None
    glctx.render(pos, tri, resolution, ranges, layer_index, peel, rast, rast_db)
    return rast, rast_db


def _outputs(glctx, pos, tri, resolution, ranges, layer_index, peel):
    """``(rast, rast_db)`` as returned to the user: ``rast_db`` empty ``[B, H, W, 0]`` without
    ``output_db``."""
    rast, rast_db = _render(glctx, pos, tri, resolution, ranges, layer_index, peel)
    if rast_db is None:
        rast_db = rast.new_empty(*rast.shape[:3], 0)
    return rast, rast_db


def _rasterize(glctx, pos, tri, resolution, ranges, grad_db, layer_index, peel, grad_depth):
    """The outputs, through autograd only when a gradient can flow to ``pos`` or forward-mode AD
    is active (where the Function raises; the autograd node costs host time that matters for
    small images); under ``torch.compile``, through the custom op ``diffrast::rasterize``."""
    if custom_ops.compiling():
        op = _rasterize_op if glctx.capturable else _rasterize_gl_op
        return op(custom_ops.context_handle(glctx), pos, tri, resolution[0], resolution[1], ranges,
                  layer_index, peel, grad_db, grad_depth)
    if cuda_backend.needs_autograd(pos):
        return _Rasterize.apply(pos, tri, resolution, ranges, glctx, grad_db, layer_index, peel,
                                grad_depth)
    return _outputs(glctx, pos, tri, resolution, ranges, layer_index, peel)


class _Rasterize(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pos, tri, resolution, ranges, glctx, grad_db, layer_index, peel, grad_depth):
        rast, rast_db = _outputs(glctx, pos, tri, resolution, ranges, layer_index, peel)
        ctx.save_for_backward(pos, tri, rast)
        ctx.grad_db = grad_db and rast_db.shape[-1] != 0
        ctx.grad_depth = grad_depth
        ctx.set_materialize_grads(False)  # an output the loss does not use costs no zero fill
        return rast, rast_db

    @staticmethod
    def backward(ctx, grad_rast, grad_rast_db):
        pos, tri, rast = ctx.saved_tensors
        grad_db = grad_rast_db if ctx.grad_db else None  # (any strides: the backends read them)
        if grad_rast is None:
            if grad_db is None:
                return (None,) * 9
            grad_rast = torch.zeros_like(rast)
        backward = dispatch.backend("rasterize_backward", pos.device, pos.dtype)
        grad = backward(pos, tri, rast, grad_rast, grad_db, ctx.grad_depth)
        return grad, None, None, None, None, None, None, None, None


# -- the custom ops torch.compile sees (diffrast.custom_ops) -------------------------------------

def _rasterize_impl(context: int, pos: torch.Tensor, tri: torch.Tensor, height: int, width: int,
                    ranges: Optional[torch.Tensor], layer_index: int, peel: bool,
                    grad_db: bool, grad_depth: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rast, rast_db)`` of validated inputs, rendered by the context of handle ``context``
    (:func:`diffrast.custom_ops.context_handle`). ``grad_db`` and ``grad_depth`` only matter to
    the backward."""
    glctx = custom_ops.context_from_handle(context)
    return _outputs(glctx, pos, tri, (height, width), ranges, layer_index, peel)


# Two ops of one implementation: that of capturable contexts (RasterContext.capturable: the CUDA
# rasterizer's, which CUDA graphs may capture) and the others' (OpenGL's), tagged so that
# torch.compile(mode="reduce-overhead") never captures it.
_rasterize_op = custom_ops.custom_op("rasterize")(_rasterize_impl)
_rasterize_gl_op = custom_ops.custom_op("rasterize_gl", tags=custom_ops.CUDAGRAPH_UNSAFE)(
    _rasterize_impl)


def _rasterize_fake(context, pos, tri, height, width, ranges, layer_index, peel, grad_db,
                    grad_depth):
    batch = pos.shape[0] if ranges is None else ranges.shape[0]
    channels = 4 if custom_ops.context_from_handle(context).output_db else 0
    return (pos.new_empty(batch, height, width, 4), pos.new_empty(batch, height, width, channels))


@custom_ops.custom_op("rasterize_backward")
def _rasterize_backward_op(pos: torch.Tensor, tri: torch.Tensor, rast: torch.Tensor,
                           grad_rast: torch.Tensor, grad_db: Optional[torch.Tensor],
                           grad_depth: bool) -> torch.Tensor:
    """The gradient of ``rasterize`` with respect to ``pos``, shaped like ``pos``."""
    backward = dispatch.backend("rasterize_backward", pos.device, pos.dtype)
    if dispatch.uses_kernels(pos.device, pos.dtype):
        return backward(pos, tri, rast, grad_rast, grad_db, grad_depth)
    with custom_ops.autograd_enabled():  # (the reference differentiates its formulas)
        return backward(pos, tri, rast, grad_rast, grad_db, grad_depth)


@_rasterize_backward_op.register_fake
def _(pos, tri, rast, grad_rast, grad_db, grad_depth):
    return torch.empty_like(pos)


def _rasterize_setup(ctx, inputs, output):
    _, pos, tri, _, _, _, _, _, grad_db, grad_depth = inputs
    rast, rast_db = output
    ctx.save_for_backward(pos, tri, rast)
    ctx.grad_db = grad_db and rast_db.shape[-1] != 0
    ctx.grad_depth = grad_depth


def _rasterize_autograd(ctx, grad_rast, grad_rast_db):
    pos, tri, rast = ctx.saved_tensors
    grad = None
    if ctx.needs_input_grad[1]:
        grad = _rasterize_backward_op(pos, tri, rast, grad_rast,
                                      grad_rast_db if ctx.grad_db else None, ctx.grad_depth)
    return None, grad, None, None, None, None, None, None, None, None


for _op in (_rasterize_op, _rasterize_gl_op):
    _op.register_fake(_rasterize_fake)
    _op.register_autograd(_rasterize_autograd, setup_context=_rasterize_setup)
del _op


def rasterize(glctx, pos, tri, resolution, ranges=None, grad_db=True, grad_depth=False):
    """Rasterize triangles.

    All input tensors must be contiguous (non-contiguous ones are made so) and on the device of
    ``glctx`` (CUDA), or on the CPU. In instance mode ``pos`` has shape ``[minibatch_size,
    num_vertices, 4]`` and every image uses the same ``tri``; in range mode ``pos`` has shape
    ``[num_vertices, 4]`` and ``ranges`` says which triangles each image draws.

    Args:
        glctx: The rasterizer context to render with: a :class:`RasterizeGLContext`, a
            :class:`RasterizeCudaContext` or another
            :class:`~diffrast.raster_context.RasterContext`.
        pos: Vertex positions in clip space, float32 ``[minibatch_size, num_vertices, 4]`` or
            ``[num_vertices, 4]``.
        tri: Triangle vertex indices, int32 ``[num_triangles, 3]``, each in
            ``[0, num_vertices)``.
        resolution: Output resolution ``(height, width)``; any size within the GL limits.
        ranges: Range mode only: int32 tensor ``[minibatch_size, 2]`` of
            ``(first triangle, triangle count)`` per image, on the CPU (as nvdiffrast requires)
            or on the device of ``pos``. With ``RasterizeCudaContext``, ranges on the GPU cost
            no host synchronization after their first use (their values are checked once per
            tensor and version), so a range-mode call can be captured in a CUDA graph.
        grad_db: Propagate gradients of the barycentric derivatives ``rast_db`` into ``pos``.
            Ignored when the context was created with ``output_db=False``.
        grad_depth: Propagate gradients of the depth channel ``z/w`` of ``rast`` into ``pos``
            (its x, y, z and w), for depth losses. Off by default, as in nvdiffrast, whose
            ``z/w`` carries no gradient. (Not an nvdiffrast argument.)

    Returns:
        A tuple ``(rast, rast_db)``. ``rast`` is float32 ``[minibatch_size, height, width, 4]``
        holding ``(u, v, z/w, triangle_id + 1)`` per pixel, zeros where no triangle is drawn.
        ``u`` and ``v`` are the perspective-correct barycentric weights of the triangle's first
        and second vertex at the pixel centre (the third is ``1 - u - v``), ``z/w`` is the
        normalized depth, and ``triangle_id + 1`` is stored as a float (see
        :mod:`diffrast.triangle_id`). Rows are bottom-up: row 0 is the bottom of the image
        (clip-space ``y = -1``). ``rast_db`` is float32 ``[minibatch_size, height, width, 4]`` with
        ``(du/dX, du/dY, dv/dX, dv/dY)`` in pixel units when the context has ``output_db``,
        otherwise an empty ``[minibatch_size, height, width, 0]`` tensor. Gradients flow into
        ``pos`` from ``u``, ``v``, (with ``grad_db``) ``rast_db`` and (with ``grad_depth``)
        ``z/w``, exactly: ``z/w = (b . z) / (b . w)`` with ``b = (u, v, 1 - u - v)``, a
        function of the vertices' clip-space coordinates at the pixel centre.
    """
    if glctx is not None and getattr(glctx, "active_peeler", None) is not None:
        raise RuntimeError("rasterize() cannot be called while a DepthPeeler is active on glctx")
    pos, tri, resolution, ranges = _validate(glctx, pos, tri, resolution, ranges)
    return _rasterize(glctx, pos, tri, resolution, ranges, bool(grad_db), 0, False,
                      bool(grad_depth))


class DepthPeeler:
    """Depth peeling: rasterize the same geometry layer by layer, front to back.

    Use as a context manager; inside it, each :meth:`rasterize_next_layer` call returns the next
    layer: for every pixel the nearest surface behind the one returned by the previous call.
    A context can have one active peeler at a time, and :func:`rasterize` cannot be called on it
    while a peeler is active.

    Args:
        glctx, pos, tri, resolution, ranges, grad_db, grad_depth: as for :func:`rasterize`.
    """

    def __init__(self, glctx, pos, tri, resolution, ranges=None, grad_db=True, grad_depth=False):
        self._args = _validate(glctx, pos, tri, resolution, ranges)
        _, _, _, ranges = self._args
        batch = self._args[0].shape[0] if ranges is None else ranges.shape[0]
        if batch > glctx.max_layers:
            raise ValueError(f"DepthPeeler supports at most {glctx.max_layers} images per batch "
                             f"(the GL layer limit): the minibatch size of "
                             f"{'pos' if ranges is None else 'ranges'} must be at most "
                             f"{glctx.max_layers}, got {batch}")
        self._glctx = glctx
        self._grad_db = bool(grad_db)
        self._grad_depth = bool(grad_depth)
        self._layer = None

    def __enter__(self):
        if self._glctx.active_peeler is not None:
            raise RuntimeError(f"another DepthPeeler is already active on this "
                               f"{type(self._glctx).__name__}")
        if self._layer is not None:
            raise RuntimeError("a DepthPeeler cannot be entered twice")
        self._glctx.active_peeler = self
        self._layer = 0
        return self

    def __exit__(self, *exc):
        if self._glctx.active_peeler is self:
            self._glctx.active_peeler = None
        self._layer = -1
        return False

    def rasterize_next_layer(self):
        """Rasterize the next depth layer.

        Returns:
            ``(rast, rast_db)`` as for :func:`rasterize`. After the last layer, pixels are empty
            (all zeros).
        """
        if self._glctx.active_peeler is not self or self._layer is None or self._layer < 0:
            raise RuntimeError("rasterize_next_layer() must be called inside the DepthPeeler's "
                               "with-block")
        pos, tri, resolution, ranges = self._args
        out = _rasterize(self._glctx, pos, tri, resolution, ranges, self._grad_db, self._layer,
                         True, self._grad_depth)
        self._layer += 1
        return out
