"""``texture`` and ``texture_construct_mip`` under ``torch.compile(fullgraph=True)``: the same
results and gradients as eager calls, and ``opcheck`` on their custom ops
(``diffrast::texture``, ``diffrast::texture_backward``, ``diffrast::texture_construct_mip``,
``diffrast::texture_construct_mip_backward``).

Tests run on three kinds of device: ``cpu`` (the PyTorch reference), ``emulated`` (the CUDA
kernels on CPU tensors through tests/helpers/kernel_emulator.py; skipped without a C++ compiler) and
``cuda`` (the CUDA kernels on the GPU, marked ``gpu``; in deterministic mode, so that eager and
compiled runs sum texture gradients in the same order).
"""
import importlib

import pytest
import torch

import diffrast as dr
from helpers import kernel_emulator
from diffrast import dispatch
from diffrast import cuda_backend_texture as cbt
from diffrast.texture import (TextureMipStack, _construct_mip_backward_op, _construct_mip_op,
                              _split_levels, _texture_backward_op, _texture_op,
                              _texture_own_mip_backward_op, _texture_own_mip_op)

tex_module = importlib.import_module("diffrast.texture")

FILTERS = ("nearest", "linear", "linear-mipmap-nearest", "linear-mipmap-linear")
KINDS = ["cpu", "emulated", pytest.param("cuda", marks=pytest.mark.gpu)]


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.fixture
def device(request, monkeypatch, deterministic):
    """The device of the test's tensors for its ``kind`` parameter (see the module docstring)."""
    kind = request.param
    if kind == "cpu":
        return torch.device("cpu")
    deterministic(kind == "cuda")
    return kernel_emulator.kernel_device(kind, request)


def is_emulated(device):
    """Whether ``device`` runs the CUDA kernels through the emulator (CPU tensors)."""
    return device.type == "cpu" and dispatch.uses_kernels(device)


def with_kinds(fn):
    return pytest.mark.parametrize("device", KINDS, indirect=True)(fn)


def make_inputs(cube, device, batch=2, h=3, w=4, size=8, channels=3, tex_batch=1, seed=0):
    """``(tex, uv, uv_da, bias)``: small random inputs whose levels of detail span the pyramid
    (footprints from 1/4 texel to the whole texture, biases of either sign)."""
    g = torch.Generator().manual_seed(seed)
    if cube:
        tex = torch.rand(tex_batch, 6, size, size, channels, generator=g)
        uv = torch.randn(batch, h, w, 3, generator=g)
        uv_da = torch.randn(batch, h, w, 6, generator=g)
    else:
        tex = torch.rand(tex_batch, size, size, channels, generator=g)
        uv = torch.rand(batch, h, w, 2, generator=g) * 2.0 - 0.5
        uv_da = torch.randn(batch, h, w, 4, generator=g)
    uv_da = uv_da * torch.exp2(torch.rand(batch, h, w, 1, generator=g) * 5.0 - 2.0) / size
    bias = torch.randn(batch, h, w, generator=g)
    return tuple(t.to(device) for t in (tex, uv, uv_da, bias))


def grads_of(fn, *inputs):
    """``(out, [grad of each input])`` of ``fn(*inputs)`` for fresh leaf copies of the inputs
    (``None`` inputs stay ``None``), with a fixed, uneven upstream gradient."""
    leaves = [None if x is None else x.detach().clone().requires_grad_() for x in inputs]
    out = fn(*leaves)
    weight = torch.linspace(-1.0, 2.0, out.numel(), dtype=out.dtype, device=out.device)
    (out * weight.view(out.shape)).sum().backward()
    return out.detach(), [None if x is None else x.grad for x in leaves]


def assert_identical(eager, compiled):
    """Same output and gradients, bit for bit; a gradient that is ``None`` in one is ``None`` in
    the other."""
    (oe, ge), (oc, gc) = eager, compiled
    assert torch.equal(oe, oc)
    assert len(ge) == len(gc)
    for k, (a, b) in enumerate(zip(ge, gc)):
        assert (a is None) == (b is None), f"gradient {k}: {a is None=} {b is None=}"
        if a is not None:
            assert torch.equal(a, b), f"gradient {k} differs"


