"""The CUDA texture kernels (cuda_ops/texture_{forward,backward}.cu and
cuda_ops/texture_mip_{forward,backward}.cu through diffrast.cuda_backend_texture) against the
reference (diffrast.reference.texture / mipmap).

Tests that take the ``kernels`` fixture run twice: on a GPU (``cuda``, marked ``gpu``; the
reference then runs on the same CUDA tensors) and on the CPU (``emulated``: the kernels compiled
as C++ and run by the lockstep warp emulator, tests/helpers/kernel_emulator.py, as they use warp
shuffles; skipped without a C++ compiler), so that the kernels' logic is checked in CI too. Tests marked ``gpu`` alone need the
real device (8192² textures, offsets past 2^31, run-to-run determinism, streams, timings).

Every comparison checks forward outputs and the gradients of every input (texture, uv, uv_da,
mip_level_bias, mip levels) for one fixed upstream gradient: NaN in the same places, finite
values within float32 tolerance of the reference's.
"""
import contextlib
import importlib
import math

import pytest
import torch

import diffrast as dr
from helpers import kernel_emulator
from diffrast import cuda_backend_texture as cbt
from diffrast import dispatch
from diffrast.cuda_ops import loader
from diffrast.reference import mipmap as ref_mipmap

tex_module = importlib.import_module("diffrast.texture")

FILTERS = ("nearest", "linear", "linear-mipmap-nearest", "linear-mipmap-linear")
MIP_FILTERS = ("linear-mipmap-nearest", "linear-mipmap-linear")


@pytest.fixture(params=[pytest.param("cuda", marks=pytest.mark.gpu), "emulated"])
def kernels(request, monkeypatch):
    """The device on which ``dr.texture`` runs the CUDA kernels for float32 tensors."""
    return kernel_emulator.kernel_device(request.param, request)


@contextlib.contextmanager
def reference_backend():
    """Within the block, ``dr.texture`` and ``dr.texture_construct_mip`` run the reference."""
    with dispatch.force(dispatch.REFERENCE):
        yield


@contextlib.contextmanager
def counting_launches():
    """Records ``(module, kernel)`` of every kernel launch within the block."""
    calls = []
    saved = loader.launch

    def launch(module, kernel, *args, **kw):
        calls.append((module, kernel))
        return saved(module, kernel, *args, **kw)

    loader.launch = launch
    try:
        yield calls
    finally:
        loader.launch = saved


# ----------------------------------------------------------------------------------------------
# Inputs and comparison


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def make_case(cube, tex_shape, B=2, h=6, w=7, C=3, seed=0, uv_range=(-1.0, 2.0), device="cpu"):
    """``(tex, uv, uv_da, bias)``: random inputs whose levels of detail span the pyramid."""
    g = _gen(seed)
    if cube:
        tex = torch.rand(tex_shape[0], 6, tex_shape[1], tex_shape[1], C, generator=g)
        uv = torch.randn(B, h, w, 3, generator=g)
        size = tex_shape[1]
        da = torch.randn(B, h, w, 6, generator=g)
    else:
        tex = torch.rand(tex_shape[0], tex_shape[1], tex_shape[2], C, generator=g)
        lo, hi = uv_range
        uv = torch.rand(B, h, w, 2, generator=g) * (hi - lo) + lo
        size = max(tex_shape[1], tex_shape[2])
        da = torch.randn(B, h, w, 4, generator=g)
    # Footprints from 1/4 texel to the whole texture.
    scale = torch.exp2(torch.rand(B, h, w, 1, generator=g) * (math.log2(size) + 2) - 2) / size
    da = da * scale
    bias = torch.randn(B, h, w, generator=g) * 1.5
    return tuple(t.to(device) for t in (tex, uv, da, bias))


def run_texture(tex, uv, uv_da=None, bias=None, mip=None, seed=7, grads=None, **kw):
    """Forward and backward through ``dr.texture`` with a fixed upstream gradient.

    ``grads`` says which of (tex, uv, uv_da, bias, mip levels) require grad (default: all
    given). ``mip`` is a list of level tensors (cloned, with grad) or a TextureMipStack (as is).
    Returns ``[out, grad_tex, grad_uv, grad_uv_da, grad_bias, *grad_levels]`` (None for inputs
    without a gradient)."""
    want = grads or (True, True, True, True, True)
    leaves = []

    def leaf(t, w):
        if t is None:
            return None
        t = t.detach().clone().requires_grad_(w)
        leaves.append(t)
        return t

    t = leaf(tex, want[0])
    u = leaf(uv, want[1])
    d = leaf(uv_da, want[2])
    b = leaf(bias, want[3])
    levels = None
    if isinstance(mip, (list, tuple)):
        levels = [leaf(m, want[4]) for m in mip]
        mip_arg = levels
    else:
        mip_arg = mip
    out = dr.texture(t, u, d, b, mip=mip_arg, **kw)
    g = torch.randn(out.shape, generator=_gen(seed)).to(out.device)
    inputs = [x for x in (t, u, d, b) + tuple(levels or ()) if x is not None and x.requires_grad]
    if inputs and out.requires_grad:
        res = iter(torch.autograd.grad(out, inputs, g, allow_unused=True))
    else:
        res = iter([None] * len(inputs))
    grads_out = []
    for x in (t, u, d, b) + tuple(levels or ()):
        grads_out.append(next(res) if x is not None and x.requires_grad else None)
    return [out.detach()] + grads_out


NAMES = ("out", "grad_tex", "grad_uv", "grad_uv_da", "grad_bias")


