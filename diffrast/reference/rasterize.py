"""Reference for the differentiable part of ``rasterize``: barycentrics and their screen-space
derivatives at pixel centres as functions of the clip-space positions.

Both contexts decide only which triangle each pixel shows; :func:`resolve` (here, for CPU
tensors) and the ``resolve`` kernels of ``cuda_ops/rasterize_forward.cu`` (the same formulas in
double precision) turn those ids into ``rast`` and ``rast_db``. The gradient to ``pos`` is the
derivative of these functions, which torch's autograd takes here. With ``c_i = (x_i, y_i, w_i)`` and ``q = (ndc_x, ndc_y, 1)`` at a pixel
centre, ``e_i = (c_j x c_k) . q`` for ``(i, j, k)`` cyclic, ``s = e_0 + e_1 + e_2``,
``u = e_0 / s``, ``v = e_1 / s``; the derivatives follow by the quotient rule with
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


def _planes(c: torch.Tensor):
    """``(n0, n1, ns)``, each ``[M, 3]``: the edge-function planes ``c_j x c_k`` of corners ``c``
    ``[M, 3, 3]`` as ``(x, y, w)`` and their sum, so that ``e_i = n_i . q``."""
    c0, c1, c2 = c[:, 0], c[:, 1], c[:, 2]
    n0 = torch.linalg.cross(c1, c2)
    n1 = torch.linalg.cross(c2, c0)
    ns = n0 + n1 + torch.linalg.cross(c0, c1)
    return n0, n1, ns


def _evaluate(n0, n1, ns, x: torch.Tensor, y: torch.Tensor, height: int, width: int):
    """``(u, v)`` ``[N, 2]`` and ``(du/dx, du/dy, dv/dx, dv/dy)`` ``[N, 4]`` from the planes of
    :func:`_planes`, each given as its three components ``[N]`` (one per pixel), at the centres
    of pixels ``(x, y)``."""
    u, v, *db = _evaluate_parts(n0, n1, ns, x, y, height, width)
    return torch.stack([u, v], -1), torch.stack(db, -1)


def _evaluate_parts(n0, n1, ns, x, y, height, width):
    """:func:`_evaluate`'s values as six ``[N]`` tensors: ``u, v, du/dx, du/dy, dv/dx, dv/dy``."""
    qx = (x.to(n0[0].dtype) + 0.5) * (2.0 / width) - 1.0
    qy = (y.to(n0[0].dtype) + 0.5) * (2.0 / height) - 1.0

    def affine(n):
        return n[0] * qx + n[1] * qy + n[2]

    e0, e1, s = affine(n0), affine(n1), affine(ns)
    u, v = e0 / s, e1 / s
    inv_s2 = 1.0 / (s * s)
    sx, sy = 2.0 / width, 2.0 / height
    dudx = (n0[0] * s - e0 * ns[0]) * inv_s2 * sx
    dudy = (n0[1] * s - e0 * ns[1]) * inv_s2 * sy
    dvdx = (n1[0] * s - e1 * ns[0]) * inv_s2 * sx
    dvdy = (n1[1] * s - e1 * ns[1]) * inv_s2 * sy
    return u, v, dudx, dudy, dvdx, dvdy


def _formulas(c: torch.Tensor, x: torch.Tensor, y: torch.Tensor, height: int, width: int):
    """``(u, v)`` ``[N, 2]`` and ``(du/dx, du/dy, dv/dx, dv/dy)`` ``[N, 4]`` of corners ``c``
    ``[N, 3, 3]`` at the centres of pixels ``(x, y)``."""
    return _evaluate(*(n.unbind(-1) for n in _planes(c)), x, y, height, width)


def _ids(rast: torch.Tensor) -> torch.Tensor:
    """``triangle id + 1`` per pixel (int64 ``[B, H, W]``) of a ``rast`` buffer."""
    return triangle_id.decode(rast[..., 3].detach())


_FEW_PIXELS = 1 << 16  # resolve: up to this many covered pixels, one gather of all quantities


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
    # 15 quantities per pixel. Many pixels: one contiguous row per quantity, gathered row by
    # row (strided columns would slow every operation after); few: one gather.
    table = torch.cat([*_planes(corners[..., [0, 1, 3]]), corners[..., 2], corners[..., 3]], -1)
    if per_pixel is not None and p.numel() <= _FEW_PIXELS:
        table, per_pixel = table[per_pixel], None
    if per_pixel is None:
        rows = table.unbind(-1) if p.numel() <= _FEW_PIXELS else table.t().contiguous().unbind(0)
    else:
        rows = [r[per_pixel] for r in table.t().contiguous()]
    u, v, *db = _evaluate_parts(rows[0:3], rows[3:6], rows[6:9], x, y, H, W)
    zw = _depth(u, v, rows[9:12], rows[12:15])
    for out, parts in ((rast, (u, v, zw, triangle_id.encode(id_plus_one))), (rast_db, db)):
        if out is None:
            continue
        values = torch.empty(p.numel(), 4, dtype=torch.float32, device=out.device)
        for k, part in enumerate(parts):
            values[:, k] = part  # (rounded once to float32)
        out = out.view(-1, 4)
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
