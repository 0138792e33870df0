"""The CUDA kernels of interpolate (cuda_ops/interpolate_forward.cu and interpolate_backward.cu
through diffrast.cuda_backend) against the reference.

Every test that takes the ``kernels`` fixture runs twice: on a GPU (``cuda``, marked ``gpu``) and
on the CPU through the warp emulator (``emulated``, tests/helpers/kernel_emulator.py; skipped without a
C++ compiler), so that the kernels' logic is checked in CI too. Tests marked ``gpu`` alone need
the real device (streams, run-to-run determinism, large sizes).
"""
import importlib

import pytest
import torch

import diffrast as dr
from helpers import kernel_cases as cases
from helpers import kernel_emulator
from diffrast import cuda_backend, triangle_id

ref = importlib.import_module("diffrast.reference.interpolate")
wrapper = importlib.import_module("diffrast.interpolate")


@pytest.fixture(params=[pytest.param("cuda", marks=pytest.mark.gpu), "emulated"])
def kernels(request, monkeypatch):
    """The device on which ``dr.interpolate`` runs the CUDA kernels for float32 tensors."""
    return kernel_emulator.kernel_device(request.param, request)


def random_scene(B, H, W, V, T, seed, device):
    """Random ids (short runs), barycentrics inside the triangle, ~30% empty pixels."""
    g = torch.Generator().manual_seed(seed)
    uv = torch.rand(B, H, W, 2, generator=g)
    uv = torch.where(uv.sum(-1, keepdim=True) > 1, 1 - uv, uv)
    ids = torch.randint(1, T + 1, (B, H, W), generator=g)
    ids[torch.rand(B, H, W, generator=g) < 0.3] = 0
    rast = torch.cat([uv, torch.rand(B, H, W, 1, generator=g), torch.zeros(B, H, W, 1)], -1)
    rast[..., 3] = triangle_id.encode(ids)
    rast[ids == 0] = 0
    db = torch.randn(B, H, W, 4, generator=g)
    db[ids == 0] = 0
    tri = torch.stack([torch.randperm(V, generator=g)[:3] for _ in range(T)]).int()
    return tri.to(device), rast.to(device), db.to(device)


def make_case(scene, layout, device, *, B=3, H=16, W=40, A=5, cells=5, seed=0):
    """(attr, rast, tri, rast_db) on ``device``."""
    g = torch.Generator().manual_seed(seed + 100)
    if scene == "grid":
        _, tri, _, rast, db = cases.grid_scene(B, H, W, cells, seed=seed, device=device)
        V = int(tri.max()) + 1
    else:
        V = 13
        tri, rast, db = random_scene(B, H, W, V, 11, seed, device)
    shape = {"instance": (B, V, A), "range": (V, A), "broadcast": (1, V, A)}[layout]
    attr = torch.randn(*shape, generator=g).to(device)
    return attr, rast, tri, db


def run(fn, attr, rast, tri, db, diff_attrs, seed=1, want=(True, True, True)):
    """Forward and backward with fixed upstream gradients; returns outputs and input grads."""
    a = attr.detach().clone().requires_grad_(want[0])
    r = rast.detach().clone().requires_grad_(want[1])
    d = db.detach().clone().requires_grad_(want[2])
    out, out_da = fn(a, r, tri, d, diff_attrs)
    g = torch.Generator().manual_seed(seed)
    go = torch.randn(out.shape, generator=g).to(out.device)
    gda = torch.randn(out_da.shape, generator=g).to(out.device)
    loss = (out * go).sum() + (out_da * gda).sum()
    inputs = [t for t, w in zip((a, r, d), want) if w]
    grads = iter(torch.autograd.grad(loss, inputs, allow_unused=True))
    return out, out_da, [next(grads) if w else None for w in want]


def public(a, r, tri, d, diff_attrs):
    return dr.interpolate(a, r, tri, rast_db=d, diff_attrs=diff_attrs)


def reference(a, r, tri, d, diff_attrs):
    diff = wrapper._parse_diff_attrs(diff_attrs, a.shape[-1])
    return ref.interpolate(a, r, tri, d if diff else None, diff)


def close(got, want, tol=1e-5):
    if want is None:
        assert got is None or not got.any()
        return
    scale = max(1.0, float(want.detach().abs().max())) if want.numel() else 1.0
    torch.testing.assert_close(got, want, rtol=tol, atol=tol * scale)