def assert_same(got, want, rtol=1e-4, atol=1e-5, names=NAMES):
    """Each entry: both None (or one None and the other all zero), NaN in the same places, finite
    values within rtol of each other plus atol times the largest finite magnitude."""
    for k, (a, b) in enumerate(zip(got, want)):
        name = names[k] if k < len(names) else f"grad_level{k - len(names) + 1}"
        if a is None and b is None:
            continue
        if a is None or b is None:
            x = a if a is not None else b
            assert not x.any(), f"{name}: one side is None, the other has non-zero entries"
            continue
        a, b = a.detach().cpu(), b.detach().cpu()
        assert a.shape == b.shape, f"{name}: shape {tuple(a.shape)} != {tuple(b.shape)}"
        assert torch.equal(a.isnan(), b.isnan()), (
            f"{name}: NaN at {a.isnan().sum()} entries, reference at {b.isnan().sum()}")
        for sign in (1, -1):
            assert torch.equal(a == sign * math.inf, b == sign * math.inf), f"{name}: inf mismatch"
        fin = b.isfinite()
        if fin.any():
            scale = b[fin].abs().max().item()
            torch.testing.assert_close(a[fin], b[fin], rtol=rtol, atol=atol * max(scale, 1.0),
                                       msg=lambda m: f"{name}: {m}")


def compare(device, tex, uv, uv_da=None, bias=None, mip=None, grads=None, **kw):
    """Kernels vs reference on the same inputs (on ``device``)."""
    args = tuple(None if t is None else t.to(device) for t in (tex, uv, uv_da, bias))
    if isinstance(mip, (list, tuple)):
        mip = [m.to(device) for m in mip]
    got = run_texture(*args, mip=mip, grads=grads, **kw)
    with reference_backend():
        want = run_texture(*args, mip=mip, grads=grads, **kw)
    assert_same(got, want)
    return got, want


# ----------------------------------------------------------------------------------------------
# Every filter and boundary mode against the reference


def _lod_variants(filter_mode):
    if filter_mode in MIP_FILTERS:
        return [("da",), ("da", "bias"), ("bias",)]
    return [()]


CASES_2D = [((2, 37, 53), "odd"), ((1, 16, 32), "pow2 broadcast"), ((2, 12, 20), "even npot")]


@pytest.mark.parametrize("tex_shape", [c[0] for c in CASES_2D], ids=[c[1] for c in CASES_2D])
@pytest.mark.parametrize("boundary", ["wrap", "clamp", "zero"])
@pytest.mark.parametrize("filter_mode", FILTERS)
def test_2d_matches_reference(kernels, tex_shape, boundary, filter_mode):
    uv_range = (-1.0, 2.0) if boundary == "wrap" else (-0.2, 1.2)
    tex, uv, da, bias = make_case(False, tex_shape, seed=sum(tex_shape) + len(boundary),
                                  uv_range=uv_range)
    for lod in _lod_variants(filter_mode):
        compare(kernels, tex, uv, da if "da" in lod else None, bias if "bias" in lod else None,
                filter_mode=filter_mode, boundary_mode=boundary)


CASES_CUBE = [((2, 8), 3), ((1, 5), 2), ((2, 1), 1), ((1, 6), 5)]


@pytest.mark.parametrize("tex_shape, channels", CASES_CUBE,
                         ids=["8x8 batched", "5x5 odd broadcast", "1x1 faces", "6x6 C5"])
@pytest.mark.parametrize("filter_mode", FILTERS)
def test_cube_matches_reference(kernels, tex_shape, channels, filter_mode):
    tex, uv, da, bias = make_case(True, tex_shape, C=channels, seed=tex_shape[1])
    for lod in _lod_variants(filter_mode):
        compare(kernels, tex, uv, da if "da" in lod else None, bias if "bias" in lod else None,
                filter_mode=filter_mode, boundary_mode="cube")


@pytest.mark.parametrize("channels", [1, 2, 3, 4, 5, 8])
def test_channel_counts(kernels, channels):
    tex, uv, da, bias = make_case(False, (1, 9, 14), C=channels, seed=channels)
    compare(kernels, tex, uv, da, bias, filter_mode="linear-mipmap-linear", boundary_mode="wrap")


def test_larger_image_and_batch(kernels):
    tex, uv, da, bias = make_case(False, (3, 64, 48), B=3, h=16, w=24, seed=3)
    compare(kernels, tex, uv, da, bias, filter_mode="linear-mipmap-linear", boundary_mode="clamp")
    compare(kernels, tex, uv, filter_mode="linear", boundary_mode="wrap")


@pytest.mark.parametrize("cube", [False, True], ids=["2d", "cube"])
@pytest.mark.parametrize("filter_mode", FILTERS)
def test_background_sampling_one_texel_over_many_warps(kernels, cube, filter_mode):
    """Long stretches of pixels that all sample one place (the background of an unmasked loss)
    among ordinary ones: the warps whose taps are uniform stage their sums and the stage
    reduction adds runs of them (here 7 runs of 64 warps, stretches crossing the runs' ends);
    gradients as the reference's."""
    tex, uv, da, bias = make_case(cube, (1, 16, 16) if not cube else (1, 16), B=2, h=70, w=100,
                                  C=3, seed=5)
    rows = torch.zeros(2, 70, 1, 1, dtype=torch.bool)
    rows[0, 3:40] = rows[1, 10:65] = True  # stretches of whole rows
    uv = torch.where(rows, torch.full_like(uv, 0.3), uv)
    da = torch.where(rows, torch.full_like(da, 0.01), da)
    lod = (da, bias) if filter_mode in MIP_FILTERS else (None, None)
    compare(kernels, tex, uv, *lod, filter_mode=filter_mode,
            boundary_mode="cube" if cube else "wrap")


@pytest.mark.parametrize("filter_mode", MIP_FILTERS)
@pytest.mark.parametrize("max_mip_level", [0, 1, 3])
def test_max_mip_level(kernels, filter_mode, max_mip_level):
    tex, uv, da, bias = make_case(False, (2, 37, 53), seed=11)
    compare(kernels, tex, uv, da, bias, filter_mode=filter_mode, boundary_mode="wrap",
            max_mip_level=max_mip_level)
    tex, uv, da, bias = make_case(True, (1, 8), seed=12)
    compare(kernels, tex, uv, da, bias, filter_mode=filter_mode, boundary_mode="cube",
            max_mip_level=max_mip_level)


