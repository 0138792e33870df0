"""Reference attribute interpolation in plain PyTorch.

This is the CPU backend of :func:`diffrast.interpolate` and the oracle the CUDA kernels are
tested against. Inputs are trusted (the public wrapper validates them). Everything is
vectorized, differentiable by torch autograd, and works for float32 and float64 on any device.

The math, per pixel with ``(u, v, z/w, id + 1) = rast[b, y, x]`` and
``(dudX, dudY, dvdX, dvdY) = rast_db[b, y, x]``:

* the pixel is *covered* when ``1 <= id + 1 <= T`` (``T`` = number of triangles) and the stored
  value is finite; anything else (0, negative, beyond ``T``, NaN, inf) is an empty pixel;
* with ``(a0, a1, a2)`` the attribute rows of the vertices ``tri[id, 0..2]`` (of batch item ``b``
  in instanced mode, or of item 0 when ``attr`` has batch size 1 or is 2-D)::

      out        = u * a0 + v * a1 + (1 - u - v) * a2
      dA_i / dX  = dudX * (a0 - a2)[i] + dvdX * (a1 - a2)[i]
      dA_i / dY  = dudY * (a0 - a2)[i] + dvdY * (a1 - a2)[i]

* empty pixels produce zeros in every output channel and receive / pass on no gradient.

``out_da`` interleaves the derivatives per selected attribute: channel ``2k`` is ``dA/dX`` and
channel ``2k + 1`` is ``dA/dY`` of attribute ``diff_attrs[k]``.

Gradients reach ``attr``, the ``(u, v)`` channels of ``rast`` (never ``z/w`` or the id) and
``rast_db``. :func:`interpolate_backward` spells the backward pass out explicitly (the math a
kernel implements); it agrees with autograd on :func:`interpolate`.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from .. import triangle_id
from .rows import take_rows


def _gather(attr: torch.Tensor, rast: torch.Tensor, tri: torch.Tensor):
    """Per-pixel coverage mask and corner attributes.

    Returns ``valid`` ``[B, H, W]`` bool, ``corners`` ``[B, H, W, 3, A]`` (zeros on empty
    pixels), the flat gather index ``[B, H, W, 3]`` into the padded attribute table of
    ``Ba * (V + 1)`` rows, and ``(Ba, V)``.

    Empty pixels (and corrupt ids) are routed to a padding triangle whose three corners point at
    an all-zero padding vertex, so that no real attribute value, NaN included, ever reaches them
    and every index is in range even when ``T == 0``.
    """
    B = rast.shape[0]
    attr3 = attr if attr.ndim == 3 else attr.unsqueeze(0)
    Ba, V, A = attr3.shape
    T = tri.shape[0]

    code = rast[..., 3]
    idp1 = triangle_id.decode(code.detach())
    valid = (idp1 >= 1) & (idp1 <= T) & torch.isfinite(code)
    tid = torch.where(valid, idp1 - 1, torch.full_like(idp1, T))

    tri_p = torch.cat([tri.to(torch.int64), torch.full((1, 3), V, dtype=torch.int64, device=tri.device)])
    vidx = tri_p[tid]  # [B, H, W, 3], V = the padding vertex
    if Ba > 1:
        vidx = vidx + (torch.arange(B, device=vidx.device) * (V + 1)).view(B, 1, 1, 1)

    table = torch.cat([attr3, attr3.new_zeros(Ba, 1, A)], dim=1).reshape(Ba * (V + 1), A)
    corners = take_rows(table, vidx)  # [B, H, W, 3, A]; fixed-order backward on the CPU
    return valid, corners, vidx, (Ba, V)


def interpolate(attr: torch.Tensor, rast: torch.Tensor, tri: torch.Tensor,
                rast_db: Optional[torch.Tensor] = None,
                diff_attrs: Optional[Sequence[int]] = None):
    """Interpolate vertex attributes (reference implementation).

    Args:
        attr: ``[V, A]`` or ``[Ba, V, A]`` float tensor, ``Ba`` equal to ``B`` or 1.
        rast: ``[B, H, W, 4]`` tensor of ``(u, v, z/w, triangle_id + 1)``, same dtype as ``attr``.
        tri: ``[T, 3]`` int32 (or int64) vertex indices, all in ``[0, V)``.
        rast_db: ``[B, H, W, 4]`` tensor of ``(du/dX, du/dY, dv/dX, dv/dY)``; needed only when
            ``diff_attrs`` is non-empty.
        diff_attrs: list of attribute indices in ``[0, A)`` (duplicates allowed) whose image-space
            derivatives are computed, or ``None`` / empty for none.

    Returns:
        ``(out, out_da)``: ``out`` is ``[B, H, W, A]``; ``out_da`` is ``[B, H, W, 2 * len(diff_attrs)]``
        with ``(dA/dX, dA/dY)`` per selected attribute, or ``[B, H, W, 0]`` when no derivatives
        were requested. Both have the dtype and device of ``attr``.
    """
    B, H, W, _ = rast.shape
    valid, corners, _, _ = _gather(attr, rast, tri)
    a0, a1, a2 = corners.unbind(dim=-2)  # each [B, H, W, A]

    zero = rast.new_zeros(())
    u = torch.where(valid, rast[..., 0], zero).unsqueeze(-1)
    v = torch.where(valid, rast[..., 1], zero).unsqueeze(-1)
    out = u * a0 + v * a1 + (1 - u - v) * a2

    if not diff_attrs:
        # Empty, but part of the graph (as an autograd.Function output would be), so that code
        # which differentiates through ``out_da`` unconditionally keeps working.
        return out, out[..., :0].clone()

    sel = torch.as_tensor(list(diff_attrs), dtype=torch.int64, device=attr.device)
    db = torch.where(valid.unsqueeze(-1), rast_db, zero)
    d0 = (a0 - a2).index_select(-1, sel)  # dA/du for the selected attributes
    d1 = (a1 - a2).index_select(-1, sel)  # dA/dv
    dx = db[..., 0:1] * d0 + db[..., 2:3] * d1
    dy = db[..., 1:2] * d0 + db[..., 3:4] * d1
    out_da = torch.stack([dx, dy], dim=-1).reshape(B, H, W, 2 * sel.numel())
    return out, out_da


def interpolate_backward(attr: torch.Tensor, rast: torch.Tensor, tri: torch.Tensor,
                         grad_out: torch.Tensor,
                         rast_db: Optional[torch.Tensor] = None,
                         diff_attrs: Optional[Sequence[int]] = None,
                         grad_out_da: Optional[torch.Tensor] = None):
    """Explicit backward pass of :func:`interpolate` (the math a kernel implements).

    Args:
        attr, rast, tri, rast_db, diff_attrs: as in :func:`interpolate`.
        grad_out: ``[B, H, W, A]`` gradient of the loss with respect to ``out``.
        grad_out_da: ``[B, H, W, 2 * len(diff_attrs)]`` gradient with respect to ``out_da``;
            ignored (may be ``None``) when no derivatives were requested.

    Returns:
        ``(grad_attr, grad_rast, grad_rast_db)``: shaped like ``attr``, ``rast`` (channels 2 and 3
        always zero) and ``rast_db`` (``None`` when no derivatives were requested). Empty pixels
        contribute nothing and receive zeros.
    """
    valid, corners, vidx, (Ba, V) = _gather(attr, rast, tri)
    a0, a1, a2 = corners.unbind(dim=-2)
    A = attr.shape[-1]
    zero = rast.new_zeros(())
    m = valid.unsqueeze(-1)
    g = torch.where(m, grad_out, zero)
    u = torch.where(valid, rast[..., 0], zero).unsqueeze(-1)
    v = torch.where(valid, rast[..., 1], zero).unsqueeze(-1)

    # d out / d (u, v): (a0 - a2, a1 - a2).
    gu = (g * (a0 - a2)).sum(-1)
    gv = (g * (a1 - a2)).sum(-1)
    # d out / d (a0, a1, a2): (u, v, 1 - u - v).
    ga = torch.stack([u * g, v * g, (1 - u - v) * g], dim=-2)  # [B, H, W, 3, A]

    grad_rast_db = None
    if diff_attrs:
        sel = torch.as_tensor(list(diff_attrs), dtype=torch.int64, device=attr.device)
        gda = torch.where(m, grad_out_da, zero)
        gx, gy = gda[..., 0::2], gda[..., 1::2]  # [B, H, W, K]
        db = torch.where(m, rast_db, zero)
        d0 = (a0 - a2).index_select(-1, sel)
        d1 = (a1 - a2).index_select(-1, sel)
        grad_rast_db = torch.stack([(gx * d0).sum(-1), (gy * d0).sum(-1),
                                    (gx * d1).sum(-1), (gy * d1).sum(-1)], dim=-1)
        # d out_da / d (a0 - a2) and d (a1 - a2), scattered onto the selected columns.
        g0 = db[..., 0:1] * gx + db[..., 1:2] * gy  # [B, H, W, K]
        g1 = db[..., 2:3] * gx + db[..., 3:4] * gy
        e0 = g0.new_zeros(g0.shape[:-1] + (A,)).index_add_(-1, sel, g0)
        e1 = g1.new_zeros(g1.shape[:-1] + (A,)).index_add_(-1, sel, g1)
        ga = ga + torch.stack([e0, e1, -e0 - e1], dim=-2)

    table_grad = attr.new_zeros(Ba * (V + 1), A)
    table_grad.index_add_(0, vidx.reshape(-1), ga.reshape(-1, A))
    grad_attr = table_grad.view(Ba, V + 1, A)[:, :V].reshape(attr.shape)

    grad_rast = torch.stack([gu, gv, torch.zeros_like(gu), torch.zeros_like(gu)], dim=-1)
    return grad_attr, grad_rast, grad_rast_db
