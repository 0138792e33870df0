"""Reference for the differentiable part of ``rasterize``: barycentrics and their screen-space
derivatives at pixel centres as functions of the clip-space positions.

The forward values come from OpenGL (``shaders/rasterize.frag`` computes the same formulas in
double precision); the gradient to ``pos`` is the derivative of these functions, which torch's
autograd takes here. With ``c_i = (x_i, y_i, w_i)`` and ``q = (ndc_x, ndc_y, 1)`` at a pixel
centre, ``e_i = (c_j x c_k) . q`` for ``(i, j, k)`` cyclic, ``s = e_0 + e_1 + e_2``,
``u = e_0 / s``, ``v = e_1 / s``; the derivatives follow by the quotient rule with
``d ndc / d pixel = 2 / size``.
"""
from __future__ import annotations

import torch

from .. import triangle_id


def pixel_barycentrics(pos: torch.Tensor, tri: torch.Tensor, rast: torch.Tensor):
    """Barycentrics ``(u, v)`` and ``(du/dx, du/dy, dv/dx, dv/dy)`` at every covered pixel.

    Args:
        pos: clip-space positions, ``[B, V, 4]`` (instance mode) or ``[V, 4]`` (range mode).
        tri: triangle indices, ``[T, 3]`` int32.
        rast: rasterizer output ``[B, H, W, 4]``; only the triangle ids (channel 3) are read.

    Returns:
        ``(uv, db)``: ``[B, H, W, 2]`` and ``[B, H, W, 4]`` in the dtype of ``pos``,
        differentiable with respect to ``pos``, zero at empty pixels.
    """
    B, H, W, _ = rast.shape
    ids = triangle_id.decode(rast[..., 3].detach())
    b, y, x = torch.nonzero(ids > 0, as_tuple=True)
    t = ids[b, y, x] - 1
    verts = tri[t].long()  # [N, 3]
    if pos.ndim == 3:
        c = pos[b[:, None], verts]  # [N, 3, 4]
    else:
        c = pos[verts]
    c = c[..., [0, 1, 3]]  # (x, y, w)
    c0, c1, c2 = c[:, 0], c[:, 1], c[:, 2]
    n0 = torch.linalg.cross(c1, c2)
    n1 = torch.linalg.cross(c2, c0)
    ns = n0 + n1 + torch.linalg.cross(c0, c1)
    qx = (x.to(pos.dtype) + 0.5) * (2.0 / W) - 1.0
    qy = (y.to(pos.dtype) + 0.5) * (2.0 / H) - 1.0

    def affine(n):
        return n[:, 0] * qx + n[:, 1] * qy + n[:, 2]

    e0, e1, s = affine(n0), affine(n1), affine(ns)
    u, v = e0 / s, e1 / s
    inv_s2 = 1.0 / (s * s)
    sx, sy = 2.0 / W, 2.0 / H
    dudx = (n0[:, 0] * s - e0 * ns[:, 0]) * inv_s2 * sx
    dudy = (n0[:, 1] * s - e0 * ns[:, 1]) * inv_s2 * sy
    dvdx = (n1[:, 0] * s - e1 * ns[:, 0]) * inv_s2 * sx
    dvdy = (n1[:, 1] * s - e1 * ns[:, 1]) * inv_s2 * sy
    uv = pos.new_zeros(B, H, W, 2)
    db = pos.new_zeros(B, H, W, 4)
    uv = uv.index_put((b, y, x), torch.stack([u, v], -1))
    db = db.index_put((b, y, x), torch.stack([dudx, dudy, dvdx, dvdy], -1))
    return uv, db


def rasterize_grad(pos, tri, rast, grad_rast, grad_db=None):
    """Gradient of ``rasterize`` with respect to ``pos``.

    Args:
        pos, tri, rast: as for :func:`pixel_barycentrics`.
        grad_rast: gradient of the loss with respect to ``rast`` ``[B, H, W, 4]``; channels 0
            and 1 (u, v) are used, z/w and the id carry no gradient (as in nvdiffrast).
        grad_db: gradient with respect to ``rast_db`` ``[B, H, W, 4]``, or ``None``.

    Returns:
        Gradient with respect to ``pos``, shaped like ``pos``.
    """
    with torch.enable_grad():
        p = pos.detach().requires_grad_(True)
        uv, db = pixel_barycentrics(p, tri, rast)
        loss = (uv * grad_rast[..., :2]).sum()
        if grad_db is not None:
            loss = loss + (db * grad_db).sum()
        (g,) = torch.autograd.grad(loss, p, allow_unused=True)
    return torch.zeros_like(pos) if g is None else g