@pytest.mark.parametrize("cube", [False, True], ids=["2d", "cube"])
@pytest.mark.parametrize("num_levels", [1, 3, None])
def test_user_mip_list(kernels, cube, num_levels):
    """A custom stack (possibly cut short) receives its own gradients; tex gets only its own."""
    tex, uv, da, bias = make_case(cube, (2, 8) if cube else (2, 19, 40), seed=13)
    levels = ref_mipmap.construct_mip_levels(tex, num_levels, cube)
    g = _gen(14)
    levels = [lvl + 0.1 * torch.randn(lvl.shape, generator=g) for lvl in levels]  # not a pyramid
    bm = "cube" if cube else "clamp"
    for fm in MIP_FILTERS:
        compare(kernels, tex, uv, da, bias, mip=levels, filter_mode=fm, boundary_mode=bm)
    # Gradients to the levels only, or to tex only.
    compare(kernels, tex, uv, da, bias, mip=levels, filter_mode="linear-mipmap-linear",
            boundary_mode=bm, grads=(False, False, False, False, True))
    compare(kernels, tex, uv, da, bias, mip=levels, filter_mode="linear-mipmap-linear",
            boundary_mode=bm, grads=(True, False, False, False, False))


def test_user_mip_list_in_one_buffer(kernels):
    """Levels that lie one after the other in memory are read in place."""
    tex, uv, da, bias = make_case(False, (1, 16, 24), seed=15)
    levels = ref_mipmap.construct_mip_levels(tex, None, False)
    flat = torch.cat([lvl.reshape(-1) for lvl in levels]).to(kernels)
    views, off = [], 0
    for lvl in levels:
        views.append(flat[off:off + lvl.numel()].view(lvl.shape))
        off += lvl.numel()
    assert cbt._chained(views)
    with counting_launches() as calls:
        got = run_texture(tex.to(kernels), uv.to(kernels), da.to(kernels), None, mip=views,
                          filter_mode="linear-mipmap-linear")
    assert [k for _, k in calls] == ["texture_fwd_2d_miplinear", "texture_bwd_2d_miplinear",
                                     "texture_grad_stage_reduce"]
    with reference_backend():
        want = run_texture(tex.to(kernels), uv.to(kernels), da.to(kernels), None, mip=views,
                           filter_mode="linear-mipmap-linear")
    assert_same(got, want)


@pytest.mark.parametrize("cube", [False, True], ids=["2d", "cube"])
def test_mip_stack_is_reused_and_differentiable(kernels, cube):
    """A TextureMipStack built on the device is not rebuilt by texture(); gradients through it
    reach the base texture as the reference's do."""
    tex, uv, da, bias = make_case(cube, (2, 8) if cube else (1, 37, 53), seed=16)
    tex, uv, da = tex.to(kernels), uv.to(kernels), da.to(kernels)
    bm = "cube" if cube else "wrap"
    results = []
    for backend in ("kernels", "reference"):
        ctx = reference_backend() if backend == "reference" else contextlib.nullcontext()
        with ctx:
            t = tex.clone().requires_grad_(True)
            u = uv.clone().requires_grad_(True)
            stack = dr.texture_construct_mip(t, cube_mode=cube)
            with counting_launches() as calls:
                out = dr.texture(t, u, da, mip=stack, filter_mode="linear-mipmap-linear",
                                 boundary_mode=bm)
            assert not any(k.startswith("mip_down") for _, k in calls)
            g = torch.randn(out.shape, generator=_gen(3)).to(out.device)
            gt, gu = torch.autograd.grad(out, [t, u], g)
            results.append([out.detach(), gt, gu])
    assert_same(results[0], results[1])


@pytest.mark.parametrize("cube", [False, True])
@pytest.mark.parametrize("filter_mode", MIP_FILTERS)
@pytest.mark.parametrize("deterministic_mode", [False, True])
def test_levels_built_inside_equal_a_prebuilt_stack_bit_for_bit(kernels, cube, filter_mode,
                                                              deterministic_mode, deterministic):
    """Without ``mip``, texture builds the levels inside one autograd node whose backward adds the
    levels' share of the base gradient in its last mip step; with a stack from
    texture_construct_mip, two nodes and autograd's sum. Outputs and every gradient agree bit
    for bit (in deterministic mode on a GPU: its float atomics add in another order each run)."""
    deterministic(deterministic_mode)
    tex, uv, da, bias = make_case(cube, (1, 16, 16) if cube else (2, 20, 24), seed=23)
    g = torch.randn(*uv.shape[:3], tex.shape[-1], generator=_gen(5))
    bm = "cube" if cube else "wrap"
    results = []
    for prebuilt in (False, True):
        t, u, d, b = (x.to(kernels).requires_grad_(True) for x in (tex, uv, da, bias))
        stack = dr.texture_construct_mip(t, cube_mode=cube) if prebuilt else None
        out = dr.texture(t, u, d, b, mip=stack, filter_mode=filter_mode, boundary_mode=bm)
        assert (type(out.grad_fn).__name__ == "_TextureOwnMipBackward") == (not prebuilt)
        grads = torch.autograd.grad(out, [t, u, d, b], g.to(kernels), allow_unused=True)
        results.append((out, *grads))
    exact = deterministic_mode or kernels.type != "cuda"  # (float atomics vary run to run)
    for got, want in zip(*results):
        assert (got is None) == (want is None)
        if got is not None and exact:
            assert torch.equal(got, want)
        elif got is not None:
            torch.testing.assert_close(got, want)