def compile_aot(fn):
    return torch.compile(fn, fullgraph=True, backend="aot_eager")


# ----------------------------------------------------------------------------------------------
# Compiled results and gradients equal the eager ones


@with_kinds
@pytest.mark.parametrize("prebuilt", [False, True], ids=["mip-internal", "mip-prebuilt"])
@pytest.mark.parametrize("cube", [False, True], ids=["2d", "cube"])
@pytest.mark.parametrize("filter_mode", FILTERS)
def test_compiled_matches_eager(device, filter_mode, cube, prebuilt):
    if prebuilt and filter_mode in ("nearest", "linear") and is_emulated(device):
        pytest.skip("an unused stack: the same kernels as without one (time)")
    tex, uv, uv_da, bias = make_inputs(cube, device)
    boundary = "cube" if cube else "wrap"

    def fn(tex, uv, uv_da, bias):
        mip = dr.texture_construct_mip(tex, cube_mode=cube) if prebuilt else None
        return dr.texture(tex, uv, uv_da, bias, mip=mip, filter_mode=filter_mode,
                          boundary_mode=boundary)

    eager = grads_of(fn, tex, uv, uv_da, bias)
    assert_identical(eager, grads_of(compile_aot(fn), tex, uv, uv_da, bias))
    _, (g_tex, g_uv, g_da, g_bias) = eager
    assert g_tex is not None and g_tex.abs().sum() > 0
    assert (g_uv is None) == (filter_mode == "nearest")
    assert (g_da is None) == (g_bias is None) == (filter_mode != "linear-mipmap-linear")


def limits_and_boundaries(boundary):
    """texture calls with ``boundary`` (a 2D mode), uv_da or bias alone, max_mip_level with and
    without a prebuilt stack, and a non-mipmapped mode, concatenated into one output."""
    def fn(tex, uv, uv_da, bias):
        stack = dr.texture_construct_mip(tex, max_mip_level=2)
        return torch.cat([
            dr.texture(tex, uv, uv_da, filter_mode="linear-mipmap-linear", boundary_mode=boundary,
                       max_mip_level=1),
            dr.texture(tex, uv, mip_level_bias=bias, boundary_mode=boundary, mip=stack),
            dr.texture(tex, uv, uv_da, bias, mip=stack, boundary_mode=boundary, max_mip_level=1),
            dr.texture(tex, uv, filter_mode="linear", boundary_mode=boundary),
        ], -1)
    return fn


@with_kinds
@pytest.mark.parametrize("boundary", ["clamp", "zero"])
def test_compiled_matches_eager_boundaries_and_limits(device, boundary):
    """Other boundary modes, per-image textures, a non-square texture, several uses of it."""
    tex, uv, uv_da, bias = make_inputs(False, device, tex_batch=2, seed=1)
    tex = tex[:, :, :4].contiguous()    # 8 x 4
    fn = limits_and_boundaries(boundary)
    assert_identical(grads_of(fn, tex, uv, uv_da, bias),
                     grads_of(compile_aot(fn), tex, uv, uv_da, bias))


@with_kinds
def test_compiled_matches_eager_odd_sizes(device):
    """A 6 x 5 texture (odd sides, a diffrast extension). Bit-identical with the CUDA kernels;
    with the reference, the texture's gradient only to rounding: its eager autograd graph adds the
    odd-side downsampling's several contributions to the sampling's one by one, the compiled
    graph adds their sum (mip backward op) to it."""
    tex, uv, uv_da, bias = make_inputs(False, device, size=6, tex_batch=2, seed=1)
    tex = tex[:, :, :5].contiguous()
    fn = limits_and_boundaries("wrap")
    eager, compiled = grads_of(fn, tex, uv, uv_da, bias), \
        grads_of(compile_aot(fn), tex, uv, uv_da, bias)
    if device.type == "cpu" and not is_emulated(device):
        torch.testing.assert_close(compiled[1][0], eager[1][0], rtol=1e-6, atol=1e-6)
        eager[1][0] = compiled[1][0]
    assert_identical(eager, compiled)


