"""antialias and antialias_construct_topology_hash: analytic coverage, gradients, topology, modes,
degenerate geometry and input validation. Rasterization comes from tests/helpers/raster_util.py (an
independent brute-force torch rasterizer), or from diffrast.rasterize where marked."""

import pytest
import torch
from hypothesis import given, settings, strategies as st

import diffrast as dr
from diffrast.reference.antialias import TopologyHash, construct_topology

from helpers.raster_util import rasterize_torch

F64 = torch.float64


def half_plane(xe, dtype=F64, vertical=True, z=0.0):
    """One big triangle covering NDC x >= xe (or y >= xe) across the whole screen: only its edge
    at xe is inside the image."""
    if vertical:
        v = [[xe, -10, z, 1], [xe, 10, z, 1], [40, 0, z, 1]]
    else:
        v = [[10, xe, z, 1], [-10, xe, z, 1], [0, 40, z, 1]]
    return torch.tensor(v, dtype=dtype), torch.tensor([[0, 1, 2]], dtype=torch.int32)


def coverage_1d(edge_px, n):
    """Exact box-filter coverage of pixels 0..n-1 by the half-line [edge_px, inf)."""
    lo = torch.arange(n, dtype=F64)
    return (lo + 1 - edge_px).clamp(0, 1)


def blend_1d(edge_px, n, covered_above=True):
    """What the antialiasing of one line of n pixels gives for a single edge at edge_px (pixel
    units) covering [edge_px, inf) (or (-inf, edge_px]): the box coverage, except that a crossing
    in the outer half of a border pixel has no pair and is not blended."""
    centre = torch.arange(n, dtype=F64) + 0.5
    raster = (centre >= edge_px) if covered_above else (centre <= edge_px)
    cov = coverage_1d(edge_px, n) if covered_above else 1 - coverage_1d(edge_px, n)
    paired = (edge_px > 0.5) & (edge_px < n - 0.5)
    return cov if paired else raster.to(F64)


def aa(color, rast, pos, tri, **kw):
    return dr.antialias(color, rast, pos, tri, **kw)


# --------------------------------------------------------------------------------------------
# Forward: analytic coverage
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("xe", [-0.61, -0.07, 0.0, 0.13, 0.3749, 0.52])
def test_vertical_edge_gives_exact_coverage(dtype, xe):
    H, W = 5, 16
    pos, tri = half_plane(xe, dtype)
    rast = rasterize_torch(pos[None], tri, (H, W))
    inside = (rast[..., 3:] > 0).to(dtype)
    bg, fg = torch.tensor([0.2, 0.1, 0.9], dtype=dtype), torch.tensor([1.0, 0.5, -0.3], dtype=dtype)
    color = bg + inside * (fg - bg)
    out = aa(color, rast, pos[None], tri)
    cov = coverage_1d((xe + 1) * W / 2, W).to(dtype)
    expect = bg + cov[None, None, :, None] * (fg - bg)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(out, expect.expand(1, H, W, 3), atol=tol, rtol=0)


def test_horizontal_edge_uses_bottom_up_rows():
    H, W = 12, 4
    ye = -0.29  # in pixel rows: (ye + 1) * H / 2 = 4.26 -> row 4 is 74 % covered
    pos, tri = half_plane(ye, vertical=False)
    rast = rasterize_torch(pos[None], tri, (H, W))
    color = (rast[..., 3:] > 0).to(F64)
    out = aa(color, rast, pos[None], tri)
    cov = coverage_1d((ye + 1) * H / 2, H)
    torch.testing.assert_close(out[0, :, :, 0], cov[:, None].expand(H, W), atol=1e-12, rtol=0)
    assert abs(float(out[0, 4, 0, 0]) - 0.74) < 1e-12


def test_edge_motion_changes_output_by_analytic_coverage():
    H, W = 4, 20
    xe, eps = 0.137, 1e-4
    pos, tri = half_plane(xe)
    rast = rasterize_torch(pos[None], tri, (H, W))
    color = (rast[..., 3:] > 0).to(F64) * 2.0
    moved, _ = half_plane(xe + eps)
    assert torch.equal(rasterize_torch(moved[None], tri, (H, W))[..., 3], rast[..., 3])  # same ids
    d = aa(color, rast, moved[None], tri) - aa(color, rast, pos[None], tri)
    # The edge moves eps * W / 2 pixels to the right: one pixel per row loses that coverage.
    col = int((xe + 1) * W / 2)
    expect = torch.zeros(1, H, W, 1, dtype=F64)
    expect[:, :, col] = -2.0 * eps * W / 2
    torch.testing.assert_close(d, expect, atol=1e-12, rtol=0)