def assert_matches(got, want, diff_attrs):
    close(got[0], want[0], 1e-6)
    close(got[1], want[1], 1e-6)
    for g, w in zip(got[2], want[2]):
        if w is not None or g is not None:
            close(g, w if w is not None else torch.zeros_like(g))


# ----------------------------------------------------------------------------------------------
# Against the reference, every mode.

@pytest.mark.parametrize("det", [False, True], ids=["atomic", "deterministic"])
@pytest.mark.parametrize("diff_attrs", [None, [3, 0, 0], "all"], ids=["nodiff", "dup", "all"])
@pytest.mark.parametrize("layout", ["instance", "range", "broadcast"])
@pytest.mark.parametrize("scene", ["grid", "random"])
def test_matches_reference(kernels, deterministic, scene, layout, diff_attrs, det):
    deterministic(det)
    attr, rast, tri, db = make_case(scene, layout, kernels, seed=3)
    got = run(public, attr, rast, tri, db, diff_attrs)
    want = run(reference, attr, rast, tri, db, diff_attrs)
    assert got[0].device.type == kernels.type and got[1].shape == want[1].shape
    assert_matches(got, want, diff_attrs)


def test_forward_is_bit_exact(kernels):
    """Same formula, same rounding order, no FMA contraction: equal to the last bit."""
    attr, rast, tri, db = make_case("grid", "instance", kernels, seed=4)
    got = dr.interpolate(attr, rast, tri, db, diff_attrs=[4, 1, 2])
    want = reference(attr, rast, tri, db, [4, 1, 2])
    assert torch.equal(got[0], want[0])
    assert torch.equal(got[1], want[1])


def test_forward_without_grad_records_nothing_and_equals_the_recorded_forward(kernels):
    """Where no input needs a gradient (or grad mode is off) the kernel runs without an autograd
    node: the same outputs, bit for bit, as a recording call, and the reference's."""
    attr, rast, tri, db = make_case("grid", "instance", kernels, seed=6)
    plain = dr.interpolate(attr, rast, tri, db, diff_attrs=[0, 3])
    recorded = dr.interpolate(attr.clone().requires_grad_(True), rast, tri, db, diff_attrs=[0, 3])
    with torch.no_grad():
        off = dr.interpolate(attr, rast.clone().requires_grad_(True), tri, db, diff_attrs=[0, 3])
    want = reference(attr, rast, tri, db, [0, 3])
    for p, r, o, w in zip(plain, recorded, off, want):
        assert p.grad_fn is None and o.grad_fn is None and r.grad_fn is not None
        assert torch.equal(p, r.detach()) and torch.equal(o, p) and torch.equal(p, w)


@pytest.mark.parametrize("want", [(True, False, False), (False, True, False), (False, False, True),
                                  (False, True, True)])
def test_only_the_requested_gradients(kernels, want):
    attr, rast, tri, db = make_case("grid", "instance", kernels, seed=5)
    got = run(public, attr, rast, tri, db, "all", want=want)
    ref_ = run(reference, attr, rast, tri, db, "all", want=want)
    for g, w, flag in zip(got[2], ref_[2], want):
        assert (g is None) == (not flag)
        if flag:
            close(g, w)


@pytest.mark.parametrize("det", [False, True], ids=["atomic", "deterministic"])
@pytest.mark.parametrize("layout", ["instance", "broadcast"])
def test_long_runs_of_one_triangle(kernels, deterministic, layout, det):
    """Two large triangles: whole warps of pixels on one triangle (the longest warp runs)."""
    deterministic(det)
    attr, rast, tri, db = make_case("grid", layout, kernels, B=2, H=8, W=96, cells=1, seed=13)
    assert_matches(run(public, attr, rast, tri, db, "all"),
                   run(reference, attr, rast, tri, db, "all"), "all")


@pytest.mark.parametrize("layout", ["instance", "broadcast"])
def test_runs_across_image_boundaries(kernels, layout):
    """One triangle everywhere and images of 35 pixels: warps span images, and in instance mode
    the same triangle of two images must not be merged into one vertex row."""
    _, tri, _, rast, db = cases.one_triangle_scene(5, 5, 7, seed=14, device=kernels)
    attr = torch.randn(5 if layout == "instance" else 1, 3, 4).to(kernels)
    assert_matches(run(public, attr, rast, tri, db, "all"),
                   run(reference, attr, rast, tri, db, "all"), "all")


