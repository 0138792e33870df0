"""Scenes for the antialias backend tests (shared by the CPU kernel emulation tests and the GPU
tests): random triangle soups, a UV sphere seen in perspective, a grid mesh with a non-manifold
fin, geometry behind the camera, plus helpers to compare a backend with the reference."""
from __future__ import annotations

import math

import torch

from diffrast import geometry
from diffrast.reference import antialias as ref

from .raster_util import rasterize_torch


def soup(seed: int, n: int = 8, res=(20, 24), batch: int = 1, range_mode: bool = False,
         snapped: bool = False):
    """``n`` random perspective triangles over ``3n`` vertices (random indices, so some vertices
    and edges are shared). Returns ``(color, rast, pos, tri)`` float32 on the CPU.

    ``snapped``: vertices on pixel centres and corners, w a power of two and z = 0, so that edges
    pass exactly through pixel centres (ties of the crossing parameter between two edges, t = 0
    and t = 1/2) and all depths tie (the first pixel of every pair is in front)."""
    g = torch.Generator().manual_seed(seed)
    nb = 1 if range_mode else batch
    if snapped:
        H, W = res
        w = 2.0 ** torch.randint(-1, 2, (nb, n * 3, 1), generator=g).float()
        px = torch.randint(-2, 2 * W + 3, (nb, n * 3, 1), generator=g).float() / 2
        py = torch.randint(-2, 2 * H + 3, (nb, n * 3, 1), generator=g).float() / 2
        xy = torch.cat([px / W * 2 - 1, py / H * 2 - 1], -1)
        z = torch.zeros(nb, n * 3, 1)
    else:
        w = torch.rand(nb, n * 3, 1, generator=g) * 2 + 0.5
        xy = torch.rand(nb, n * 3, 2, generator=g) * 2.6 - 1.3
        z = torch.rand(nb, n * 3, 1, generator=g) * 1.8 - 0.9
    pos = torch.cat([xy * w, z * w, w], -1)
    tri = torch.randint(0, n * 3, (n, 3), generator=g).to(torch.int32)
    if range_mode:
        pos = pos[0]
        # image b draws a window of the triangles
        starts = torch.randint(0, max(1, n // 2), (batch,), generator=g)
        ranges = torch.stack([starts, n - starts], 1)
        rast = rasterize_torch(pos, tri, res, ranges=ranges)
    else:
        rast = rasterize_torch(pos, tri, res)
    color = torch.rand(batch, *res, 3, generator=g)
    return color, rast, pos, tri


def sphere(rows=8, cols=12, res=(32, 32), batch=2, seed=0):
    """A UV sphere (shared vertices, a seam of duplicated vertices, degenerate pole triangles),
    rotated per image and perspective-projected, instance mode."""
    pos3, tri, _ = geometry.uv_sphere(rows, cols)
    proj = geometry.perspective(45.0) @ geometry.translate(0, 0, -3.0)
    mvp = torch.stack([proj @ geometry.rotate_y(2 * math.pi * b / batch + 0.3) @ geometry.rotate_x(0.3)
                       for b in range(batch)])
    pos = geometry.transform(pos3, mvp).contiguous()
    rast = rasterize_torch(pos, tri, res)
    g = torch.Generator().manual_seed(seed)
    color = torch.rand(batch, *res, 3, generator=g)
    return color, rast, pos, tri


def grid_with_fin(res=(24, 24), seed=0):
    """A tilted, perspective 4 x 4 grid mesh (interior edges shared by two triangles) with a fin
    triangle on one interior edge (an edge of three incidences) and a duplicated-vertex copy of
    one cell (its edges are silhouettes)."""
    n = 4
    ys, xs = torch.meshgrid(torch.linspace(-0.8, 0.8, n + 1), torch.linspace(-0.8, 0.8, n + 1),
                            indexing="ij")
    w = 1.0 + 0.4 * xs + 0.2 * ys
    pos = torch.stack([xs * w, ys * w, 0.1 * w, w], -1).reshape(-1, 4)
    tris = []
    for r in range(n):
        for c in range(n):
            v0 = r * (n + 1) + c
            tris += [[v0, v0 + 1, v0 + n + 2], [v0, v0 + n + 2, v0 + n + 1]]
    # fin on the shared diagonal of cell (1, 1), behind the grid
    fin_v = pos.shape[0]
    pos = torch.cat([pos, torch.tensor([[0.05, -0.2, 0.5, 1.0]])])
    v0 = 1 * (n + 1) + 1
    tris.append([v0, v0 + n + 2, fin_v])
    # duplicated copy of cell (2, 2) slightly in front
    v0 = 2 * (n + 1) + 2
    dup = pos[[v0, v0 + 1, v0 + n + 2]].clone()
    dup[:, 2] -= 0.05 * dup[:, 3]
    base = pos.shape[0]
    pos = torch.cat([pos, dup])
    tris.append([base, base + 1, base + 2])
    tri = torch.tensor(tris, dtype=torch.int32)
    rast = rasterize_torch(pos[None], tri, res)
    g = torch.Generator().manual_seed(seed)
    color = torch.rand(1, *res, 3, generator=g)
    return color, rast, pos[None].contiguous(), tri


def behind_camera(res=(16, 24)):
    """Triangles with a vertex behind the eye (w < 0) and at infinity (w == 0), and a healthy one
    in front of the second; rast is drawn by hand (the test rasterizer skips such triangles):
    NDC x <= 0.2 is triangle 0, 0.5 <= x < 0.8 triangle 1, x >= 0.8 triangle 2 (nearest)."""
    H, W = res
    pos = torch.tensor([[0.2, -1.5, 0, 1], [0.2, 1.5, 0, 1], [-3.0, 0.0, 0.0, -1.0],
                        [0.5, -1.5, 0, 1], [0.5, 1.5, 0, 1], [2.0, 0.0, 0.0, 0.0],
                        [0.8, -1.2, 0.1, 1.0], [0.83, 1.3, 0.1, 1.0], [3.0, 0.0, 0.1, 1.0]])
    tri = torch.tensor([[0, 1, 2], [3, 4, 5], [6, 7, 8]], dtype=torch.int32)
    xs = (torch.arange(W) + 0.5) / W * 2 - 1
    ids = torch.where(xs <= 0.2, 1.0, torch.where(xs >= 0.8, 3.0, torch.where(xs >= 0.5, 2.0, 0.0)))
    rast = torch.zeros(1, H, W, 4)
    rast[..., 3] = ids
    rast[..., 2] = torch.where(ids == 3, 0.1, torch.where(ids > 0, 0.3, 0.0))
    color = torch.rand(1, H, W, 3, generator=torch.Generator().manual_seed(1))
    return color, rast, pos[None].contiguous(), tri


def run(fn, color, rast, pos, tri, topology, grad_out, boost=1.0):
    """``fn(color, rast, pos, tri, topology, boost)`` with gradients: ``(out, grad_color,
    grad_pos)`` for the loss ``(out * grad_out).sum()``."""
    c = color.detach().clone().requires_grad_(True)
    p = pos.detach().clone().requires_grad_(True)
    out = fn(c, rast, p, tri, topology, boost)
    (out * grad_out).sum().backward()
    return out.detach(), c.grad, p.grad


def reference(color, rast, pos, tri, topology=None, boost=1.0):
    return ref.antialias(color, rast, pos, tri, topology, boost)


def assert_topology_equal(a, b):
    assert a.num_triangles == b.num_triangles
    for name in ("tri_edge", "edge_ptr", "inc_tri", "inc_opp"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and torch.equal(x.cpu(), y.cpu()), name


def assert_grads_close(ref_grads, got_grads, pos_rtol=1e-4):
    """Forward equal to float32 tolerance; grad_color to 1e-5; grad_pos to ``pos_rtol`` of the
    largest reference entry (gradients through ``1 / den`` can be large)."""
    (o1, c1, p1), (o2, c2, p2) = ref_grads, got_grads
    torch.testing.assert_close(o2.cpu(), o1.cpu(), atol=1e-5, rtol=0)
    torch.testing.assert_close(c2.cpu(), c1.cpu(), atol=1e-5, rtol=0)
    scale = max(float(p1.abs().max()), 1.0)
    torch.testing.assert_close(p2.cpu(), p1.cpu(), atol=pos_rtol * scale, rtol=pos_rtol)


def overlap_soup(seed: int, n: int = 150, res=(48, 64), batch: int = 2, size: float = 0.12):
    """``n`` small triangles (about ``size`` NDC units across) overlapping at random depths, each
    vertex at its own depth (so triangles tilt in depth and intersect), in perspective, with
    unshared vertices (every edge is a silhouette), instance mode. Returns ``(color, rast, pos,
    tri)`` float32 on the CPU, rasterized by the exact test rasterizer."""
    g = torch.Generator().manual_seed(seed)
    centre = torch.rand(batch, n, 1, 2, generator=g) * 2.2 - 1.1
    xy = (centre + torch.randn(batch, n, 3, 2, generator=g) * (size / 2)).reshape(batch, 3 * n, 2)
    z = torch.rand(batch, 3 * n, 1, generator=g) * 1.6 - 0.8
    w = torch.rand(batch, 3 * n, 1, generator=g) * 1.5 + 0.5
    pos = torch.cat([xy * w, z * w, w], -1).contiguous()
    tri = torch.arange(3 * n, dtype=torch.int32).reshape(n, 3)
    rast = rasterize_torch(pos, tri, res)
    color = torch.rand(batch, *res, 3, generator=g)
    return color, rast, pos, tri