@pytest.mark.parametrize("p0,p1", [
    ((-0.13, -1.4), (0.21, 1.3)),    # steep: handled by horizontal pairs
    ((-1.5, 0.26), (1.4, -0.17)),    # shallow: handled by vertical pairs
    ((-1.2, -1.157), (1.2, 1.26)),   # just steeper than 45 degrees: blended one way only
    ((1.2, 1.26), (-1.2, -1.157)),   # the same, covering the other side
])
def test_straight_edge_blends_once_along_its_minor_axis(p0, p1):
    """A straight slanted edge crossing the image: each row (steep edge) or column (shallow edge)
    is blended exactly once, by the 1D coverage at the row's (column's) centre line, and never
    along the other axis. Summed over the image this is the covered area, up to the corners
    where the edge leaves through the image border."""
    H, W = 16, 16
    (x0, y0), (x1, y1) = p0, p1
    # third vertex far on the right-hand side of the directed edge p0 -> p1
    nx, ny = (y1 - y0), -(x1 - x0)
    pos = torch.tensor([[x0, y0, 0, 1], [x1, y1, 0, 1],
                        [(x0 + x1) / 2 + 40 * nx, (y0 + y1) / 2 + 40 * ny, 0, 1]], dtype=F64)
    tri = torch.tensor([[0, 1, 2]], dtype=torch.int32)
    rast = rasterize_torch(pos[None], tri, (H, W))
    color = (rast[..., 3:] > 0).to(F64)
    out = aa(color, rast, pos[None], tri)[0, ..., 0]
    centres = (torch.arange(16, dtype=F64) + 0.5) / 16 * 2 - 1
    if abs(y1 - y0) >= abs(x1 - x0):  # steep: rows
        right = y1 > y0  # the covered side of each row is x > edge
        xe = x0 + (centres - y0) * (x1 - x0) / (y1 - y0)
        expect = torch.stack([blend_1d((x + 1) * W / 2, W, right) for x in xe])
    else:                             # shallow: columns
        above = x1 < x0  # the covered side of each column is y > edge
        ye = y0 + (centres - x0) * (y1 - y0) / (x1 - x0)
        expect = torch.stack([blend_1d((y + 1) * H / 2, H, above) for y in ye], 1)
    torch.testing.assert_close(out, expect, atol=1e-12, rtol=0)
    # exact covered area (pixels^2) by fine supersampling, for scale
    n = 200
    s = (torch.arange(W * n, dtype=F64) + 0.5) / n
    X, Y = s[None, :] / W * 2 - 1, s[:, None] / H * 2 - 1
    exact = float((((x1 - x0) * (Y - y0) - (y1 - y0) * (X - x0)) <= 0).to(F64).sum()) / n**2
    assert abs(float(out.sum()) - exact) < 0.25


def test_no_triangles_visible_returns_input():
    color = torch.rand(2, 6, 7, 3, dtype=F64)
    pos = torch.tensor([[5.0, 5, 0, 1], [6, 5, 0, 1], [5, 6, 0, 1]], dtype=F64)
    tri = torch.tensor([[0, 1, 2]], dtype=torch.int32)
    rast = rasterize_torch(pos, tri, (6, 7), ranges=torch.tensor([[0, 1], [0, 1]]))
    assert not rast.any()
    out = aa(color, rast, pos, tri)
    assert torch.equal(out, color) and out is not color


# --------------------------------------------------------------------------------------------
# Gradients
# --------------------------------------------------------------------------------------------