def test_single_attribute_and_batch_of_one(kernels):
    attr, rast, tri, db = make_case("grid", "instance", kernels, B=1, A=1, seed=6)
    assert_matches(run(public, attr, rast, tri, db, [0, 0]),
                   run(reference, attr, rast, tri, db, [0, 0]), [0, 0])


# ----------------------------------------------------------------------------------------------
# Empty and corrupt input.

@pytest.mark.parametrize("det", [False, True], ids=["atomic", "deterministic"])
def test_all_empty_image(kernels, deterministic, det):
    deterministic(det)
    attr, rast, tri, db = make_case("grid", "instance", kernels, seed=7)
    rast = torch.zeros_like(rast)
    out, out_da, (ga, gr, gd) = run(public, attr, rast, tri, db, "all")
    for t in (out, out_da, ga, gr, gd):
        assert t.shape[0] > 0 and not t.any()


@pytest.mark.parametrize("det", [False, True], ids=["atomic", "deterministic"])
@pytest.mark.parametrize("layout", ["instance", "range"])
def test_corrupt_ids_read_as_empty_pixels(kernels, deterministic, layout, det):
    """NaN, inf, negative, fractional, out-of-range and bit-pattern ids: zeros out, no gradient."""
    deterministic(det)
    attr, rast, tri, db = make_case("grid", layout, kernels, seed=8)
    bad = cases.corrupt_mask(rast, seed=9, fraction=0.25)
    bad_rast = cases.with_corrupt_ids(rast, bad, tri.shape[0])
    db = db.masked_fill(bad[..., None], 1e6)
    got = run(public, attr, bad_rast, cases.with_valid_rows_beyond(tri), db, "all")
    want = run(reference, attr, cases.emptied(rast, bad), tri, db.masked_fill(bad[..., None], 0),
               "all")
    assert not got[0][bad].any() and not got[1][bad].any()
    assert not got[2][1][bad].any() and not got[2][2][bad].any()
    assert_matches(got, want, "all")


@pytest.mark.parametrize("det", [False, True], ids=["atomic", "deterministic"])
def test_vertex_indices_out_of_range_are_skipped(kernels, deterministic, det):
    """Past validation (e.g. a tensor modified in place after a cached check), a triangle with a
    vertex index outside [0, V) makes its pixels empty instead of reading out of bounds."""
    deterministic(det)
    attr, rast, tri, db = make_case("grid", "instance", kernels, seed=10)
    V = attr.shape[-2]
    broken = tri.clone()
    broken[3, 1] = -7
    broken[10, 2] = V
    broken[11, 0] = 2**31 - 1
    ids = triangle_id.decode(rast[..., 3])
    bad = (ids == 4) | (ids == 11) | (ids == 12)
    assert bad.any()
    got = run(cuda_backend.interpolate, attr, rast, broken, db, (0, 2, 4))
    want = run(reference, attr, cases.emptied(rast, bad), tri, db.masked_fill(bad[..., None], 0),
               [0, 2, 4])
    assert_matches(got, want, [0, 2, 4])


def test_misaligned_and_non_contiguous_inputs(kernels):
    attr, rast, tri, db = make_case("grid", "instance", kernels, seed=11)
    storage = torch.zeros(rast.numel() + 1, device=kernels)
    odd = storage[1:].view(rast.shape)  # contiguous, but 4 bytes past a 16-byte boundary
    odd.copy_(rast)
    assert odd.data_ptr() % 16 != 0
    attr_t = attr.transpose(-1, -2).contiguous().transpose(-1, -2)  # non-contiguous view
    got = dr.interpolate(attr_t, odd, tri, db, diff_attrs="all")
    want = reference(attr, rast, tri, db, "all")
    close(got[0], want[0], 1e-6)
    close(got[1], want[1], 1e-6)


def test_empty_batch_and_no_attributes(kernels):
    attr, rast, tri, db = make_case("grid", "instance", kernels, seed=12)
    out, out_da = dr.interpolate(attr[:1], rast[:0], tri)
    assert out.shape == (0, *rast.shape[1:3], attr.shape[-1]) and out_da.shape[-1] == 0
    got = run(public, attr[..., :0], rast, tri, db, None)
    assert got[0].shape == (*rast.shape[:3], 0)
    assert not got[2][1].any()


# ----------------------------------------------------------------------------------------------
# GPU only: large ids, determinism, streams, a larger image.

