"""rasterize and DepthPeeler against an analytic float64 solve, on Mesa (CPU) and on CUDA."""
import threading

import numpy as np
import pytest
import torch

import diffrast as dr
from helpers.contexts import KINDS, context, tensor_device
from diffrast.reference.rasterize import pixel_barycentrics

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


def exact_barycentrics(pos, tri, b, t, height, width):
    """Float64 solve at every pixel centre for triangle ``t`` of batch item ``b``:
    returns (u, v, z/w) images [H, W] and the third weight, via numpy.linalg.solve."""
    p = pos.detach().double().cpu().numpy()
    p = p[b] if p.ndim == 3 else p
    c = p[tri[t].long().cpu().numpy()]  # [3, 4]
    m = np.stack([c[:, 0], c[:, 1], c[:, 3]])  # columns are (x, y, w) of each vertex
    ys, xs = np.mgrid[0:height, 0:width]
    q = np.stack([(xs + 0.5) * 2 / width - 1, (ys + 0.5) * 2 / height - 1, np.ones_like(xs, float)], -1)
    bary = np.linalg.solve(m[None, None], q[..., None])[..., 0]
    bary = bary / bary.sum(-1, keepdims=True)
    z = bary @ c[:, 2]
    w = bary @ c[:, 3]
    return bary[..., 0], bary[..., 1], z / w, bary


def random_triangles(gen, n, perspective=True):
    xy = torch.rand(n, 3, 2, generator=gen, dtype=torch.float64) * 2.4 - 1.2
    w = (torch.rand(n, 3, 1, generator=gen, dtype=torch.float64) * 2 + 0.5) if perspective \
        else torch.ones(n, 3, 1, dtype=torch.float64)
    z = torch.rand(n, 3, 1, generator=gen, dtype=torch.float64) * 1.6 - 0.8
    return torch.cat([xy * w, z * w, w], -1).float()  # clip space


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("height,width", [(37, 53), (64, 64)])
def test_single_triangles_match_analytic_solve(kind, height, width):
    device = tensor_device(kind)
    gen = torch.Generator().manual_seed(1)
    glctx = context(kind)
    tris = random_triangles(gen, 12)
    tri = torch.tensor([[0, 1, 2]], dtype=torch.int32, device=device)
    pos = tris.to(device)  # 12 images, one triangle each (instance mode)
    rast, rast_db = dr.rasterize(glctx, pos, tri, (height, width))
    assert rast.shape == (12, height, width, 4) and rast_db.shape == (12, height, width, 4)
    assert rast.device.type == device
    rast, rast_db = rast.cpu(), rast_db.cpu()
    checked = 0
    for b in range(12):
        u, v, zw, bary = exact_barycentrics(tris, tri.cpu(), b, 0, height, width)
        inside = (bary.min(-1) > 1e-4) & (np.abs(zw) < 1 - 1e-4)
        outside = (bary.min(-1) < -1e-4) | (np.abs(zw) > 1 + 1e-4)
        covered = rast[b, ..., 3].numpy() == 1
        assert covered[inside].all(), "pixel centres inside the triangle must be covered"
        assert not covered[outside].any(), "pixel centres outside must not be covered"
        err_u = np.abs(rast[b, ..., 0].numpy() - u)[covered]
        err_v = np.abs(rast[b, ..., 1].numpy() - v)[covered]
        err_z = np.abs(rast[b, ..., 2].numpy() - zw)[covered]
        assert err_u.max(initial=0) < 2e-5 and err_v.max(initial=0) < 2e-5 and err_z.max(initial=0) < 2e-5
        assert (rast[b][~torch.from_numpy(covered)] == 0).all(), "empty pixels are all zeros"
        checked += covered.sum()
    assert checked > 500