def perspective_scene(dtype=F64):
    """A perspective quad (two triangles sharing a diagonal) partly in front of a larger tilted
    triangle: silhouettes against the background and against another surface."""
    def clip(x, y, z, w):
        return [x * w, y * w, z * w, w]
    pos = torch.tensor([
        clip(-0.55, -0.5, 0.1, 1.3), clip(0.42, -0.62, 0.15, 1.7), clip(0.51, 0.47, 0.2, 1.1),
        clip(-0.46, 0.53, 0.12, 1.5),                                     # quad (front)
        clip(-0.9, -0.2, 0.5, 2.0), clip(0.1, -0.93, 0.6, 1.2), clip(0.81, 0.76, 0.4, 1.6),
    ], dtype=dtype)
    tri = torch.tensor([[0, 1, 2], [0, 2, 3], [4, 5, 6]], dtype=torch.int32)
    return pos, tri


def test_pos_gradient_matches_central_differences():
    H, W = 14, 17
    pos, tri = perspective_scene()
    rast = rasterize_torch(pos[None], tri, (H, W))
    gen = torch.Generator().manual_seed(3)
    color = torch.rand(1, H, W, 2, generator=gen, dtype=F64)
    weights = torch.rand(1, H, W, 2, generator=gen, dtype=F64)

    def f(p):
        return (aa(color, rast, p[None], tri) * weights).sum()

    p = pos.clone().requires_grad_(True)
    f(p).backward()
    grad = p.grad
    h = 1e-6
    fd = torch.zeros_like(pos)
    for i in range(pos.shape[0]):
        for j in range(4):
            e = torch.zeros_like(pos)
            e[i, j] = h
            fd[i, j] = (f(pos + e) - f(pos - e)) / (2 * h)
    assert grad.abs().sum() > 0.1  # silhouettes do produce gradients
    torch.testing.assert_close(grad, fd, atol=1e-6, rtol=1e-5)
    # z never matters, and the shared diagonal (vertices 0, 2 only through it) is not a silhouette
    assert torch.all(grad[:, 2] == 0)


def test_gradcheck_color():
    H, W = 7, 9
    pos, tri = perspective_scene()
    rast = rasterize_torch(pos[None], tri, (H, W))
    color = torch.rand(1, H, W, 2, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda c: aa(c, rast, pos[None], tri), (color,))


def test_gradcheck_pos_half_plane():
    pos, tri = half_plane(0.13)
    pos = pos.clone()
    pos[:, 3] = torch.tensor([1.3, 0.8, 1.1], dtype=F64)
    pos[:, :2] *= pos[:, 3:]
    rast = rasterize_torch(pos[None], tri, (6, 10))
    color = torch.rand(1, 6, 10, 1, dtype=F64)
    p = pos[None].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda q: aa(color, rast, q, tri), (p,))


def test_pos_gradient_boost_scales_pos_gradient_only():
    H, W = 10, 12
    pos, tri = perspective_scene()
    rast = rasterize_torch(pos[None], tri, (H, W))
    color0 = torch.rand(1, H, W, 3, dtype=F64)
    grads = {}
    for boost in (1.0, 3.5):
        p = pos[None].clone().requires_grad_(True)
        c = color0.clone().requires_grad_(True)
        out = aa(c, rast, p, tri, pos_gradient_boost=boost)
        (out * out).sum().backward()
        grads[boost] = (out.detach(), p.grad, c.grad)
    assert torch.equal(grads[1.0][0], grads[3.5][0])
    assert torch.equal(grads[1.0][2], grads[3.5][2])
    assert grads[1.0][1].abs().sum() > 0
    torch.testing.assert_close(grads[3.5][1], 3.5 * grads[1.0][1], rtol=1e-14, atol=0)


# --------------------------------------------------------------------------------------------
# Topology: which edges are silhouettes
# --------------------------------------------------------------------------------------------

def quad(shared=True, fold=False):
    """Two triangles with a vertical common edge at NDC x = 0.05. ``fold``: the second triangle
    lies on the same side as the first, behind it (folded)."""
    a, b = [0.05, -0.8, 0.0, 1], [0.05, 0.8, 0.0, 1]
    c = [0.8, 0.0, 0.0, 1]
    d = [0.5, 0.0, 0.5, 1] if fold else [-0.7, 0.1, 0.0, 1]
    if shared:
        pos, tri = [a, b, c, d], [[0, 1, 2], [1, 0, 3]]
    else:
        pos, tri = [a, b, c, b, a, d], [[0, 1, 2], [3, 4, 5]]
    return torch.tensor(pos, dtype=F64), torch.tensor(tri, dtype=torch.int32)