@with_kinds
@pytest.mark.parametrize("cube", [False, True], ids=["2d", "cube"])
def test_custom_mip_list_compiles(device, cube):
    """A custom stack (a list of tensors) receives gradients of its own; levels no pixel samples
    get zeros in compiled mode (the reference's eager autograd leaves them ``None``)."""
    tex, uv, uv_da, bias = make_inputs(cube, device, seed=2)
    levels = [lvl.detach().clone() for lvl in dr.texture_construct_mip(tex * 0.5, cube_mode=cube)
              .levels]
    boundary = "cube" if cube else "clamp"

    def fn(tex, uv, uv_da, bias, *levels):
        return dr.texture(tex, uv, uv_da, bias, mip=list(levels), boundary_mode=boundary)

    (oe, ge), (oc, gc) = (grads_of(f, tex, uv, uv_da, bias, *levels)
                          for f in (fn, compile_aot(fn)))
    ge = [torch.zeros_like(x) if g is None and k >= 4 else g
          for k, (g, x) in enumerate(zip(ge, (tex, uv, uv_da, bias, *levels)))]
    assert_identical((oe, ge), (oc, gc))


@with_kinds
def test_stack_built_eagerly_passes_gradients_to_tex(device):
    """A TextureMipStack built outside the compiled function: the compiled texture's gradients
    reach the stack's levels and, through the eager graph that built them, the texture."""
    tex, uv, uv_da, bias = make_inputs(False, device, seed=3)

    def sample(tex, stack, uv, uv_da):
        return dr.texture(tex, uv, uv_da, mip=stack, boundary_mode="clamp")

    results = []
    for f in (sample, compile_aot(sample)):
        t, u = tex.clone().requires_grad_(), uv.clone().requires_grad_()
        stack = dr.texture_construct_mip(t)
        out = f(t, stack, u, uv_da)
        out.square().sum().backward()
        results.append((out.detach(), [t.grad, u.grad]))
    assert_identical(*results)


@with_kinds
def test_compiled_construct_mip_returns_a_stack(device):
    tex = make_inputs(True, device)[0]

    def build(tex):
        return dr.texture_construct_mip(tex, cube_mode=True, max_mip_level=2)

    eager, compiled = build(tex), compile_aot(build)(tex)
    assert isinstance(compiled, TextureMipStack) and compiled.cube_mode
    assert compiled.base_shape == tuple(tex.shape) and len(compiled) == len(eager) == 2
    for a, b in zip(eager.levels, compiled.levels):
        assert torch.equal(a, b)

    def mean_of_levels(tex):
        return sum(lvl.mean() for lvl in dr.texture_construct_mip(tex, cube_mode=True).levels)

    assert_identical(grads_of(mean_of_levels, tex), grads_of(compile_aot(mean_of_levels), tex))


@with_kinds
def test_float64_and_one_texel_textures_compile(device):
    """float64 (the reference on any device) and a 1 x 1 texture (an empty mip stack)."""
    tex, uv, uv_da, bias = (t.double() for t in make_inputs(False, device, seed=4))

    def fn(tex, uv, uv_da, bias):
        return dr.texture(tex, uv, uv_da, bias) + dr.texture(tex[:, :1, :1], uv, uv_da, bias)

    eager = grads_of(fn, tex, uv, uv_da, bias)
    compiled = grads_of(compile_aot(fn), tex, uv, uv_da, bias)
    if device.type == "cuda":
        # float64 runs the reference, whose texel gradient is a scatter-add: CUDA atomics, so
        # two eager runs differ in the last bits too (the CPU adds in a fixed order).
        torch.testing.assert_close(compiled, eager, rtol=1e-12, atol=1e-12)
    else:
        assert_identical(eager, compiled)