@pytest.mark.parametrize("kind", KINDS)
def test_rast_db_matches_finite_differences(kind):
    device = tensor_device(kind)
    gen = torch.Generator().manual_seed(2)
    tris = random_triangles(gen, 4)
    H, W = 40, 48
    rast, rast_db = dr.rasterize(context(kind), tris.to(device),
                                 torch.tensor([[0, 1, 2]], dtype=torch.int32, device=device), (H, W))
    rast, rast_db = rast.cpu(), rast_db.cpu()
    h = 1e-3
    for b in range(4):
        c = tris[b].double().numpy()
        m = np.stack([c[:, 0], c[:, 1], c[:, 3]])

        def uv(px, py):
            q = np.stack([px * 2 / W - 1, py * 2 / H - 1, np.ones_like(px)], -1)
            bb = np.linalg.solve(m[None, None], q[..., None])[..., 0]
            bb = bb / bb.sum(-1, keepdims=True)
            return bb[..., 0], bb[..., 1]

        ys, xs = np.mgrid[0:H, 0:W] + 0.5
        (u1, v1), (u0, v0) = uv(xs + h, ys), uv(xs - h, ys)
        (u3, v3), (u2, v2) = uv(xs, ys + h), uv(xs, ys - h)
        fd = np.stack([(u1 - u0), (u3 - u2), (v1 - v0), (v3 - v2)], -1) / (2 * h)
        covered = rast[b, ..., 3].numpy() > 0
        err = np.abs(rast_db[b].numpy() - fd)[covered]
        scale = np.abs(fd[covered]).max() + 1e-3
        assert err.max() < 1e-4 * scale + 1e-6


@pytest.mark.parametrize("kind", KINDS)
def test_shared_edge_covers_each_pixel_once(kind):
    device = tensor_device(kind)
    glctx = context(kind)
    # A square split along its diagonal: pixel centres of a square image lie exactly on it.
    pos = torch.tensor([[-1, -1, 0, 1], [1, -1, 0, 1], [1, 1, 0, 1], [-1, 1, 0, 1]],
                       dtype=torch.float32, device=device)
    tri = torch.tensor([[0, 1, 2], [0, 2, 3]], dtype=torch.int32, device=device)
    ranges = torch.tensor([[0, 1], [1, 1], [0, 2]], dtype=torch.int32)
    rast, _ = dr.rasterize(glctx, pos, tri, (32, 32), ranges=ranges)
    rast = rast.cpu()
    first, second, both = (rast[i, ..., 3] > 0 for i in range(3))
    assert (first.int() + second.int() == 1).all(), "each pixel covered by exactly one triangle"
    assert both.all()


@pytest.mark.parametrize("kind", KINDS)
def test_nearer_triangle_wins(kind):
    device = tensor_device(kind)
    glctx = context(kind)
    far = [[-1, -1, 0.5, 1], [3, -1, 0.5, 1], [-1, 3, 0.5, 1]]
    near = [[-1, -1, -0.5, 1], [3, -1, -0.5, 1], [-1, 3, -0.5, 1]]
    tri = torch.tensor([[0, 1, 2], [3, 4, 5]], dtype=torch.int32, device=device)
    for order in (far + near, near + far):
        pos = torch.tensor([order], dtype=torch.float32, device=device)
        rast, _ = dr.rasterize(glctx, pos, tri, (16, 16))
        want = 2.0 if order[3][2] < 0 else 1.0
        assert (rast[..., 3] == want).all()
        assert torch.allclose(rast[..., 2], torch.full_like(rast[..., 2], -0.5))


