"""Reference for the differentiable part of ``rasterize``: barycentrics and their screen-space
derivatives at pixel centres as functions of the clip-space positions.

Both contexts decide only which triangle each pixel shows; :func:`resolve` (here, for CPU
tensors) and the kernels' ``resolve_pixel`` (``cuda_ops/rasterize_resolve.cuh``, the same
formulas in double precision) turn those ids into ``rast`` and ``rast_db``. The gradient to
``pos`` is the derivative of these functions, which torch's autograd takes here. With
``c_i = (x_i, y_i, w_i)`` and ``q = (ndc_x, ndc_y, 1)`` at a pixel centre,
``e_i = (c_j x c_k) . q`` for ``(i, j, k)`` cyclic, ``s = e_0 + e_1 + e_2``, ``u = e_0 / s``,
``v = e_1 / s``; the derivatives follow by the quotient rule with
``d ndc / d pixel = 2 / size``.
"""
from __future__ import annotations

import torch

from .. import triangle_id
from .rows import take_rows


def _covered(pos: torch.Tensor, tri: torch.Tensor, ids: torch.Tensor):
    """The covered pixels ``(b, y, x)`` of ``ids`` ``[B, H, W]`` (triangle id + 1, 0: none) and
    their corners ``[N, 3, 3]`` as ``(x, y, w)``, with the flat ``pos`` row of each corner
    ``[N, 3]`` (``b * V + vertex`` in instance mode)."""
    b, y, x = torch.nonzero(ids > 0, as_tuple=True)
    t = ids[b, y, x] - 1
    verts = tri[t].long()  # [N, 3]
    if pos.ndim == 3:
        rows = b[:, None] * pos.shape[1] + verts
    else:
        rows = verts
    c = take_rows(pos.reshape(-1, 4), rows)[..., [0, 1, 3]]  # (x, y, w)
    return (b, y, x), c, rows


def _planes(c: torch.Tensor) -> torch.Tensor:
    """The edge-function planes of corners ``c`` ``[M, 3, 3]`` as ``(x, y, w)``: ``n_0 = c_1 x
    c_2``, ``n_1 = c_2 x c_0`` and their sum with ``c_0 x c_1``, ``n_s``, so that
    ``e_i = n_i . q``; ``[3, 3, M]``, indexed (component x / y / w, plane n_0 / n_1 / n_s,
    corner set)."""
    c0, c1, c2 = c[:, 0], c[:, 1], c[:, 2]
    n0 = torch.linalg.cross(c1, c2)
    n1 = torch.linalg.cross(c2, c0)
    ns = n0 + n1 + torch.linalg.cross(c0, c1)
    return torch.stack([n0, n1, ns], 0).permute(2, 0, 1)


def _evaluate(planes: torch.Tensor, x: torch.Tensor, y: torch.Tensor, height: int, width: int):
    """``(uv, dx, dy)``, each ``[2, N]``: ``(u, v)``, ``(du/dx, dv/dx)`` and ``(du/dy, dv/dy)``
    from ``planes`` ``[3, 3, N]`` (:func:`_planes`, one set per pixel) at the centres of pixels
    ``(x, y)``."""
    nx, ny, nw = planes[0], planes[1], planes[2]  # [3, N] each: n_0, n_1, n_s
    qx = (x.to(planes.dtype) + 0.5) * (2.0 / width) - 1.0
    qy = (y.to(planes.dtype) + 0.5) * (2.0 / height) - 1.0
    e = nx * qx + ny * qy + nw  # e_0, e_1, s
    s = e[2]
    inv_s2 = 1.0 / (s * s)
    dx = (nx[:2] * s - e[:2] * nx[2]) * inv_s2 * (2.0 / width)
    dy = (ny[:2] * s - e[:2] * ny[2]) * inv_s2 * (2.0 / height)
    return e[:2] / s, dx, dy


def _formulas(c: torch.Tensor, x: torch.Tensor, y: torch.Tensor, height: int, width: int):
    """``(u, v)`` ``[N, 2]`` and ``(du/dx, du/dy, dv/dx, dv/dy)`` ``[N, 4]`` of corners ``c``
    ``[N, 3, 3]`` at the centres of pixels ``(x, y)``."""
    uv, dx, dy = _evaluate(_planes(c), x, y, height, width)
    return uv.t(), torch.stack([dx[0], dy[0], dx[1], dy[1]], -1)


