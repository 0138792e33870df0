"""antialias on overlapping and intersecting geometry: the crossing tolerance.

nvdiffrast lets an edge crossing up to 1/16 pixel outside the segment between the two pixel
centres count, clamped to the segment (step 3 of diffrast.reference.antialias). Without it,
diffrast blended about 0.1% of the silhouette pixels of triangle soups differently: where the
front pixel's triangle also covers the other pixel of the pair (which shows a triangle in front
of it there, although behind it at the front pixel) and its edge passes just beyond, and where
the rasterizer and the float32 geometry disagree about a pixel centre within a hair of an edge.

Here: hand-built scenes where the rule fixes the blended pixel and its weight analytically,
random soups where the rules with and without the tolerance disagree (checked pixel by pixel
against float64 geometry), gradients, closed meshes (unchanged), and the CUDA kernels (on a GPU
and emulated on the CPU) against the reference."""

import pytest
import torch

import diffrast as dr
from diffrast import cuda_backend_antialias as cb
from diffrast import dispatch
from diffrast import triangle_id
from diffrast.reference import antialias as ref

from helpers import antialias_scenes as scenes
from helpers import kernel_emulator
from helpers.raster_util import rasterize_torch

F64 = torch.float64
TOL = 1.0 / 16.0


def without_tolerance(*args, **kw):
    """The reference with the crossing restricted to the segment itself (diffrast's rule before
    the tolerance): ``(out, grad fn inputs...)`` as ``ref.antialias``."""
    saved = ref.CROSSING_TOLERANCE
    ref.CROSSING_TOLERANCE = 0.0
    try:
        return ref.antialias(*args, **kw)
    finally:
        ref.CROSSING_TOLERANCE = saved


def ndc(px, size):
    """Pixel coordinate -> NDC (exact for dyadic values and power-of-two sizes)."""
    return px / size * 2 - 1


# --------------------------------------------------------------------------------------------
# Hand-built scenes
# --------------------------------------------------------------------------------------------

def tilted_over_flat(H=16, W=8, dtype=F64):
    """Triangle T (id 1) covers pixel x <= 4.3 + 0.02 y, its depth rising with x
    (z/w = 0.1 + 0.1 (x - 3.5)); triangle U (id 2) covers x >= 4 at z/w = 0.15. Each row: pixel 3
    shows T (z 0.1), pixel 4 shows U (z 0.15, in front of T's 0.2 there) although T's edge, at
    t = 0.8 + 0.02 y_c from pixel 3's centre, lies beyond pixel 4's centre in the rows
    y_c > 9.5. Rasterized by the exact test rasterizer."""
    def xe(y):
        return 4.3 + 0.02 * y

    def zt(x):
        return 0.1 + 0.1 * (x - 3.5)

    verts_px = [(xe(-16.0), -16.0, zt(xe(-16.0))), (xe(32.0), 32.0, zt(xe(32.0))),
                (-4.0, 8.0, zt(-4.0)),
                (4.0, -40.0, 0.15), (4.0, 56.0, 0.15), (40.0, 8.0, 0.15)]
    pos = torch.tensor([[ndc(x, W), ndc(y, H), z, 1.0] for x, y, z in verts_px], dtype=dtype)
    tri = torch.tensor([[0, 1, 2], [3, 4, 5]], dtype=torch.int32)
    rast = rasterize_torch(pos[None], tri, (H, W))
    return rast, pos[None], tri, xe


