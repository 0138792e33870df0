"""rasterize, DepthPeeler and interpolate under ``torch.compile(fullgraph=True)``, and a whole
training step compiled: the same results and gradients as eager calls, and ``opcheck`` on the
custom ops (texture and antialias: tests/test_compile_texture.py, tests/test_compile_antialias.py).
"""
import math

import pytest
import torch
import torch._inductor.config

import diffrast as dr
from helpers.contexts import KINDS, context, tensor_device
from diffrast import geometry
from diffrast.interpolate import _interpolate_backward_op, _interpolate_op
from diffrast.rasterize import _rasterize_backward_op, _rasterize_gl_op, _rasterize_op


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def sphere_scene(device, batch=2, rows=8, cols=16, tex_size=16):
    gen = torch.Generator().manual_seed(0)
    pos, tri, uv = geometry.uv_sphere(rows, cols)
    proj = geometry.perspective(45.0) @ geometry.translate(0, 0, -3.0)
    mvp = torch.stack([proj @ geometry.rotate_y(2 * math.pi * b / batch) @ geometry.rotate_x(0.3)
                       for b in range(batch)])
    clip = geometry.transform(pos, mvp).contiguous()
    tex = torch.rand(1, tex_size, tex_size, 3, generator=gen)
    col = torch.rand(pos.shape[0], 3, generator=gen)
    return clip.to(device), tri.to(device), uv.to(device), tex.to(device), col.to(device)


def textured_render(glctx, tri, topology, res=(32, 32), mask=False):
    """The benchmark's image formation as ``fn(clip, tex, uv) -> color``: rasterize, interpolate
    with derivatives, mipmapped texture, (optionally) the coverage mask, antialias with a prebuilt
    topology hash."""
    def render(clip, tex, uv):
        rast, rast_db = dr.rasterize(glctx, clip, tri, res)
        t, t_da = dr.interpolate(uv, rast, tri, rast_db=rast_db, diff_attrs="all")
        c = dr.texture(tex, t, t_da, filter_mode="linear-mipmap-linear")
        if mask:
            c = torch.where(rast[..., 3:] > 0, c, torch.zeros_like(c))
        return dr.antialias(c, rast, clip, tri, topology_hash=topology)
    return render


def grads_of(fn, *inputs):
    """``(loss, [grad of each input])`` of ``fn(*inputs)`` for fresh leaf copies of the inputs."""
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    loss = fn(*leaves)
    loss.backward()
    return loss.detach(), [x.grad for x in leaves]


def assert_identical(eager, compiled):
    (le, ge), (lc, gc) = eager, compiled
    assert torch.equal(le, lc)
    for a, b in zip(ge, gc):
        assert torch.equal(a, b)


@pytest.mark.parametrize("kind", KINDS)
def test_rasterize_and_interpolate_compile_to_the_eager_results(kind, deterministic):
    deterministic(True)  # (float atomics on the GPU would make even two eager runs differ)
    glctx = context(kind)
    clip, tri, _, _, col = sphere_scene(tensor_device(kind))

    def step(clip, col):
        rast, rast_db = dr.rasterize(glctx, clip, tri, (24, 40))
        c, c_da = dr.interpolate(col, rast, tri, rast_db=rast_db, diff_attrs=[0, 2])
        return (c ** 2).sum() + c_da.abs().sum() + rast[..., :2].sum()

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    assert_identical(grads_of(step, clip, col), grads_of(compiled, clip, col))