def flat_colors(rast, table):
    ids = rast[..., 3].long()
    return table[ids]


def test_interior_edge_of_mesh_is_not_blended():
    H, W = 16, 16
    table = torch.tensor([[0.0, 0.0], [1.0, 0.2], [0.3, 1.0]], dtype=F64)  # bg, tri 0, tri 1
    pos, tri = quad(shared=True)
    rast = rasterize_torch(pos[None], tri, (H, W))
    color = flat_colors(rast, table)
    out = aa(color, rast, pos[None], tri)
    ids = rast[0, ..., 3]
    # pixels whose four neighbours are all covered by the quad are untouched, though the color
    # jumps across the diagonal
    inner = torch.zeros(H, W, dtype=torch.bool)
    inner[1:-1, 1:-1] = ((ids[1:-1, 1:-1] > 0) & (ids[:-2, 1:-1] > 0) & (ids[2:, 1:-1] > 0)
                         & (ids[1:-1, :-2] > 0) & (ids[1:-1, 2:] > 0))
    jump = (ids[:, :-1] != ids[:, 1:]) & (ids[:, :-1] > 0) & (ids[:, 1:] > 0)
    assert jump.any()
    assert torch.equal(out[0][inner], color[0][inner])
    assert not torch.equal(out, color)  # the outer silhouette is blended
    # the same two triangles without shared vertex indices: the common edge blends
    pos2, tri2 = quad(shared=False)
    rast2 = rasterize_torch(pos2[None], tri2, (H, W))
    assert torch.equal(rast2[..., 2:], rast[..., 2:])
    out2 = aa(color, rast2, pos2[None], tri2)
    assert not torch.equal(out2[0][inner], color[0][inner])


def test_folded_shared_edge_is_a_silhouette():
    H, W = 16, 16
    table = torch.tensor([[0.0], [1.0], [0.5]], dtype=F64)
    pos, tri = quad(shared=True, fold=True)
    rast = rasterize_torch(pos[None], tri, (H, W))
    assert not (rast[..., 3] == 2).any()  # the folded triangle is hidden behind the first
    color = flat_colors(rast, table)
    out = aa(color, rast, pos[None], tri)
    alone = aa(color, rast, pos[None], tri[:1])  # first triangle only: its edge is a silhouette
    torch.testing.assert_close(out, alone, atol=0, rtol=0)
    edge_px = (0.05 + 1) * W / 2  # 8.4: column 8 is 60 % covered
    rows = (rast[0, :, 7, 3] == 0) & (rast[0, :, 8, 3] == 1)
    assert rows.sum() >= 8
    torch.testing.assert_close(out[0, rows, 8, 0], torch.full((int(rows.sum()),), 9 - edge_px,
                                                              dtype=F64), atol=1e-12, rtol=0)


def test_topology_hash_structure_and_reuse():
    pos, tri = perspective_scene()
    topo = dr.antialias_construct_topology_hash(tri)
    assert isinstance(topo, TopologyHash) and topo.num_triangles == 3
    assert topo.num_edges == 8  # quad: 5 edges (the diagonal is shared), other triangle: 3
    assert "num_edges=8" in repr(topo)
    shared = topo.tri_edge[0, 2]  # edge (2, 0) of triangle 0 is edge (0, 2) of triangle 1
    assert shared == topo.tri_edge[1, 0]
    assert int(topo.edge_ptr[shared + 1] - topo.edge_ptr[shared]) == 2
    rast = rasterize_torch(pos[None], tri, (9, 11))
    color = torch.rand(1, 9, 11, 3, dtype=F64)
    torch.testing.assert_close(aa(color, rast, pos[None], tri, topology_hash=topo),
                               aa(color, rast, pos[None], tri), atol=0, rtol=0)