def test_front_triangle_edge_just_beyond_a_covered_neighbour():
    """The crossing lies beyond pixel 4's centre by less than 1/16 pixel: clamped to t = 1,
    pixel 4 moves half-way to pixel 3; further beyond, nothing; within the segment, the usual
    blend. The rule without the tolerance leaves the first rows alone."""
    H, W = 16, 8
    rast, pos, tri, xe = tilted_over_flat(H, W)
    ids = triangle_id.decode(rast[0, ..., 3])
    assert (ids[:, :4] == 1).all() and (ids[:, 4:] == 2).all()
    color = torch.rand(1, H, W, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    out = ref.antialias(color, rast, pos, tri)
    old = without_tolerance(color, rast, pos, tri)

    want = color.clone()
    rows_clamped = []
    for y in range(H):
        t = xe(y + 0.5) - 3.5                       # crossing from pixel 3's centre
        assert abs(t - 1) > 1e-3 and abs(t - 1 - TOL) > 1e-3
        if t <= 1 + TOL:
            w = min(t, 1.0) - 0.5
            want[0, y, 4] += w * (color[0, y, 3] - color[0, y, 4])
        if 1 < t <= 1 + TOL:
            rows_clamped.append(y)
    assert rows_clamped == [10, 11, 12]
    torch.testing.assert_close(out, want, atol=1e-12, rtol=0)
    # without the tolerance those rows are not blended; the others are the same
    assert torch.equal(old[0, rows_clamped], color[0, rows_clamped])
    others = [y for y in range(H) if y not in rows_clamped]
    assert torch.equal(old[0, others], out[0, others])


def hand_drawn(xe, H=4, W=8):
    """A big triangle T covering pixel x <= xe (a vertical edge), and rast drawn by hand: pixels
    0..3 show T at z/w = 0.1, pixels 4..7 are empty, whatever xe is (as a rasterizer that
    snaps vertices, or a soup in which pixel 4 shows something in front of T, can give). The
    only pair is (3, 4), its crossing at t = xe - 3.5 from pixel 3's centre."""
    pos = torch.tensor([[ndc(xe, W), ndc(-16.0, H), 0.0, 1.0], [ndc(xe, W), ndc(16.0, H), 0.0, 1.0],
                        [ndc(-32.0, W), ndc(2.0, H), 0.0, 1.0]], dtype=F64)
    tri = torch.tensor([[0, 1, 2]], dtype=torch.int32)
    rast = torch.zeros(1, H, W, 4, dtype=F64)
    rast[:, :, :4, 2] = 0.1
    rast[:, :, :4, 3] = 1.0
    return rast, pos[None], tri


# (xe, pixel that blends or None, its weight): exact dyadic edges at the tolerance's ends
HAND = [
    (3.75, 3, 0.25),              # inside the segment: pixel 3 partly uncovered
    (4.25, 4, 0.25),              # inside the segment: pixel 4 partly covered
    (3.5, 3, 0.5),                # t = 0: pixel 3's centre on the edge
    (3.5 - TOL, 3, 0.5),          # t = -1/16: pixel 3 drawn as T just outside it, clamped to 0
    (3.5 - 0.07, None, 0.0),      # beyond the tolerance
    (4.5, 4, 0.5),                # t = 1: pixel 4's centre on the edge (not blended before)
    (4.5 + TOL, 4, 0.5),          # t = 1 + 1/16, clamped to 1
    (4.5 + 0.07, None, 0.0),      # beyond the tolerance
]


@pytest.mark.parametrize("xe,target,weight", HAND)
def test_tolerance_ends_are_inclusive_and_clamped(xe, target, weight):
    H, W = 4, 8
    rast, pos, tri = hand_drawn(xe, H, W)
    color = torch.rand(1, H, W, 2, dtype=F64, generator=torch.Generator().manual_seed(1))
    for dtype in (F64, torch.float32):               # float32 through the public op
        c = color.to(dtype)
        out = dr.antialias(c, rast.to(dtype), pos.to(dtype), tri)
        want = c.clone()
        if target is not None:
            other = 7 - target                       # 3 <-> 4
            want[:, :, target] += weight * (c[:, :, other] - c[:, :, target])
        assert torch.equal(out, want)                # exact: dyadic geometry


@pytest.mark.parametrize("xe", [3.5 - 0.03, 3.5 + 0.2, 4.5 + 0.03, 4.5 + 0.09])
def test_clamped_crossing_passes_no_position_gradient(xe):
    """Where the crossing is clamped, moving the edge does not change the output: the position
    gradient is zero; inside the segment it is the usual one."""
    rast, pos, tri = hand_drawn(xe)
    color = torch.rand(1, 4, 8, 2, dtype=F64, generator=torch.Generator().manual_seed(2))
    p = pos.clone().requires_grad_(True)
    out = ref.antialias(color, rast, p, tri)
    out.sum().backward()
    t = xe - 3.5
    if 0 <= t <= 1:
        assert p.grad.abs().sum() > 0
    else:
        assert torch.equal(p.grad, torch.zeros_like(p.grad))
    assert torch.autograd.gradcheck(lambda q: ref.antialias(color, rast, q, tri), (p.detach().clone().requires_grad_(True),))


def test_gradcheck_overlap_scene():
    """float64 gradcheck (color and positions) on the tilted-over-flat scene: rows blending
    inside the segment, rows clamped, rows beyond the tolerance."""
    H, W = 16, 8
    rast, pos, tri, _ = tilted_over_flat(H, W)
    color = torch.rand(1, H, W, 2, dtype=F64, generator=torch.Generator().manual_seed(3))
    c = color.clone().requires_grad_(True)
    p = pos.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda cc, pp: ref.antialias(cc, rast, pp, tri), (c, p))
    # the clamped rows put no gradient on T's edge vertices through them: only the rows blending
    # inside the segment do; compare with the rule without the tolerance
    p1 = pos.clone().requires_grad_(True)
    p2 = pos.clone().requires_grad_(True)
    ref.antialias(color, rast, p1, tri).sum().backward()
    without_tolerance(color, rast, p2, tri).sum().backward()
    assert p1.grad.abs().sum() > 0
    torch.testing.assert_close(p1.grad, p2.grad, atol=1e-12, rtol=0)


