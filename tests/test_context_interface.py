"""The rasterizer context interface (``diffrast.raster_context.RasterContext``): both contexts
implement it, ``rasterize.py`` knows no context type, and a user's own context works with
``rasterize``, its gradients and ``DepthPeeler``'s checks."""
import ast
import inspect
import os

import pytest
import torch

import diffrast as dr
from diffrast import raster_context
from diffrast.raster_context import RasterContext
from helpers.raster_util import rasterize_torch

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
POS = torch.tensor([[[-0.8, -0.7, 0.2, 1.0], [0.9, -0.6, -0.1, 1.0], [-0.1, 0.8, 0.4, 1.0]]])
TRI = torch.tensor([[0, 1, 2]], dtype=torch.int32)
INTERFACE = ("device", "output_db", "active_peeler", "capturable", "max_resolution",
             "max_layers", "check_usable", "check_device", "render")


def _check_implements(ctx):
    assert isinstance(ctx, RasterContext)
    for name in INTERFACE:
        assert hasattr(ctx, name), name
    assert isinstance(ctx.device, torch.device)
    assert isinstance(ctx.output_db, bool)
    assert ctx.active_peeler is None
    h, w = ctx.max_resolution
    assert isinstance(h, int) and isinstance(w, int) and h >= 2048 and w >= 2048
    assert isinstance(ctx.max_layers, int) and ctx.max_layers >= 1
    ctx.check_usable()
    expected = inspect.signature(RasterContext.render).parameters.keys()
    assert inspect.signature(type(ctx).render).parameters.keys() == expected


def _render_directly(ctx, pos, tri, resolution):
    """``render`` called as the ops call it, into buffers allocated here."""
    rast = torch.full((pos.shape[0], *resolution, 4), float("nan"), device=pos.device)
    rast_db = torch.full_like(rast, float("nan")) if ctx.output_db else None
    ctx.render(pos, tri, resolution, None, 0, False, rast, rast_db)
    return rast, rast_db


def test_gl_context_implements_the_interface():
    ctx = dr.RasterizeGLContext(device="cpu")
    _check_implements(ctx)
    assert not ctx.capturable  # its custom op stays out of CUDA graphs
    ctx.check_device(POS)
    rast, rast_db = _render_directly(ctx, POS, TRI, (16, 12))
    want, want_db = dr.rasterize(ctx, POS, TRI, (16, 12))
    assert torch.equal(rast, want) and torch.equal(rast_db, want_db)
    ctx.release()
    with pytest.raises(RuntimeError, match="glctx has been released"):
        ctx.check_usable()


def test_gl_context_without_db_renders_no_db():
    ctx = dr.RasterizeGLContext(device="cpu", output_db=False)
    rast, rast_db = _render_directly(ctx, POS, TRI, (8, 8))
    assert rast_db is None and not torch.isnan(rast).any()
    ctx.release()


@pytest.mark.gpu
def test_cuda_context_implements_the_interface():
    ctx = dr.RasterizeCudaContext()
    _check_implements(ctx)
    assert ctx.capturable
    pos, tri = POS.cuda(), TRI.cuda()
    ctx.check_device(pos)
    with pytest.raises(ValueError, match="the device of the RasterizeCudaContext"):
        ctx.check_device(POS)
    rast, rast_db = _render_directly(ctx, pos, tri, (16, 12))
    want, want_db = dr.rasterize(ctx, pos, tri, (16, 12))
    assert torch.equal(rast, want) and torch.equal(rast_db, want_db)


def test_rasterize_module_names_no_context_class():
    """``rasterize.py`` imports neither context module, names neither class in its code (its
    messages may), and reads no private attribute of a context."""
    with open(os.path.join(ROOT, "diffrast", "rasterize.py"), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    classes = {"RasterizeGLContext", "RasterizeCudaContext"}
    modules = {"context", "cuda_context"}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in classes:
            found.append(node.id)
        elif isinstance(node, ast.Attribute):
            if node.attr in classes | modules:
                found.append(node.attr)
            holder = ast.unparse(node.value)
            if holder in ("glctx", "self._glctx") and node.attr.startswith("_"):
                found.append(f"{holder}.{node.attr}")
        elif isinstance(node, ast.ImportFrom):
            if (node.module or "").rsplit(".", 1)[-1] in modules:
                found.append(node.module)
            found += [a.name for a in node.names if a.name in classes | modules]
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.rsplit(".", 1)[-1] in modules]
    assert not found, found


class TorchContext(RasterContext):
    """A user's context: renders on the CPU with the brute-force torch rasterizer of the tests
    (no derivatives, no peeling)."""

    max_resolution = (64, 64)
    max_layers = 2

    def __init__(self):
        self.device = torch.device("cpu")
        self.output_db = False
        self.calls = 0
        super().__init__()

    def render(self, pos, tri, resolution, ranges, layer_index, peel, rast, rast_db):
        assert rast_db is None and not peel
        self.calls += 1
        if rast.shape[0]:
            rast.copy_(rasterize_torch(pos, tri, resolution, ranges))


def test_a_subclass_of_the_interface_renders_with_rasterize():
    ctx = TorchContext()
    gen = torch.Generator().manual_seed(3)
    pos = POS.repeat(3, 1, 1) + 0.05 * torch.randn(3, 3, 4, generator=gen) * torch.tensor(
        [1.0, 1.0, 1.0, 0.0])
    rast, rast_db = dr.rasterize(ctx, pos, TRI, (24, 20))
    assert ctx.calls == 1 and rast_db.shape == (3, 24, 20, 0)
    assert torch.equal(rast, rasterize_torch(pos, TRI, (24, 20)))
    # The same pixels as OpenGL, but for a few on edges.
    gl, _ = dr.rasterize(dr.RasterizeGLContext(device="cpu", output_db=False), pos, TRI, (24, 20))
    same = (gl[..., 3] == rast[..., 3])
    assert (~same).sum() <= 0.02 * same.numel()
    both = same & (gl[..., 3] > 0)
    assert torch.allclose(gl[both][:, :3], rast[both][:, :3], atol=1e-4)

    # Gradients flow through the common backward, as for the built-in contexts.
    leaf = pos.clone().requires_grad_()
    rast, _ = dr.rasterize(ctx, leaf, TRI, (24, 20))
    rast[..., :2].sum().backward()
    assert leaf.grad is not None and leaf.grad.abs().sum() > 0

    # Its limits and checks are the ones the ops apply.
    with pytest.raises(ValueError, match=r"resolution must be within \[1, 64\] x \[1, 64\]"):
        dr.rasterize(ctx, pos, TRI, (65, 8))
    with pytest.raises(ValueError, match="at most 2 images per batch"):
        dr.DepthPeeler(ctx, pos, TRI, (8, 8))
    with pytest.raises(ValueError, match="the device of the TorchContext"):
        ctx.check_device(pos.to("meta"))


def test_an_incomplete_subclass_cannot_be_created_and_other_objects_are_refused():
    class NoRender(RasterContext):
        max_resolution = (8, 8)
        max_layers = 1

    with pytest.raises(TypeError):
        NoRender()
    with pytest.raises(TypeError, match="glctx must be a RasterizeGLContext or "
                                        "RasterizeCudaContext, got object"):
        dr.rasterize(object(), POS, TRI, (4, 4))


def test_resolve_device_is_shared_by_both_contexts():
    from diffrast import context, cuda_context
    assert context.resolve_device is raster_context.resolve_device
    assert cuda_context.resolve_device is raster_context.resolve_device