def test_non_manifold_edge_with_a_continuation_is_not_a_silhouette():
    """A third triangle on the common edge, folded behind the first and hidden: the second
    triangle still continues the surface across the edge, so nothing changes."""
    H, W = 16, 16
    pos, tri = quad(shared=True)
    pos = torch.cat([pos, torch.tensor([[0.4, 0.0, 0.6, 1]], dtype=F64)])
    tri3 = torch.cat([tri, torch.tensor([[0, 1, 4]], dtype=torch.int32)])
    rast = rasterize_torch(pos[None], tri3, (H, W))
    assert torch.equal(rast, rasterize_torch(pos[None], tri, (H, W)))  # the fin is hidden
    color = flat_colors(rast, torch.tensor([[0.0], [1.0], [0.5]], dtype=F64))
    out3 = aa(color, rast, pos[None], tri3)
    out2 = aa(color, rast, pos[None], tri)
    torch.testing.assert_close(out3, out2, atol=0, rtol=0)
    col = int((0.05 + 1) * W / 2)
    assert torch.equal(rast[0, 4:12, col - 1:col + 1, 3],
                       torch.tensor([[2.0, 1.0]], dtype=F64).expand(8, 2))
    assert torch.equal(out3[0, 4:12, col - 1:col + 1], color[0, 4:12, col - 1:col + 1])


# --------------------------------------------------------------------------------------------
# Minibatches: instanced vs range mode
# --------------------------------------------------------------------------------------------

def test_instanced_and_range_mode_agree():
    H, W = 12, 13
    pos, tri = perspective_scene()
    rast = rasterize_torch(pos, tri, (H, W), ranges=torch.tensor([[0, 3], [0, 3]]))
    assert torch.equal(rast[0], rast[1])
    color = torch.rand(2, H, W, 3, dtype=F64)
    g = torch.rand(2, H, W, 3, dtype=F64)
    p_range = pos.clone().requires_grad_(True)
    p_inst = pos[None].repeat(2, 1, 1).requires_grad_(True)
    out_r = aa(color, rast, p_range, tri)
    out_i = aa(color, rast, p_inst, tri)
    torch.testing.assert_close(out_r, out_i, atol=0, rtol=0)
    (out_r * g).sum().backward()
    (out_i * g).sum().backward()
    torch.testing.assert_close(p_range.grad, p_inst.grad.sum(0), atol=1e-12, rtol=1e-12)


def test_instanced_batch_uses_each_items_positions():
    H, W = 6, 16
    p0, tri = half_plane(-0.3)
    p1, _ = half_plane(0.41)
    pos = torch.stack([p0, p1])
    rast = rasterize_torch(pos, tri, (H, W))
    color = (rast[..., 3:] > 0).to(F64)
    out = aa(color, rast, pos, tri)
    for b, xe in enumerate((-0.3, 0.41)):
        cov = coverage_1d((xe + 1) * W / 2, W)
        torch.testing.assert_close(out[b, :, :, 0], cov.expand(H, W), atol=1e-12, rtol=0)


# --------------------------------------------------------------------------------------------
# Degenerate geometry: never crash, never NaN gradients
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["w_negative", "w_zero", "nan", "inf", "zero_area", "collinear"])
def test_degenerate_geometry_is_safe(case):
    H, W = 10, 10
    pos, tri = perspective_scene()
    rast = rasterize_torch(pos[None], tri, (H, W))  # rasterized from the healthy geometry
    bad = pos.clone()
    if case == "w_negative":
        bad[1] = torch.tensor([0.3, -0.2, 0.1, -0.7])
    elif case == "w_zero":
        bad[1, 3] = 0.0
    elif case == "nan":
        bad[2, 0] = float("nan")
    elif case == "inf":
        bad[5, 1] = float("inf")
    elif case == "zero_area":
        bad[6] = bad[4]
    elif case == "collinear":
        bad[3] = 0.5 * (bad[0] + bad[2])
    color = torch.rand(1, H, W, 3, dtype=F64, requires_grad=True)
    p = bad[None].clone().requires_grad_(True)
    out = aa(color, rast, p, tri)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert torch.isfinite(p.grad).all() and torch.isfinite(color.grad).all()