def _ids(rast: torch.Tensor) -> torch.Tensor:
    """``triangle id + 1`` per pixel (int64 ``[B, H, W]``) of a ``rast`` buffer."""
    return triangle_id.decode(rast[..., 3].detach())


def resolve(pos: torch.Tensor, tri: torch.Tensor, ids: torch.Tensor, rast: torch.Tensor,
            rast_db=None) -> None:
    """Fill ``rast`` (and ``rast_db``) from the triangle each pixel shows: ``(u, v, z/w, id + 1)``
    and ``(du/dX, du/dY, dv/dX, dv/dY)``, computed in float64 and rounded once to float32; zeros
    where no triangle is drawn. What the CUDA kernel ``resolve_ids`` computes, for CPU tensors
    (and CUDA tensors without the kernels).

    Args:
        pos: float32 clip-space positions, ``[B, V, 4]`` (instance mode) or ``[V, 4]`` (range
            mode).
        tri: int32 triangle indices ``[T, 3]``.
        ids: int32 ``[B, H, W]``: triangle id + 1 per pixel, 0 where none is drawn; a pixel
            whose triangle has an index out of range is left empty, as the kernel leaves it.
        rast: float32 output ``[B, H, W, 4]``, filled entirely.
        rast_db: float32 output ``[B, H, W, 4]``, or ``None``.
    """
    B, H, W = ids.shape
    T = tri.shape[0]
    drawable = ((tri >= 0) & (tri < pos.shape[-2])).all(1)
    if not bool(drawable.all()):  # (the public ops reject such indices before rendering)
        ids = ids * torch.cat([drawable.new_zeros(1), drawable])[ids.long()]  # by id + 1
    ids = ids.reshape(-1)
    p = torch.nonzero(ids > 0).squeeze(1)  # covered pixels, flat
    id_plus_one = ids[p]
    t = id_plus_one.long() - 1
    b, x = p // (H * W), p % W
    y = (p // W) % H
    pos64 = pos.detach().to(torch.float64)
    instanced = pos.ndim == 3
    if (B if instanced else 1) * T <= p.numel():
        # Fewer triangles than pixels: the planes once per triangle (of each image), gathered.
        corners = pos64[..., tri.long().clamp(0, pos.shape[-2] - 1), :].reshape(-1, 3, 4)
        per_pixel = b * T + t if instanced else t
    else:
        vbase = b[:, None] * pos.shape[-2] if instanced else 0
        corners, per_pixel = pos64.reshape(-1, 4)[vbase + tri[t].long()], None
    # 15 quantities per corner set (the planes' 9 components, then z and w of each corner), one
    # contiguous row each, gathered row by row (a gather along the rows' length is slow on the
    # CPU).
    table = torch.cat([_planes(corners[..., [0, 1, 3]]).reshape(9, -1), corners[..., 2].t(),
                       corners[..., 3].t()], 0)
    if per_pixel is not None:
        rows = table.new_empty(15, p.numel())
        for k in range(15):
            torch.index_select(table[k], 0, per_pixel, out=rows[k])
        table = rows
    uv, dx, dy = _evaluate(table[:9].view(3, 3, -1), x, y, H, W)
    zw = _depth(uv[0], uv[1], table[9:12], table[12:15])
    values = torch.empty(p.numel(), 4, dtype=torch.float32, device=rast.device)
    values[:, :2] = uv.t()  # (each rounded once to float32)
    values[:, 2] = zw
    values[:, 3] = triangle_id.encode(id_plus_one)
    out = rast.view(-1, 4)
    out.zero_()
    out[p] = values
    if rast_db is not None:
        values[:, 0::2] = dx.t()
        values[:, 1::2] = dy.t()
        out = rast_db.view(-1, 4)
        out.zero_()
        out[p] = values


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
    (b, y, x), c, _ = _covered(pos, tri, _ids(rast))
    uv_n, db_n = _formulas(c, x, y, H, W)
    uv = pos.new_zeros(B, H, W, 2).index_put((b, y, x), uv_n)
    db = pos.new_zeros(B, H, W, 4).index_put((b, y, x), db_n)
    return uv, db


def depth(uv: torch.Tensor, c: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``z/w`` ``[N]`` at barycentrics ``uv`` ``[N, 2]`` of corners with ``(x, y, w)`` ``c``
    ``[N, 3, 3]`` and ``z`` ``[N, 3]``: ``(b . z) / (b . w)`` with ``b = (u, v, 1 - u - v)``."""
    return _depth(uv[:, 0], uv[:, 1], z.unbind(-1), c[..., 2].unbind(-1))


def _depth(u, v, z, w) -> torch.Tensor:
    """``z/w`` at barycentrics ``u``, ``v`` ``[N]`` of corners with components ``z``, ``w``
    (three ``[N]`` each), in the order of the kernels' ``depth_of``."""
    t = 1 - u - v
    return (u * z[0] + v * z[1] + t * z[2]) / (u * w[0] + v * w[1] + t * w[2])


def rasterize_grad(pos, tri, rast, grad_rast, grad_db=None, grad_depth=False):
    """Gradient of ``rasterize`` with respect to ``pos``.

    Each covered pixel adds the gradient of its own terms to the three corners of its
    triangle; a pixel whose contribution is not finite in ``pos``'s precision (a triangle so
    close to degenerate at that pixel that ``s`` rounds to zero or its derivatives overflow)
    adds nothing, so that one such pixel cannot turn the whole gradient of its vertices into
    NaN. The CUDA kernel (``cuda_ops/rasterize_backward.cu``) applies the same rule.

    Args:
        pos, tri, rast: as for :func:`pixel_barycentrics`.
        grad_rast: gradient of the loss with respect to ``rast`` ``[B, H, W, 4]``; channels 0
            and 1 (u, v) are used, and channel 2 (z/w) with ``grad_depth``; the id carries no
            gradient (nvdiffrast: nor does z/w).
        grad_db: gradient with respect to ``rast_db`` ``[B, H, W, 4]``, or ``None``.
        grad_depth: propagate the gradient of z/w (:func:`depth`), which also reaches the
            vertices' z; otherwise the z column of the result is zero.

    Returns:
        Gradient with respect to ``pos``, shaped like ``pos``.
    """
    B, H, W, _ = rast.shape
    with torch.enable_grad():
        (b, y, x), c, rows = _covered(pos.detach(), tri, _ids(rast))
        c = c.detach().requires_grad_(True)
        uv, db = _formulas(c, x, y, H, W)
        terms = uv * grad_rast[b, y, x, :2].to(c.dtype)
        if grad_db is not None:
            terms = torch.cat([terms, db * grad_db[b, y, x].to(c.dtype)], -1)
        leaves = (c,)
        if grad_depth:
            z = pos.detach().reshape(-1, 4)[:, 2][rows].requires_grad_(True)  # [N, 3]
            zw = depth(uv, c, z)
            terms = torch.cat([terms, (zw * grad_rast[b, y, x, 2].to(c.dtype))[:, None]], -1)
            leaves = (c, z)
        # Pixels whose own terms are not finite contribute nothing (their gradient would be
        # NaN through 0 * inf); a sum would mix them into the others.
        got = torch.autograd.grad(terms.sum(), leaves, allow_unused=True)
    g = got[0]
    out = torch.zeros_like(pos).reshape(-1, 4)
    if g is None:
        return out.reshape(pos.shape)
    gz = got[1] if grad_depth and got[1] is not None else torch.zeros_like(g[..., 0])
    ok = torch.isfinite(g).all(-1).all(-1) & torch.isfinite(gz).all(-1)
    g = torch.where(ok[:, None, None], g, torch.zeros_like(g))
    gz = torch.where(ok[:, None], gz, torch.zeros_like(gz))
    full = torch.zeros(g.shape[0], 3, 4, dtype=g.dtype, device=g.device)
    full[..., 0], full[..., 1], full[..., 2], full[..., 3] = g[..., 0], g[..., 1], gz, g[..., 2]
    out.index_add_(0, rows.reshape(-1), full.reshape(-1, 4).to(out.dtype))
    return out.reshape(pos.shape)