@pytest.mark.gpu
def test_ids_beyond_2_pow_24():
    """Pixels whose ids are stored with the bit-pattern encoding (more than 2^24 triangles)."""
    dev = torch.device("cuda")
    T = 2**24 + 8
    V = 6
    tri = torch.zeros(T, 3, dtype=torch.int32, device=dev)
    tri[-8:] = torch.tensor([[0, 1, 2], [3, 4, 5], [5, 0, 3], [1, 2, 4]] * 2, dtype=torch.int32)
    g = torch.Generator().manual_seed(13)
    ids = torch.randint(T - 8 + 1, T + 1, (2, 8, 32), generator=g)
    ids[:, :, ::5] = 0
    rast = torch.rand(2, 8, 32, 4, generator=g) * 0.5
    rast[..., 3] = triangle_id.encode(ids)
    rast, db = rast.to(dev), torch.randn(2, 8, 32, 4, generator=g).to(dev)
    attr = torch.randn(2, V, 3, generator=g).to(dev)
    assert_matches(run(public, attr, rast, tri, db, "all"),
                   run(reference, attr, rast, tri, db, "all"), "all")


@pytest.mark.gpu
@pytest.mark.parametrize("layout", ["instance", "broadcast"])
def test_deterministic_mode_is_bit_identical_run_to_run(deterministic, layout):
    """Few large triangles over many pixels: heavy contention on the same vertex rows."""
    dev = torch.device("cuda")
    deterministic(True)
    _, tri, _, rast, db = cases.grid_scene(4, 256, 256, 3, seed=14, device=dev)
    V = int(tri.max()) + 1
    attr = torch.randn(4 if layout == "instance" else 1, V, 8, device=dev)
    first = run(public, attr, rast, tri, db, "all")
    for _ in range(3):
        again = run(public, attr, rast, tri, db, "all")
        for a, b in zip(first[2], again[2]):
            assert torch.equal(a, b)
    deterministic(False)
    fast = run(public, attr, rast, tri, db, "all")
    for a, b in zip(first[2], fast[2]):
        close(b, a)
    want = run(reference, attr.double(), rast.double(), tri, db.double(), "all")
    for a, b in zip(first[2], want[2]):
        close(a.double(), b, 1e-4)


@pytest.mark.gpu
def test_torch_use_deterministic_algorithms_turns_the_mode_on(deterministic):
    dev = torch.device("cuda")
    deterministic(False)
    _, tri, _, rast, db = cases.grid_scene(2, 128, 128, 3, seed=15, device=dev)
    attr = torch.randn(2, int(tri.max()) + 1, 4, device=dev)
    saved = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        assert cuda_backend.deterministic()
        first = run(public, attr, rast, tri, db, "all")
        again = run(public, attr, rast, tri, db, "all")
    finally:
        torch.use_deterministic_algorithms(saved)
    assert torch.equal(first[2][0], again[2][0])


@pytest.mark.gpu
@pytest.mark.parametrize("det", [False, True], ids=["atomic", "deterministic"])
def test_runs_on_a_non_default_stream(deterministic, det):
    deterministic(det)
    dev = torch.device("cuda")
    attr, rast, tri, db = make_case("grid", "instance", dev, B=4, H=96, W=128, seed=16)
    want = run(reference, attr, rast, tri, db, "all")
    torch.cuda.synchronize()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        # Inputs made on this stream, results consumed on it: the kernels must run on it too.
        attr2, rast2, db2 = attr * 1.0, rast * 1.0, db * 1.0
        got = run(public, attr2, rast2, tri, db2, "all")
        got = (got[0].clone(), got[1].clone(), [g.clone() for g in got[2]])
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    assert_matches(got, want, "all")


@pytest.mark.gpu
def test_large_batch_matches_reference():
    dev = torch.device("cuda")
    _, tri, _, rast, db = cases.grid_scene(4, 512, 512, 40, seed=17, device=dev)
    attr = torch.randn(4, int(tri.max()) + 1, 3, device=dev)
    assert_matches(run(public, attr, rast, tri, db, "all"),
                   run(reference, attr, rast, tri, db, "all"), "all")


def test_atomic_copies_where_many_pixels_share_few_vertices():
    """The attribute gradient's atomics spread over copies for a small mesh in many views (64
    views of 514 vertices at 512²), not for a mesh with a vertex per few pixels or a small call."""
    assert cuda_backend.atomic_copies(64 * 512 * 512, 514) == 16
    assert cuda_backend.atomic_copies(4 * 1024 * 1024, 33153) == 1
    assert cuda_backend.atomic_copies(512 * 512, 514) == 1
    assert cuda_backend.atomic_copies(1 << 20, 3) == cuda_backend.MAX_ATOMIC_COPIES
    assert cuda_backend.atomic_copies(1 << 20, 4096) == 4


