"""The CUDA antialias (cuda_ops/antialias_forward.cu, antialias_backward.cu and
antialias_topology.cu through diffrast.cuda_backend_antialias) and its GPU topology construction
against the reference.

Tests that take the ``kernels`` fixture run twice: on a GPU (``cuda``, marked ``gpu``) and on the
CPU (``emulated``: the kernels compiled as C++ and run by the lockstep warp emulator,
tests/helpers/kernel_emulator.py; skipped without a C++ compiler), so that the kernels' logic is checked in CI too. Tests marked
``gpu`` alone need the real device (OpenGL rasterization on the GPU, streams, run-to-run
determinism, sizes too large for the emulation).

Exactness: the kernels evaluate every decision with explicitly rounded float32 operations in the
reference's order on the CPU (see the header of cuda_ops/antialias_pairs.cuh), so the emulation must
reproduce the CPU reference's forward output bit for bit, and the GPU should too. Against the
reference run with torch's CUDA ops (whose cross product may contract differently into FMAs), a
pixel pair whose edge passes within float32 round-off of a pixel centre can decide differently;
those comparisons allow a handful of such pixels (and the vertices they move), no more.
"""
import pytest
import torch

import diffrast as dr
from diffrast import cuda_backend_antialias as cb
from diffrast import dispatch
from diffrast.cuda_ops import loader
from diffrast.reference import antialias as ref

from helpers import antialias_scenes as scenes
from helpers import kernel_emulator


@pytest.fixture(params=[pytest.param("cuda", marks=pytest.mark.gpu), "emulated"])
def kernels(request):
    """The device on which ``dr.antialias`` (and the topology construction) runs the CUDA
    kernels for float32 tensors."""
    device = kernel_emulator.kernel_device(request.param, request)
    assert dispatch.backend("antialias", device) is cb.antialias
    assert dispatch.backend("antialias_topology", device) is cb.construct_topology
    return device


@pytest.fixture(scope="module")
def glctx():
    return dr.RasterizeGLContext(device="cuda")


def public(color, rast, pos, tri, topology=None, boost=1.0):
    return dr.antialias(color, rast, pos, tri, topology_hash=topology, pos_gradient_boost=boost)


def to(scene, device):
    return tuple(t.to(device) for t in scene)


def upstream(color, seed=0):
    return torch.randn(color.shape, generator=torch.Generator().manual_seed(seed + 1000))


def cpu_reference(scene, grad_out, boost=1.0):
    color, rast, pos, tri = (t.cpu() for t in scene)
    return scenes.run(scenes.reference, color, rast, pos, tri, ref.construct_topology(tri),
                      grad_out.cpu(), boost)


def assert_matches(want, got, max_flips=0, exact=False):
    """``(out, grad_color, grad_pos)`` of a backend against the reference: forward and
    ``grad_color`` within 1e-5, ``grad_pos`` within 1e-4 of its largest entry (plus 1e-4
    relative), except on at most ``max_flips`` pixels (twice as many gradient rows) whose pair
    decided differently at float32 round-off. ``exact``: the forward is bit-identical."""
    (o1, c1, p1), (o2, c2, p2) = [tuple(t.detach().cpu() for t in r) for r in (want, got)]
    assert o2.shape == o1.shape and c2.shape == c1.shape and p2.shape == p1.shape
    if exact:
        assert torch.equal(o2, o1), f"forward differs on {int((o2 != o1).any(-1).sum())} pixels"
    bad_out = int(((o2 - o1).abs() > 1e-5).any(-1).sum())
    bad_color = int(((c2 - c1).abs() > 1e-5).any(-1).sum())
    scale = max(float(p1.abs().max()), 1.0)
    bad_pos = int(((p2 - p1).abs() > 1e-4 * scale + 1e-4 * p1.abs()).any(-1).sum())
    assert torch.isfinite(o2).all() and torch.isfinite(c2).all() and torch.isfinite(p2).all()
    assert (bad_out <= max_flips and bad_color <= 2 * max_flips and bad_pos <= 2 * max_flips), (
        f"mismatches: {bad_out} output pixels, {bad_color} grad_color pixels, {bad_pos} grad_pos "
        f"rows (allowed {max_flips} / {2 * max_flips} / {2 * max_flips}); max |d grad_pos| "
        f"{float((p2 - p1).abs().max()):.3g} of {scale:.3g}")


