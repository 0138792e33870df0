"""Public ``interpolate``: vertex attributes to image space, with nvdiffrast's API."""
from __future__ import annotations

from typing import Optional

import torch

from . import checks, custom_ops, cuda_backend, dispatch
from .reference import interpolate as _reference

dispatch.register("interpolate", reference=_reference.interpolate, kernels=cuda_backend.interpolate)

__all__ = ["interpolate"]


def _parse_diff_attrs(diff_attrs, num_attributes: int) -> list:
    """Turn ``diff_attrs`` (``None``, ``'all'`` or a sequence of ints) into a list of indices."""
    if diff_attrs is None:
        return []
    if isinstance(diff_attrs, str):
        if diff_attrs != "all":
            raise ValueError(
                f"diff_attrs must be 'all' or a sequence of attribute indices, got {diff_attrs!r}")
        return list(range(num_attributes))
    if isinstance(diff_attrs, torch.Tensor):
        if diff_attrs.ndim > 1 or diff_attrs.dtype.is_floating_point or diff_attrs.dtype.is_complex \
                or diff_attrs.dtype == torch.bool:
            raise TypeError(
                f"diff_attrs must be 'all' or a 1-D sequence of integer attribute indices, got a "
                f"tensor of {checks.describe(diff_attrs)}")
        diff_attrs = diff_attrs.reshape(-1).tolist()
    try:
        items = list(diff_attrs)
    except TypeError:
        raise TypeError(
            f"diff_attrs must be 'all' or a sequence of attribute indices, got "
            f"{type(diff_attrs).__name__}") from None
    out = []
    for item in items:
        i = checks.as_integer(item)
        if i is None:
            raise TypeError(f"diff_attrs must hold integer attribute indices, got "
                            f"{type(item).__name__} {item!r}")
        if not 0 <= i < num_attributes:
            raise ValueError(
                f"diff_attrs indices must lie in [0, {num_attributes}) (the number of attributes, "
                f"attr.shape[-1]), got {i}")
        out.append(i)
    return out


def interpolate(attr, rast, tri, rast_db=None, diff_attrs=None):
    """Interpolate vertex attributes.

    Each covered pixel of ``rast`` receives the barycentric combination
    ``u * a0 + v * a1 + (1 - u - v) * a2`` of the attributes of the three vertices of its
    triangle; pixels where no triangle was rasterized receive zeros. Optionally computes the
    image-space derivatives of selected attributes from those of the barycentrics.

    Input tensors may reside on the CPU or a CUDA device (all on the same one); non-contiguous
    tensors are made contiguous. The output tensors are contiguous and reside on that device.

    Args:
        attr: Attribute tensor with dtype ``torch.float32`` (``torch.float64`` is accepted too, e.g.
            for ``torch.autograd.gradcheck``; ``torch.float16`` and ``torch.bfloat16`` are
            interpolated in float32 and the outputs, and ``attr``'s gradient, returned in
            ``attr``'s dtype). Shape is [num_vertices, num_attributes] in range
            mode, or [minibatch_size, num_vertices, num_attributes] in instanced mode.
            Broadcasting is supported along the minibatch axis (minibatch size 1).
        rast: Main output tensor from ``rasterize()``: shape [minibatch_size, height, width, 4]
            holding (u, v, z/w, triangle_id + 1), with the same dtype as ``attr``. A triangle id
            outside the triangle tensor is treated as an empty pixel.
        tri: Triangle tensor with shape [num_triangles, 3] and dtype ``torch.int32``; every index
            must lie in [0, num_vertices).
        rast_db: (Optional) Tensor containing image-space derivatives of barycentrics, i.e., the
            second output tensor from ``rasterize()``: shape [minibatch_size, height, width, 4]
            holding (du/dX, du/dY, dv/dX, dv/dY), same dtype as ``attr``. Enables computing
            image-space derivatives of attributes; required when ``diff_attrs`` selects any
            attribute, ignored otherwise.
        diff_attrs: (Optional) List of attribute indices for which image-space derivatives are to
            be computed. Special value 'all' is equivalent to list [0, 1, ..., num_attributes - 1].

    Returns:
        A tuple of two tensors. The first output tensor contains interpolated attributes and has
        shape [minibatch_size, height, width, num_attributes]. If ``rast_db`` and ``diff_attrs``
        were specified, the second output tensor contains the image-space derivatives of the
        selected attributes and has shape [minibatch_size, height, width, 2 * len(diff_attrs)].
        The derivatives of the first selected attribute A will be on channels 0 and 1 as
        (dA/dX, dA/dY), etc. Otherwise, the second output tensor will be an empty tensor with
        shape [minibatch_size, height, width, 0]. Both have the dtype of ``attr``.

        Gradients propagate to ``attr``, to the (u, v) channels of ``rast`` (the z/w and
        triangle id channels receive zeros) and to ``rast_db``.

    Raises:
        TypeError: an argument is not a tensor, has the wrong dtype (a ``rast`` in float16, a
            ``tri`` that is not int32, ``attr`` (float32 or float64) and ``rast`` of different
            float dtypes), or ``diff_attrs`` is not
            'all' or a sequence of ints.
        ValueError: wrong rank or last dimension, ``attr`` minibatch size neither 1 nor that of
            ``rast``, tensors on different devices, ``tri`` indices out of range, ``diff_attrs``
            indices out of range, ``diff_attrs`` given without ``rast_db``, or ``rast_db`` not
            shaped like ``rast``.
    """
    attr = checks.check_tensor("attr", attr, dtypes=checks.FLOAT_DTYPES + checks.HALF_DTYPES,
                                ndims=(2, 3))
    if attr.dtype in checks.HALF_DTYPES:  # computed in float32, returned in attr's dtype
        out, out_da = interpolate(attr.float(), rast, tri, rast_db, diff_attrs)
        return out.to(attr.dtype), out_da.to(attr.dtype)
    rast = checks.check_float("rast", rast, ndims=4, last_dim=4)
    tri = checks.check_tensor("tri", tri, dtypes=(torch.int32,), ndims=2, last_dim=3)
    device = checks.check_same_device(attr=attr, rast=rast, tri=tri)
    dtype = checks.check_same_dtype(attr=attr, rast=rast)
    if attr.ndim == 3 and attr.shape[0] not in (1, rast.shape[0]):
        raise ValueError(
            f"attr minibatch size must be 1 or equal to that of rast ({rast.shape[0]}), got attr "
            f"{checks.describe(attr)} and rast {checks.describe(rast)}")

    diff_list = _parse_diff_attrs(diff_attrs, attr.shape[-1])
    if diff_list:
        if rast_db is None:
            raise ValueError(
                "diff_attrs requires rast_db (the image-space derivatives of the barycentrics, "
                "second output of rasterize()), got rast_db=None")
        rast_db = checks.check_float("rast_db", rast_db, ndims=4, last_dim=4)
        if rast_db.shape != rast.shape:
            raise ValueError(
                f"rast_db must have the same shape as rast {tuple(rast.shape)}, got "
                f"{checks.describe(rast_db)}")
        checks.check_same_device(attr=attr, rast_db=rast_db)
        checks.check_same_dtype(attr=attr, rast_db=rast_db)
    else:
        rast_db = None  # unused: nvdiffrast ignores it without diff_attrs

    tri = checks.check_triangles("tri", tri, attr.shape[-2])

    if custom_ops.compiling():
        return _interpolate_op(attr, rast, tri, rast_db, diff_list)
    return dispatch.backend("interpolate", device, dtype)(attr, rast, tri, rast_db, diff_list)