@pytest.mark.parametrize("kind", KINDS)
def test_range_mode_compiles(kind, deterministic):
    deterministic(True)
    glctx = context(kind)
    clip, tri, _, _, col = sphere_scene(tensor_device(kind), batch=1)
    T = tri.shape[0]
    ranges = torch.tensor([[0, T // 2], [T // 2, T - T // 2], [0, T]], dtype=torch.int32)

    def step(pos, col):
        rast, _ = dr.rasterize(glctx, pos, tri, (20, 30), ranges=ranges)
        return dr.interpolate(col, rast, tri)[0].square().sum()

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    assert_identical(grads_of(step, clip[0], col), grads_of(compiled, clip[0], col))


@pytest.mark.parametrize("kind", KINDS)
def test_depth_peeler_compiles(kind):
    glctx = context(kind)
    clip, tri, _, _, col = sphere_scene(tensor_device(kind))

    def layers(clip):
        out = []
        with dr.DepthPeeler(glctx, clip, tri, (24, 24)) as peeler:
            for _ in range(3):
                out.append(peeler.rasterize_next_layer()[0])
        return torch.stack(out)

    eager = layers(clip)
    compiled = torch.compile(layers, fullgraph=True, backend="aot_eager")(clip)
    assert torch.equal(eager, compiled)
    assert (eager[1, ..., 3] > 0).any()  # the sphere's back faces make a second layer


@pytest.mark.parametrize("size_asserts", [True, False], ids=["size_asserts", "no_size_asserts"])
@pytest.mark.parametrize("kind", KINDS)
def test_training_step_compiles_with_inductor(kind, size_asserts):
    """The benchmark's training step (rasterize, interpolate with derivatives, mipmapped
    texture, antialias with a prebuilt hash, L2 loss, backward) with the default backend, with
    and without inductor's checks of each op output's sizes and strides (the README suggests
    turning them off for small scenes)."""
    glctx = context(kind)
    device = tensor_device(kind)
    clip, tri, uv, tex, _ = sphere_scene(device)
    topology = dr.antialias_construct_topology_hash(tri)
    target = torch.rand(2, 32, 32, 3, generator=torch.Generator().manual_seed(1)).to(device)

    render = textured_render(glctx, tri, topology, mask=True)

    def step(clip, tex, uv):
        return (render(clip, tex, uv) - target).square().mean()

    compiled = torch.compile(step, fullgraph=True)
    with torch._inductor.config.patch(size_asserts=size_asserts):
        (le, ge), (lc, gc) = grads_of(step, clip, tex, uv), grads_of(compiled, clip, tex, uv)
    torch.testing.assert_close(lc, le)
    for a, b in zip(ge, gc):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_training_step_compiled_is_bit_identical_in_deterministic_mode(kind, deterministic):
    deterministic(True)
    glctx = context(kind)
    device = tensor_device(kind)
    clip, tri, uv, tex, _ = sphere_scene(device)
    topology = dr.antialias_construct_topology_hash(tri)

    render = textured_render(glctx, tri, topology)

    def step(clip, tex, uv):
        return render(clip, tex, uv).square().sum()

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    assert_identical(grads_of(step, clip, tex, uv), grads_of(compiled, clip, tex, uv))


@pytest.mark.parametrize("kind", KINDS)
def test_opcheck_rasterize(kind):
    glctx = context(kind)
    clip, tri, _, _, _ = sphere_scene(tensor_device(kind))
    handle = glctx._library_handle
    pos = clip.detach().requires_grad_()
    op = _rasterize_op if kind == "cudarast" else _rasterize_gl_op
    for grad_depth in (False, True):
        torch.library.opcheck(op._opoverload,
                              (handle, pos, tri, 16, 20, None, 0, False, True, grad_depth))
    rast, _ = op(handle, clip, tri, 16, 20, None, 0, False, True, False)
    grad = torch.randn_like(rast)
    for grad_depth in (False, True):
        torch.library.opcheck(_rasterize_backward_op._opoverload,
                              (clip, tri, rast, grad, torch.randn_like(rast), grad_depth))
    ranges = torch.tensor([[0, 10], [5, 30]], dtype=torch.int32)
    torch.library.opcheck(op._opoverload,
                          (handle, clip[0], tri, 16, 20, ranges, 0, False, True, False))


@pytest.mark.parametrize("kind", KINDS)
def test_opcheck_interpolate(kind):
    glctx = context(kind)
    clip, tri, _, _, col = sphere_scene(tensor_device(kind))
    rast, rast_db = dr.rasterize(glctx, clip, tri, (16, 20))
    args = (col.requires_grad_(), rast.requires_grad_(), tri, rast_db.requires_grad_(), [2, 0])
    torch.library.opcheck(_interpolate_op._opoverload, args)
    torch.library.opcheck(_interpolate_op._opoverload, (col, rast, tri, None, []))
    g, g_da = torch.randn(*rast.shape[:3], 3), torch.randn(*rast.shape[:3], 4)
    g, g_da = g.to(col.device), g_da.to(col.device)
    torch.library.opcheck(_interpolate_backward_op._opoverload, (col.detach(), rast.detach(), tri,
                                                     rast_db.detach(), [2, 0], g, g_da,
                                                     [True, True, True]))


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["cuda", "cudarast"])
def test_reduce_overhead_mode(kind, deterministic):
    """mode="reduce-overhead": inductor captures the CUDA context's ops in CUDA graphs and leaves
    the OpenGL context's rasterize uncaptured (its op is tagged cudagraph_unsafe)."""
    deterministic(True)
    glctx = context(kind)
    clip, tri, uv, tex, _ = sphere_scene("cuda")
    topology = dr.antialias_construct_topology_hash(tri)

    render = textured_render(glctx, tri, topology)

    def step(clip, tex, uv):
        return render(clip, tex, uv).square().sum()

    compiled = torch.compile(step, fullgraph=True, mode="reduce-overhead")
    for _ in range(3):  # recording, then replays
        got = grads_of(compiled, clip, tex, uv)
    (le, ge), (lc, gc) = grads_of(step, clip, tex, uv), got
    torch.testing.assert_close(lc, le)
    for a, b in zip(ge, gc):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)
