"""Tests of diffrast.interpolate and its reference implementation."""
import importlib

import pytest
import torch
from hypothesis import given, settings, strategies as st

import diffrast as dr
from diffrast import triangle_id

ref = importlib.import_module("diffrast.reference.interpolate")
wrapper = importlib.import_module("diffrast.interpolate")


# ----------------------------------------------------------------------------------------------
# Helpers: hand-built rasterizer outputs and an independent (one-hot matrix) oracle.

def make_rast(B, H, W, T, *, empty_frac=0.3, dtype=torch.float64, seed=0):
    """Random rast / rast_db with barycentrics inside the triangle and some empty pixels."""
    g = torch.Generator().manual_seed(seed)
    uv = torch.rand(B, H, W, 2, generator=g, dtype=dtype)
    flip = uv.sum(-1, keepdim=True) > 1
    uv = torch.where(flip, 1 - uv, uv)  # fold into the triangle u + v <= 1
    z = torch.rand(B, H, W, 1, generator=g, dtype=dtype) * 2 - 1
    ids = torch.randint(1, T + 1, (B, H, W), generator=g)
    ids[torch.rand(B, H, W, generator=g) < empty_frac] = 0
    ids.view(-1)[0] = 0  # at least one empty pixel
    ids.view(-1)[-1] = T  # and the last triangle used
    rast = torch.cat([uv, z, ids.to(dtype).unsqueeze(-1)], dim=-1)
    rast[ids == 0] = 0  # empty pixels are all zeros, as the rasterizer writes them
    rast_db = torch.randn(B, H, W, 4, generator=g, dtype=dtype)
    rast_db[ids == 0] = 0
    return rast, rast_db


def oracle(attr, rast, tri, rast_db=None, diff_attrs=()):
    """Loop-free computation through a dense [B, H, W, V] weight matrix (no gather of corners)."""
    B, H, W, _ = rast.shape
    attr3 = attr if attr.ndim == 3 else attr.unsqueeze(0)
    attr3 = attr3.expand(B, -1, -1)
    V = attr3.shape[1]
    ids = rast[..., 3].round().long()
    cov = (ids >= 1) & (ids <= tri.shape[0])
    onehot = torch.nn.functional.one_hot(tri.long()[(ids - 1).clamp(min=0)], V).to(rast.dtype)
    onehot = onehot * cov[..., None, None]  # [B, H, W, 3, V]

    def weights(c0, c1, c2):
        return (c0[..., None] * onehot[..., 0, :] + c1[..., None] * onehot[..., 1, :]
                + c2[..., None] * onehot[..., 2, :])

    u, v = rast[..., 0], rast[..., 1]
    out = torch.einsum("bhwv,bva->bhwa", weights(u, v, 1 - u - v), attr3)
    if not len(diff_attrs):
        return out, None
    cols = attr3[..., list(diff_attrs)]
    das = []
    for c in range(2):  # X, Y
        du, dv = rast_db[..., c], rast_db[..., 2 + c]
        das.append(torch.einsum("bhwv,bva->bhwa", weights(du, dv, -du - dv), cols))
    return out, torch.stack(das, dim=-1).flatten(-2)


def tri_strip(T, V, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(V, generator=g)[:3] for _ in range(T)]).int()


# ----------------------------------------------------------------------------------------------
# Values.