# --------------------------------------------------------------------------------------------
# Random soups: where the rules disagree, the documented rule holds
# --------------------------------------------------------------------------------------------

SOUP_SEEDS = (1, 2, 6, 8)


def exit_parameter(pos_b, tri, t_id, ax, ay, dx, dy, H, W):
    """float64 geometry, independent of the reference: where the segment from pixel centre
    (ax, ay) along (dx, dy) leaves triangle t_id (projected, so w > 0 only): the smallest crossing
    parameter over the edges whose inner side the segment's line leaves, and that edge's pixel
    space direction."""
    v = pos_b[tri[t_id].long()].to(F64)
    sx = (v[:, 0] / v[:, 3] + 1) * W / 2 - (ax + 0.5)
    sy = (v[:, 1] / v[:, 3] + 1) * H / 2 - (ay + 0.5)
    area = (sx[1] - sx[0]) * (sy[2] - sy[0]) - (sy[1] - sy[0]) * (sx[2] - sx[0])
    best = (float("inf"), None)
    for k in range(3):
        a, b = k, (k + 1) % 3
        ex, ey = sx[b] - sx[a], sy[b] - sy[a]
        # interior-positive edge function f(p) = sign(area) * cross(e, p - a)
        f0 = torch.sign(area) * (ex * (0 - sy[a]) - ey * (0 - sx[a]))
        slope = torch.sign(area) * (ex * dy - ey * dx)
        if slope < 0:
            t = float(-f0 / slope)
            if t < best[0]:
                best = (t, (float(ex), float(ey)))
    return best


@pytest.mark.parametrize("seed", SOUP_SEEDS)
def test_soup_pixels_where_the_rules_disagree(seed):
    """Random overlapping soups: every pixel the tolerance changes takes part in a pair whose
    front triangle's exit crossing lies within 1/16 pixel outside the segment, along an edge
    steep relative to the pair; the pixel of the segment's end nearest to it moves half-way to
    the other pixel. Elsewhere the two rules agree exactly."""
    color, rast, pos, tri = scenes.overlap_soup(seed)
    B, H, W, C = color.shape
    out = ref.antialias(color, rast, pos, tri)
    old = without_tolerance(color, rast, pos, tri)
    diff = (out != old).any(-1)
    assert 0 < int(diff.sum()) < 5
    ids = triangle_id.decode(rast[..., 3])
    z = torch.where(ids > 0, rast[..., 2], torch.full_like(rast[..., 2], float("inf")))
    for b, y, x in torch.nonzero(diff).tolist():
        expected = old[b, y, x].to(F64).clone()
        found = 0
        for nx, ny in ((x - 1, y), (x + 1, y), (x, y - 1), (x, y + 1)):
            if not (0 <= nx < W and 0 <= ny < H) or ids[b, ny, nx] == ids[b, y, x]:
                continue
            # the pair's first pixel is the left / lower one; it is in front unless the second
            # one is strictly nearer (empty pixels are infinitely far)
            first, second = ((x, y), (nx, ny)) if (nx > x or ny > y) else ((nx, ny), (x, y))
            front_second = bool(z[b, second[1], second[0]] < z[b, first[1], first[0]])
            (axp, ayp), (bxp, byp) = (second, first) if front_second else (first, second)
            t_id = int(ids[b, ayp, axp]) - 1
            if t_id < 0:
                continue
            dx, dy = bxp - axp, byp - ayp
            t, edge = exit_parameter(pos[b], tri, t_id, axp, ayp, dx, dy, H, W)
            if not (-TOL <= t < 0 or 1 <= t <= 1 + TOL):
                continue
            steep = abs(edge[1]) >= abs(edge[0])     # edge direction: |ey| >= |ex| is steep
            if steep != (dy == 0):
                continue
            # the clamped end of the segment is A (t < 0) or B (t >= 1): it moves half-way
            target = (axp, ayp) if t < 0 else (bxp, byp)
            if target != (x, y):
                continue
            src = (bxp, byp) if t < 0 else (axp, ayp)
            expected += 0.5 * (color[b, src[1], src[0]].to(F64) - color[b, y, x].to(F64))
            found += 1
        assert found >= 1, (b, y, x)
        torch.testing.assert_close(out[b, y, x].to(F64), expected, atol=1e-5, rtol=0)