@pytest.mark.parametrize("copies", [2, 8])
@pytest.mark.parametrize("layout", ["instance", "range", "broadcast"])
def test_gradient_summed_over_copies(kernels, monkeypatch, layout, copies):
    """Warps adding into copies of the attribute gradient (summed afterwards) give the
    reference's gradients, in every layout."""
    monkeypatch.setattr(cuda_backend, "atomic_copies", lambda pixels, rows: copies)
    attr, rast, tri, db = make_case("random", layout, kernels, H=24, seed=8)
    assert_matches(run(public, attr, rast, tri, db, "all"),
                   run(reference, attr, rast, tri, db, "all"), "all")


@pytest.mark.parametrize("copies", [1, 2])
@pytest.mark.parametrize("num_attrs", [1, 2, 3, 4, 5])
def test_attribute_counts(kernels, monkeypatch, num_attrs, copies):
    """Every attribute count up to five, with one copy of the attribute gradient and with two
    (the second starting at an odd row: 3 images of 13 vertices): up to four attributes are added
    with vector atomics, one per corner row (for three, a float2 on attributes 0-1 or 1-2 by the
    parity of the row in the buffer, then a float), more one attribute at a time."""
    monkeypatch.setattr(cuda_backend, "atomic_copies", lambda pixels, rows: copies)
    attr, rast, tri, db = make_case("random", "instance", kernels, A=num_attrs,
                                    seed=20 + num_attrs)
    assert_matches(run(public, attr, rast, tri, db, "all"),
                   run(reference, attr, rast, tri, db, "all"), "all")


@pytest.mark.gpu
@pytest.mark.parametrize("layout", ["range", "instance"])
def test_many_views_of_a_small_mesh(layout):
    """16 views of a 36-vertex mesh: the gradient's atomics spread over copies (by the rule)."""
    dev = torch.device("cuda")
    _, tri, _, rast, db = cases.grid_scene(16, 256, 256, 5, seed=19, device=dev)
    V = int(tri.max()) + 1
    assert cuda_backend.atomic_copies(rast.shape[0] * 256 * 256, V) > 1
    attr = torch.randn(*((V, 3) if layout == "range" else (16, V, 3)), device=dev)
    assert_matches(run(public, attr, rast, tri, db, "all"),
                   run(reference, attr, rast, tri, db, "all"), "all")


@pytest.mark.parametrize("det", [False, True], ids=["atomic", "deterministic"])
def test_loss_gradients_are_read_in_place(kernels, deterministic, det):
    """The expanded gradient of a sum (strides 0), a channel slice and a transposed layout give
    the gradients of their contiguous copies, bit for bit."""
    deterministic(det)
    attr, rast, tri, db = make_case("random", "instance", kernels, A=4, seed=5)
    diff = [0, 3, 3]
    a = attr.requires_grad_()
    r = rast.clone().requires_grad_()
    d = db.clone().requires_grad_()
    out, out_da = dr.interpolate(a, r, tri, rast_db=d, diff_attrs=diff)
    g = torch.Generator().manual_seed(9)
    big = torch.randn(*out.shape[:3], 2 * out.shape[3], generator=g).to(out.device)
    cases = {
        "sum": (torch.ones(()).to(out.device).expand(out.shape),
                torch.full((), 0.5).to(out.device).expand(out_da.shape)),
        "slice": (big[..., ::2], torch.randn(*out_da.shape[:3], 12, generator=g)
                  .to(out.device)[..., 3:9]),
        "channels first": (torch.randn(out.shape[3], *out.shape[:3], generator=g)
                           .to(out.device).permute(1, 2, 3, 0),
                           torch.randn(out_da.shape, generator=g).to(out.device)),
    }
    for name, (go, gda) in cases.items():
        got = torch.autograd.grad((out, out_da), (a, r, d), (go, gda), retain_graph=True)
        want = torch.autograd.grad((out, out_da), (a, r, d), (go.contiguous(), gda.contiguous()),
                                   retain_graph=True)
        for x, y in zip(got, want):
            if det or x is not got[0]:
                assert torch.equal(x, y), name
            else:  # float atomics add the attribute gradients in a different order each run
                torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5)
