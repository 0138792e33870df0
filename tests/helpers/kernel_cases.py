"""Inputs for the CUDA kernel tests (GPU and emulated): well-conditioned rasterizer outputs
without OpenGL, and corrupt variants.

``grid_scene`` builds a mesh whose screen-space projection is a regular grid of cells, each split
into two triangles, with a random ``w`` per vertex (so perspective matters) and random depths.
Which triangle covers a pixel centre then follows from the pixel's grid coordinates, and the
barycentrics and their derivatives come from the reference (``pixel_barycentrics``): every
covered pixel lies inside its triangle and the rasterize backward is well conditioned.
Neighbouring pixels share triangles, as in real renders, so the kernels' warp-level
aggregation sees runs of equal ids.
"""
from __future__ import annotations

import torch

from diffrast import triangle_id
from diffrast.reference.rasterize import pixel_barycentrics

# Pixels outside this NDC rectangle are left empty.
_LO, _HI = -0.8, 0.9


def grid_mesh(cells: int):
    """Screen-space vertices ``[V, 2]`` of a ``cells x cells`` grid over the rectangle and the
    triangles ``[2 * cells^2, 3]`` int32: cell (i, j) is split into (00, 10, 01) and (11, 01, 10)."""
    s = torch.linspace(_LO, _HI, cells + 1, dtype=torch.float64)
    gy, gx = torch.meshgrid(s, s, indexing="ij")
    xy = torch.stack([gx, gy], -1).reshape(-1, 2)
    j, i = torch.meshgrid(torch.arange(cells), torch.arange(cells), indexing="ij")
    v00 = (j * (cells + 1) + i).reshape(-1)
    v10, v01, v11 = v00 + 1, v00 + cells + 1, v00 + cells + 2
    tri = torch.stack([torch.stack([v00, v10, v01], -1), torch.stack([v11, v01, v10], -1)], 1)
    return xy, tri.reshape(-1, 3).to(torch.int32)


def grid_ids(height: int, width: int, cells: int):
    """``triangle_id + 1`` ``[H, W]`` int64 of the grid mesh at each pixel centre (0 outside)."""
    px = (torch.arange(width, dtype=torch.float64) + 0.5) * (2.0 / width) - 1.0
    py = (torch.arange(height, dtype=torch.float64) + 0.5) * (2.0 / height) - 1.0
    fx = (px - _LO) / (_HI - _LO) * cells
    fy = (py - _LO) / (_HI - _LO) * cells
    ix, iy = fx.floor(), fy.floor()
    inside_x = (ix >= 0) & (ix < cells)
    inside_y = (iy >= 0) & (iy < cells)
    lx, ly = fx - ix, fy - iy
    cell = iy[:, None] * cells + ix[None, :]
    upper = (lx[None, :] + ly[:, None]) > 1
    t = 2 * cell + upper
    ok = inside_y[:, None] & inside_x[None, :]
    return torch.where(ok, t.long() + 1, torch.zeros_like(t.long()))