@pytest.mark.parametrize("layout", ["2d", "3d", "broadcast"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_constant_attribute_interpolates_to_itself(layout, dtype):
    B, H, W, V, T = 2, 3, 5, 6, 4
    rast, rast_db = make_rast(B, H, W, T, dtype=dtype)
    tri = tri_strip(T, V)
    c = torch.tensor([0.25, -3.0, 7.5], dtype=dtype)
    attr = c.expand(V, 3).clone()
    if layout == "3d":
        attr = attr.expand(B, V, 3).clone()
    elif layout == "broadcast":
        attr = attr.unsqueeze(0)
    out, out_da = dr.interpolate(attr, rast, tri, rast_db, diff_attrs="all")
    covered = rast[..., 3] > 0
    assert out.dtype == dtype and out.shape == (B, H, W, 3)
    torch.testing.assert_close(out[covered], c.expand(int(covered.sum()), 3))
    assert (out[~covered] == 0).all()
    torch.testing.assert_close(out_da, torch.zeros_like(out_da), atol=1e-6, rtol=0)
    assert out_da.shape == (B, H, W, 6)


def screen_scene(dtype=torch.float64):
    """Two screen-space triangles on a 6x8 image (pixel centers at integer + 0.5) with exact
    barycentrics and their constant derivatives; pixels outside both are empty."""
    H, W = 6, 8
    P = torch.tensor([[0.2, 0.1], [7.6, 0.4], [0.5, 5.8], [6.1, 4.3]], dtype=torch.float64)
    tri = torch.tensor([[0, 1, 2], [3, 2, 1]], dtype=torch.int32)
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float64) + 0.5,
                            torch.arange(W, dtype=torch.float64) + 0.5, indexing="ij")
    p = torch.stack([xs, ys], -1)
    rast = torch.zeros(1, H, W, 4, dtype=torch.float64)
    rast_db = torch.zeros(1, H, W, 4, dtype=torch.float64)
    for t in range(2):  # two triangles, not a per-pixel loop
        p0, p1, p2 = P[tri[t].long()]
        M = torch.stack([p0 - p2, p1 - p2], dim=1)  # [x; y] columns per barycentric
        Minv = torch.linalg.inv(M)  # rows: (du/dX, du/dY), (dv/dX, dv/dY)
        uv = (p - p2) @ Minv.T
        inside = (uv >= 0).all(-1) & (uv.sum(-1) <= 1) & (rast[0, ..., 3] == 0)
        val = torch.cat([uv, torch.zeros(H, W, 1, dtype=torch.float64),
                         torch.full((H, W, 1), t + 1.0, dtype=torch.float64)], -1)
        rast[0] = torch.where(inside[..., None], val, rast[0])
        rast_db[0] = torch.where(inside[..., None], Minv.reshape(4), rast_db[0])
    return rast.to(dtype), rast_db.to(dtype), tri, P.to(dtype), p.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_affine_attribute_is_exact_with_analytic_derivatives(dtype):
    rast, rast_db, tri, P, p = screen_scene(dtype)
    # Attributes: affine functions f(X, Y) = alpha . (X, Y) + gamma of the screen position.
    alpha = torch.tensor([[1.5, -2.0, 0.0], [0.25, 3.0, -1.0]], dtype=dtype)  # [2, A]
    gamma = torch.tensor([0.5, -1.0, 2.0], dtype=dtype)
    attr = P @ alpha + gamma
    out, out_da = dr.interpolate(attr, rast, tri, rast_db, diff_attrs=[2, 0, 1])
    covered = rast[0, ..., 3] > 0
    assert covered.sum() > 20 and (~covered).sum() > 0
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(out[0][covered], (p @ alpha + gamma)[covered], **tol)
    expect_da = torch.stack([alpha[0, [2, 0, 1]], alpha[1, [2, 0, 1]]], -1).reshape(6)
    torch.testing.assert_close(out_da[0][covered], expect_da.expand(int(covered.sum()), 6), **tol)
    assert (out[0][~covered] == 0).all() and (out_da[0][~covered] == 0).all()


@pytest.mark.parametrize("layout", ["2d", "3d", "broadcast"])
@pytest.mark.parametrize("diff_attrs", [None, "all", [2, 0, 2], []])
def test_matches_oracle_on_hand_built_rast(layout, diff_attrs):
    B, H, W, V, T, A = 2, 3, 5, 7, 5, 3
    rast, rast_db = make_rast(B, H, W, T, seed=3)
    tri = tri_strip(T, V, seed=4)
    g = torch.Generator().manual_seed(5)
    attr = {"2d": (V, A), "3d": (B, V, A), "broadcast": (1, V, A)}[layout]
    attr = torch.randn(*attr, generator=g, dtype=torch.float64)
    out, out_da = dr.interpolate(attr, rast, tri, rast_db, diff_attrs=diff_attrs)
    sel = list(range(A)) if diff_attrs == "all" else (diff_attrs or [])
    want, want_da = oracle(attr, rast, tri, rast_db, sel)
    torch.testing.assert_close(out, want, atol=1e-12, rtol=1e-12)
    if sel:
        assert out_da.shape == (B, H, W, 2 * len(sel))
        torch.testing.assert_close(out_da, want_da, atol=1e-12, rtol=1e-12)
    else:
        assert out_da.shape == (B, H, W, 0) and out_da.dtype == attr.dtype