def test_soups_disagree_on_a_small_share_of_blends():
    """The order of magnitude of the change: about 0.1% of the blended pixels of a soup."""
    changed = differ = 0
    for seed in range(6):
        color, rast, pos, tri = scenes.overlap_soup(seed)
        out = ref.antialias(color, rast, pos, tri)
        changed += int((out != color).any(-1).sum())
        differ += int((out != without_tolerance(color, rast, pos, tri)).any(-1).sum())
    assert changed > 3000 and 0 < differ < 0.005 * changed


# --------------------------------------------------------------------------------------------
# Closed meshes: unchanged
# --------------------------------------------------------------------------------------------

CLOSED = {
    "sphere": lambda: scenes.sphere(),
    "sphere_fine": lambda: scenes.sphere(rows=24, cols=32, res=(64, 64), batch=2, seed=1),
    "grid_with_fin": lambda: scenes.grid_with_fin(),
}


@pytest.mark.parametrize("name", sorted(CLOSED))
def test_closed_meshes_are_unchanged(name):
    """On meshes rasterized exactly, no pair's crossing falls outside its segment: outputs and
    gradients equal those of the rule without the tolerance, bit for bit."""
    color, rast, pos, tri = CLOSED[name]()
    grad_out = torch.randn(color.shape, generator=torch.Generator().manual_seed(4))
    new = scenes.run(lambda *a: ref.antialias(*a), color, rast, pos, tri, None, grad_out)
    old = scenes.run(without_tolerance, color, rast, pos, tri, None, grad_out)
    for a, b in zip(new, old):
        assert torch.equal(a, b)
    assert not torch.equal(new[0], color)


# --------------------------------------------------------------------------------------------
# CUDA kernels (on a GPU, and emulated on the CPU) against the reference
# --------------------------------------------------------------------------------------------

@pytest.fixture(params=[pytest.param("cuda", marks=pytest.mark.gpu), "emulated"])
def kernels(request):
    """The device on which ``dr.antialias`` runs the CUDA kernels for float32 tensors."""
    device = kernel_emulator.kernel_device(request.param, request)
    assert dispatch.backend("antialias", device) is cb.antialias
    return device


def public(color, rast, pos, tri, topology=None, boost=1.0):
    return dr.antialias(color, rast, pos, tri, topology_hash=topology, pos_gradient_boost=boost)


def kernel_check(scene, device, seed=0):
    """The kernels' forward equals the CPU reference's bit for bit (emulated; on a GPU at most
    two pixels may decide differently at round-off); gradients agree."""
    color, rast, pos, tri = (t.cpu() for t in scene)
    grad_out = torch.randn(color.shape, generator=torch.Generator().manual_seed(seed + 7))
    want = scenes.run(scenes.reference, color, rast, pos, tri, ref.construct_topology(tri),
                      grad_out)
    dev = [t.to(device) for t in (color, rast, pos, tri)]
    got = scenes.run(public, *dev, dr.antialias_construct_topology_hash(dev[3]),
                     grad_out.to(device))
    got = tuple(t.cpu() for t in got)
    if device.type == "cpu":
        assert torch.equal(got[0], want[0])
        scenes.assert_grads_close(want, got)
    else:
        assert int((got[0] != want[0]).any(-1).sum()) <= 2
    return want, got


@pytest.mark.parametrize("seed", SOUP_SEEDS)
def test_kernels_on_overlapping_soups(kernels, seed):
    scene = scenes.overlap_soup(seed)
    want, _ = kernel_check(scene, kernels, seed)
    old = without_tolerance(*scene)
    assert not torch.equal(want[0], old)             # the scene exercises the tolerance


@pytest.mark.parametrize("xe,target,weight", HAND)
def test_kernels_on_tolerance_ends(kernels, xe, target, weight):
    rast, pos, tri = hand_drawn(xe)
    color = torch.rand(1, 4, 8, 2, generator=torch.Generator().manual_seed(5))
    want, got = kernel_check((color, rast.float(), pos.float(), tri), kernels)
    if target is not None and weight == 0.5:
        # a clamped crossing passes no position gradient (t = 0 and t = 1 are not clamped)
        t = xe - 3.5
        if t < 0 or t > 1:
            assert torch.equal(got[2], torch.zeros_like(got[2]))


def test_kernels_on_tilted_over_flat(kernels):
    rast, pos, tri, _ = tilted_over_flat(dtype=torch.float32)
    color = torch.rand(1, 16, 8, 3, generator=torch.Generator().manual_seed(6))
    kernel_check((color, rast, pos, tri), kernels)
