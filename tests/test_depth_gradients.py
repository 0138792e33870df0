"""rasterize(..., grad_depth=True): the gradient of the z/w channel reaches pos exactly, in both
contexts; without it (the default, nvdiffrast's semantics) z/w carries none."""
import pytest
import torch

import diffrast as dr
from helpers.contexts import KINDS, context, tensor_device
from diffrast.reference import rasterize as ref


def scene(device, dtype=torch.float32):
    # Two perspective triangles (w differs per vertex), overlapping at different depths.
    pos = torch.tensor([[[-0.8, -0.7, 0.1, 1.0], [0.9, -0.5, 0.3, 1.3], [-0.2, 0.8, -0.2, 0.9],
                         [-0.9, 0.6, 0.5, 1.1], [0.7, 0.7, -0.4, 0.8], [0.1, -0.9, 0.2, 1.2]]],
                       dtype=dtype, device=device)
    tri = torch.tensor([[0, 1, 2], [3, 4, 5]], dtype=torch.int32, device=device)
    return pos, tri


def depth_of(pos, tri, rast):
    """z/w at every covered pixel of ``rast`` from the reference formulas, differentiable in
    ``pos``: ``(pixels, values)``."""
    (b, y, x), c, rows = ref._covered(pos, tri, ref._ids(rast))
    uv, _ = ref._formulas(c, x, y, rast.shape[1], rast.shape[2])
    z = pos.reshape(-1, 4)[:, 2][rows]
    return (b, y, x), ref.depth(uv, c, z)


def test_reference_depth_is_what_rasterize_returns():
    glctx = context("cpu")
    pos, tri = scene("cpu")
    rast, _ = dr.rasterize(glctx, pos, tri, (23, 31))
    (b, y, x), zw = depth_of(pos.double(), tri, rast)
    assert zw.numel() > 100
    torch.testing.assert_close(rast[b, y, x, 2].double(), zw, rtol=0, atol=2e-7)


def test_gradcheck_of_the_reference_depth():
    glctx = context("cpu")
    pos, tri = scene("cpu")
    rast, _ = dr.rasterize(glctx, pos, tri, (9, 11))
    torch.autograd.gradcheck(lambda p: depth_of(p, tri, rast)[1],
                             (pos.double().requires_grad_(),))


def test_reference_backward_equals_autograd_of_the_formulas():
    glctx = context("cpu")
    pos, tri = scene("cpu")
    rast, _ = dr.rasterize(glctx, pos, tri, (15, 17))
    g = torch.randn(rast.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    p = pos.double().requires_grad_()
    (b, y, x), zw = depth_of(p, tri, rast)
    uv, _ = ref.pixel_barycentrics(p, tri, rast)
    loss = (zw * g[b, y, x, 2]).sum() + (uv * g[..., :2]).sum()
    (want,) = torch.autograd.grad(loss, p)
    got = ref.rasterize_grad(pos.double(), tri, rast, g, None, grad_depth=True)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("kind", KINDS)
def test_depth_loss_gradient_matches_finite_differences(kind, deterministic):
    """Moving the vertices changes the rendered z/w as the gradient says (interior pixels)."""
    deterministic(True)
    glctx = context(kind)
    device = tensor_device(kind)
    pos, tri = scene(device)
    res = (40, 52)
    weights = torch.rand(1, *res, generator=torch.Generator().manual_seed(2)).to(device)

    def loss(p, w, **kw):
        rast, _ = dr.rasterize(glctx, p, tri, res, **kw)
        return (rast[..., 2] * w).sum(), rast

    # A small step along a random direction; pixels whose triangle changes (at edges) are left
    # out of the loss, so that it is smooth in the step.
    d = torch.randn(pos.shape, generator=torch.Generator().manual_seed(3)).to(device) * 1e-3
    with torch.no_grad():
        _, r0 = loss(pos, weights)
        _, r_up = loss(pos + d, weights)
        _, r_down = loss(pos - d, weights)
    same = (r_up[..., 3] == r0[..., 3]) & (r_down[..., 3] == r0[..., 3]) & (r0[..., 3] > 0)
    assert same.sum() > 500
    w = weights * same
    p = pos.clone().requires_grad_()
    value, _ = loss(p, w, grad_depth=True)
    value.backward()
    assert p.grad[..., 2].abs().sum() > 0
    with torch.no_grad():
        fd = (loss(pos + d, w)[0] - loss(pos - d, w)[0]).double() / 2
    torch.testing.assert_close((p.grad * d).sum().double(), fd, rtol=2e-2, atol=1e-5)
    # Without grad_depth, z/w carries no gradient (nvdiffrast's semantics).
    q = pos.clone().requires_grad_()
    value, _ = loss(q, w)
    value.backward()
    assert q.grad is None or not q.grad.any()


@pytest.mark.parametrize("kind", KINDS)
def test_depth_peeler_and_compile_take_grad_depth(kind, deterministic):
    deterministic(True)
    glctx = context(kind)
    device = tensor_device(kind)
    pos, tri = scene(device)

    def peeled(p):
        with dr.DepthPeeler(glctx, p, tri, (16, 16), grad_depth=True) as peeler:
            a = peeler.rasterize_next_layer()[0]
            b = peeler.rasterize_next_layer()[0]
        return a[..., 2].sum() + 2 * b[..., 2].sum()

    def plain(p):
        return dr.rasterize(glctx, p, tri, (16, 16), grad_depth=True)[0][..., 2].sum()

    for fn in (peeled, plain):
        p1 = pos.clone().requires_grad_()
        fn(p1).backward()
        assert p1.grad[..., 2].any()
        torch._dynamo.reset()
        p2 = pos.clone().requires_grad_()
        torch.compile(fn, fullgraph=True, backend="aot_eager")(p2).backward()
        assert torch.equal(p1.grad, p2.grad)
    torch._dynamo.reset()