def test_instanced_attributes_are_per_batch_item():
    rast, _ = make_rast(2, 3, 5, 3, empty_frac=0.0, dtype=torch.float32)
    tri = tri_strip(3, 4)
    base = torch.randn(4, 2)
    attr = torch.stack([base, base * 10])
    out, _ = dr.interpolate(attr, rast, tri)
    out0, _ = dr.interpolate(base, rast[1:], tri)
    torch.testing.assert_close(out[1], 10 * out0[0])


@settings(max_examples=25, deadline=None)
@given(B=st.integers(1, 3), H=st.integers(1, 4), W=st.integers(1, 4), V=st.integers(3, 6),
       T=st.integers(1, 5), A=st.integers(1, 4), seed=st.integers(0, 2**16), data=st.data())
def test_property_matches_oracle(B, H, W, V, T, A, seed, data):
    rast, rast_db = make_rast(B, H, W, T, seed=seed)
    tri = tri_strip(T, V, seed=seed + 1)
    attr = torch.randn(data.draw(st.sampled_from([(V, A), (B, V, A), (1, V, A)])),
                       generator=torch.Generator().manual_seed(seed + 2), dtype=torch.float64)
    sel = data.draw(st.lists(st.integers(0, A - 1), max_size=5))
    out, out_da = dr.interpolate(attr, rast, tri, rast_db, diff_attrs=sel)
    want, want_da = oracle(attr, rast, tri, rast_db, sel)
    torch.testing.assert_close(out, want, atol=1e-12, rtol=1e-12)
    if sel:
        torch.testing.assert_close(out_da, want_da, atol=1e-12, rtol=1e-12)
    else:
        assert out_da.shape == (B, H, W, 0)


def test_out_da_is_empty_without_diff_attrs():
    rast, rast_db = make_rast(2, 3, 5, 2, dtype=torch.float32)
    attr = torch.randn(4, 3, requires_grad=True)
    tri = tri_strip(2, 4)
    for kwargs in ({}, {"rast_db": rast_db}, {"rast_db": rast_db, "diff_attrs": []},
                   {"rast_db": rast[..., :0]}):  # a rasterizer without db returns [B, H, W, 0]
        out, out_da = dr.interpolate(attr, rast, tri, **kwargs)
        assert out.shape == (2, 3, 5, 3)
        assert out_da.shape == (2, 3, 5, 0) and out_da.dtype == torch.float32
        assert out_da.device == attr.device
        assert out_da.requires_grad  # part of the graph, like an autograd.Function output


def test_diff_attrs_accepts_tuples_ranges_tensors_and_numpy_ints():
    np = pytest.importorskip("numpy")
    rast, rast_db = make_rast(1, 2, 3, 2)
    attr = torch.randn(4, 3, dtype=torch.float64)
    tri = tri_strip(2, 4)
    _, want = dr.interpolate(attr, rast, tri, rast_db, diff_attrs=[1, 2])
    for sel in ((1, 2), range(1, 3), torch.tensor([1, 2]), np.array([1, 2]), [np.int64(1), 2]):
        _, got = dr.interpolate(attr, rast, tri, rast_db, diff_attrs=sel)
        assert torch.equal(got, want)


def test_non_contiguous_inputs():
    rast, rast_db = make_rast(2, 3, 5, 3)
    attr = torch.randn(3, 6, dtype=torch.float64).t()  # [6, 3], not contiguous
    tri = tri_strip(3, 6).t().contiguous().t()
    rast_nc = rast.permute(0, 2, 1, 3).contiguous().permute(0, 2, 1, 3)
    out, out_da = dr.interpolate(attr, rast_nc, tri, rast_db, diff_attrs="all")
    want, want_da = oracle(attr.contiguous(), rast, tri.contiguous(), rast_db, [0, 1, 2])
    torch.testing.assert_close(out, want)
    torch.testing.assert_close(out_da, want_da)
    assert out.is_contiguous() and out_da.is_contiguous()