def test_mip_stack_read_whole_or_as_edited(kernels):
    """An unchanged stack from texture_construct_mip is read as its one buffer (no per-level
    checks); the same levels as a list give the same bits. A stack whose ``levels`` were edited
    is checked and read as edited: a level of the wrong shape raises, a replaced level is used."""
    tex, uv, da, _ = make_case(False, (1, 24, 20), seed=19)
    tex, uv, da = tex.to(kernels), uv.to(kernels), da.to(kernels)
    with torch.no_grad():
        stack = dr.texture_construct_mip(tex)
    mode = "linear-mipmap-linear"
    whole = dr.texture(tex, uv, da, mip=stack, filter_mode=mode)
    assert torch.equal(whole, dr.texture(tex, uv, da, mip=list(stack.levels), filter_mode=mode))
    first = stack.levels[0]
    stack.levels[0] = torch.zeros_like(first)
    edited = dr.texture(tex, uv, da, mip=stack, filter_mode=mode)
    assert torch.equal(edited, dr.texture(tex, uv, da, mip=list(stack.levels), filter_mode=mode))
    assert not torch.equal(edited, whole)
    stack.levels[0] = first[:, :-1]
    with pytest.raises(ValueError, match=r"mip\.levels\[0\]"):
        dr.texture(tex, uv, da, mip=stack, filter_mode=mode)
    stack.levels[0] = first
    assert torch.equal(dr.texture(tex, uv, da, mip=stack, filter_mode=mode), whole)


def test_mip_stack_without_grad(kernels):
    tex, uv, da, bias = make_case(False, (1, 21, 30), seed=17)
    tex, uv, da = tex.to(kernels), uv.to(kernels), da.to(kernels)
    with torch.no_grad():
        stack = dr.texture_construct_mip(tex)
    got = run_texture(tex, uv, da, mip=stack, filter_mode="linear-mipmap-linear")
    with reference_backend():
        want = run_texture(tex, uv, da, mip=stack, filter_mode="linear-mipmap-linear")
    assert_same(got, want)