def grid_scene(batch: int, height: int, width: int, cells: int, *, range_mode=False, seed=0,
               device="cpu"):
    """A rasterized grid mesh, float32.

    Returns ``(pos, tri, ranges, rast, rast_db)``: ``pos`` is ``[B, V, 4]`` (a different random
    ``w`` and depth per image) or, in range mode, ``[V, 4]`` with ``ranges`` ``[B, 2]`` (image b
    draws a different contiguous part of the triangles; ``ranges`` is None in instance mode);
    ``rast`` holds (u, v, z/w, id + 1) and ``rast_db`` the barycentric derivatives, both computed
    by the reference in float64 and rounded to float32.
    """
    g = torch.Generator().manual_seed(seed)
    xy, tri = grid_mesh(cells)
    V, T = xy.shape[0], tri.shape[0]
    n = 1 if range_mode else batch
    w = 1.0 + 0.8 * torch.rand(n, V, 1, generator=g, dtype=torch.float64)
    z = torch.rand(n, V, 1, generator=g, dtype=torch.float64) * 1.6 - 0.8
    pos = torch.cat([xy.expand(n, V, 2) * w, z * w, w], -1)
    ids = grid_ids(height, width, cells).expand(batch, height, width).clone()
    ranges = None
    if range_mode:
        pos = pos[0]
        starts = torch.randint(0, T // 2, (batch,), generator=g)
        counts = torch.randint(T // 4, T // 2 + 1, (batch,), generator=g)
        ranges = torch.stack([starts, counts], -1).to(torch.int32)
        lo, hi = starts.view(-1, 1, 1), (starts + counts).view(-1, 1, 1)
        ids = torch.where((ids > lo) & (ids <= hi), ids, torch.zeros_like(ids))
    rast = torch.zeros(batch, height, width, 4, dtype=torch.float64)
    rast[..., 3] = ids.to(torch.float64)
    uv, db = pixel_barycentrics(pos, tri, rast)
    rast[..., :2] = uv
    covered = ids > 0
    rast[..., 2] = torch.where(covered, torch.rand(ids.shape, generator=g, dtype=torch.float64),
                               torch.zeros((), dtype=torch.float64))
    rast = rast.float()
    rast[..., 3] = triangle_id.encode(ids)
    dev = torch.device(device)
    return (pos.float().to(dev), tri.to(dev), ranges, rast.to(dev), db.float().to(dev))


# Stored codes that must read as empty pixels (with T triangles): NaN, +-inf, negative, zero,
# fractions below 1, ids beyond T (exact and bit-pattern encoded), and the largest float.
def corrupt_codes(T: int) -> list:
    big = triangle_id.encode(torch.tensor([2**24 + 5]))[0].item()
    return [float("nan"), float("inf"), -float("inf"), -1.0, -0.0, 0.5, 0.999,
            float(T + 1), float(T + 1000), 3.4e38, big]


def corrupt_mask(rast: torch.Tensor, seed: int = 0, fraction: float = 0.2) -> torch.Tensor:
    """A random bool mask ``[B, H, W]`` of about ``fraction`` of the pixels, on rast's device."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(rast.shape[:3], generator=g) < fraction).to(rast.device)


def with_corrupt_ids(rast: torch.Tensor, bad: torch.Tensor, num_triangles: int) -> torch.Tensor:
    """``rast`` with the pixels of ``bad`` given corrupt id codes (cycling through
    :func:`corrupt_codes`) and u, v = (1e6, -1e6), which would show if they were read."""
    codes = torch.tensor(corrupt_codes(num_triangles), dtype=torch.float32, device=rast.device)
    out = rast.clone()
    vals = out[bad]
    vals[:, 0] = 1e6
    vals[:, 1] = -1e6
    vals[:, 3] = codes[torch.arange(vals.shape[0], device=rast.device) % codes.numel()]
    out[bad] = vals
    return out


def emptied(rast: torch.Tensor, bad: torch.Tensor) -> torch.Tensor:
    """``rast`` with the pixels of ``bad`` made empty (all zeros): what the kernels must treat
    corrupt pixels as."""
    out = rast.clone()
    out[bad] = 0
    return out


def one_triangle_scene(batch: int, height: int, width: int, *, range_mode=False, seed=0,
                       device="cpu"):
    """One triangle covering every pixel of every image (so runs of equal ids continue across
    image boundaries when ``height * width`` is not a multiple of 32). Same returns as
    :func:`grid_scene`; in range mode each image draws triangle 0 of the shared ``pos``."""
    g = torch.Generator().manual_seed(seed)
    n = 1 if range_mode else batch
    xy = torch.tensor([[-1.5, -1.5], [4.0, -1.5], [-1.5, 4.0]], dtype=torch.float64)
    w = 1.0 + 0.8 * torch.rand(n, 3, 1, generator=g, dtype=torch.float64)
    z = torch.rand(n, 3, 1, generator=g, dtype=torch.float64) * 1.6 - 0.8
    pos = torch.cat([xy.expand(n, 3, 2) * w, z * w, w], -1)
    tri = torch.tensor([[0, 1, 2]], dtype=torch.int32)
    ranges = None
    if range_mode:
        pos = pos[0]
        ranges = torch.tensor([[0, 1]] * batch, dtype=torch.int32)
    rast = torch.zeros(batch, height, width, 4, dtype=torch.float64)
    rast[..., 3] = 1
    uv, db = pixel_barycentrics(pos, tri, rast)
    rast[..., :2] = uv
    rast[..., 2] = 0.5
    dev = torch.device(device)
    return (pos.float().to(dev), tri.to(dev), ranges, rast.float().to(dev), db.float().to(dev))


def with_valid_rows_beyond(tri: torch.Tensor, extra: int = 1100) -> torch.Tensor:
    """``tri`` as the first ``T`` rows of a larger tensor whose ``extra`` further rows are valid
    triangles: a kernel that read past row ``T`` (an id beyond the triangle count taken for a
    real one) would find plausible data and show it in its output, instead of reading
    unallocated memory that might happen to look invalid."""
    T = tri.shape[0]
    reps = 1 + (extra + T - 1) // T
    big = torch.cat([tri] * reps)[:T + extra]
    view = big[:T]
    assert view.is_contiguous() and view.untyped_storage().nbytes() >= big.numel() * 4
    return view