def test_vertex_behind_camera_still_antialiases_visible_edge():
    """A triangle with one vertex behind the eye (w < 0): its edge between the two vertices in
    front still blends, with the line computed homogeneously. Near that edge the visible part
    of the triangle is x <= xe (points a + b + small * c project to x ~ xe - 2.8 * small)."""
    H, W = 8, 16
    xe = 0.2
    pos = torch.tensor([[xe, -1.5, 0, 1], [xe, 1.5, 0, 1], [-3.0, 0.0, 0.0, -1.0]], dtype=F64)
    tri = torch.tensor([[0, 1, 2]], dtype=torch.int32)
    # The test rasterizer skips triangles with w <= 0, so build rast by hand.
    xs = (torch.arange(W, dtype=F64) + 0.5) / W * 2 - 1
    rast = torch.zeros(1, H, W, 4, dtype=F64)
    rast[..., 3] = (xs <= xe).to(F64)
    color = rast[..., 3:].clone()
    out = aa(color, rast, pos[None], tri)
    expect = 1 - coverage_1d((xe + 1) * W / 2, W)
    torch.testing.assert_close(out[0, :, :, 0], expect.expand(H, W), atol=1e-12, rtol=0)


def test_out_of_range_ids_in_rast_are_empty():
    pos, tri = half_plane(0.1)
    rast = rasterize_torch(pos[None], tri, (4, 8))
    color = torch.rand(1, 4, 8, 1, dtype=F64)
    bad = rast.clone()
    bad[..., 3] = torch.where(rast[..., 3] > 0, 7.0, 0.0)  # triangle 6 does not exist
    assert torch.equal(aa(color, bad, pos[None], tri), color)


def test_float32_inputs_and_noncontiguous():
    H, W = 10, 12
    pos, tri = perspective_scene(torch.float32)
    rast = rasterize_torch(pos[None], tri, (H, W))
    assert rast.dtype == torch.float32
    color = torch.rand(1, W, H, 3).transpose(1, 2)  # non-contiguous
    out = aa(color, rast, pos[None], tri)
    ref = aa(color.double(), rast, pos[None].double(), tri)
    assert out.dtype == torch.float32 and out.shape == (1, H, W, 3)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=0)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 6))