@with_kinds
def test_inductor(device):
    """The default backend (inductor), fullgraph: the same results to rounding."""
    tex, uv, uv_da, bias = make_inputs(False, device, seed=5)

    def fn(tex, uv, uv_da, bias):
        c = dr.texture(tex * 2.0, uv, uv_da, bias, filter_mode="linear-mipmap-linear")
        return torch.sigmoid(c) * 3.0

    (oe, ge), (oc, gc) = grads_of(fn, tex, uv, uv_da, bias), \
        grads_of(torch.compile(fn, fullgraph=True), tex, uv, uv_da, bias)
    torch.testing.assert_close(oc, oe)
    for a, b in zip(ge, gc):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# opcheck on the custom ops


@with_kinds
@pytest.mark.parametrize("cube", [False, True], ids=["2d", "cube"])
def test_opcheck_construct_mip(device, cube):
    tex = make_inputs(cube, device, size=4, channels=2, tex_batch=2)[0].requires_grad_()
    torch.library.opcheck(_construct_mip_op._opoverload, (tex, None, cube))
    torch.library.opcheck(_construct_mip_op._opoverload, (tex, 1, cube))
    flat = _construct_mip_op(tex.detach(), None, cube)
    torch.library.opcheck(_construct_mip_backward_op._opoverload, (tex.detach(), None, cube,
                                                       torch.randn_like(flat)))


@with_kinds
@pytest.mark.parametrize("cube", [False, True], ids=["2d", "cube"])
def test_opcheck_texture(device, cube):
    if cube and is_emulated(device):
        pytest.skip("the same Python code as 2d on the emulator (time)")
    tex, uv, uv_da, bias = make_inputs(cube, device, batch=2, h=2, w=3, size=4, channels=2)
    boundary = "cube" if cube else "clamp"
    levels = [lvl.clone() for lvl in
              _split_levels(_construct_mip_op(tex, None, cube), tex.shape, cube, None)]
    grad = torch.randn(2, 2, 3, 2).to(device)
    args = [tex, uv, uv_da, bias, levels]
    need = [x.clone().requires_grad_() for x in args[:4]] + [
        [lvl.clone().requires_grad_() for lvl in levels]]
    torch.library.opcheck(_texture_op._opoverload, (*need, "linear-mipmap-linear", boundary))
    torch.library.opcheck(_texture_op._opoverload,
                          (need[0], need[1], None, None, [], "nearest", boundary))
    torch.library.opcheck(_texture_backward_op._opoverload,
                          (*args, "linear-mipmap-linear", boundary, grad,
                                                 [True] * 5))
    torch.library.opcheck(_texture_backward_op._opoverload,
                          (*args, "linear-mipmap-nearest", boundary, grad,
                                                 [False, True, True, False, True]))


@with_kinds
@pytest.mark.parametrize("cube", [False, True], ids=["2d", "cube"])
def test_opcheck_texture_own_mip(device, cube):
    """The op of a mipmapped call whose levels are built inside (what eager mode runs as one
    node), with and without levels (max_mip_level=0), and its backward."""
    if cube and is_emulated(device):
        pytest.skip("the same Python code as 2d on the emulator (time)")
    tex, uv, uv_da, bias = make_inputs(cube, device, batch=2, h=2, w=3, size=4, channels=2)
    boundary = "cube" if cube else "clamp"
    need = [x.clone().requires_grad_() for x in (tex, uv, uv_da, bias)]
    for filter_mode in ("linear-mipmap-linear", "linear-mipmap-nearest"):
        for max_level in (None, 0):
            torch.library.opcheck(_texture_own_mip_op._opoverload,
                                  (*need, max_level, filter_mode, boundary))
    _, flat = _texture_own_mip_op(tex, uv, uv_da, bias, None, "linear-mipmap-linear", boundary)
    grad = torch.randn(2, 2, 3, 2).to(device)
    for needs in ([True] * 4, [True, False, True, False], [False, True, False, False]):
        torch.library.opcheck(_texture_own_mip_backward_op._opoverload,
                              (tex, uv, uv_da, bias, flat, None, "linear-mipmap-linear",
                               boundary, grad, needs))
