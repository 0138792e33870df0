"""CUDA backend of ``texture`` and ``texture_construct_mip`` (float32 CUDA tensors).

:func:`diffrast.texture` validates its arguments and, for float32 CUDA tensors, calls
:func:`texture` and :func:`construct_mip` here (through :data:`Backend`), with the same
signatures as the reference backend (:mod:`diffrast.reference.texture`,
:mod:`diffrast.reference.mipmap`) and the same results to float32 rounding. The work is done by
the kernels of ``cuda_ops/texture_forward.cu`` and ``cuda_ops/texture_backward.cu`` (sampling)
and of ``cuda_ops/texture_mip_forward.cu`` and ``cuda_ops/texture_mip_backward.cu`` (mip pyramid),
launched on torch's current stream through :mod:`diffrast.cuda_ops.loader`. Every output is
allocated by torch; nothing here synchronizes with the host or reads a value back from the device.

Mip levels. :func:`construct_mip` builds all levels below the base into one flat buffer (the
levels one after the other, each in the texture's layout), a few levels per launch, as the output
of one autograd node whose backward sums the levels' gradients back into the base texture with
gather kernels (no atomics). It returns a :class:`MipLevels`: a sequence of the level tensors
(views of the buffer, made on first access) that also hands the buffer itself to :func:`texture`,
so that the usual path (``texture(..., filter_mode='linear-mipmap-linear')`` without ``mip``)
passes one tensor to the sampling kernels and gets one gradient buffer back. A given stack is used
as it is, never rebuilt: its levels are read in place when they lie one after the other in
memory (as the levels of a :class:`~diffrast.TextureMipStack` built here do), and copied into
one buffer otherwise; each level receives its own gradient.

Texture gradients (base and every level) are summed with float atomics (combined per warp first
when all its lanes hit the same texel), or, in deterministic mode
(:func:`diffrast.set_deterministic` or ``torch.use_deterministic_algorithms(True)``), without
float atomics: in per-texel fixed point with integer atomics, whose sums do not depend on the
order of the additions (see the comment at the top of ``cuda_ops/texture_accumulate.cuh``).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch.autograd.function import once_differentiable

from .cuda_backend import THREADS, available, deterministic, launch, needs_autograd, pixel_strides
from .cuda_ops import kernels
from .cuda_ops.params import (BOUNDARY_MODES, FILTER_MODES, Boundary, Filter, MipBackwardParams,
                              MipForwardParams, TextureBackwardParams, TextureForwardParams,
                              TextureGradMode)
from .reference import mipmap as _ref_mipmap

__all__ = ["Backend", "MipLevels", "MipPlan", "MipDownStep", "MipUpStep", "texture",
           "construct_mip", "texture_backward", "construct_mip_backward", "available",
           "deterministic"]


# Texture gradient contributions per pixel and channel, by filter.
_SLOTS = {Filter.NEAREST: 1, Filter.LINEAR: 4, Filter.MIP_NEAREST: 4, Filter.MIP_LINEAR: 8}
_STAGE_RUN = 32  # kStageRun of cuda_ops/texture_accumulate.cuh: staged warps per reducing warp

# How texture() receives the mip levels.
_MIP_NONE, _MIP_FLAT, _MIP_LIST = 0, 1, 2


def _chained(tensors) -> bool:
    """Whether the tensors are contiguous and lie one right after the other in memory (so that a
    kernel can read them as one buffer starting at the first one's pointer)."""
    ptr = tensors[0].data_ptr()
    for t in tensors:
        if t is None or not t.is_contiguous() or t.data_ptr() != ptr:
            return False
        ptr += t.numel() * t.element_size()
    return True


# ==============================================================================================
# Mip pyramid (cuda_ops/texture_mip_forward.cu, cuda_ops/texture_mip_backward.cu).


# A backward chain launch at a level of at least this many texels (all images) becomes a single
# step from the level above, after the chain of the coarser levels.
CHAIN_SPLIT_TEXELS = 1 << 20


@dataclass(frozen=True)
class MipDownStep:
    """One forward launch of ``mip_down``: levels ``level + 1 .. level + depth`` (``depth`` 1 to
    4) built from level ``level`` by ``threads`` threads (derived from the level sizes, so not
    part of the comparison of steps)."""

    level: int
    depth: int
    threads: int = field(default=0, compare=False)
    kernel: ClassVar[str] = "mip_down"


@dataclass(frozen=True)
class MipUpStep:
    """One backward launch: the full gradients of levels ``top - 1`` down to ``level`` from that of
    level ``top``, one thread per texel of ``level`` (``threads``, derived from the level sizes,
    so not part of the comparison of steps). ``kernel`` is ``"mip_up"`` (one step, any sides:
    ``top == level + 1``) or ``"mip_up_chain"`` (``steps`` steps, each a plain 2x2 mean of even
    sides)."""

    kernel: str
    level: int
    top: int
    threads: int = field(default=0, compare=False)

    @property
    def steps(self) -> int:
        """Number of levels the launch goes down."""
        return self.top - self.level


class MipPlan:
    """Sizes, offsets and launch schedules of the mip pyramid of one texture shape.

    ``sizes[k]`` is level k's (h, w) (level 0 the base), ``offsets[k]`` / ``numels[k]`` the
    position and size (in floats) of level k >= 1 in the flat buffer (``offsets[0]`` and
    ``numels[0]`` are unused), ``down`` the forward launches in order (:class:`MipDownStep`:
    levels k+1..k+depth from level k, depth <= 4), ``up`` the backward launches in order
    (:class:`MipUpStep`: ``mip_up_chain`` for levels top-1 .. j in one launch, every step a plain
    2x2 mean, a large level j getting a launch of its own; ``mip_up`` for level k from level k+1).
    """

    __slots__ = ("tex_shape", "cube", "images", "channels", "sizes", "shapes", "offsets",
                 "numels", "total", "num_levels", "down", "up")

    def __init__(self, tex_shape, cube: bool, max_mip_level):
        self.tex_shape = tuple(tex_shape)
        self.cube = cube
        if cube:
            bt, _, h, w, c = self.tex_shape
            self.images = 6 * bt
        else:
            bt, h, w, c = self.tex_shape
            self.images = bt
        self.channels = c
        self.sizes = [(h, w)] + _ref_mipmap.mip_level_sizes(h, w, max_mip_level)
        L = len(self.sizes) - 1
        self.num_levels = L
        self.shapes = [None] + [((bt, 6, hk, wk, c) if cube else (bt, hk, wk, c))
                                for hk, wk in self.sizes[1:]]
        self.numels = [0] + [self.images * hk * wk * c for hk, wk in self.sizes[1:]]
        self.offsets = [0] * (L + 1)
        off = 0
        for k in range(1, L + 1):
            self.offsets[k] = off
            off += self.numels[k]
        self.total = off

        def even(k):
            return self.sizes[k][0] % 2 == 0 and self.sizes[k][1] % 2 == 0

        self.down = []
        k = 0
        while k < L:
            depth = 1
            while depth < 4 and k + depth < L and even(k + depth):
                depth += 1
            self.down.append(self._down_step(k, depth))
            k += depth
        self.up = []
        cur = L
        while cur > 0:
            if even(cur - 1):
                j = cur - 1
                while j > 0 and even(j - 1):
                    j -= 1
                self._chain(j, cur)
                cur = j
            else:
                self.up.append(self._up_step("mip_up", cur - 1, cur))
                cur -= 1

    def _down_step(self, k, depth) -> MipDownStep:
        h1, w1 = self.sizes[k + 1]
        if depth == 1:  # a thread per texel of level k+1
            threads = self.images * h1 * w1
        else:  # a warp per 8 x 4 patch of level k+2
            h2, w2 = h1 // 2, w1 // 2
            threads = self.images * ((h2 + 3) // 4) * ((w2 + 7) // 8) * 32
        return MipDownStep(k, depth, threads)

    def _up_step(self, kernel, level, top) -> MipUpStep:
        h, w = self.sizes[level]
        return MipUpStep(kernel, level, top, self.images * h * w)

    def _chain(self, j, top):
        """Backward launches for levels top-1 .. j, every step a 2x2 mean: one chain, except that
        a large finest level is split off into a single step from the level above (a chain reads,
        for each texel of level j, one value per level: a 4M-texel base under 11 levels made that
        launch ~6x slower than the split schedule)."""
        h, w = self.sizes[j]
        if top - j > 1 and self.images * h * w >= CHAIN_SPLIT_TEXELS:
            self._chain(j + 1, top)
            self.up.append(self._up_step("mip_up_chain", j, j + 1))
        else:
            self.up.append(self._up_step("mip_up_chain", j, top))


_plans: dict = {}
_plans_lock = threading.Lock()


def mip_plan(tex_shape, cube: bool, max_mip_level) -> MipPlan:
    """The (cached) :class:`MipPlan` of a texture shape."""
    key = (tuple(tex_shape), bool(cube), max_mip_level)
    plan = _plans.get(key)
    if plan is None:
        plan = MipPlan(tex_shape, cube, max_mip_level)
        with _plans_lock:
            if len(_plans) > 256:
                _plans.clear()
            _plans[key] = plan
    return plan


def _mip_forward(tex: torch.Tensor, flat: torch.Tensor, plan: MipPlan) -> None:
    H, W = plan.sizes[0]
    for step in plan.down:
        launch("texture_mip_forward", step.kernel, step.threads, MipForwardParams(
            tex=tex, flat=flat, images=plan.images, height=H, width=W, channels=plan.channels,
            level=step.level, depth=step.depth), tex.device)


def _mip_backward(grad: torch.Tensor, plan: MipPlan, tex_dtype, add_to=None) -> torch.Tensor:
    """Gradient of the base texture from the (own) gradients of levels 1..L, ``grad`` flat;
    added into ``add_to`` (contiguous, the texture's shape) and returned as it, when given."""
    device = grad.device
    H, W = plan.sizes[0]
    C = plan.channels
    L = plan.num_levels
    grad_tex = (torch.empty(plan.tex_shape, dtype=tex_dtype, device=device) if add_to is None
                else add_to)
    # Full gradients of the intermediate levels, where a step needs them.
    needs_totals = any(step.level > 0 for step in plan.up)
    totals = torch.empty(plan.total, dtype=grad.dtype, device=device) if needs_totals else None
    for step in plan.up:
        # (the top level's full gradient is its own, in `grad`; mip_up ignores `steps`)
        launch("texture_mip_backward", step.kernel, step.threads, MipBackwardParams(
            raw=grad, totals=totals, out=grad_tex, images=plan.images, height=H, width=W,
            channels=C, level=step.level, steps=step.steps, top_is_raw=step.top == L,
            add_to_out=add_to is not None), device)
    assert plan.up[-1].level == 0
    return grad_tex


def _mip_levels_forward(tex, plan):
    """The flat buffer of the levels 1..L of a contiguous ``tex``, built by the kernels."""
    flat = torch.empty(plan.total, dtype=tex.dtype, device=tex.device)
    _mip_forward(tex, flat, plan)
    return flat


class _MipConstruct(torch.autograd.Function):
    """tex -> the flat buffer of its mip levels 1..L."""

    @staticmethod
    def forward(ctx, tex, plan):
        flat = _mip_levels_forward(tex.contiguous(), plan)
        ctx.plan = plan
        ctx.tex_dtype = tex.dtype
        return flat

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_flat):
        if not ctx.needs_input_grad[0]:
            return None, None
        return _mip_backward(grad_flat.contiguous(), ctx.plan, ctx.tex_dtype), None


class MipLevels:
    """The mip levels built by :func:`construct_mip`: a sequence of level tensors (level 1
    first, each in the texture's layout) backed by one flat buffer, :attr:`flat`, which
    :func:`texture` reads directly. The level tensors are views of the buffer, made on first
    access; gradients reaching them, or the buffer, flow back to the texture."""

    __slots__ = ("flat", "plan", "_views")

    def __init__(self, flat: torch.Tensor, plan: MipPlan):
        self.flat = flat
        self.plan = plan
        self._views = None

    def _levels(self) -> list:
        if self._views is None:
            p = self.plan
            self._views = [self.flat.narrow(0, p.offsets[k], p.numels[k]).view(p.shapes[k])
                           for k in range(1, p.num_levels + 1)]
        return self._views

    def __len__(self) -> int:
        return self.plan.num_levels

    def __getitem__(self, k):
        return self._levels()[k]

    def __iter__(self):
        return iter(self._levels())


def construct_mip(tex: torch.Tensor, max_mip_level=None, cube_mode: bool = False):
    """Mip levels below ``tex`` (float32 CUDA, validated), built on the GPU, differentiably.

    Returns a :class:`MipLevels` (empty for a 1 x 1 texture or ``max_mip_level=0``)."""
    plan = mip_plan(tex.shape, cube_mode, max_mip_level)
    if plan.num_levels == 0:
        return []
    if not needs_autograd(tex):
        return MipLevels(_mip_levels_forward(tex.contiguous(), plan), plan)
    return MipLevels(_MipConstruct.apply(tex, plan), plan)


# ==============================================================================================
# Sampling (cuda_ops/texture_forward.cu, cuda_ops/texture_backward.cu).


def _mip_inputs(mip_levels):
    """``(tensors, mode, num_levels)``: how the levels are handed to :class:`_Texture`."""
    if mip_levels is None or len(mip_levels) == 0:
        return (), _MIP_NONE, 0
    if isinstance(mip_levels, MipLevels):
        return (mip_levels.flat,), _MIP_FLAT, len(mip_levels)
    levels = tuple(mip_levels)
    return levels, _MIP_LIST, len(levels)


def _tex_dims(tex: torch.Tensor, cube: bool):
    """``(height, width)`` of level 0 (cube: the face size twice)."""
    return (tex.shape[2], tex.shape[3]) if cube else (tex.shape[1], tex.shape[2])


def _texture_forward(cfg, tex, uv, uv_da, bias, mips):
    """The forward kernel: ``(out, saved)``, ``saved`` the tensors the backward reads,
    ``(tex, uv, uv_da, bias, mipbuf, *mips)`` made contiguous (see :func:`_mip_buffer`)."""
    tex, uv, uv_da, bias = _contiguous(tex, uv, uv_da, bias)
    mipbuf, mips = _mip_buffer(cfg[2], mips)
    out, kernel, n, kp = _sampling(cfg, tex, mipbuf, uv, uv_da, bias)
    launch("texture_forward", kernel, n, kp, tex.device)
    return out, (tex, uv, uv_da, bias, mipbuf, *mips)


class _Texture(torch.autograd.Function):
    @staticmethod
    def forward(ctx, cfg, tex, uv, uv_da, bias, *mips):
        out, saved = _texture_forward(cfg, tex, uv, uv_da, bias, mips)
        ctx.cfg = cfg
        ctx.mip_shapes = [m.shape for m in saved[5:]]
        ctx.save_for_backward(*saved)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        filt, bnd, mode, num_levels = ctx.cfg
        tex, uv, uv_da, bias, mipbuf, *mips = ctx.saved_tensors
        needs = ctx.needs_input_grad
        want_tex0 = needs[1]
        want_uv, want_da, want_bias = _coordinate_wants(filt, needs[2:5], uv_da, bias)
        want_mip = num_levels > 0 and mode != _MIP_NONE and any(needs[5:])
        n_mips = len(ctx.mip_shapes)
        if not (want_tex0 or want_uv or want_da or want_bias or want_mip):
            return (None,) * (5 + n_mips)

        base_numel = tex.numel()
        if mode == _MIP_LIST:
            mip_numel = sum(m.numel() for m in mips)
        else:
            mip_numel = mipbuf.numel() if mipbuf is not None else 0
        grad_flat, grad_uv, grad_da, grad_bias = _texture_grads(
            ctx.cfg, tex, uv, uv_da, bias, mipbuf, mip_numel, grad_out,
            want_tex0, want_uv, want_da, want_bias, want_mip)

        grad_tex = grad_flat[:base_numel].view(tex.shape) if want_tex0 else None
        mip_grads = (None,) * n_mips
        if want_mip:
            if mode == _MIP_FLAT:
                mip_grads = (grad_flat[base_numel:],)
            else:
                grads, off = [], base_numel
                for shape, m in zip(ctx.mip_shapes, mips):
                    n = m.numel()
                    grads.append(grad_flat[off:off + n].view(shape))
                    off += n
                mip_grads = tuple(grads)
        return (None, grad_tex, grad_uv, grad_da, grad_bias) + mip_grads


class _TextureOwnMip(torch.autograd.Function):
    """``texture`` in a mipmapped mode with the levels built here from ``tex`` (the caller gave
    none): one node, whose backward sums the levels' share of the base texture's gradient into
    its own gradient in the last step of the mip backward, where two nodes would leave that
    sum (one more buffer and kernel) to autograd. The same floats either way: each texel's two
    shares are added once, and float addition is commutative."""

    @staticmethod
    def forward(ctx, cfg, plan, tex, uv, uv_da, bias):
        tex, uv, uv_da, bias = _contiguous(tex, uv, uv_da, bias)
        out, flat = _own_mip_forward(cfg, plan, tex, uv, uv_da, bias)
        ctx.cfg, ctx.plan = cfg, plan
        ctx.save_for_backward(tex, uv, uv_da, bias, flat)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        tex, uv, uv_da, bias, flat = ctx.saved_tensors
        grads = _own_mip_backward(ctx.cfg, ctx.plan, tex, uv, uv_da, bias, flat, grad_out,
                                  ctx.needs_input_grad[2:6])
        return (None, None) + grads


def _coordinate_wants(filt, needs, uv_da, bias):
    """``(want_uv, want_da, want_bias)``: which of ``uv``, ``uv_da``, ``bias`` flagged in
    ``needs`` (three flags) the output depends on: not ``uv`` in 'nearest' mode, ``uv_da`` and
    ``bias`` only when given and in 'linear-mipmap-linear' mode."""
    mip_linear = filt == Filter.MIP_LINEAR
    return (bool(needs[0]) and filt != Filter.NEAREST,
            bool(needs[1]) and uv_da is not None and mip_linear,
            bool(needs[2]) and bias is not None and mip_linear)


def _contiguous(*tensors):
    return tuple(t.contiguous() if t is not None else None for t in tensors)


def _own_mip_forward(cfg, plan, tex, uv, uv_da, bias):
    """``(out, flat)``: the levels of ``tex`` built into ``flat``, and the samples; inputs
    contiguous, ``plan`` with at least one level."""
    flat = _mip_levels_forward(tex, plan)
    out, kernel, n, kp = _sampling(cfg, tex, flat, uv, uv_da, bias)
    launch("texture_forward", kernel, n, kp, tex.device)
    return out, flat


def _own_mip_backward(cfg, plan, tex, uv, uv_da, bias, flat, grad_out, needs):
    """Gradients ``(tex, uv, uv_da, bias)`` (``None`` where not in ``needs`` or not depended on)
    of :func:`_own_mip_forward`'s output; the levels' share of the texture's gradient is added
    into its own in the last mip backward step."""
    filt = cfg[0]
    want_tex = bool(needs[0])
    want_uv, want_da, want_bias = _coordinate_wants(filt, needs[1:4], uv_da, bias)
    if not (want_tex or want_uv or want_da or want_bias):
        return None, None, None, None
    grad_flat, grad_uv, grad_da, grad_bias = _texture_grads(
        cfg, tex, uv, uv_da, bias, flat, flat.numel(), grad_out,
        want_tex, want_uv, want_da, want_bias, want_tex)
    grad_tex = None
    if want_tex:
        base = tex.numel()
        grad_tex = _mip_backward(grad_flat[base:], plan, tex.dtype,
                                 add_to=grad_flat[:base].view(tex.shape))
    return grad_tex, grad_uv, grad_da, grad_bias


def _sampling(cfg, tex, mipbuf, uv, uv_da, bias):
    """``(out, kernel, threads, params)``: the output ``[B, h, w, C]`` of sampling ``tex`` (and the
    levels in ``mipbuf``) at ``uv``, and the forward kernel of ``cuda_ops/texture_forward.cu``
    that fills it, with its thread count and parameters (launched by the caller, one hop less
    from ``dr.texture``); inputs contiguous."""
    filt, bnd, _, num_levels = cfg
    cube = bnd == Boundary.CUBE
    device = tex.device
    B, oh, ow = uv.shape[0], uv.shape[1], uv.shape[2]
    N = B * oh * ow  # (64-bit in the kernels: only the grid limits it, see launch)
    C = tex.shape[-1]
    H, W = _tex_dims(tex, cube)
    out = torch.empty(B, oh, ow, C, dtype=tex.dtype, device=device)
    kp = TextureForwardParams(
        tex=tex, mip=mipbuf, uv=uv, uv_da=uv_da, bias=bias, out=out, num_pixels=N,
        pixels_per_image=oh * ow, tex_batch=tex.shape[0], height=H, width=W, channels=C,
        num_levels=num_levels, boundary=bnd, tex_batched=tex.shape[0] > 1,
        has_da=uv_da is not None, has_bias=bias is not None)
    return out, kernels.TEXTURE_FORWARD[cube, filt], N, kp


def _mip_buffer(mode, mips):
    """``(mipbuf, mips)``: the one buffer the kernels read the levels from (``None`` without
    levels) and the levels made contiguous. Levels lying one after the other in memory are read
    in place; others are copied into one buffer."""
    if mode == _MIP_FLAT:
        mipbuf = mips[0].contiguous()
    elif mode == _MIP_LIST:
        mips = tuple(m.contiguous() for m in mips)
        mipbuf = mips[0] if _chained(mips) else torch.cat([m.reshape(-1) for m in mips])
    else:
        mipbuf = None
    return mipbuf, mips


def _texture_grads(cfg, tex, uv, uv_da, bias, mipbuf, mip_numel, grad_out,
                   want_tex0, want_uv, want_da, want_bias, want_mip):
    """The texture backward kernels: ``(grad_flat, grad_uv, grad_da, grad_bias)``, ``None`` where
    not wanted. ``grad_flat`` (``None`` unless ``want_tex0`` or ``want_mip``) holds the gradient of
    the base texture (``tex.numel()`` floats; unspecified unless ``want_tex0``) followed, with
    ``want_mip``, by those of the ``mip_numel`` floats of ``mipbuf``. Inputs contiguous."""
    filt, bnd, mode, num_levels = cfg
    cube = bnd == Boundary.CUBE
    device = tex.device
    grad_out, (g_sp, g_sc) = pixel_strides(grad_out)  # (read in place when evenly spaced)
    B, oh, ow = uv.shape[0], uv.shape[1], uv.shape[2]
    N = B * oh * ow
    C = tex.shape[-1]
    H, W = _tex_dims(tex, cube)
    base_numel = tex.numel()
    want_texgrad = want_tex0 or want_mip
    det = want_texgrad and deterministic()
    grad_flat = None
    if want_texgrad:
        size = base_numel + (mip_numel if want_mip else 0)
        alloc = torch.empty if det else torch.zeros
        grad_flat = alloc(size, dtype=tex.dtype, device=device)
    grad_uv = torch.empty_like(uv) if want_uv else None
    grad_da = torch.empty_like(uv_da) if want_da else None
    grad_bias = torch.empty_like(bias) if want_bias else None
    if det:
        # Fixed-point accumulation (see cuda_ops/texture_accumulate.cuh): a first pass records each
        # texel channel's largest contribution, the second sums integers, the last converts.
        max_bits = torch.zeros(grad_flat.numel(), dtype=torch.int32, device=device)
        flags = torch.zeros(grad_flat.numel(), dtype=torch.int32, device=device)
        acc = torch.zeros(grad_flat.numel(), dtype=torch.int64, device=device)
        count_log2 = (N * _SLOTS[filt]).bit_length()
    kernel = kernels.TEXTURE_BACKWARD[cube, filt]
    kp = TextureBackwardParams(
        tex=tex, mip=mipbuf, uv=uv, uv_da=uv_da, bias=bias, grad_out=grad_out,
        grad_tex=grad_flat, grad_uv=grad_uv, grad_uv_da=grad_da, grad_bias=grad_bias, g_sp=g_sp,
        g_sc=g_sc, num_pixels=N, pixels_per_image=oh * ow, tex_batch=tex.shape[0], height=H,
        width=W, channels=C, num_levels=num_levels, boundary=bnd, mode=TextureGradMode.FAST,
        tex_batched=tex.shape[0] > 1, has_da=uv_da is not None, has_bias=bias is not None,
        want_tex0=want_tex0, want_mip=want_mip, want_uv=want_uv, want_da=want_da,
        want_bias=want_bias)
    if not det:
        if want_texgrad:  # warp-uniform taps staged, then summed over runs of warps
            # (every warp of the grid stages, those past the last pixel included)
            warps, slots = -(-N // THREADS) * (THREADS // 32), _SLOTS[filt]
            kp = kp._replace(
                stage_keys=torch.empty(warps * slots, dtype=torch.int64, device=device),
                stage_vals=torch.empty(warps * slots * C, dtype=torch.float32, device=device),
                stage_warps=warps, stage_slots=slots)
        launch("texture_backward", kernel, N, kp, device)
        if want_texgrad:
            runs = -(-kp.stage_warps // _STAGE_RUN)
            launch("texture_backward", "texture_grad_stage_reduce",
                   runs * kp.stage_slots * _STAGE_RUN, kp, device)
        return grad_flat, grad_uv, grad_da, grad_bias
    kp = kp._replace(max_bits=max_bits, flags=flags, acc=acc, num_texels=grad_flat.numel() // C,
                     count_log2=count_log2, mode=TextureGradMode.DET_SCAN)
    launch("texture_backward", kernel, N, kp, device)
    kp = kp._replace(mode=TextureGradMode.DET_SUM)
    launch("texture_backward", kernel, N, kp, device)
    launch("texture_backward", "texture_grad_finish", grad_flat.numel(), kp, device)
    return grad_flat, grad_uv, grad_da, grad_bias


def _launch_config(filter_mode, boundary_mode, uv_da, mip_level_bias, mip_levels):
    """``(cfg, uv_da, mip_level_bias, mips)`` of a texture call: ``cfg = (filter, boundary, mip
    input mode, number of levels)`` for the kernels, the level-of-detail inputs (``None`` in the
    non-mipmapped modes, which ignore them) and the level tensors (empty there)."""
    filt = FILTER_MODES[filter_mode]
    if filt < Filter.MIP_NEAREST:
        return (filt, BOUNDARY_MODES[boundary_mode], _MIP_NONE, 0), None, None, ()
    mips, mode, num_levels = _mip_inputs(mip_levels)
    return (filt, BOUNDARY_MODES[boundary_mode], mode, num_levels), uv_da, mip_level_bias, mips


def texture(tex: torch.Tensor, uv: torch.Tensor, uv_da=None, mip_level_bias=None,
            mip_levels=None, filter_mode: str = "linear",
            boundary_mode: str = "wrap") -> torch.Tensor:
    """:func:`diffrast.reference.texture.texture` on float32 CUDA tensors (validated by
    :func:`diffrast.texture`): ``tex`` [Bt, H, W, C] or [Bt, 6, H, W, C], ``uv`` [B, h, w, 2 or 3],
    ``uv_da`` [B, h, w, 4 or 6] or None, ``mip_level_bias`` [B, h, w] or None, ``mip_levels`` the
    levels below ``tex`` (a :class:`MipLevels`, a list of tensors, or None), ``filter_mode``
    resolved (not 'auto'). Returns [B, h, w, C]."""
    cfg, uv_da, mip_level_bias, mips = _launch_config(filter_mode, boundary_mode, uv_da,
                                                      mip_level_bias, mip_levels)
    if not needs_autograd(tex, uv, uv_da, mip_level_bias, *mips):
        return _texture_forward(cfg, tex, uv, uv_da, mip_level_bias, mips)[0]
    return _Texture.apply(cfg, tex, uv, uv_da, mip_level_bias, *mips)


def _own_mip_config(tex, max_mip_level, filter_mode, boundary_mode):
    """``(cfg, plan)`` of a mipmapped texture call whose levels are built from ``tex``."""
    plan = mip_plan(tex.shape, boundary_mode == "cube", max_mip_level)
    cfg = (FILTER_MODES[filter_mode], BOUNDARY_MODES[boundary_mode], _MIP_FLAT, plan.num_levels)
    return cfg, plan


def texture_own_mip(tex: torch.Tensor, uv: torch.Tensor, uv_da, mip_level_bias, max_mip_level,
                    filter_mode: str, boundary_mode: str) -> torch.Tensor:
    """:func:`texture` in a mipmapped ``filter_mode`` with the levels built from ``tex`` (up to
    ``max_mip_level``), as ``texture(tex, ..., construct_mip(tex, max_mip_level, cube))`` gives,
    in one autograd node."""
    cfg, plan = _own_mip_config(tex, max_mip_level, filter_mode, boundary_mode)
    if plan.num_levels == 0:
        return texture(tex, uv, uv_da, mip_level_bias, None, filter_mode, boundary_mode)
    if not needs_autograd(tex, uv, uv_da, mip_level_bias):
        return _own_mip_forward(cfg, plan, *_contiguous(tex, uv, uv_da, mip_level_bias))[0]
    return _TextureOwnMip.apply(cfg, plan, tex, uv, uv_da, mip_level_bias)


def texture_own_mip_forward(tex, uv, uv_da, mip_level_bias, max_mip_level, filter_mode: str,
                            boundary_mode: str):
    """:func:`texture_own_mip` outside autograd (for the custom op ``diffrast::texture_own_mip``):
    ``(out, flat)``, the samples and the flat buffer of the levels built (empty without levels),
    which :func:`texture_own_mip_backward` takes back."""
    cfg, plan = _own_mip_config(tex, max_mip_level, filter_mode, boundary_mode)
    if plan.num_levels == 0:
        return (texture(tex, uv, uv_da, mip_level_bias, None, filter_mode, boundary_mode),
                tex.new_empty(0))
    tex, uv, uv_da, mip_level_bias = _contiguous(tex, uv, uv_da, mip_level_bias)
    return _own_mip_forward(cfg, plan, tex, uv, uv_da, mip_level_bias)


def texture_own_mip_backward(tex, uv, uv_da, mip_level_bias, flat, max_mip_level,
                             filter_mode: str, boundary_mode: str, grad_out, needs):
    """The backward of :func:`texture_own_mip_forward` (``flat`` its second output) outside
    autograd: gradients ``(tex, uv, uv_da, mip_level_bias)``, ``None`` where not in ``needs``
    or not depended on."""
    cfg, plan = _own_mip_config(tex, max_mip_level, filter_mode, boundary_mode)
    tex, uv, uv_da, mip_level_bias = _contiguous(tex, uv, uv_da, mip_level_bias)
    if plan.num_levels == 0:
        texels, g_uv, g_da, g_bias = texture_backward(
            tex, uv, uv_da, mip_level_bias, None, filter_mode, boundary_mode, grad_out,
            tuple(needs) + (False,))
        return (texels.view(tex.shape) if texels is not None and needs[0] else None,
                g_uv, g_da, g_bias)
    return _own_mip_backward(cfg, plan, tex, uv, uv_da, mip_level_bias, flat, grad_out, needs)


def texture_backward(tex: torch.Tensor, uv: torch.Tensor, uv_da, mip_level_bias, mip_levels,
                     filter_mode: str, boundary_mode: str, grad_out: torch.Tensor,
                     needs=(True, True, True, True, True)):
    """The CUDA kernels' backward of :func:`texture`, outside autograd (for the custom op
    ``diffrast::texture_backward``); the kernels and buffers of ``_Texture.backward``.

    Takes :func:`texture`'s arguments (``mip_levels`` a list of level tensors, or None), the
    gradient of its output ``grad_out`` [B, h, w, C] and ``needs``: which of ``(tex, uv, uv_da,
    mip_level_bias, mip_levels)`` get a gradient. Returns ``(grad_texels, grad_uv, grad_uv_da,
    grad_mip_level_bias)``, ``None`` where not needed or structurally absent (``uv`` in 'nearest'
    mode, ``uv_da`` and ``mip_level_bias`` unless given and 'linear-mipmap-linear', the levels
    in the non-mipmapped modes or without levels). ``grad_texels`` is one flat float32 buffer:
    the gradient of ``tex`` (``tex.numel()`` floats; unspecified unless ``needs[0]``) followed,
    when the levels get a gradient, by those of the levels, one after the other; ``None`` when
    neither gets one."""
    cfg, uv_da, mip_level_bias, mips = _launch_config(filter_mode, boundary_mode, uv_da,
                                                      mip_level_bias, mip_levels)
    filt, _, mode, num_levels = cfg
    want_tex0 = bool(needs[0])
    want_uv, want_da, want_bias = _coordinate_wants(filt, needs[1:4], uv_da, mip_level_bias)
    want_mip = bool(needs[4]) and num_levels > 0
    if not (want_tex0 or want_uv or want_da or want_bias or want_mip):
        return None, None, None, None
    tex = tex.contiguous()
    mipbuf, mips = _mip_buffer(mode, mips)
    mip_numel = sum(m.numel() for m in mips)
    return _texture_grads(cfg, tex, uv.contiguous(),
                          uv_da.contiguous() if uv_da is not None else None,
                          mip_level_bias.contiguous() if mip_level_bias is not None else None,
                          mipbuf, mip_numel, grad_out, want_tex0, want_uv, want_da, want_bias,
                          want_mip)


def construct_mip_backward(grad: torch.Tensor, tex_shape, cube_mode: bool = False,
                           max_mip_level=None) -> torch.Tensor:
    """The CUDA kernels' backward of :func:`construct_mip`, outside autograd (for the custom op
    ``diffrast::texture_construct_mip_backward``): the gradient of the base texture (shape
    ``tex_shape``, float32) from ``grad``, the gradient of the flat buffer of its mip levels
    (``MipLevels.flat``: the levels one after the other, each in the texture's layout)."""
    plan = mip_plan(tex_shape, cube_mode, max_mip_level)
    if plan.num_levels == 0:
        return grad.new_zeros(plan.tex_shape)
    return _mip_backward(grad.contiguous(), plan, grad.dtype)


class Backend:
    """The CUDA backend object returned by ``diffrast.texture._backend_for``."""
    texture = staticmethod(texture)
    texture_own_mip = staticmethod(texture_own_mip)
    construct_mip = staticmethod(construct_mip)
