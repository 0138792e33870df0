"""A tiny, independent, vectorized torch rasterizer for tests (no OpenGL).

``rasterize_torch(pos, tri, resolution)`` produces nvdiffrast's main rasterizer output
``[B, H, W, 4] = (u, v, z/w, triangle_id + 1)`` by brute force over pixels x triangles:
pixel centres at NDC ``((x + 0.5) / W * 2 - 1, (y + 0.5) / H * 2 - 1)`` (rows bottom-up), 2D edge
functions of the projected triangle, perspective-correct barycentrics (``u`` weights vertex 0,
``v`` vertex 1), depth test on ``z/w`` (smaller wins; ties go to the lower triangle id), no
culling. Triangles with a vertex at ``w <= 0`` or with non-finite coordinates are not drawn
(tests keep geometry in front of the camera), nor are fragments outside ``-1 <= z/w <= 1``.
Meant for images of a few thousand pixels and a few hundred triangles.
"""
from __future__ import annotations

import torch

from diffrast import triangle_id


def pixel_centers(height: int, width: int, dtype=torch.float64):
    """NDC x and y of the pixel centres, each ``[H, W]``."""
    xs = (torch.arange(width, dtype=dtype) + 0.5) / width * 2 - 1
    ys = (torch.arange(height, dtype=dtype) + 0.5) / height * 2 - 1
    return xs[None, :].expand(height, width), ys[:, None].expand(height, width)


def rasterize_torch(pos: torch.Tensor, tri: torch.Tensor, resolution, ranges=None,
                    dtype=None) -> torch.Tensor:
    """Rasterize ``pos`` ``[B, V, 4]`` (instanced) or ``[V, 4]`` with ``ranges`` ``[B, 2]`` (range
    mode; ``None`` means one image of all triangles) into ``[B, H, W, 4]``.

    The output dtype is ``dtype`` (default: float32 for float32 ``pos``, else float64); the id
    channel uses diffrast's float32 encoding when the output is float32."""
    H, W = resolution
    out_dtype = dtype or (torch.float32 if pos.dtype == torch.float32 else torch.float64)
    pos = pos.detach().to(torch.float64)
    tri = tri.to(torch.int64)
    if pos.ndim == 2:
        if ranges is None:
            ranges = torch.tensor([[0, tri.shape[0]]])
        images = [_raster_one(pos, tri, H, W, int(s), int(c)) for s, c in ranges.tolist()]
    else:
        images = [_raster_one(pos[b], tri, H, W, 0, tri.shape[0]) for b in range(pos.shape[0])]
    rast = torch.stack(images).to(out_dtype)
    if out_dtype == torch.float32:
        ids = torch.stack(images)[..., 3].to(torch.int64)
        rast[..., 3] = triangle_id.encode(ids)
    return rast


def _raster_one(pos, tri, H, W, start, count):
    px, py = pixel_centers(H, W)
    px, py = px.reshape(-1), py.reshape(-1)                       # [P]
    t = tri[start:start + count]                                  # [T, 3]
    v = pos[t]                                                    # [T, 3, 4]
    w = v[..., 3]
    ok = (w > 0).all(1) & torch.isfinite(v).all(2).all(1)
    w_safe = torch.where(w > 0, w, torch.ones_like(w))
    sx, sy, sz = v[..., 0] / w_safe, v[..., 1] / w_safe, v[..., 2] / w_safe   # [T, 3]

    def edge(i, j):  # twice the signed area of (v_i, v_j, p) for every triangle x pixel
        return ((sx[:, j, None] - sx[:, i, None]) * (py[None] - sy[:, i, None])
                - (sy[:, j, None] - sy[:, i, None]) * (px[None] - sx[:, i, None]))

    area = ((sx[:, 1] - sx[:, 0]) * (sy[:, 2] - sy[:, 0])
            - (sy[:, 1] - sy[:, 0]) * (sx[:, 2] - sx[:, 0]))[:, None]             # [T, 1]
    area_safe = torch.where(area == 0, torch.ones_like(area), area)
    b0 = edge(1, 2) / area_safe   # screen-space barycentrics
    b1 = edge(2, 0) / area_safe
    b2 = edge(0, 1) / area_safe
    inside = (b0 >= 0) & (b1 >= 0) & (b2 >= 0) & (area != 0) & ok[:, None]
    zw = b0 * sz[:, 0, None] + b1 * sz[:, 1, None] + b2 * sz[:, 2, None]
    inside &= (zw >= -1) & (zw <= 1)
    q0, q1, q2 = b0 / w_safe[:, 0, None], b1 / w_safe[:, 1, None], b2 / w_safe[:, 2, None]
    qs = q0 + q1 + q2
    qs = torch.where(qs == 0, torch.ones_like(qs), qs)
    u, vv = q0 / qs, q1 / qs

    depth = torch.where(inside, zw, torch.full_like(zw, float("inf")))
    best = depth.argmin(0) if depth.shape[0] else torch.zeros(px.shape, dtype=torch.int64)
    P = px.shape[0]
    hit = inside.any(0) if depth.shape[0] else torch.zeros(P, dtype=torch.bool)
    ar = torch.arange(P)
    out = torch.zeros(P, 4, dtype=torch.float64)
    if depth.shape[0]:
        out[:, 0] = torch.where(hit, u[best, ar], 0.0)
        out[:, 1] = torch.where(hit, vv[best, ar], 0.0)
        out[:, 2] = torch.where(hit, zw[best, ar], 0.0)
        out[:, 3] = torch.where(hit, (best + start + 1).to(torch.float64), 0.0)
    return out.reshape(H, W, 4)