@pytest.mark.parametrize("kind", KINDS)
def test_range_mode_equals_instance_mode(kind):
    device = tensor_device(kind)
    gen = torch.Generator().manual_seed(3)
    glctx = context(kind)
    V, T, B = 30, 20, 3
    verts = random_triangles(gen, V // 3).reshape(V, 4)
    tri = torch.randint(0, V, (T, 3), generator=gen, dtype=torch.int32)
    # Instance mode: each image shows all triangles with its own vertices.
    pos_inst = torch.stack([verts * (1 + 0.1 * b) for b in range(B)])
    rast_i, db_i = dr.rasterize(glctx, pos_inst.to(device), tri.to(device), (24, 30))
    # Range mode: the same, with vertex sets concatenated and triangle ids offset.
    pos_range = pos_inst.reshape(B * V, 4)
    tri_range = torch.cat([tri + b * V for b in range(B)])
    ranges = torch.tensor([[b * T, T] for b in range(B)], dtype=torch.int32)
    rast_r, db_r = dr.rasterize(glctx, pos_range.to(device), tri_range.to(device), (24, 30), ranges=ranges)
    ids_i = dr.triangle_id.decode(rast_i[..., 3].cpu())
    ids_r = dr.triangle_id.decode(rast_r[..., 3].cpu())
    offset = torch.arange(B)[:, None, None] * T
    assert torch.equal(torch.where(ids_r > 0, ids_r - offset, ids_r), ids_i)
    assert torch.equal(rast_i[..., :3].cpu(), rast_r[..., :3].cpu())
    assert torch.equal(db_i.cpu(), db_r.cpu())


@pytest.mark.parametrize("device", DEVICES)
def test_batches_beyond_the_layer_limit_are_split(device):
    glctx = dr.RasterizeGLContext(device=device)
    gen = torch.Generator().manual_seed(4)
    pos = random_triangles(gen, 7).reshape(7, 3, 4).to(device)
    tri = torch.tensor([[0, 1, 2]], dtype=torch.int32, device=device)
    whole, _ = dr.rasterize(glctx, pos, tri, (20, 21))
    glctx._pipeline.max_layers = 3  # pretend the GL limit is 3 layers
    split, _ = dr.rasterize(glctx, pos, tri, (20, 21))
    assert torch.equal(whole, split)
    glctx.release()


@pytest.mark.parametrize("kind", KINDS)
def test_near_plane_clipping(kind):
    device = tensor_device(kind)
    glctx = context(kind)
    # One vertex behind the camera (w < 0): GL clips against z = -w; barycentrics stay those
    # of the unclipped triangle at each pixel centre.
    tris = torch.tensor([[[-0.5, -0.5, 0.0, 1.0], [0.5, -0.5, 0.0, 1.0], [0.0, 0.6, -1.5, -0.5]]])
    tri = torch.tensor([[0, 1, 2]], dtype=torch.int32)
    rast, _ = dr.rasterize(glctx, tris.to(device), tri.to(device), (48, 48))
    rast = rast.cpu()
    u, v, zw, bary = exact_barycentrics(tris, tri, 0, 0, 48, 48)
    w = bary @ tris[0, :, 3].double().numpy()
    z = bary @ tris[0, :, 2].double().numpy()
    visible = (bary.min(-1) > 1e-4) & (w > 0) & (z > -w + 1e-4) & (z < w - 1e-4)
    hidden = (bary.min(-1) < -1e-4) | (w < 0) | (z < -w - 1e-4)
    covered = rast[0, ..., 3].numpy() > 0
    assert visible.sum() > 50 and covered[visible].all() and not covered[hidden].any()
    assert np.abs(rast[0, ..., 0].numpy() - u)[covered].max() < 2e-5
    assert np.abs(rast[0, ..., 2].numpy() - zw)[covered].max() < 2e-5


@pytest.mark.parametrize("kind", KINDS)
def test_nonfinite_positions_drop_the_triangle(kind):
    device = tensor_device(kind)
    glctx = context(kind)
    pos = torch.tensor([[-1, -1, 0, 1], [1, -1, 0, 1], [-1, 1, 0, 1],
                        [-1, -1, 0, float("nan")], [1, -1, 0, 1], [1, 1, 0, 1],
                        [float("inf"), -1, 0, 1], [1, 1, 0, 1], [-1, 1, 0, 1]], device=device)
    tri = torch.tensor([[0, 1, 2], [3, 4, 5], [6, 7, 8]], dtype=torch.int32, device=device)
    rast, db = dr.rasterize(glctx, pos, tri, (16, 16), ranges=torch.tensor([[0, 3]], dtype=torch.int32))
    ids = rast[..., 3]
    assert set(ids.unique().tolist()) <= {0.0, 1.0}
    assert torch.isfinite(rast).all() and torch.isfinite(db).all()


@pytest.mark.parametrize("kind", KINDS)
def test_depth_peeling_returns_layers_front_to_back(kind):
    device = tensor_device(kind)
    glctx = context(kind)
    depths = [0.3, -0.6, 0.0]
    pos = torch.tensor([[[-1, -1, z, 1], [3, -1, z, 1], [-1, 3, z, 1]] for z in depths],
                       dtype=torch.float32).reshape(9, 4).to(device)
    tri = torch.arange(9, dtype=torch.int32, device=device).reshape(3, 3)
    ranges = torch.tensor([[0, 3], [2, 1]], dtype=torch.int32)
    with dr.DepthPeeler(glctx, pos, tri, (8, 8), ranges=ranges) as peeler:
        layers = [peeler.rasterize_next_layer()[0].cpu() for _ in range(4)]
    assert [layers[i][0, ..., 3].unique().tolist() for i in range(4)] == [[2.0], [3.0], [1.0], [0.0]]
    assert torch.allclose(layers[0][0, ..., 2], torch.tensor(-0.6))
    assert [layers[i][1, ..., 3].unique().tolist() for i in range(2)] == [[3.0], [0.0]]
    # The context is free again afterwards.
    dr.rasterize(glctx, pos, tri, (8, 8), ranges=ranges)


def test_depth_peeler_misuse_raises():
    glctx = context("cpu")
    pos = torch.tensor([[[-1, -1, 0, 1], [1, -1, 0, 1], [-1, 1, 0, 1]]], dtype=torch.float32)
    tri = torch.tensor([[0, 1, 2]], dtype=torch.int32)
    peeler = dr.DepthPeeler(glctx, pos, tri, (4, 4))
    with pytest.raises(RuntimeError, match="with-block"):
        peeler.rasterize_next_layer()
    with peeler:
        with pytest.raises(RuntimeError, match="already active"):
            with dr.DepthPeeler(glctx, pos, tri, (4, 4)):
                pass
        with pytest.raises(RuntimeError, match="DepthPeeler is active"):
            dr.rasterize(glctx, pos, tri, (4, 4))
    with pytest.raises(RuntimeError, match="with-block"):
        peeler.rasterize_next_layer()


def test_output_db_false_returns_empty_derivatives():
    glctx = context("cpu", output_db=False)
    pos = torch.tensor([[[-1, -1, 0, 1], [1, -1, 0, 1], [-1, 1, 0, 1]]], dtype=torch.float32, requires_grad=True)
    rast, db = dr.rasterize(glctx, pos, torch.tensor([[0, 1, 2]], dtype=torch.int32), (5, 7))
    assert db.shape == (1, 5, 7, 0)
    rast[..., :2].sum().backward()
    assert pos.grad is not None and torch.isfinite(pos.grad).all()


def test_gradcheck_of_reference_barycentrics():
    gen = torch.Generator().manual_seed(5)
    pos = random_triangles(gen, 2).reshape(1, 6, 4).double()
    tri = torch.tensor([[0, 1, 2], [3, 4, 5]], dtype=torch.int32)
    rast, _ = dr.rasterize(context("cpu"), pos.float(), tri, (12, 10))
    assert (rast[..., 3] > 0).sum() > 10
    p = pos.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda q: pixel_barycentrics(q, tri, rast), (p,), eps=1e-6, atol=1e-6)
    # Range mode layout too.
    p2 = pos[0].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda q: pixel_barycentrics(q, tri, rast), (p2,), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_rasterize_backward_equals_reference_autograd(kind):
    device = tensor_device(kind)
    gen = torch.Generator().manual_seed(6)
    pos = random_triangles(gen, 4).reshape(2, 6, 4).to(device).requires_grad_(True)
    tri = torch.tensor([[0, 1, 2], [3, 4, 5]], dtype=torch.int32, device=device)
    rast, db = dr.rasterize(context(kind), pos, tri, (16, 16))
    wr = torch.randn(rast.shape, generator=gen).to(device)
    wd = torch.randn(db.shape, generator=gen).to(device)
    ((rast * wr).sum() + (db * wd).sum()).backward()
    p64 = pos.detach().double().requires_grad_(True)
    uv, dbr = pixel_barycentrics(p64, tri, rast)
    ((uv * wr[..., :2].double()).sum() + (dbr * wd.double()).sum()).backward()
    assert torch.allclose(pos.grad.double(), p64.grad, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("kind", KINDS)
def test_backward_when_the_loss_uses_one_output(kind):
    """A loss of rast alone or rast_db alone gives the gradient of the same loss written with a
    zero-weighted term of the other output (the unused output's gradient is not materialized)."""
    device = tensor_device(kind)
    gen = torch.Generator().manual_seed(7)
    pos0 = random_triangles(gen, 4).reshape(2, 6, 4).to(device)
    tri = torch.tensor([[0, 1, 2], [3, 4, 5]], dtype=torch.int32, device=device)
    grads = {}
    for name in ("rast", "db", "rast+0db", "0rast+db", "id"):
        pos = pos0.clone().requires_grad_(True)
        rast, db = dr.rasterize(context(kind), pos, tri, (16, 16))
        loss = {"rast": lambda: (rast[..., :2] ** 2).sum(), "db": lambda: (db ** 2).sum(),
                "rast+0db": lambda: (rast[..., :2] ** 2).sum() + 0 * db.sum(),
                "0rast+db": lambda: 0 * rast.sum() + (db ** 2).sum(),
                "id": lambda: rast[..., 3].sum()}[name]()
        loss.backward()
        grads[name] = pos.grad
    torch.testing.assert_close(grads["rast"], grads["rast+0db"])  # (GPU atomics: any order)
    torch.testing.assert_close(grads["db"], grads["0rast+db"])
    assert grads["db"].abs().sum() > 0 and not grads["id"].any()


@pytest.mark.parametrize("kind", KINDS)
def test_outputs_without_a_gradient_to_pos_skip_autograd(kind):
    """pos without requires_grad, or under no_grad, gives the same outputs with no autograd node;
    with requires_grad the outputs carry one."""
    device = tensor_device(kind)
    pos = random_triangles(torch.Generator().manual_seed(9), 4).reshape(2, 6, 4).to(device)
    tri = torch.tensor([[0, 1, 2], [3, 4, 5]], dtype=torch.int32, device=device)
    for output_db in (True, False):
        ctx = context(kind, output_db=output_db)
        want = dr.rasterize(ctx, pos.clone().requires_grad_(True), tri, (16, 16))
        assert all(t.grad_fn is not None for t in want)
        for got in (dr.rasterize(ctx, pos, tri, (16, 16)), _no_grad_rasterize(ctx, pos, tri)):
            assert all(t.grad_fn is None and not t.requires_grad for t in got)
            for g, w in zip(got, want):
                assert g.shape == w.shape and torch.equal(g, w.detach())


def _no_grad_rasterize(ctx, pos, tri):
    with torch.no_grad():
        return dr.rasterize(ctx, pos.clone().requires_grad_(True), tri, (16, 16))


def test_manual_mode_and_threads():
    glctx = dr.RasterizeGLContext(mode="manual", device="cpu")
    pos = torch.tensor([[[-1, -1, 0, 1], [1, -1, 0, 1], [-1, 1, 0, 1]]], dtype=torch.float32)
    tri = torch.tensor([[0, 1, 2]], dtype=torch.int32)
    with pytest.raises(RuntimeError, match="set_context"):
        dr.rasterize(glctx, pos, tri, (4, 4))
    glctx.set_context()
    ref, _ = dr.rasterize(glctx, pos, tri, (4, 4))
    glctx.release_context()
    with pytest.raises(RuntimeError, match="manual mode"):
        context("cpu").set_context()
    # Automatic mode: any thread, one at a time; two contexts on two threads concurrently.
    results, errors = {}, []

    def work(i, ctx):
        try:
            for _ in range(5):
                results[i] = dr.rasterize(ctx, pos, tri, (4, 4))[0]
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    shared = context("cpu")
    threads = [threading.Thread(target=work, args=(i, c)) for i, c in
               enumerate([shared, shared, dr.RasterizeGLContext(device="cpu")])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and all(torch.equal(r, ref) for r in results.values())


def test_bad_inputs_raise_clear_errors():
    glctx = context("cpu")
    pos = torch.zeros(1, 3, 4)
    tri = torch.tensor([[0, 1, 2]], dtype=torch.int32)
    cases = [
        (dict(glctx=None), TypeError, "glctx must be a RasterizeGLContext"),
        (dict(pos=pos.double()), TypeError, "pos must have dtype float32"),
        (dict(pos=torch.zeros(1, 3, 3)), ValueError, "pos must have last dimension 4"),
        (dict(pos=torch.zeros(1, 1, 3, 4)), ValueError, "pos must be 2-D or 3-D"),
        (dict(tri=tri.long()), TypeError, "tri must have dtype int32"),
        (dict(tri=torch.tensor([[0, 1, 3]], dtype=torch.int32)), ValueError, r"tri indices must lie in \[0, 3\)"),
        (dict(tri=torch.tensor([[0, -1, 2]], dtype=torch.int32)), ValueError, "tri indices"),
        (dict(resolution=(0, 4)), ValueError, "resolution must be within"),
        (dict(resolution=(4, 100000)), ValueError, "resolution must be within"),
        (dict(resolution=4), TypeError, "resolution must be a"),
        (dict(ranges=torch.tensor([[0, 1]], dtype=torch.int32)), ValueError, "ranges must be None in instance mode"),
        (dict(pos=torch.zeros(3, 4)), ValueError, "range mode"),
        (dict(pos=torch.zeros(3, 4), ranges=torch.tensor([[0, 2]], dtype=torch.int32)), ValueError, "ranges run past"),
        (dict(pos=torch.zeros(3, 4), ranges=torch.tensor([[-1, 1]], dtype=torch.int32)), ValueError, "non-negative"),
        (dict(pos=torch.zeros(3, 4), ranges=torch.tensor([[0, 1]], dtype=torch.int64)), TypeError, "ranges must have dtype int32"),
    ]
    for override, exc, msg in cases:
        args = dict(glctx=glctx, pos=pos, tri=tri, resolution=(4, 4), ranges=None)
        args.update(override)
        with pytest.raises(exc, match=msg):
            dr.rasterize(**args)
    with pytest.raises(ValueError, match="mode must be one of"):
        dr.RasterizeGLContext(mode="auto")


def test_resolution_takes_any_pair_of_integers():
    """As nvdiffrast takes ``tuple(resolution)``: a list, a ``torch.Size``, NumPy integers,
    one-element integer tensors, a 1-D array or tensor of two; floats and bools are refused."""
    glctx = context("cpu")
    pos = torch.tensor([[[-0.8, -0.8, 0.0, 1.0], [0.8, -0.8, 0.0, 1.0], [0.0, 0.8, 0.0, 1.0]]])
    tri = torch.tensor([[0, 1, 2]], dtype=torch.int32)
    ref, _ = dr.rasterize(glctx, pos, tri, (12, 8))
    for resolution in ([12, 8], torch.Size([12, 8]), (np.int64(12), np.uint16(8)),
                       (torch.tensor(12), torch.tensor([8], dtype=torch.int16)), np.array([12, 8]),
                       torch.tensor([12, 8], dtype=torch.int32)):
        rast, _ = dr.rasterize(glctx, pos, tri, resolution)
        assert torch.equal(rast, ref), resolution
    for resolution in ((12.0, 8), np.array([12.0, 8.0]), torch.tensor([12.0, 8.0]), (True, 8),
                       np.array([[12, 8]]), "12", np.array([12, 8, 1]), (torch.tensor([12, 1]), 8)):
        with pytest.raises(TypeError, match=r"resolution must be a \(height, width\) pair of ints"):
            dr.rasterize(glctx, pos, tri, resolution)


MESA_SCENE = __import__("pathlib").Path(__file__).parent / "data" / "mesa_scene.pt"


def reference_scene():
    gen = torch.Generator().manual_seed(7)
    V = 60
    pos = random_triangles(gen, V // 3).reshape(1, V, 4).repeat(2, 1, 1)
    pos[1] *= 1.1
    tri = torch.randint(0, V, (40, 3), generator=gen, dtype=torch.int32)
    return pos, tri, (45, 61)


def test_mesa_render_matches_stored_reference():
    """The stored Mesa render (which the GPU test compares CUDA against) is what Mesa gives now."""
    glctx = context("cpu")
    if "llvmpipe" not in glctx.renderer:
        pytest.skip("the stored reference was rendered by Mesa's llvmpipe")
    pos, tri, res = reference_scene()
    rast, db = dr.rasterize(glctx, pos, tri, res)
    stored = torch.load(MESA_SCENE)
    assert torch.equal(rast, stored["rast"]) and torch.equal(db, stored["rast_db"])


@pytest.mark.gpu
def test_cuda_equals_mesa_and_makes_no_host_copies():
    pos, tri, res = reference_scene()
    stored = torch.load(MESA_SCENE)
    pc, tc = pos.cuda().requires_grad_(True), tri.cuda()
    gpu = dr.rasterize(context("cuda"), pc, tc, res)
    for key, b in zip(("rast", "rast_db"), gpu):
        a, b = stored[key], b.detach().cpu()
        ids_differ = stored["rast"][..., 3] != gpu[0][..., 3].cpu()
        assert ids_differ.float().mean() < 0.005  # pixels on edges may go either way
        same = ~ids_differ
        assert (a[same] - b[same]).abs().max() < 1e-6
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                            torch.profiler.ProfilerActivity.CUDA]) as prof:
        rast, db = dr.rasterize(context("cuda"), pc, tc, res)
        torch.cuda.synchronize()
    names = [e.name for e in prof.events()]
    assert not any("DtoH" in n or "Device -> Pageable" in n or "DeviceToHost" in n for n in names), names


def test_missing_egl_raises_an_error_that_says_what_to_install(monkeypatch):
    from diffrast.gl_backend import egl
    monkeypatch.setattr(egl, "_devices", lambda EGL: (_ for _ in ()).throw(
        egl.EGLError(f"EGL reports no devices. {egl._INSTALL_HINT}")))
    with pytest.raises(egl.EGLError, match="apt-get install libegl1 libegl-mesa0"):
        dr.RasterizeGLContext(device="cpu")


def test_released_context_raises_and_contexts_can_be_recreated():
    pos = torch.tensor([[[-1, -1, 0, 1], [1, -1, 0, 1], [-1, 1, 0, 1]]], dtype=torch.float32)
    tri = torch.tensor([[0, 1, 2]], dtype=torch.int32)
    for _ in range(5):
        glctx = dr.RasterizeGLContext(device="cpu")
        dr.rasterize(glctx, pos, tri, (8, 8))
        glctx.release()
    with pytest.raises(RuntimeError, match="released"):
        dr.rasterize(glctx, pos, tri, (8, 8))