def test_random_scenes_constant_color_is_invariant(seed, n):
    """Random perspective triangles: outputs and gradients are finite, every changed pixel has a
    neighbour of another triangle, and a constant image is left exactly as it is, with a zero
    position gradient (the blend only moves color between differing pixels)."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.rand(n * 3, 1, generator=gen, dtype=F64) * 2 + 0.5
    xy = torch.rand(n * 3, 2, generator=gen, dtype=F64) * 2.6 - 1.3
    z = torch.rand(n * 3, 1, generator=gen, dtype=F64) * 1.8 - 0.9
    pos = torch.cat([xy * w, z * w, w], 1)
    tri = torch.randint(0, n * 3, (n, 3), generator=gen).to(torch.int32)
    rast = rasterize_torch(pos[None], tri, (9, 11))
    color = torch.rand(1, 9, 11, 2, generator=gen, dtype=F64)
    p = pos[None].clone().requires_grad_(True)
    out = aa(color, rast, p, tri)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(p.grad).all()
    ids = rast[0, ..., 3]
    differs = torch.zeros(9, 11, dtype=torch.bool)
    differs[:, :-1] |= ids[:, :-1] != ids[:, 1:]
    differs[:, 1:] |= ids[:, :-1] != ids[:, 1:]
    differs[:-1] |= ids[:-1] != ids[1:]
    differs[1:] |= ids[:-1] != ids[1:]
    assert not (out != color).any(-1)[0][~differs].any()
    const = torch.full((1, 9, 11, 2), 0.7, dtype=F64)
    q = pos[None].clone().requires_grad_(True)
    out_c = aa(const, rast, q, tri)
    assert torch.equal(out_c, const)
    out_c.sum().backward()
    assert torch.all(q.grad == 0)


@pytest.mark.skipif(not hasattr(dr, "rasterize"), reason="diffrast.rasterize not available")
def test_with_diffrast_rasterize():
    try:
        glctx = dr.RasterizeGLContext(device="cpu")
    except Exception as exc:  # no usable EGL/Mesa on this machine
        pytest.skip(f"no GL context: {exc}")
    H, W = 16, 24
    pos, tri = half_plane(0.137, torch.float32)
    rast, _ = dr.rasterize(glctx, pos[None], tri, (H, W))
    assert torch.equal(rast[..., 3], rasterize_torch(pos[None], tri, (H, W))[..., 3])
    color = (rast[..., 3:] > 0).float()
    out = aa(color, rast, pos[None], tri)
    cov = coverage_1d((0.137 + 1) * W / 2, W).float()
    torch.testing.assert_close(out[0, :, :, 0], cov.expand(H, W), atol=1e-5, rtol=0)


# --------------------------------------------------------------------------------------------
# Input validation
# --------------------------------------------------------------------------------------------

def _good():
    pos, tri = half_plane(0.1)
    rast = rasterize_torch(pos[None], tri, (4, 6))
    return dict(color=torch.rand(1, 4, 6, 3, dtype=F64), rast=rast, pos=pos[None], tri=tri)


@pytest.mark.parametrize("change,exc,match", [
    (dict(color=[[1.0]]), TypeError, "color must be a torch.Tensor"),
    (dict(color=torch.rand(4, 6, 3, dtype=F64)), ValueError, "color must be 4-D"),
    (dict(color=torch.ones(1, 4, 6, 3, dtype=torch.int32)), TypeError, "color must have dtype"),
    (dict(rast=torch.zeros(1, 4, 6, 3, dtype=F64)), ValueError, "rast must have last dimension 4"),
    (dict(rast=torch.zeros(1, 5, 6, 4, dtype=F64)), ValueError, "rast must have shape"),
    (dict(pos=torch.zeros(1, 3, 3, dtype=F64)), ValueError, "pos must have last dimension 4"),
    (dict(pos=torch.zeros(2, 3, 4, dtype=F64)), ValueError, "pos in instanced mode"),
    (dict(pos=torch.zeros(1, 1, 3, 4, dtype=F64)), ValueError, "pos must be 2-D or 3-D"),
    (dict(pos=torch.zeros(1, 3, 4, dtype=torch.float32)), TypeError, "pos must have the same dtype"),
    (dict(tri=torch.tensor([[0, 1, 2]])), TypeError, "tri must have dtype int32"),
    (dict(tri=torch.tensor([[0, 1, 3]], dtype=torch.int32)), ValueError, r"tri indices must lie in \[0, 3\)"),
    (dict(tri=torch.tensor([[0, -1, 2]], dtype=torch.int32)), ValueError, "tri indices"),
    (dict(tri=torch.tensor([0, 1, 2], dtype=torch.int32)), ValueError, "tri must be 2-D"),
    (dict(topology_hash="hash"), TypeError, "topology_hash must come from"),
    (dict(topology_hash=construct_topology(torch.tensor([[0, 1, 2], [0, 2, 1]], dtype=torch.int32))),
     ValueError, "topology_hash was built for 2 triangles"),
    (dict(pos_gradient_boost="2"), TypeError, "pos_gradient_boost must be a real number"),
    (dict(pos_gradient_boost=True), TypeError, "pos_gradient_boost must be a real number"),
    (dict(pos_gradient_boost=float("nan")), ValueError, "pos_gradient_boost must be finite"),
    (dict(color=torch.rand(1, 4, 6, 3, dtype=F64, device="meta")), ValueError,
     "must be on the same device"),
])
def test_bad_inputs_raise(change, exc, match):
    args = _good()
    args.update(change)
    with pytest.raises(exc, match=match):
        dr.antialias(**args)


@pytest.mark.parametrize("tri,exc,match", [
    (torch.tensor([[0, 1, 2]], dtype=torch.int64), TypeError, "tri must have dtype int32"),
    (torch.tensor([[0, 1]], dtype=torch.int32), ValueError, "tri must have last dimension 3"),
    (torch.tensor([[0, -4, 1]], dtype=torch.int32), ValueError, "tri indices must be non-negative"),
    (None, TypeError, "tri must be a torch.Tensor"),
])
def test_topology_hash_bad_inputs(tri, exc, match):
    with pytest.raises(exc, match=match):
        dr.antialias_construct_topology_hash(tri)


def test_integer_boost_and_empty_mesh_accepted():
    args = _good()
    out = dr.antialias(**args, pos_gradient_boost=2)
    assert out.shape == args["color"].shape
    empty = dict(args, tri=torch.zeros(0, 3, dtype=torch.int32), rast=torch.zeros_like(args["rast"]))
    assert torch.equal(dr.antialias(**empty), args["color"])
    assert dr.antialias_construct_topology_hash(empty["tri"]).num_edges == 0