# -- the custom ops torch.compile sees (diffrast.custom_ops) -------------------------------------

@custom_ops.custom_op("interpolate")
def _interpolate_op(attr: torch.Tensor, rast: torch.Tensor, tri: torch.Tensor,
                    rast_db: Optional[torch.Tensor], diff_attrs: list[int]
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """``interpolate`` on validated tensors: ``(out, out_da)``."""
    with torch.no_grad():
        backend = dispatch.backend("interpolate", attr.device, attr.dtype)
        return backend(attr.contiguous(), rast.contiguous(), tri.contiguous(), rast_db, diff_attrs)


@_interpolate_op.register_fake
def _(attr, rast, tri, rast_db, diff_attrs):
    B, H, W, _ = rast.shape
    return (attr.new_empty(B, H, W, attr.shape[-1]), attr.new_empty(B, H, W, 2 * len(diff_attrs)))


@custom_ops.custom_op("interpolate_backward")
def _interpolate_backward_op(attr: torch.Tensor, rast: torch.Tensor, tri: torch.Tensor,
                             rast_db: Optional[torch.Tensor], diff_attrs: list[int],
                             grad_out: torch.Tensor, grad_out_da: torch.Tensor,
                             needs: list[bool]) -> list[torch.Tensor]:
    """Gradients of :func:`_interpolate_op` with respect to those of ``(attr, rast, rast_db)``
    flagged in ``needs``, in that order (only the flagged ones)."""
    if not dispatch.uses_kernels(attr.device, attr.dtype):  # the reference's autograd, as eager
        grads = custom_ops.vjp(lambda a, r, d: _reference.interpolate(a, r, tri, d, diff_attrs),
                             (attr, rast, rast_db), (grad_out, grad_out_da), needs)
    else:
        grads = cuda_backend.interpolate_backward(attr, rast, tri, grad_out, rast_db, diff_attrs,
                                                  grad_out_da, needs)
    return [g.contiguous() for g, n in zip(grads, needs) if n]


@_interpolate_backward_op.register_fake
def _(attr, rast, tri, rast_db, diff_attrs, grad_out, grad_out_da, needs):
    return [torch.empty_like(t) for t, n in zip((attr, rast, rast_db), needs) if n]


def _interpolate_setup(ctx, inputs, output):
    attr, rast, tri, rast_db, diff_attrs = inputs
    ctx.save_for_backward(attr, rast, tri, rast_db)
    ctx.diff_attrs = diff_attrs


def _interpolate_autograd(ctx, grad_out, grad_out_da):
    attr, rast, tri, rast_db = ctx.saved_tensors
    needs = [ctx.needs_input_grad[0], ctx.needs_input_grad[1],
             ctx.needs_input_grad[3] and bool(ctx.diff_attrs)]
    grads = iter(_interpolate_backward_op(attr, rast, tri, rast_db, ctx.diff_attrs, grad_out,
                                          grad_out_da, needs))
    grad_attr, grad_rast, grad_db = (next(grads) if n else None for n in needs)
    return grad_attr, grad_rast, None, grad_db, None


_interpolate_op.register_autograd(_interpolate_autograd, setup_context=_interpolate_setup)