def test_no_triangles_gives_zeros():
    rast = torch.zeros(1, 2, 3, 4)
    rast[0, 0, 0] = torch.tensor([0.3, 0.3, 0.0, 1.0])  # id beyond an empty triangle tensor
    attr = torch.randn(4, 2, requires_grad=True)
    out, out_da = dr.interpolate(attr, rast, torch.zeros(0, 3, dtype=torch.int32),
                                 torch.ones(1, 2, 3, 4), diff_attrs="all")
    assert (out == 0).all() and (out_da == 0).all()
    (out.sum() + out_da.sum()).backward()
    assert (attr.grad == 0).all()


# ----------------------------------------------------------------------------------------------
# Robustness: NaN attributes and corrupt triangle ids.

def test_nan_attribute_propagates_only_where_used():
    rast, rast_db = make_rast(1, 4, 5, 3, empty_frac=0.3, seed=7)
    tri = torch.tensor([[0, 1, 2], [2, 3, 4], [3, 4, 5]], dtype=torch.int32)
    attr = torch.randn(6, 2, dtype=torch.float64)
    attr[0, 1] = float("nan")  # only triangle 0 uses vertex 0
    rast.requires_grad_(True)
    out, out_da = dr.interpolate(attr, rast, tri, rast_db, diff_attrs="all")
    ids = rast[..., 3].detach()
    on0 = ids == 1
    assert on0.any() and (ids == 0).any()
    assert torch.isnan(out[on0][:, 1]).all() and torch.isnan(out_da[on0][:, 2:]).all()
    assert torch.isfinite(out[~on0]).all() and torch.isfinite(out[on0][:, 0]).all()
    assert (out[ids == 0] == 0).all() and (out_da[ids == 0] == 0).all()
    out.sum().backward()
    assert torch.isfinite(rast.grad[~on0]).all()
    assert (rast.grad[ids == 0] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_corrupt_triangle_ids_are_empty(dtype):
    T = 2
    tri = torch.tensor([[0, 1, 2], [1, 2, 3]], dtype=torch.int32)
    attr = torch.randn(4, 3, dtype=dtype, requires_grad=True)
    bad = [T + 1.0, 1e6, -1.0, float("nan"), float("inf"), -float("inf"), 3e38]
    rast = torch.zeros(1, 1, len(bad) + 1, 4, dtype=dtype)
    rast[0, 0, :, 0] = 0.25
    rast[0, 0, :, 1] = float("nan")  # garbage barycentrics must not leak from empty pixels
    rast[0, 0, :-1, 3] = torch.tensor(bad, dtype=dtype)
    if dtype == torch.float32:  # an encoded id beyond 2^24, far past T
        rast[0, 0, 1, 3] = triangle_id.encode(torch.tensor([(1 << 24) + 5]))[0]
    rast[0, 0, -1, 1] = 0.5
    rast[0, 0, -1, 3] = 2.0  # one valid pixel
    rast.requires_grad_(True)
    rast_db = torch.full((1, 1, len(bad) + 1, 4), float("nan"), dtype=dtype)
    rast_db[0, 0, -1] = 1.0
    out, out_da = dr.interpolate(attr, rast, tri, rast_db, diff_attrs="all")
    assert (out[0, 0, :-1] == 0).all() and (out_da[0, 0, :-1] == 0).all()
    a1, a2, a3 = attr.detach()[1:4]
    torch.testing.assert_close(out[0, 0, -1], 0.25 * a1 + 0.5 * a2 + 0.25 * a3)
    (out.sum() + out_da.sum()).backward()
    assert (rast.grad[0, 0, :-1] == 0).all()
    assert torch.isfinite(attr.grad).all() and (attr.grad[0] == 0).all()


# ----------------------------------------------------------------------------------------------
# Gradients.

def _gradcheck_case(layout, diff_attrs, B=2, H=2, W=3, V=5, T=3, A=2, seed=11):
    rast, rast_db = make_rast(B, H, W, T, seed=seed, empty_frac=0.25)
    tri = tri_strip(T, V, seed=seed)
    shape = {"2d": (V, A), "3d": (B, V, A), "broadcast": (1, V, A)}[layout]
    attr = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return attr, rast, rast_db, tri


@pytest.mark.parametrize("layout", ["2d", "3d", "broadcast"])
@pytest.mark.parametrize("diff_attrs", [None, "all", [1, 1, 0]])
def test_gradcheck(layout, diff_attrs):
    attr, rast, rast_db, tri = _gradcheck_case(layout, diff_attrs)
    uv = rast[..., :2].clone().requires_grad_(True)
    zid = rast[..., 2:]  # id channel held fixed: it is piecewise constant
    attr.requires_grad_(True)
    rast_db.requires_grad_(True)

    def f(attr, uv, rast_db):
        out, out_da = dr.interpolate(attr, torch.cat([uv, zid], -1), tri, rast_db,
                                     diff_attrs=diff_attrs)
        return out, out_da

    assert torch.autograd.gradcheck(f, (attr, uv, rast_db))


@pytest.mark.parametrize("layout", ["2d", "3d", "broadcast"])
@pytest.mark.parametrize("diff_attrs", [None, "all", [1, 1, 0]])
def test_explicit_backward_matches_autograd(layout, diff_attrs):
    attr, rast, rast_db, tri = _gradcheck_case(layout, diff_attrs, B=2, H=3, W=4, V=6, T=4, A=3)
    attr.requires_grad_(True)
    rast.requires_grad_(True)
    rast_db.requires_grad_(True)
    out, out_da = dr.interpolate(attr, rast, tri, rast_db, diff_attrs=diff_attrs)
    g = torch.Generator().manual_seed(0)
    go = torch.randn(out.shape, generator=g, dtype=out.dtype)
    gda = torch.randn(out_da.shape, generator=g, dtype=out.dtype)
    got = torch.autograd.grad((out, out_da), (attr, rast, rast_db), (go, gda), allow_unused=True)
    sel = wrapper._parse_diff_attrs(diff_attrs, attr.shape[-1])
    want = ref.interpolate_backward(attr.detach(), rast.detach(), tri, go, rast_db.detach(), sel,
                                    gda)
    torch.testing.assert_close(got[0], want[0])
    torch.testing.assert_close(got[1], want[1])
    assert (got[1][..., 2:] == 0).all()  # no gradient to z/w or the id channel
    assert (got[1][rast[..., 3] == 0] == 0).all()  # nor to empty pixels
    if sel:
        torch.testing.assert_close(got[2], want[2])
    else:
        assert got[2] is None and want[2] is None


def test_float32_gradients_flow():
    attr, rast, rast_db, tri = _gradcheck_case("3d", "all")
    attr, rast, rast_db = (t.float().requires_grad_(True) for t in (attr, rast, rast_db))
    out, out_da = dr.interpolate(attr, rast, tri, rast_db, diff_attrs="all")
    (out.square().sum() + out_da.square().sum()).backward()
    for t in (attr, rast, rast_db):
        assert t.grad is not None and t.grad.dtype == torch.float32 and t.grad.abs().sum() > 0


# ----------------------------------------------------------------------------------------------
# Bad input.

def _good():
    rast, rast_db = make_rast(2, 3, 5, 2, dtype=torch.float32)
    return dict(attr=torch.randn(4, 3), rast=rast, tri=tri_strip(2, 4), rast_db=rast_db)


@pytest.mark.parametrize("change, exc, match", [
    (dict(attr=[[0.0] * 3] * 4), TypeError, "attr must be a torch.Tensor"),
    (dict(attr=torch.randn(4)), ValueError, r"attr must be 2-D or 3-D.*\(4,\)"),
    (dict(attr=torch.randn(1, 2, 4, 3)), ValueError, "attr must be 2-D or 3-D"),
    (dict(attr=torch.randn(4, 3).to(torch.complex64)), TypeError,
     "attr must have dtype float32 or float64 or float16 or bfloat16, got complex64"),
    (dict(attr=torch.randint(0, 3, (4, 3))), TypeError, "attr must have dtype"),
    (dict(attr=torch.randn(3, 4, 3)), ValueError, r"attr minibatch size must be 1 or equal to that of rast \(2\)"),
    (dict(attr=torch.randn(4, 3, dtype=torch.float64)), TypeError, "rast must have the same dtype as attr"),
    (dict(rast=torch.zeros(3, 5, 4)), ValueError, "rast must be 4-D"),
    (dict(rast=torch.zeros(2, 3, 5, 3)), ValueError, "rast must have last dimension 4"),
    (dict(rast=torch.zeros(2, 3, 5, 4).half()), TypeError, "rast must have dtype"),
    (dict(tri=tri_strip(2, 4).long()), TypeError, "tri must have dtype int32.*int64"),
    (dict(tri=torch.zeros(2, 4, dtype=torch.int32)), ValueError, "tri must have last dimension 3"),
    (dict(tri=torch.zeros(6, dtype=torch.int32)), ValueError, "tri must be 2-D"),
    (dict(tri=torch.tensor([[0, 1, 4]], dtype=torch.int32)), ValueError, r"tri indices must lie in \[0, 4\).*\[0, 4\]"),
    (dict(tri=torch.tensor([[0, -1, 2]], dtype=torch.int32)), ValueError, r"tri indices must lie in \[0, 4\)"),
    (dict(diff_attrs=[0, 3]), ValueError, r"diff_attrs indices must lie in \[0, 3\).*got 3"),
    (dict(diff_attrs=[-1]), ValueError, r"diff_attrs indices must lie in \[0, 3\).*got -1"),
    (dict(diff_attrs="some"), ValueError, "diff_attrs must be 'all' or a sequence"),
    (dict(diff_attrs=1), TypeError, "diff_attrs must be 'all' or a sequence.*int"),
    (dict(diff_attrs=[0.5]), TypeError, "diff_attrs must hold integer attribute indices"),
    (dict(diff_attrs=[True]), TypeError, "diff_attrs must hold integer attribute indices"),
    (dict(diff_attrs=torch.tensor([0.0])), TypeError, "diff_attrs must be 'all' or a 1-D sequence"),
    (dict(diff_attrs="all", rast_db=None), ValueError, "diff_attrs requires rast_db"),
    (dict(diff_attrs="all", rast_db=torch.zeros(2, 3, 5, 0)), ValueError, "rast_db must have last dimension 4"),
    (dict(diff_attrs="all", rast_db=torch.zeros(2, 3, 4, 4)), ValueError, r"rast_db must have the same shape as rast \(2, 3, 5, 4\).*\(2, 3, 4, 4\)"),
    (dict(diff_attrs="all", rast_db=torch.zeros(3, 5, 4)), ValueError, "rast_db must be 4-D"),
    (dict(diff_attrs="all", rast_db=torch.zeros(2, 3, 5, 4, dtype=torch.float64)), TypeError, "rast_db must have the same dtype as attr"),
    (dict(diff_attrs=[0], rast_db=torch.zeros(2, 3, 5, 4).half()), TypeError, "rast_db must have dtype"),
    (dict(diff_attrs=[0], rast_db="db"), TypeError, "rast_db must be a torch.Tensor"),
])
def test_bad_input_raises(change, exc, match):
    args = _good()
    args.update(change)
    with pytest.raises(exc, match=match):
        dr.interpolate(**args)


# ----------------------------------------------------------------------------------------------
# CUDA (skipped without a GPU).

@pytest.mark.gpu
def test_cuda_matches_cpu():
    rast, rast_db = make_rast(2, 16, 24, 9, dtype=torch.float32, seed=21)
    tri = tri_strip(9, 12, seed=22)
    attr = torch.randn(2, 12, 4, generator=torch.Generator().manual_seed(23))
    want = dr.interpolate(attr, rast, tri, rast_db, diff_attrs=[3, 1])
    dev = torch.device("cuda")
    got = dr.interpolate(attr.to(dev), rast.to(dev), tri.to(dev), rast_db.to(dev), diff_attrs=[3, 1])
    for g, w in zip(got, want):
        assert g.device.type == "cuda"
        torch.testing.assert_close(g.cpu(), w, atol=1e-5, rtol=1e-5)


@pytest.mark.gpu
def test_cuda_rejects_mixed_devices():
    a = _good()
    a["tri"] = a["tri"].cuda()
    with pytest.raises(ValueError, match="tri must be on the same device as attr"):
        dr.interpolate(**a)