def check(scene, device, seed=0, boost=1.0, topology=True):
    """Run the public op on ``device`` and compare with the CPU reference (exact forward in the
    emulation, at most two decision flips on a GPU). Returns both results."""
    scene = to(scene, device)
    grad_out = upstream(scene[0], seed)
    want = cpu_reference(scene, grad_out, boost)
    topo = dr.antialias_construct_topology_hash(scene[3]) if topology else None
    got = scenes.run(public, *scene, topo, grad_out.to(device), boost)
    emulated = device.type == "cpu"
    assert_matches(want, got, max_flips=0 if emulated else 2, exact=emulated)
    return want, got


# --------------------------------------------------------------------------------------------
# Topology (torch ops: runs on the CPU too)

@pytest.mark.parametrize("seed", range(6))
def test_topology_equals_reference(seed):
    g = torch.Generator().manual_seed(seed)
    n = int(torch.randint(3, 60, (1,), generator=g))
    tri = torch.randint(0, max(3, n // 2), (n, 3), generator=g).to(torch.int32)
    if seed % 2:
        tri[:3] = torch.tensor([[0, 0, 1], [1, 0, 0], [2, 2, 2]])  # degenerate triangles
    scenes.assert_topology_equal(cb.construct_topology(tri), ref.construct_topology(tri))


def test_topology_of_meshes_and_empty():
    for tri in (scenes.sphere()[3], scenes.grid_with_fin()[3],
                torch.zeros(0, 3, dtype=torch.int32)):
        topo = cb.construct_topology(tri)
        scenes.assert_topology_equal(topo, ref.construct_topology(tri))
        assert isinstance(topo, ref.TopologyHash) and topo.neighbor.shape == tri.shape


def test_neighbor_table_matches_brute_force():
    _, _, _, tri = scenes.grid_with_fin()
    tri = torch.cat([tri, torch.tensor([[30, 31, 30]], dtype=torch.int32)])  # edge twice in one
    topo = cb.construct_topology(tri)
    t = tri.tolist()
    for i, tv in enumerate(t):
        for k in range(3):
            edge = sorted((tv[k], tv[(k + 1) % 3]))
            inc = [(j, u[(m + 2) % 3]) for j, u in enumerate(t) for m in range(3)
                   if sorted((u[m], u[(m + 1) % 3])) == edge]
            got = int(topo.neighbor[i, k])
            if len(inc) >= 3:
                assert got == -2 - int(topo.tri_edge[i, k])
            else:
                others = [o for j, o in inc if j != i]
                assert got == (others[0] if others else -1), (i, k, inc)
    # a plain reference TopologyHash gets the same table
    assert torch.equal(cb.neighbor_table(ref.construct_topology(tri)), topo.neighbor)


def test_kernels_named_by_the_backend_exist():
    import re
    with open(cb.__file__) as f:
        glue = f.read()
    names = re.findall(r'(?:_launch|launch_tiles)\("(antialias_\w+)", "(\w+)"', glue)
    assert len(names) == 7
    for module, kernel in names:
        assert re.search(rf'extern\s+"C"\s+__global__\s+(__launch_bounds__\([^)]*\)\s+)?'
                         rf'void\s+{kernel}\s*\(', loader.source(module)), (module, kernel)


def test_inconsistent_topology_is_refused():
    color, rast, pos, tri = scenes.soup(0, n=6)
    topo = ref.construct_topology(tri)
    topo.inc_opp = topo.inc_opp[:-1]
    with pytest.raises(ValueError, match="topology_hash is inconsistent"):
        cb.antialias(color, rast, pos, tri, topo)


@pytest.mark.gpu
@pytest.mark.parametrize("rows,cols", [(8, 12), (150, 300)])
def test_gpu_topology_equals_reference(rows, cols):
    from diffrast import geometry
    _, tri, _ = geometry.uv_sphere(rows, cols)
    dup = torch.arange(3 * 50, dtype=torch.int32).reshape(50, 3)  # no shared vertices at all
    for t in (tri, dup, torch.cat([tri, tri[:7]])):              # and non-manifold copies
        topo = dr.antialias_construct_topology_hash(t.cuda())
        assert isinstance(topo, cb.GpuTopologyHash) and topo.device.type == "cuda"
        # the kernels number the edges by first incidence: the reference's tables renumbered
        want = ref.construct_topology(t)
        tri_edge, edge_ptr, inc_tri, inc_opp, nbr = cb.renumbered_like_reference(
            t, cb.topology_tables(topo))
        assert topo.num_edges == want.num_edges
        scenes.assert_topology_equal(
            ref.TopologyHash(t.shape[0], tri_edge, edge_ptr[:want.num_edges + 1], inc_tri,
                             inc_opp), want)
        assert torch.equal(nbr.cpu(), cb.neighbor_table(want))


# --------------------------------------------------------------------------------------------
# Against the reference: kernels on the GPU and emulated

@pytest.mark.parametrize("seed", range(6))
def test_random_soups_instance_mode(kernels, seed):
    check(scenes.soup(seed, n=4 + 2 * seed, batch=2), kernels, seed)


@pytest.mark.parametrize("seed", range(4))
def test_snapped_soups_with_exact_ties(kernels, seed):
    check(scenes.soup(seed, n=6 + seed, batch=2, snapped=True), kernels, seed)


@pytest.mark.parametrize("seed", range(4))
def test_random_soups_range_mode(kernels, seed):
    check(scenes.soup(seed, n=6 + seed, batch=3, range_mode=True), kernels, seed)


def test_sphere_with_seam_and_poles(kernels):
    want, _ = check(scenes.sphere(), kernels)
    assert not torch.equal(want[0], scenes.sphere()[0]) and want[2].abs().sum() > 0


def test_grid_with_fin_and_duplicated_cell(kernels):
    check(scenes.grid_with_fin(), kernels)


def test_vertices_behind_camera_and_at_infinity(kernels):
    want, _ = check(scenes.behind_camera(), kernels)
    assert want[2].abs().sum() > 0


def test_without_prebuilt_topology(kernels):
    check(scenes.soup(7, n=9), kernels, topology=False)


@pytest.mark.parametrize("boost", [0.25, 3.5])
def test_pos_gradient_boost(kernels, boost):
    scene = to(scenes.soup(3, n=10), kernels)
    _, got = check(scene, kernels, boost=boost)
    plain = scenes.run(public, *scene, None, upstream(scene[0]).to(kernels))
    assert torch.equal(got[0], plain[0]) and torch.equal(got[1], plain[1])
    assert plain[2].abs().sum() > 0
    # the boost scales each pair's contribution, so the sums round differently
    scale = float(plain[2].abs().max())
    torch.testing.assert_close(got[2], boost * plain[2], rtol=1e-5, atol=1e-6 * boost * scale)


@pytest.mark.parametrize("det", [False, True])
def test_deterministic_mode_matches(kernels, deterministic, det):
    deterministic(det)
    check(scenes.soup(5, n=12, batch=3, range_mode=True), kernels, 5)
    check(scenes.sphere(), kernels)


@pytest.mark.parametrize("case", ["w_negative", "w_zero", "nan", "inf", "zero_area", "collinear"])
def test_degenerate_geometry(kernels, case):
    color, rast, pos, tri = scenes.sphere(rows=6, cols=8, res=(20, 20), batch=1)
    bad = pos.clone()
    i = len(tri) // 2
    v = int(tri[i, 0])
    if case == "w_negative":
        bad[0, v] = torch.tensor([0.3, -0.2, 0.1, -0.7])
    elif case == "w_zero":
        bad[0, v, 3] = 0.0
    elif case == "nan":
        bad[0, v, 0] = float("nan")
    elif case == "inf":
        bad[0, v, 1] = float("inf")
    elif case == "zero_area":
        bad[0, tri[i, 1]] = bad[0, v]
    elif case == "collinear":
        a, b, c = tri[i].tolist()
        bad[0, c] = 0.5 * (bad[0, a] + bad[0, b])
    check((color, rast, bad, tri), kernels)


def test_corrupt_ids_and_indices(kernels):
    color, rast, pos, tri = scenes.soup(2, n=10)
    bad = rast.clone()
    bad[0, 3:6, :, 3] = torch.tensor([11.0, -4.0, float("nan")])[:, None]  # T = 10
    bad[0, 7, :, 3] = float("inf")
    bad[0, 8, :, 3] = 1.5  # truncates to id 1, as in the reference
    check((color, bad, pos, tri), kernels)
    # vertex indices out of range (past validation, as if tri changed in place): such triangles
    # never blend and nothing is read out of bounds
    color, rast, pos, tri = to((color, rast, pos, tri), kernels)
    topo = cb.construct_topology(tri)
    tri_bad = tri.clone()
    tri_bad[0, 1] = 10**6
    tri_bad[1, 2] = -5
    out = cb.antialias(color, rast, pos, tri_bad, topo)
    assert torch.isfinite(out).all()


def test_expanded_grad_out_is_read_in_place(kernels):
    color, rast, pos, tri = to(scenes.soup(4, n=10), kernels)
    p1, c1 = pos.clone().requires_grad_(True), color.clone().requires_grad_(True)
    dr.antialias(c1, rast, p1, tri).sum().backward()  # grad_out has strides 0
    p2, c2 = pos.clone().requires_grad_(True), color.clone().requires_grad_(True)
    (dr.antialias(c2, rast, p2, tri) * torch.ones_like(color)).sum().backward()
    assert torch.equal(c1.grad, c2.grad)
    torch.testing.assert_close(p1.grad, p2.grad, rtol=1e-6, atol=1e-6)


def test_only_one_input_needs_grad(kernels):
    color, rast, pos, tri = to(scenes.soup(6, n=10), kernels)
    g = upstream(color).to(kernels)
    c = color.clone().requires_grad_(True)
    (dr.antialias(c, rast, pos, tri) * g).sum().backward()
    p = pos.clone().requires_grad_(True)
    (dr.antialias(color, rast, p, tri) * g).sum().backward()
    want = cpu_reference((color, rast, pos, tri), g)
    torch.testing.assert_close(c.grad.cpu(), want[1], atol=1e-5, rtol=0)
    scale = float(want[2].abs().max())
    torch.testing.assert_close(p.grad.cpu(), want[2], atol=1e-4 * scale, rtol=1e-4)


def test_forward_without_grad_records_nothing_and_equals_the_recorded_forward(kernels):
    """Where no input needs a gradient (or grad mode is off) the kernels run without an autograd
    node; the output equals the forward of a call that records one, and the reference's."""
    color, rast, pos, tri = to(scenes.soup(9, n=10), kernels)
    want = cpu_reference((color, rast, pos, tri), upstream(color))[0]
    plain = dr.antialias(color, rast, pos, tri)
    with torch.no_grad():
        off = dr.antialias(color.clone().requires_grad_(True), rast, pos, tri)
    recorded = dr.antialias(color.clone().requires_grad_(True), rast, pos, tri)
    assert plain.grad_fn is None and off.grad_fn is None and recorded.grad_fn is not None
    assert torch.equal(plain, recorded.detach()) and torch.equal(off, plain)
    flips = int(((plain.cpu() - want).abs() > 1e-5).any(-1).sum())
    assert flips <= (0 if kernels.type == "cpu" else 2)  # (decisions at float32 round-off)


@pytest.mark.parametrize("scene", ["sphere", "overlap"])
def test_tiles_split_the_image_without_seams(kernels, scene):
    """The forward kernel runs a block per 32 x 8 tile and takes the pairs that cross a tile's
    left and lower sides from its own evaluation of the neighbouring column and row: at sizes
    that no tile divides (70 x 37, partial tiles on the right and at the top), with and without
    the pair records of the backward, output and gradients equal the reference's everywhere."""
    res = (37, 70)
    made = (scenes.sphere(rows=12, cols=20, res=res, batch=2) if scene == "sphere"
            else scenes.overlap_soup(3, n=60, res=res, batch=2, size=0.3))
    want, got = check(made, kernels, 3)
    color, rast, pos, tri = to(made, kernels)
    with torch.no_grad():
        plain = dr.antialias(color, rast, pos, tri)
    assert torch.equal(plain, got[0].detach())
    # The seams are where the halo matters: pixels that a pair across a tile side blends into.
    moved = (want[0] != made[0]).any(-1)
    x, y = torch.arange(res[1]), torch.arange(res[0])
    assert moved[:, :, (x % 32 == 31) | ((x % 32 == 0) & (x > 0))].any()
    assert moved[:, (y % 8 == 7) | ((y % 8 == 0) & (y > 0))].any()


def _pairs_to_evaluate_per_tile(rast, num_triangles):
    """Per 32 x 8 tile of each image (``[B, tiles]``), the pixel pairs that the forward kernel
    evaluates (different triangle ids, a triangle on the front pixel): those of its pixels with
    their right and upper neighbours, and those across its lower and left sides."""
    ids = torch.where((rast[..., 3] >= 1) & (rast[..., 3] <= num_triangles),
                      rast[..., 3].round().long() - 1, -1)
    z = torch.where(ids >= 0, rast[..., 2], torch.full_like(rast[..., 2], float("inf")))
    B, H, W = ids.shape
    right = torch.zeros(B, H, W, dtype=torch.long)  # pair of (x, y) with (x + 1, y)
    up = torch.zeros(B, H, W, dtype=torch.long)     # pair of (x, y) with (x, y + 1)
    a, b = ids[:, :, :-1], ids[:, :, 1:]
    right[:, :, :-1] = (a != b) & (torch.where(z[:, :, 1:] < z[:, :, :-1], b, a) >= 0)
    a, b = ids[:, :-1], ids[:, 1:]
    up[:, :-1] = (a != b) & (torch.where(z[:, 1:] < z[:, :-1], b, a) >= 0)
    counts = []
    for y0 in range(0, H, 8):
        for x0 in range(0, W, 32):
            tile = (slice(None), slice(y0, y0 + 8), slice(x0, x0 + 32))
            n = right[tile].sum((1, 2)) + up[tile].sum((1, 2))
            if y0 > 0:
                n = n + up[:, y0 - 1, x0:x0 + 32].sum(1)
            if x0 > 0:
                n = n + right[:, y0:y0 + 8, x0 - 1].sum(1)
            counts.append(n)
    return torch.stack(counts, 1)


def _dense_soup():
    """3,000 small overlapping triangles at 70 x 20, batch 2: up to 476 pixel pairs to evaluate
    in one 32 x 8 tile."""
    return scenes.overlap_soup(5, n=3000, res=(20, 70), batch=2, size=0.15)


def test_dense_tiles_match_the_reference(kernels):
    """A block lists the pairs of its tile that need evaluating (up to 2 * 256 + 40) and its 256
    threads share them out: where small triangles make nearly every pair differ, tiles hold more
    pairs than threads, and output and gradients still equal the reference's."""
    made = _dense_soup()
    assert int(_pairs_to_evaluate_per_tile(made[1], made[3].shape[0]).max()) > 400
    check(made, kernels, 4)


@pytest.mark.parametrize("scene", ["dense", "sphere"])
def test_forward_does_not_depend_on_the_order_of_warps(kernels, monkeypatch, scene):
    """The forward kernel's warps share a tile's pair results through shared memory, ordered by
    barriers alone. The emulator runs a block's warps one after another up to each barrier, in
    index order; run in the reverse order (blocks, warps and lanes), a warp that read what another
    warp writes in the same phase would read it before it is written in one of the two orders.
    Output and pair records are the same bit for bit in both."""
    if kernels.type != "cpu":
        pytest.skip("the order of warps is the emulator's to choose")
    made = to(_dense_soup() if scene == "dense"
              else scenes.sphere(rows=12, cols=20, res=(37, 70), batch=2), kernels)
    color, rast, pos, tri = made
    topo = dr.antialias_construct_topology_hash(tri)
    tables = cb.kernel_tables(*cb.topology_tables(topo), tri.shape[0])
    want = cb.antialias_forward(color, rast, pos, tri, *tables)
    monkeypatch.setattr(kernel_emulator, "reversed_kernels", frozenset({"antialias_fwd"}))
    got = cb.antialias_forward(color, rast, pos, tri, *tables)
    for a, b in zip(want, got):
        assert torch.equal(a, b)


def test_empty_images_and_shapes(kernels):
    color, rast, pos, tri = scenes.soup(8, n=8, batch=3)
    rast[1] = 0                                          # an empty image in the batch
    check((color, rast, pos, tri), kernels)
    check((color[:, :1], rast[:, :1], pos, tri), kernels)        # one row
    check((color[:, :, :1], rast[:, :, :1], pos, tri), kernels)  # one column
    check((color[..., :1].contiguous(), rast, pos, tri), kernels)  # one channel
    c5 = torch.rand(*color.shape[:3], 5)
    check((c5, rast, pos, tri), kernels)
    empty = to((color, torch.zeros_like(rast), pos, torch.zeros(0, 3, dtype=torch.int32)), kernels)
    assert torch.equal(dr.antialias(*empty), empty[0])
    z = to((color[:0], rast[:0], pos[:0], tri), kernels)
    assert dr.antialias(*z).shape == color[:0].shape


def test_float64_uses_the_reference(kernels):
    color, rast, pos, tri = to(scenes.soup(1, n=5), kernels)
    out = dr.antialias(color.double(), rast.double(), pos.double(), tri)
    # The reference on the same device (CPU and CUDA round float64 sums differently); on CUDA its
    # index_add sums a pixel's contributions in any order, so equal to float64 rounding.
    want = ref.antialias(color.double(), rast.double(), pos.double(), tri)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, want, rtol=1e-13, atol=1e-13)


def _doubled_soup(seed):
    """A soup drawn twice, the copy flipped: every edge has two, four or more incidences, and
    the CSR tables are read for most pairs."""
    color, rast, pos, tri = scenes.soup(seed, n=10, batch=2)
    return color, rast, pos, torch.cat([tri, tri[:, [0, 2, 1]]])


@pytest.mark.parametrize("det", [False, True])
def test_kernel_topology_gives_identical_results(kernels, deterministic, det):
    """antialias with the topology built by the kernels (edges numbered by first incidence)
    equals, bit for bit, antialias with the torch ops' topology (the reference's numbering):
    output, grad_color and, in deterministic mode or emulated, grad_pos."""
    deterministic(det)
    cases = [scenes.sphere(), scenes.grid_with_fin(), _doubled_soup(4),
               scenes.soup(2, n=12, batch=2, snapped=True)]
    for scene in cases:
        color, rast, pos, tri = to(scene, kernels)
        g = upstream(color).to(kernels)
        by_kernels = cb.construct_topology(tri)
        by_torch = cb.GpuTopologyHash(tri.shape[0], *cb._construct_tables_torch(tri))
        assert not torch.equal(by_kernels.tri_edge, by_torch.tri_edge)  # numbered differently
        got = scenes.run(public, color, rast, pos, tri, by_kernels, g, 2.0)
        want = scenes.run(public, color, rast, pos, tri, by_torch, g, 2.0)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        if det or kernels.type == "cpu":
            assert torch.equal(got[2], want[2])
        else:
            scale = float(want[2].abs().max())
            torch.testing.assert_close(got[2], want[2], atol=1e-5 * scale, rtol=1e-5)
        assert want[2].abs().sum() > 0
        check((color, rast, pos, tri), kernels)  # and the public op against the reference


# --------------------------------------------------------------------------------------------
# GPU only

def _cuda_reference_check(scene, seed=0):
    """On CUDA tensors: the kernels against the reference evaluated with torch's CUDA ops on the
    same inputs (a few round-off decision flips allowed) and against the CPU reference."""
    scene = to(scene, torch.device("cuda"))
    g = upstream(scene[0], seed).cuda()
    got = scenes.run(public, *scene, dr.antialias_construct_topology_hash(scene[3]), g)
    on_cuda = scenes.run(scenes.reference, *scene, ref.construct_topology(scene[3]), g)
    n = scene[0].shape[0] * scene[0].shape[1] * scene[0].shape[2]
    assert_matches(on_cuda, got, max_flips=max(3, n // 5000))
    assert_matches(cpu_reference(scene, g), got, max_flips=max(2, n // 20000))
    return got


def _gl_soup(glctx, seed, n, res, batch, behind=False, range_mode=False):
    g = torch.Generator().manual_seed(seed)
    nv = 3 * n
    w = torch.rand(batch, nv, 1, generator=g) * 2 + 0.5
    if behind:  # about a fifth of the vertices behind the eye
        w = torch.where(torch.rand(batch, nv, 1, generator=g) < 0.2, -w * 0.5, w)
    xy = torch.rand(batch, nv, 2, generator=g) * 2.4 - 1.2
    z = torch.rand(batch, nv, 1, generator=g) * 1.6 - 0.8
    pos = torch.cat([xy * w.abs(), z * w.abs(), w], -1)
    tri = torch.randint(0, nv, (n, 3), generator=g).to(torch.int32)
    ranges = None
    if range_mode:
        pos = pos[0]
        starts = torch.randint(0, n // 2, (batch,), generator=g)
        ranges = torch.stack([starts, n - starts], 1).to(torch.int32)
        ranges[-1] = torch.tensor([0, 0])  # an empty image
    pos_c, tri_c = pos.cuda(), tri.cuda()
    rast, _ = dr.rasterize(glctx, pos_c, tri_c, res, ranges=ranges)
    color = torch.rand(batch, *res, 3, generator=g)
    return color, rast, pos, tri


def _gl_sphere(glctx, rows, cols, res, batch, seed=0):
    """A UV sphere rasterized by OpenGL on the GPU, rotated per image: ``(color, rast, pos, tri)``
    on CUDA."""
    from diffrast import geometry
    pos3, tri, _ = geometry.uv_sphere(rows, cols)
    proj = geometry.perspective(45.0) @ geometry.translate(0, 0, -2.8)
    mvp = torch.stack([proj @ geometry.rotate_y(0.6 * b + 0.2) @ geometry.rotate_x(0.3)
                       for b in range(batch)])
    pos = geometry.transform(pos3, mvp).contiguous().cuda()
    tri = tri.cuda()
    rast, _ = dr.rasterize(glctx, pos, tri, res)
    color = torch.rand(batch, *res, 3, generator=torch.Generator().manual_seed(seed)).cuda()
    return color, rast, pos, tri


@pytest.mark.gpu
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("mode", ["instance", "range", "behind"])
def test_gl_rasterized_random_meshes(glctx, seed, mode):
    scene = _gl_soup(glctx, seed, n=60, res=(64, 80), batch=3, behind=mode == "behind",
                     range_mode=mode == "range")
    got = _cuda_reference_check(scene, seed)
    assert got[2].abs().sum() > 0


@pytest.mark.gpu
def test_gl_rasterized_sphere_and_duplicated_vertices(glctx):
    color, rast, pos, tri = _gl_sphere(glctx, 40, 80, (128, 128), 2, seed=2)
    shared = _cuda_reference_check((color, rast, pos, tri))
    # the same mesh with every vertex duplicated per triangle: every edge is a silhouette
    dup_pos = pos[:, tri.long().reshape(-1)].contiguous()
    dup_tri = torch.arange(3 * tri.shape[0], dtype=torch.int32, device="cuda").reshape(-1, 3)
    dup = _cuda_reference_check((color, rast, dup_pos, dup_tri))
    assert not torch.equal(shared[0], dup[0])


@pytest.mark.gpu
def test_large_batch_against_cuda_reference(glctx):
    scene = _gl_sphere(glctx, 60, 120, (256, 320), 4, seed=3)
    g = upstream(scene[0]).cuda()
    got = scenes.run(public, *scene, dr.antialias_construct_topology_hash(scene[3]), g)
    want = scenes.run(scenes.reference, *scene, ref.construct_topology(scene[3]), g)
    assert_matches(want, got, max_flips=20)
    assert got[2].abs().sum() > 0


@pytest.mark.gpu
def test_deterministic_gradients_are_bit_identical(glctx, deterministic):
    deterministic(True)
    scene = _gl_sphere(glctx, 30, 60, (96, 128), 3)
    g = upstream(scene[0]).cuda()
    topo = dr.antialias_construct_topology_hash(scene[3])
    runs = [scenes.run(public, *scene, topo, g, 2.0) for _ in range(3)]
    for r in runs[1:]:
        for a, b in zip(runs[0], r):
            assert torch.equal(a, b)
    assert runs[0][2].abs().sum() > 0
    deterministic(False)
    fast = scenes.run(public, *scene, topo, g, 2.0)
    assert torch.equal(fast[0], runs[0][0]) and torch.equal(fast[1], runs[0][1])
    scale = float(fast[2].abs().max())
    torch.testing.assert_close(fast[2], runs[0][2], atol=1e-5 * scale, rtol=1e-5)


@pytest.mark.gpu
def test_torch_deterministic_algorithms_select_the_deterministic_path(deterministic):
    deterministic(False)
    scene = to(scenes.soup(9, n=20, batch=2), torch.device("cuda"))
    g = upstream(scene[0]).cuda()
    torch.use_deterministic_algorithms(True)
    try:
        a = scenes.run(public, *scene, None, g)
        b = scenes.run(public, *scene, None, g)
    finally:
        torch.use_deterministic_algorithms(False)
    for x, y in zip(a, b):
        assert torch.equal(x, y)


@pytest.mark.gpu
@pytest.mark.parametrize("det", [False, True])
def test_runs_on_a_non_default_stream(glctx, deterministic, det):
    deterministic(det)
    scene = _gl_sphere(glctx, 30, 60, (256, 256), 4)
    g = upstream(scene[0]).cuda()
    want = scenes.run(public, *scene, None, g)
    torch.cuda.synchronize()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        # Inputs made on this stream, results consumed on it: the kernels must run on it too.
        color, rast, pos = (t * 1.0 for t in scene[:3])
        tri = scene[3].clone()
        got = scenes.run(public, color, rast, pos, tri, None, g * 1.0)
        got = tuple(t.clone() for t in got)
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    scale = float(want[2].abs().max())
    torch.testing.assert_close(got[2], want[2], atol=1e-5 * scale, rtol=1e-5)


@pytest.mark.gpu
def test_no_host_round_trip(glctx):
    """With a prebuilt topology and validated tri, a forward and backward pass queue their
    kernels without waiting for the GPU (no synchronize, no .item())."""
    scene = _gl_sphere(glctx, 30, 60, (128, 128), 2)
    color, rast, pos, tri = scene
    topo = dr.antialias_construct_topology_hash(tri)
    p = pos.clone().requires_grad_(True)
    dr.antialias(color, rast, p, tri, topology_hash=topo).sum().backward()  # warm-up, validation
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        p = pos.clone().requires_grad_(True)
        dr.antialias(color, rast, p, tri, topology_hash=topo).sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