@pytest.mark.parametrize("filter_mode", ["linear", "linear-mipmap-linear"])
@pytest.mark.parametrize("mip", ["own", "stack", "list"])
def test_forward_without_grad_records_nothing_and_equals_the_recorded_forward(kernels, filter_mode,
                                                                              mip):
    """Where no input needs a gradient (or grad mode is off) the kernels run without an autograd
    node (texture, texture_construct_mip): the same output, bit for bit, as a recording call."""
    tex, uv, da, bias = (t.to(kernels) for t in make_case(False, (1, 21, 30), seed=19))
    with reference_backend():
        levels = list(dr.texture_construct_mip(tex).levels)

    def call(t, grad):
        t = t.detach().clone().requires_grad_(grad)
        stack = {"own": None, "stack": dr.texture_construct_mip(t), "list": levels}[mip]
        if mip == "stack":
            assert all(m.requires_grad == (grad and torch.is_grad_enabled()) for m in stack.levels)
        return dr.texture(t, uv, da, bias, mip=stack, filter_mode=filter_mode)

    plain, recorded = call(tex, False), call(tex, True)
    with torch.no_grad():
        off = call(tex, True)
    assert plain.grad_fn is None and off.grad_fn is None and recorded.grad_fn is not None
    assert torch.equal(plain, recorded.detach()) and torch.equal(off, plain)
    with reference_backend():
        want = dr.texture(tex, uv, da, bias, mip=None if mip == "own" else levels,
                          filter_mode=filter_mode)
    torch.testing.assert_close(plain, want, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Mip construction


MIP_SHAPES = [(1, 16, 16, 3), (2, 37, 53, 2), (1, 64, 32, 1), (1, 1, 13, 4), (1, 13, 1, 2),
              (1, 3, 3, 1), (1, 40, 24, 5), (2, 1, 1, 3), (1, 48, 80, 2), (1, 256, 64, 1),
              (2, 32, 16, 4)]


@pytest.mark.parametrize("shape", MIP_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("max_mip_level", [None, 2])
def test_construct_mip_matches_reference(kernels, shape, max_mip_level):
    tex = torch.rand(shape, generator=_gen(sum(shape))).to(kernels)
    _check_mip(tex, max_mip_level, False)


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_construct_mip_of_a_misaligned_texture(kernels, channels):
    """A contiguous texture whose data starts 4 bytes past a 16-byte boundary (a view at storage
    offset 1), passed as it is (no clone): the pyramid must come out right without any vector
    access that assumes an aligned texture (the emulator fails on a misaligned float4 access, as
    the GPU does)."""
    n = 2 * 32 * 16 * channels
    flat = torch.rand(n + 1, generator=_gen(channels)).to(kernels)
    tex = flat[1:].view(2, 32, 16, channels)
    assert tex.is_contiguous() and tex.data_ptr() % 16 != 0
    got = dr.texture_construct_mip(tex).levels
    want = ref_mipmap.construct_mip_levels(tex.clone(), None, False)
    assert len(got) == len(want) == 5
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("size", [1, 2, 5, 8, 12, 32])
def test_construct_mip_cube(kernels, size):
    tex = torch.rand(2, 6, size, size, 3, generator=_gen(size)).to(kernels)
    _check_mip(tex, None, True)


def _check_mip(tex, max_mip_level, cube):
    t = tex.clone().requires_grad_(True)
    got = dr.texture_construct_mip(t, max_mip_level, cube).levels
    tr = tex.clone().requires_grad_(True)
    want = ref_mipmap.construct_mip_levels(tr, max_mip_level, cube)
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    if not want:
        return
    g = _gen(5)
    ups = [torch.randn(lvl.shape, generator=g).to(tex.device) for lvl in want]
    ga, = torch.autograd.grad(got, [t], ups)
    gb, = torch.autograd.grad(want, [tr], ups)
    torch.testing.assert_close(ga, gb, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(1, 64, 32, 1), (2, 48, 80, 2), (1, 256, 64, 1)],
                         ids=lambda s: "x".join(map(str, s)))
def test_split_backward_chains_give_the_same_bits(kernels, shape, monkeypatch):
    """Splitting a backward chain into single steps (done for large levels) changes no bit."""
    tex = torch.rand(shape, generator=_gen(3)).to(kernels)
    ups = None
    grads = []
    for split in (1 << 40, 1):  # never, always
        monkeypatch.setattr(cbt, "CHAIN_SPLIT_TEXELS", split)
        monkeypatch.setattr(cbt, "_plans", {})
        t = tex.clone().requires_grad_(True)
        levels = dr.texture_construct_mip(t).levels
        if ups is None:
            g = _gen(4)
            ups = [torch.randn(lvl.shape, generator=g).to(kernels) for lvl in levels]
        grads.append(torch.autograd.grad(levels, [t], ups)[0])
        steps = [s for s in cbt._plans[next(iter(cbt._plans))].up if s.kernel == "mip_up_chain"]
        assert all(s.steps == 1 for s in steps) == (split == 1)
    assert torch.equal(grads[0], grads[1])


def test_mip_plan_schedules():
    """Forward launches fuse up to four levels through even sides; the backward chains every
    run of even steps into one launch."""
    down = cbt.MipDownStep

    def chain(j, top):
        return cbt.MipUpStep("mip_up_chain", j, top)

    def up(k):
        return cbt.MipUpStep("mip_up", k, k + 1)

    p = cbt.mip_plan((1, 2048, 2048, 3), False, None)
    assert p.num_levels == 11
    assert p.down == [down(0, 4), down(4, 4), down(8, 3)]
    assert p.up == [chain(2, 11), chain(1, 2), chain(0, 1)]  # large levels alone
    assert [s.threads for s in p.down] == [512 * 512, 32 * 32, 32]  # warps of 8x4 texels of level k+2
    assert [s.threads for s in p.up] == [512 * 512, 1024 * 1024, 2048 * 2048]
    assert cbt.mip_plan((1, 512, 512, 3), False, None).up == [chain(0, 9)]
    p = cbt.mip_plan((1, 37, 53, 3), False, None)   # 18x26, 9x13, 4x6, 2x3, 1x1
    assert p.sizes == [(37, 53), (18, 26), (9, 13), (4, 6), (2, 3), (1, 1)]
    assert p.down == [down(0, 2), down(2, 2), down(4, 1)]
    assert p.up == [up(4), chain(3, 4), up(2), chain(1, 2), up(0)]
    p = cbt.mip_plan((1, 6, 64, 64, 3), True, 2)
    assert p.num_levels == 2 and p.down == [down(0, 2)] and p.up == [chain(0, 2)]
    assert p.total == 6 * (32 * 32 + 16 * 16) * 3


# ----------------------------------------------------------------------------------------------
# Special values, cube seams, corners and degenerate directions


def test_special_values_2d(kernels):
    nan, inf = float("nan"), float("inf")
    g = _gen(21)
    tex = torch.rand(1, 8, 12, 2, generator=g)
    uv = torch.rand(1, 4, 4, 2, generator=g)
    uv[0, 0, 0, 0] = nan
    uv[0, 0, 1, 1] = inf
    uv[0, 0, 2, 0] = -inf
    uv[0, 0, 3] = 1e30
    uv[0, 1, 0] = -1e30
    uv[0, 1, 1, 0] = 1.0
    uv[0, 1, 2, 1] = 0.0
    da = torch.randn(1, 4, 4, 4, generator=g) * 0.1
    da[0, 2, 0, 0] = nan
    da[0, 2, 1] = 0.0
    da[0, 2, 2, 1] = inf
    da[0, 3, 3] = 1e-30
    bias = torch.randn(1, 4, 4, generator=g)
    bias[0, 3, 0] = nan
    bias[0, 3, 1] = inf
    bias[0, 3, 2] = -inf
    for bm in ("wrap", "clamp", "zero"):
        for fm in FILTERS:
            for lod in _lod_variants(fm):
                compare(kernels, tex, uv, da if "da" in lod else None,
                        bias if "bias" in lod else None, filter_mode=fm, boundary_mode=bm)


def test_huge_footprints_keep_finite_gradients(kernels):
    """uv_da so large that squaring the texel-space Jacobian would overflow float32: the lod is
    that of uv_da scaled down by a power of two, plus its exponent; no NaN gradients."""
    g = _gen(23)
    tex = torch.rand(1, 16, 32, 3, generator=g)
    uv = torch.rand(1, 4, 4, 2, generator=g)
    scale = torch.tensor([1e3, 16384.0, 1e5, 1e12, 1e19, 1e38]).repeat(3)[:16].reshape(1, 4, 4, 1)
    da = torch.randn(1, 4, 4, 4, generator=g).clamp(-3, 3) * scale  # finite
    for fm in MIP_FILTERS:
        compare(kernels, tex, uv, da, filter_mode=fm)
        t = tex.clone().requires_grad_(True)
        d = da.clone().to(kernels).requires_grad_(True)
        out = dr.texture(t.to(kernels), uv.to(kernels), d, filter_mode=fm)
        out.sum().backward()
        assert torch.isfinite(out).all(), fm
        assert d.grad is None or torch.isfinite(d.grad).all(), fm  # nearest level: no gradient


def test_special_values_cube(kernels):
    nan, inf = float("nan"), float("inf")
    g = _gen(22)
    tex = torch.rand(1, 6, 4, 4, 2, generator=g)
    d = torch.randn(1, 4, 4, 3, generator=g)
    rows = {(0, 0): [0.0, 0.0, 0.0], (0, 1): [nan, 1.0, 0.0], (0, 2): [inf, 1.0, 0.0],
            (0, 3): [1e-30, 2e-30, -1e-30], (1, 0): [1.0, 1.0, 1.0], (1, 1): [1.0, 1.0, 0.0],
            (1, 2): [-1.0, 1.0, -1.0], (1, 3): [1.0, -1.0, 0.999], (2, 0): [inf, inf, 0.0],
            (2, 1): [1.0, 0.0, 0.0], (2, 2): [-0.0, 0.0, 0.0], (2, 3): [1e-40, 0.0, 0.0]}
    for (i, j), v in rows.items():
        d[0, i, j] = torch.tensor(v)
    da = torch.randn(1, 4, 4, 6, generator=g) * 0.1
    da[0, 3, 0, 0] = nan
    da[0, 3, 1] = 0.0
    bias = torch.randn(1, 4, 4, generator=g)
    for fm in FILTERS:
        for lod in _lod_variants(fm):
            compare(kernels, tex, d, da if "da" in lod else None, bias if "bias" in lod else None,
                    filter_mode=fm, boundary_mode="cube")


def _seam_and_corner_directions(m, seed):
    """Directions on and near the 12 cube edges and at and near the 8 corners."""
    g = _gen(seed)
    dirs = []
    for i in range(3):
        for k in range(i + 1, 3):
            j = 3 - i - k
            for si in (-1.0, 1.0):
                for sk in (-1.0, 1.0):
                    for eps in (0.0, 1e-7, 1e-3, -1e-3):
                        r = torch.rand(m, generator=g) * 1.98 - 0.99
                        a = torch.zeros(m, 3)
                        a[:, i], a[:, k], a[:, j] = si, sk * (1 - eps), r
                        dirs.append(a)
    for sx in (-1.0, 1.0):
        for sy in (-1.0, 1.0):
            for sz in (-1.0, 1.0):
                s = torch.tensor([sx, sy, sz])
                for v in ([1, 1, 1], [1, 1 - 1e-7, 1 - 2e-7], [1 - 2e-3, 1, 1 - 1e-3],
                          [1 - 1e-3, 1 - 2e-3, 1], [1, 1, 1 - 1e-2]):
                    dirs.append((s * torch.tensor(v)).reshape(1, 3))
    d = torch.cat(dirs)
    return d * (torch.rand(d.shape[0], 1, generator=g) * 3 + 0.5)


@pytest.mark.parametrize("size", [1, 2, 3, 8])
def test_cube_seams_and_corners(kernels, size):
    d = _seam_and_corner_directions(4, size)
    n = d.shape[0]
    d = d.reshape(1, 1, n, 3)
    g = _gen(size + 30)
    tex = torch.rand(1, 6, size, size, 3, generator=g)
    da = torch.randn(1, 1, n, 6, generator=g) * 0.3 / size
    bias = torch.randn(1, 1, n, generator=g)
    for fm in FILTERS:
        for lod in _lod_variants(fm):
            got, _ = compare(kernels, tex, d, da if "da" in lod else None,
                             bias if "bias" in lod else None, filter_mode=fm,
                             boundary_mode="cube")
            for x in got:
                assert x is None or x.isfinite().all(), "NaN or inf at a cube seam or corner"


def test_zero_and_tiny_directions(kernels):
    """Zero directions give 0 and zero gradients; short ones finite gradients. (Subnormal
    directions overflow 1 / ma in the reference too; they are compared, not required finite.)"""
    d = torch.tensor([[0.0, 0.0, 0.0], [-0.0, 0.0, -0.0], [1e-20, 2e-20, 3e-20],
                      [0.0, -3e-15, 1e-15], [1e-38, 0.0, 0.0], [1e-45, 1e-45, 0.0],
                      [0.0, -3e-39, 1e-39]]).reshape(1, 1, 7, 3)
    tex = torch.rand(1, 6, 4, 4, 3, generator=_gen(40))
    da = torch.randn(1, 1, 7, 6, generator=_gen(41)) * 1e-3
    for fm in FILTERS:
        kw = {"uv_da": da.to(kernels)} if fm in MIP_FILTERS else {}
        got = run_texture(tex.to(kernels), d.to(kernels), kw.get("uv_da"), filter_mode=fm,
                          boundary_mode="cube")
        assert (got[0][0, 0, :2] == 0).all()
        for x in got:
            assert x is None or x[..., :4, :].isfinite().all()
        assert got[2] is None or (got[2][0, 0, :2] == 0).all()
        compare(kernels, tex, d, kw.get("uv_da"), filter_mode=fm, boundary_mode="cube")


def test_subnormal_direction_components(kernels):
    """Subnormal components count as 0 in kernels and reference alike (reference/cube.py; CuPy
    builds the kernels with -ftz=true and the emulator runs them with flush-to-zero): rows of
    all-subnormal (zero-length) directions, normal major axes with subnormal minor components,
    and major axes just above tiny, where ma * ln 2 is subnormal (the lod's -log2(ma) gradient)."""
    tiny = torch.finfo(torch.float32).tiny
    d = torch.tensor([[[1e-40, 0.0, 0.0], [-1e-45, 3e-39, -0.0], [tiny / 2, -tiny / 2, tiny / 4]],
                      [[4e-37, 1e-38, -5e-39], [1.0, -1e-40, 5e-39], [-3e-39, 2e-37, -1.1e-38]],
                      [[tiny, 0.0, 0.0], [0.0, -1.5e-38, 0.0], [0.0, 0.0, 1.6e-38]]])[None]
    g = _gen(45)
    tex = torch.rand(1, 6, 4, 4, 3, generator=g) * 1e-2  # keeps gradients ~ 1 / ma finite
    da = torch.randn(1, 3, 3, 6, generator=g) * 1e-3
    bias = torch.randn(1, 3, 3, generator=g)
    bias[0, 2] -= 117.0  # lod ~ 117 + bias here: two of the three inside the mip range [0, 2]
    for fm in FILTERS:
        for lod in _lod_variants(fm):
            got, _ = compare(kernels, tex, d, da if "da" in lod else None,
                             bias if "bias" in lod else None, filter_mode=fm,
                             boundary_mode="cube")
            assert (got[0][0, 0] == 0).all() and got[0][0, 1:].ne(0).all()
            for x in got:
                assert x is None or x.isfinite().all()
            if got[2] is not None:
                assert (got[2][0, 0] == 0).all()


# ----------------------------------------------------------------------------------------------
# Partial gradients, deterministic mode


@pytest.mark.parametrize("grads", [(True, False, False, False, False),
                                   (False, True, False, False, False),
                                   (False, False, True, True, False),
                                   (False, True, True, False, False)],
                         ids=["tex", "uv", "lod", "uv+da"])
@pytest.mark.parametrize("cube", [False, True], ids=["2d", "cube"])
def test_partial_gradients(kernels, grads, cube):
    tex, uv, da, bias = make_case(cube, (2, 6) if cube else (2, 13, 17), seed=50)
    for fm in FILTERS:
        lod = _lod_variants(fm)[1] if fm in MIP_FILTERS else ()
        compare(kernels, tex, uv, da if "da" in lod else None, bias if "bias" in lod else None,
                filter_mode=fm, boundary_mode="cube" if cube else "zero", grads=grads)


@pytest.mark.parametrize("cube", [False, True], ids=["2d", "cube"])
def test_deterministic_mode_matches_reference(kernels, deterministic, cube):
    deterministic(True)
    # A small texture sampled by many pixels: long runs of entries per texel.
    tex, uv, da, bias = make_case(cube, (1, 3) if cube else (1, 5, 6), B=2, h=10, w=12, C=5,
                                  seed=60)
    for fm in FILTERS:
        for lod in _lod_variants(fm)[:2]:
            compare(kernels, tex, uv, da if "da" in lod else None,
                    bias if "bias" in lod else None, filter_mode=fm,
                    boundary_mode="cube" if cube else "wrap")
    # Gradients to a user stack's levels only.
    levels = ref_mipmap.construct_mip_levels(tex, None, cube)
    compare(kernels, tex, uv, da, None, mip=levels, filter_mode="linear-mipmap-linear",
            boundary_mode="cube" if cube else "wrap", grads=(False, False, False, False, True))


@pytest.mark.parametrize("det", [False, True], ids=["fast", "deterministic"])
@pytest.mark.parametrize("cube", [False, True], ids=["2d", "cube"])
def test_warps_on_one_texel(kernels, deterministic, det, cube):
    """Whole warps sampling the same texels (background pixels with uv = 0, as interpolate
    leaves them) take the warp-combined path; mixed warps the per-lane one."""
    deterministic(det)
    tex, uv, da, bias = make_case(cube, (1, 7) if cube else (1, 12, 10), B=2, h=5, w=64, seed=65)
    uv[:, :2] = 0.0 if not cube else torch.tensor([0.3, -1.0, 0.2])
    uv[1, 3, 10:] = uv[1, 3, 9]
    da[:, :2] = da[0, 0, 0]
    for fm in FILTERS:
        compare(kernels, tex, uv, da if fm in MIP_FILTERS else None, None, filter_mode=fm,
                boundary_mode="cube" if cube else "wrap")


def test_deterministic_mode_passes(kernels, deterministic):
    """The deterministic backward runs the scan and sum passes and the conversion; the fast one
    its pass and the reduction of the staged warp-uniform taps."""
    tex, uv, da, bias = make_case(False, (1, 8, 8), seed=61)
    deterministic(True)
    with counting_launches() as calls:
        run_texture(tex.to(kernels), uv.to(kernels), da.to(kernels), None,
                    filter_mode="linear-mipmap-linear")
    kinds = [k for m, k in calls if m in ("texture_forward", "texture_backward")]
    assert kinds == ["texture_fwd_2d_miplinear", "texture_bwd_2d_miplinear",
                     "texture_bwd_2d_miplinear", "texture_grad_finish"]
    deterministic(False)
    with counting_launches() as calls:
        run_texture(tex.to(kernels), uv.to(kernels), da.to(kernels), None,
                    filter_mode="linear-mipmap-linear")
    kinds = [k for m, k in calls if m in ("texture_forward", "texture_backward")]
    assert kinds == ["texture_fwd_2d_miplinear", "texture_bwd_2d_miplinear",
                     "texture_grad_stage_reduce"]


def test_torch_deterministic_algorithms_select_deterministic_mode(kernels, deterministic):
    deterministic(False)
    tex, uv, da, bias = make_case(False, (1, 8, 8), seed=62)
    saved = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        with counting_launches() as calls:
            a = run_texture(tex.to(kernels), uv.to(kernels), filter_mode="linear")
            b = run_texture(tex.to(kernels), uv.to(kernels), filter_mode="linear")
    finally:
        torch.use_deterministic_algorithms(saved)
    assert ("texture_backward", "texture_grad_finish") in calls
    assert torch.equal(a[1], b[1])


def test_kernels_named_by_the_backend_exist():
    """Every texture kernel the backend looks up (by filter and kind, in the kernel table) or
    names literally is defined in the assembled sources, for every filter mode."""
    import re
    from diffrast.cuda_ops import kernels, params
    with open(cbt.__file__) as f:
        backend = f.read()
    names = set(re.findall(r'"(mip_\w+|texture_grad_finish)"', backend))
    for cube in (False, True):
        for mode in params.FILTER_MODES.values():
            names.add(kernels.TEXTURE_FORWARD[cube, mode])
            names.add(kernels.TEXTURE_BACKWARD[cube, mode])
    assert len(names) >= 16
    sources = "".join(loader.source(m) for m in ("texture_forward", "texture_backward",
                                                 "texture_mip_forward", "texture_mip_backward"))
    found = set(re.findall(r'extern\s+"C"\s+__global__\s+(?:__launch_bounds__\(\w+\)\s+)?void\s+(\w+)', sources))
    assert names <= found, names - found


# ----------------------------------------------------------------------------------------------
# GPU only: large sizes, determinism run to run, streams, timings


@pytest.mark.gpu
@pytest.mark.parametrize("filter_mode", ["linear", "linear-mipmap-linear"])
def test_8192_texture(filter_mode):
    dev = torch.device("cuda")
    g = torch.Generator(device=dev).manual_seed(70)
    tex = torch.rand(1, 8192, 8192, 3, device=dev, generator=g)
    uv = torch.rand(2, 256, 256, 2, device=dev, generator=g) * 1.2 - 0.1
    da = torch.randn(2, 256, 256, 4, device=dev, generator=g) * 1e-3
    got = run_texture(tex, uv, da, filter_mode=filter_mode, boundary_mode="wrap")
    with reference_backend():
        want = run_texture(tex, uv, da, filter_mode=filter_mode, boundary_mode="wrap")
    assert_same(got, want)


@pytest.mark.gpu
def test_offsets_past_2_to_the_31():
    """A texture of more than 2^31 floats: samples at the far end read the right texels and
    their gradients land on them."""
    dev = torch.device("cuda")
    H = W = 8192
    C = 33                                           # 2.2e9 floats, 8.9 GB
    tex = torch.empty(1, H, W, C, device=dev)
    tex[0, :, :, :].copy_(torch.arange(C, device=dev, dtype=torch.float32).expand(H, W, C))
    rows = torch.tensor([H - 1, H - 2, H - 1], device=dev)
    cols = torch.tensor([W - 1, W - 3, 5], device=dev)
    tex[0, rows, cols, :] += 1000.0 * torch.arange(1, 4, device=dev)[:, None]
    uv = torch.stack([(cols + 0.5) / W, (rows + 0.5) / H], -1).reshape(1, 1, 3, 2)
    for fm in ("nearest", "linear"):
        t = tex.requires_grad_(True)
        out = dr.texture(t, uv, filter_mode=fm, boundary_mode="clamp")
        torch.testing.assert_close(out[0, 0], tex.detach()[0, rows, cols])
        go = torch.randn(out.shape, device=dev)
        gt, = torch.autograd.grad(out, [t], go)
        torch.testing.assert_close(gt[0, rows, cols], go[0, 0])
        assert gt.sum().item() == pytest.approx(go.sum().item(), rel=1e-5, abs=1e-4)
        del gt
        tex = tex.detach()


@pytest.mark.gpu
@pytest.mark.parametrize("cube", [False, True], ids=["2d", "cube"])
def test_deterministic_gradients_are_bit_identical(deterministic, cube):
    dev = torch.device("cuda")
    deterministic(True)
    tex, uv, da, bias = make_case(cube, (1, 16) if cube else (1, 64, 48), B=4, h=128, w=128,
                                  seed=80, device=dev)
    for fm in ("linear", "linear-mipmap-linear"):
        kw = dict(filter_mode=fm, boundary_mode="cube" if cube else "wrap")
        a = run_texture(tex, uv, da if "mipmap" in fm else None, **kw)
        b = run_texture(tex, uv, da if "mipmap" in fm else None, **kw)
        for x, y in zip(a, b):
            assert (x is None) == (y is None)
            if x is not None:
                assert torch.equal(x, y)
        with reference_backend():
            want = run_texture(tex, uv, da if "mipmap" in fm else None, **kw)
        assert_same(a, want)


@pytest.mark.gpu
def test_non_default_stream():
    dev = torch.device("cuda")
    tex, uv, da, bias = make_case(False, (1, 256, 256), B=2, h=64, w=64, seed=90, device=dev)
    with reference_backend():
        want = run_texture(tex, uv, da, bias, filter_mode="linear-mipmap-linear")
    stream = torch.cuda.Stream(device=dev)
    stream.wait_stream(torch.cuda.current_stream(dev))
    with torch.cuda.stream(stream):
        got = run_texture(tex, uv, da, bias, filter_mode="linear-mipmap-linear")
        stack = dr.texture_construct_mip(tex)
    torch.cuda.current_stream(dev).wait_stream(stream)
    assert_same(got, want)
    for a, b in zip(stack.levels, ref_mipmap.construct_mip_levels(tex)):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("filter_mode", ["linear", "linear-mipmap-linear"])
def test_loss_gradients_are_read_in_place(kernels, deterministic, filter_mode):
    """The expanded gradient of a sum, a channel slice and a channels-first layout give the
    gradients of their contiguous copies, bit for bit (deterministic mode)."""
    deterministic(True)
    g = torch.Generator().manual_seed(3)
    tex = torch.rand(1, 16, 16, 3, generator=g).to(kernels).requires_grad_()
    uv = torch.rand(2, 5, 7, 2, generator=g).to(kernels).requires_grad_()
    uv_da = (torch.randn(2, 5, 7, 4, generator=g) * 0.1).to(kernels).requires_grad_()
    out = dr.texture(tex, uv, uv_da, filter_mode=filter_mode)
    grads = {
        "sum": torch.ones(()).to(kernels).expand(out.shape),
        "slice": torch.randn(*out.shape[:3], 6, generator=g).to(kernels)[..., 1::2],
        "channels first": torch.randn(3, *out.shape[:3], generator=g).to(kernels)
        .permute(1, 2, 3, 0),
    }
    for name, go in grads.items():
        inputs = (tex, uv, uv_da) if filter_mode != "linear" else (tex, uv)
        got = torch.autograd.grad(out, inputs, go, retain_graph=True)
        want = torch.autograd.grad(out, inputs, go.contiguous(), retain_graph=True)
        for x, y in zip(got, want):
            assert torch.equal(x, y), name
