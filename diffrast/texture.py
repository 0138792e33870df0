"""Texture sampling: ``texture`` and ``texture_construct_mip``, with nvdiffrast's API.

The public functions validate their arguments (see :mod:`diffrast.checks`), then hand the work
to the backend for the tensors' device and dtype (:mod:`diffrast.dispatch`): the CUDA kernels of
:mod:`diffrast.cuda_backend_texture` for float32 CUDA tensors, otherwise the reference
implementation in :mod:`diffrast.reference.texture` (plain differentiable PyTorch). Both backends
have the same two entry points.

Under ``torch.compile`` the validated call goes through the custom ops at the bottom of this file
(``diffrast::texture``, ``diffrast::texture_construct_mip`` and their ``_backward`` ops, see
:mod:`diffrast.custom_ops`), which run the same backends; eager calls use the backends directly.
"""
from __future__ import annotations

from typing import Optional

import torch

from . import checks, custom_ops, dispatch
from . import cuda_backend_texture as _cuda_texture
from .reference import mipmap as _ref_mipmap
from .reference import texture as _ref_texture

__all__ = ["texture", "texture_construct_mip", "TextureMipStack"]

_FILTER_MODES = ("auto",) + _ref_texture.FILTER_MODES
_BOUNDARY_MODES = _ref_texture.BOUNDARY_MODES
_MIPMAP_MODES = ("linear-mipmap-nearest", "linear-mipmap-linear")


class TextureMipStack:
    """A mipmap stack built by :func:`texture_construct_mip`, for the ``mip`` argument of
    :func:`texture`.

    Attributes:
        levels: List of the level tensors below the base texture, level 1 first, each with the
            layout of the base texture (``[B, h, w, C]`` or ``[B, 6, h, w, C]``) and the sizes
            described in :func:`texture_construct_mip`. They were computed from the base texture
            by differentiable torch operations, so gradients reaching them flow back to that
            texture (if it required grad when the stack was built). On a CUDA device they are
            views of one buffer, which :func:`texture` reads as a whole while the list holds the
            tensors built; replace a level and it is checked and read as given.
        cube_mode: Whether the stack belongs to a cube map.
        base_shape: Shape of the texture the stack was built from.
    """

    __slots__ = ("levels", "cube_mode", "base_shape", "_buffer")

    def __init__(self, levels, cube_mode: bool, base_shape):
        self.levels = list(levels)
        self.cube_mode = bool(cube_mode)
        self.base_shape = tuple(base_shape)
        # The CUDA backend's levels: views of one buffer, which texture() then reads directly
        # (one tensor instead of one per level) while `levels` still holds exactly those views.
        self._buffer = levels if isinstance(levels, _cuda_texture.MipLevels) else None

    def _own_levels(self):
        """The backend's :class:`~diffrast.cuda_backend_texture.MipLevels` if :attr:`levels` are
        still the very tensors built (then their shapes, dtype and device are those of the build),
        else ``None``."""
        buf = self._buffer
        if buf is None or len(self.levels) != len(buf):
            return None
        return buf if all(a is b for a, b in zip(self.levels, buf)) else None

    def __len__(self) -> int:
        return len(self.levels)

    def __repr__(self) -> str:
        sizes = ", ".join("x".join(str(s) for s in lvl.shape[-3:-1]) for lvl in self.levels)
        return (f"TextureMipStack(base_shape={self.base_shape}, cube_mode={self.cube_mode}, "
                f"levels=[{sizes}])")


class _ReferenceBackend:
    """The plain PyTorch backend (any device); autograd differentiates it."""
    texture = staticmethod(_ref_texture.texture)
    construct_mip = staticmethod(_ref_mipmap.construct_mip_levels)

    @staticmethod
    def texture_own_mip(tex, uv, uv_da, mip_level_bias, max_mip_level, filter_mode,
                        boundary_mode):
        """``texture`` with the levels built from ``tex`` (the caller gave none)."""
        levels = _ref_mipmap.construct_mip_levels(tex, max_mip_level, boundary_mode == "cube")
        return _ref_texture.texture(tex, uv, uv_da, mip_level_bias, levels, filter_mode,
                                    boundary_mode)


dispatch.register("texture", reference=_ReferenceBackend, kernels=_cuda_texture.Backend)


# ----------------------------------------------------------------------------------------------
# Validation helpers


def _check_max_mip_level(max_mip_level):
    if max_mip_level is None:
        return None
    level = checks.as_integer(max_mip_level)
    if level is None:
        raise TypeError(f"max_mip_level must be None or a non-negative int, "
                        f"got {type(max_mip_level).__name__}")
    if level < 0:
        raise ValueError(f"max_mip_level must be None or a non-negative int, got {level}")
    return level


_TEX_DTYPES = checks.FLOAT_DTYPES + checks.HALF_DTYPES


def _check_texture(name: str, tex, cube: bool) -> torch.Tensor:
    """Check a texture tensor's layout: ``[B, H, W, C]``, or ``[B, 6, H, W, C]`` for a cube map
    with square faces; every dimension positive; float32, float64, float16 or bfloat16."""
    if cube:
        tex = checks.check_tensor(name, tex, dtypes=_TEX_DTYPES, ndims=5)
        if tex.shape[1] != 6:
            raise ValueError(f"{name} must have shape [minibatch_size, 6, height, width, channels] "
                             f"for a cube map, got shape {tuple(tex.shape)} (dimension 1 is not 6)")
        if tex.shape[2] != tex.shape[3]:
            raise ValueError(f"{name} must have square cube map faces (height == width), "
                             f"got shape {tuple(tex.shape)}")
    else:
        tex = checks.check_tensor(name, tex, dtypes=_TEX_DTYPES, ndims=4)
    if any(s == 0 for s in tex.shape):
        raise ValueError(f"{name} must have no empty dimension, got shape {tuple(tex.shape)}")
    return tex


def _expected_levels(tex: torch.Tensor, cube: bool, max_mip_level):
    h, w = (tex.shape[2], tex.shape[3]) if cube else (tex.shape[1], tex.shape[2])
    return _ref_mipmap.mip_level_sizes(h, w, max_mip_level)


def _check_mip(mip, tex: torch.Tensor, cube: bool) -> list:
    """Validate ``mip`` (a :class:`TextureMipStack` or a list of level tensors) against ``tex``;
    return the list of level tensors (for an unchanged stack built on the CUDA backend, its
    :class:`~diffrast.cuda_backend_texture.MipLevels`, a sequence of the same tensors)."""
    if isinstance(mip, TextureMipStack):
        if mip.cube_mode != cube:
            want = "a cube map" if cube else "a 2D texture"
            got = "a cube map" if mip.cube_mode else "a 2D texture"
            raise ValueError(f"mip must be a mipmap stack of {want} like tex, got one of {got} "
                             f"(texture_construct_mip(..., cube_mode={mip.cube_mode}))")
        if mip.base_shape != tuple(tex.shape):
            raise ValueError(f"mip was built from a texture of shape {mip.base_shape}, "
                             f"but tex has shape {tuple(tex.shape)}")
        own = None if custom_ops.compiling() else mip._own_levels()
        if own is not None:  # built by texture_construct_mip for this shape, unchanged
            return own
        levels = mip.levels
        name = "mip.levels"
    elif isinstance(mip, (list, tuple)):
        levels = list(mip)
        name = "mip"
    else:
        raise TypeError(f"mip must be None, a TextureMipStack from texture_construct_mip(), or a "
                        f"list of tensors, got {type(mip).__name__}")
    sizes = _expected_levels(tex, cube, None)
    if len(levels) > len(sizes):
        raise ValueError(f"{name} has {len(levels)} levels, but a texture of shape "
                         f"{tuple(tex.shape)} has only {len(sizes)} mip levels below the base")
    out = []
    for k, (lvl, (h, w)) in enumerate(zip(levels, sizes)):
        lname = f"{name}[{k}]"
        lvl = checks.check_tensor(lname, lvl, dtypes=_TEX_DTYPES, ndims=tex.ndim)
        if cube:
            want = (tex.shape[0], 6, h, w, tex.shape[-1])
        else:
            want = (tex.shape[0], h, w, tex.shape[-1])
        if tuple(lvl.shape) != want:
            raise ValueError(f"{lname} (mip level {k + 1}) must have shape {want} for tex of shape "
                             f"{tuple(tex.shape)}, got shape {tuple(lvl.shape)}")
        out.append(lvl)
    return out


# ----------------------------------------------------------------------------------------------
# Public API



def _check_cube_layout(tex: torch.Tensor, cube: bool, switch: str, hint: str, got: str) -> None:
    """A 5-D ``tex`` (a cube map) only with the cube ``switch`` on, and the switch only with one.
    ``hint`` says what a cube map needs, ``got`` what the switch was."""
    if tex.ndim == 5 and not cube:
        raise ValueError(f"tex has shape {tuple(tex.shape)}, a cube map; {hint}, got {got}")
    if cube and tex.ndim != 5:
        raise ValueError(f"{switch} needs a cube map tex of shape [minibatch_size, 6, height, "
                         f"width, channels], got shape {tuple(tex.shape)}")


def texture(tex, uv, uv_da=None, mip_level_bias=None, mip=None, filter_mode="auto",
            boundary_mode="wrap", max_mip_level=None):
    """Perform texture sampling.

    All input tensors must be on the same device and have the same dtype (``torch.float32`` as
    in nvdiffrast; ``torch.float64`` is also accepted, e.g. for ``torch.autograd.gradcheck``),
    except that ``tex`` (and the levels of ``mip``) may also be ``torch.float16`` or
    ``torch.bfloat16`` with float32 coordinates: such a texture is sampled in float32, and the
    output and ``tex``'s gradient come back in its dtype. Non-contiguous inputs are made
    contiguous. The output is on the same device.

    Args:
        tex: Texture tensor. For 2D textures, shape [minibatch_size, tex_height, tex_width,
            tex_channels]. For cube map textures, shape [minibatch_size, 6, tex_height,
            tex_width, tex_channels] with tex_width equal to tex_height, faces in the order
            +x, -x, +y, -y, +z, -z; ``boundary_mode`` must then be 'cube'. Broadcasting is
            supported along the minibatch axis (minibatch_size 1). Row 0 is at v = 0 (the
            bottom row in OpenGL's convention); texel (i, j) has its centre at
            uv = ((i + 0.5) / tex_width, (j + 0.5) / tex_height).
        uv: Per-pixel texture coordinates. For a 2D texture, shape [minibatch_size, height,
            width, 2] holding (u, v), u along tex_width and v along tex_height, [0, 1] spanning
            the texture. For a cube map, shape [minibatch_size, height, width, 3] holding
            direction vectors (need not be normalized), mapped to faces as OpenGL does.
        uv_da: (Optional) Image-space derivatives of the texture coordinates, same shape as
            ``uv`` except for the last dimension, which is twice as long: (du/dX, du/dY, dv/dX,
            dv/dY) for 2D textures, (dx/dX, dx/dY, dy/dX, dy/dY, dz/dX, dz/dY) for cube maps.
            Determines the mip level in the mipmapped filter modes: the level of detail is
            log2 of the length of the major axis of the pixel footprint in texels (the largest
            singular value of the texel-space Jacobian).
        mip_level_bias: (Optional) Per-pixel bias added to the mip level, shape [minibatch_size,
            height, width]. If ``uv_da`` is omitted, it determines the mip level directly
            (0 = base texture, 1 = first mip level, ...). The level is clamped to
            [0, number of mip levels].
        mip: (Optional) Preconstructed mipmap stack from a ``texture_construct_mip()`` call, or
            a list of tensors specifying a custom mipmap stack. A custom stack holds the levels
            below the base texture (which is still supplied in ``tex`` and must not be in the
            list), each with the layout of ``tex`` and the sizes given in
            ``texture_construct_mip()``; it may stop at any level. Gradients of a custom stack
            are not propagated to ``tex``, but its tensors receive gradients of their own. If no
            stack is given but the filter mode needs one, it is constructed internally
            (differentiably) and discarded afterwards.
        filter_mode: Texture filtering mode: 'auto', 'nearest', 'linear',
            'linear-mipmap-nearest' (bilinear on mip level floor(lod), the level of detail rounded
            down as in nvdiffrast, not to the nearest level) or 'linear-mipmap-linear' (blending
            levels floor(lod) and floor(lod) + 1). 'auto' selects 'linear' if
            neither ``uv_da`` nor ``mip_level_bias`` is given, and 'linear-mipmap-linear' when
            at least one of them is. The mipmapped modes need ``uv_da`` or ``mip_level_bias``.
        boundary_mode: 'wrap', 'clamp', 'zero' or 'cube'. 'cube' is required for (and only
            valid with) cube maps. 'wrap' takes the fractional part of the texture coordinates;
            'clamp' clamps them to the centres of the boundary texels; 'zero' virtually extends
            the texture with all-zero values in all directions. In 'cube' mode, bilinear taps
            that fall off a face are read from the neighbouring face, and a tap past a cube
            corner reads the average of the three texels meeting at that corner.
        max_mip_level: (Optional) Limits the number of mip levels constructed and used in the
            mipmapped filter modes (0: base texture only).

    Returns:
        Tensor of shape [minibatch_size, height, width, tex_channels] with the filtered texture
        samples, dtype of ``tex``. Samples at NaN coordinates are NaN; cube map fetches with
        invalid directions (zero vectors) output all zeros and propagate no gradients.

    Raises:
        TypeError: an argument has the wrong type or dtype (e.g. float16 coordinates, or mixed
            dtypes).
        ValueError: wrong rank, shape, batch size or device; unknown mode; a cube map without
            boundary_mode='cube' or vice versa; a mipmapped filter mode without ``uv_da`` or
            ``mip_level_bias``; a ``mip`` stack that does not fit ``tex``.
    """
    checks.check_choice("filter_mode", filter_mode, _FILTER_MODES)
    checks.check_choice("boundary_mode", boundary_mode, _BOUNDARY_MODES)
    max_mip_level = _check_max_mip_level(max_mip_level)
    if not isinstance(tex, torch.Tensor):
        raise TypeError(f"tex must be a torch.Tensor, got {type(tex).__name__}")
    cube = boundary_mode == "cube"
    _check_cube_layout(tex, cube, "boundary_mode='cube'", "sampling a cube map needs "
                       "boundary_mode='cube'", f"boundary_mode={boundary_mode!r}")
    tex = _check_texture("tex", tex, cube)
    if tex.dtype in checks.HALF_DTYPES:  # sampled in float32, returned in tex's dtype
        if isinstance(mip, (list, tuple)):
            mip = [checks.float32_if_half(m) for m in mip]
        return texture(tex.float(), uv, uv_da, mip_level_bias, mip, filter_mode, boundary_mode,
                       max_mip_level).to(tex.dtype)
    uv = checks.check_float("uv", uv, ndims=4, last_dim=3 if cube else 2)
    batch = uv.shape[0]
    if tex.shape[0] not in (1, batch):
        raise ValueError(f"tex minibatch size must be 1 or match uv's ({batch}), "
                         f"got tex shape {tuple(tex.shape)} and uv shape {tuple(uv.shape)}")
    if uv_da is not None:
        uv_da = checks.check_float("uv_da", uv_da, ndims=4)
        want = tuple(uv.shape[:3]) + (2 * uv.shape[3],)
        if tuple(uv_da.shape) != want:
            raise ValueError(f"uv_da must have shape {want} (uv's shape with a last dimension "
                             f"twice as long), got shape {tuple(uv_da.shape)}")
    if mip_level_bias is not None:
        mip_level_bias = checks.check_float("mip_level_bias", mip_level_bias, ndims=3)
        if tuple(mip_level_bias.shape) != tuple(uv.shape[:3]):
            raise ValueError(f"mip_level_bias must have shape {tuple(uv.shape[:3])} "
                             f"([minibatch_size, height, width] of uv), "
                             f"got shape {tuple(mip_level_bias.shape)}")
    device = checks.check_same_device(tex=tex, uv=uv, uv_da=uv_da, mip_level_bias=mip_level_bias)
    checks.check_same_dtype(tex=tex, uv=uv, uv_da=uv_da, mip_level_bias=mip_level_bias)

    if filter_mode == "auto":
        has_lod = uv_da is not None or mip_level_bias is not None
        filter_mode = "linear-mipmap-linear" if has_lod else "linear"
    mipmapped = filter_mode in _MIPMAP_MODES
    if mipmapped and uv_da is None and mip_level_bias is None:
        raise ValueError(f"filter_mode={filter_mode!r} needs uv_da and/or mip_level_bias to "
                         f"determine the mip level, got neither")

    levels = None
    if mip is not None:
        levels = _check_mip(mip, tex, cube)
        for k, lvl in enumerate(levels):
            if lvl.device != device:
                raise ValueError(f"mip level {k + 1} must be on the same device as tex "
                                 f"({device}), got {lvl.device}")
            if lvl.dtype != tex.dtype:
                raise TypeError(f"mip level {k + 1} must have the same dtype as tex "
                                f"({str(tex.dtype).replace('torch.', '')}), "
                                f"got {str(lvl.dtype).replace('torch.', '')}")

    if custom_ops.compiling():
        return _texture_compiled(tex, uv, uv_da, mip_level_bias, levels, filter_mode,
                                 boundary_mode, max_mip_level)
    backend = dispatch.backend("texture", device, tex.dtype)
    if mipmapped:
        if levels is None:
            return backend.texture_own_mip(tex, uv, uv_da, mip_level_bias, max_mip_level,
                                           filter_mode, boundary_mode)
        if max_mip_level is not None:
            levels = levels[:max_mip_level]
    else:
        levels = None
    return backend.texture(tex, uv, uv_da, mip_level_bias, levels, filter_mode, boundary_mode)


def texture_construct_mip(tex, max_mip_level=None, cube_mode=False):
    """Construct a mipmap stack for a texture.

    Useful for a texture known to remain constant: it avoids rebuilding the stack every time
    :func:`texture` is called. Each level halves the sides of the previous one, rounding down as
    OpenGL does (a side of 1 stays 1), until both sides are 1 or ``max_mip_level`` levels exist.
    A texel of the next level is the area-weighted average of the texels under its footprint:
    for an even side this is nvdiffrast's average of 2×2 patches; for an odd side ``n = 2m + 1``
    (which nvdiffrast rejects) the footprint is ``n / m = 2 + 1/m`` texels wide, and texel ``i``
    contributes with weight ``|[i, i+1) ∩ [j n/m, (j+1) n/m)| / (n/m)`` to output texel ``j``
    along each axis. The weights of each output texel sum to one, and every input texel is
    covered exactly once, so the mean of each level equals the mean of the level above it.

    The stack is computed with differentiable torch operations: if ``tex`` requires grad,
    gradients that reach the stack in :func:`texture` flow back to ``tex`` (through this call's
    autograd graph, which a backward pass frees unless ``retain_graph=True``; build the stack
    under ``torch.no_grad()`` for a constant texture, or once per optimization step).

    Args:
        tex: Texture tensor with the same constraints as in :func:`texture`: [minibatch_size,
            tex_height, tex_width, tex_channels], or [minibatch_size, 6, tex_height, tex_width,
            tex_channels] with ``cube_mode``. float32 (or float64); a float16 or bfloat16
            texture gets a float32 stack (built in float32, as :func:`texture` would).
        max_mip_level: If specified, limits the number of mip levels constructed (0: none).
        cube_mode: Must be set to True if ``tex`` specifies a cube map texture.

    Returns:
        A :class:`TextureMipStack` holding the mip levels, to be supplied to :func:`texture` in
        the ``mip`` argument together with the same ``tex``.
    """
    if not isinstance(cube_mode, bool):
        raise TypeError(f"cube_mode must be a bool, got {type(cube_mode).__name__}")
    max_mip_level = _check_max_mip_level(max_mip_level)
    if isinstance(tex, torch.Tensor):
        _check_cube_layout(tex, cube_mode, "cube_mode=True", "pass cube_mode=True to build its "
                           "mipmap stack", "cube_mode=False")
    tex = _check_texture("tex", tex, cube_mode)
    checks.check_device("tex", tex)
    tex = checks.float32_if_half(tex)  # a float16 / bfloat16 texture gets a float32 stack
    if custom_ops.compiling():
        flat = _construct_mip_op(tex, max_mip_level, cube_mode)
        return TextureMipStack(_split_levels(flat, tex.shape, cube_mode, max_mip_level),
                               cube_mode, tex.shape)
    backend = dispatch.backend("texture", tex.device, tex.dtype)
    levels = backend.construct_mip(tex, max_mip_level, cube_mode)
    return TextureMipStack(levels, cube_mode, tex.shape)


# -- the custom ops torch.compile sees (diffrast.custom_ops) -------------------------------------
#
# diffrast::texture_construct_mip returns the mip levels as one flat buffer (the levels one after
# the other, each in the texture's layout: the CUDA backend's MipLevels.flat), since the outputs of
# a custom op may not alias each other; the traced code cuts it into level views
# (_split_levels). diffrast::texture takes the levels as a list of tensors; the CUDA backend reads
# such views of one buffer in place. Backwards: the CUDA kernels' (cuda_backend_texture's
# texture_backward, construct_mip_backward), or the reference differentiated again by autograd
# (custom_ops.vjp).


def _level_shapes(tex_shape, cube: bool, max_mip_level) -> list:
    """Shapes of the mip levels below a texture of shape ``tex_shape``."""
    if cube:
        b, _, h, w, c = tex_shape
        return [(b, 6, hk, wk, c) for hk, wk in _ref_mipmap.mip_level_sizes(h, w, max_mip_level)]
    b, h, w, c = tex_shape
    return [(b, hk, wk, c) for hk, wk in _ref_mipmap.mip_level_sizes(h, w, max_mip_level)]


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _split_levels(flat: torch.Tensor, tex_shape, cube: bool, max_mip_level) -> list:
    """The level tensors (views) of the flat buffer ``flat`` of :func:`_construct_mip_op`."""
    levels, off = [], 0
    for shape in _level_shapes(tex_shape, cube, max_mip_level):
        n = _numel(shape)
        levels.append(flat.narrow(0, off, n).view(shape))
        off += n
    return levels


def _flatten_levels(levels, tex: torch.Tensor) -> torch.Tensor:
    """The levels one after the other in one new flat tensor."""
    if len(levels) == 0:
        return tex.new_empty(0)
    return torch.cat([lvl.reshape(-1) for lvl in levels])


def _texture_compiled(tex, uv, uv_da, mip_level_bias, levels, filter_mode, boundary_mode,
                      max_mip_level):
    """:func:`texture` on validated arguments, through the custom ops (under ``torch.compile``);
    ``filter_mode`` resolved, ``levels`` the validated ``mip`` levels or None."""
    cube = boundary_mode == "cube"
    if filter_mode in _MIPMAP_MODES:
        if levels is None and dispatch.uses_kernels(tex.device, tex.dtype):
            # one op, as eager mode's one node: the texture's two shares of gradient are summed
            # in the same place, so compiled and eager gradients agree bit for bit
            return _texture_own_mip_op(tex, uv, uv_da, mip_level_bias, max_mip_level,
                                       filter_mode, boundary_mode)[0]
        if levels is None:
            flat = _construct_mip_op(tex, max_mip_level, cube)
            levels = _split_levels(flat, tex.shape, cube, max_mip_level)
        elif max_mip_level is not None:
            levels = levels[:max_mip_level]
    else:
        # Unused outside the mipmapped modes (by both backends): no gradient either.
        uv_da = mip_level_bias = None
        levels = []
    return _texture_op(tex, uv, uv_da, mip_level_bias, list(levels), filter_mode, boundary_mode)


def _contiguous(t):
    return t.contiguous() if t is not None else None


@custom_ops.custom_op("texture_own_mip")
def _texture_own_mip_op(tex: torch.Tensor, uv: torch.Tensor, uv_da: Optional[torch.Tensor],
                        mip_level_bias: Optional[torch.Tensor], max_mip_level: Optional[int],
                        filter_mode: str, boundary_mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``texture`` in a mipmapped ``filter_mode`` with the levels built from ``tex`` (as eager
    mode does it, in one node): ``(out, flat)``, the samples and the levels one after the
    other (what the backward reads; empty with the reference, which builds them again)."""
    with torch.no_grad():
        if dispatch.uses_kernels(tex.device, tex.dtype):
            return _cuda_texture.texture_own_mip_forward(tex, uv, uv_da, mip_level_bias,
                                                         max_mip_level, filter_mode,
                                                         boundary_mode)
        out = _ReferenceBackend.texture_own_mip(tex, uv, uv_da, mip_level_bias, max_mip_level,
                                                filter_mode, boundary_mode)
        return out, tex.new_empty(0)


@_texture_own_mip_op.register_fake
def _(tex, uv, uv_da, mip_level_bias, max_mip_level, filter_mode, boundary_mode):
    out = tex.new_empty(uv.shape[0], uv.shape[1], uv.shape[2], tex.shape[-1])
    if not dispatch.uses_kernels(tex.device, tex.dtype):
        return out, tex.new_empty(0)
    shapes = _level_shapes(tex.shape, boundary_mode == "cube", max_mip_level)
    return out, tex.new_empty(sum(_numel(s) for s in shapes))


@custom_ops.custom_op("texture_own_mip_backward")
def _texture_own_mip_backward_op(tex: torch.Tensor, uv: torch.Tensor,
                                 uv_da: Optional[torch.Tensor],
                                 mip_level_bias: Optional[torch.Tensor], flat: torch.Tensor,
                                 max_mip_level: Optional[int], filter_mode: str,
                                 boundary_mode: str, grad_out: torch.Tensor,
                                 needs: list[bool]) -> list[torch.Tensor]:
    """Gradients of :func:`_texture_own_mip_op`'s samples with respect to those of ``(tex, uv,
    uv_da, mip_level_bias)`` flagged in ``needs`` that they depend on
    (:func:`_texture_grad_needs`), in that order, only those."""
    wants = _texture_grad_needs(list(needs) + [False], filter_mode, uv_da is not None,
                                mip_level_bias is not None, 0)[:4]
    if not any(wants):
        return []
    if dispatch.uses_kernels(tex.device, tex.dtype):
        grads = _cuda_texture.texture_own_mip_backward(
            tex, uv, uv_da, mip_level_bias, flat, max_mip_level, filter_mode, boundary_mode,
            grad_out, wants)
    else:
        def fn(tex, uv, uv_da, mip_level_bias):
            return _ReferenceBackend.texture_own_mip(tex, uv, uv_da, mip_level_bias,
                                                     max_mip_level, filter_mode, boundary_mode)

        inputs = [tex.contiguous(), uv.contiguous(), _contiguous(uv_da),
                  _contiguous(mip_level_bias)]
        grads = custom_ops.vjp(fn, inputs, [grad_out], wants)
    return [g.contiguous() for g, n in zip(grads, wants) if n]


@_texture_own_mip_backward_op.register_fake
def _(tex, uv, uv_da, mip_level_bias, flat, max_mip_level, filter_mode, boundary_mode, grad_out,
      needs):
    wants = _texture_grad_needs(list(needs) + [False], filter_mode, uv_da is not None,
                                mip_level_bias is not None, 0)[:4]
    return [torch.empty_like(t, memory_format=torch.contiguous_format)
            for t, n in zip((tex, uv, uv_da, mip_level_bias), wants) if n]


def _texture_own_mip_setup(ctx, inputs, output):
    tex, uv, uv_da, mip_level_bias, max_mip_level, filter_mode, boundary_mode = inputs
    ctx.save_for_backward(tex, uv, uv_da, mip_level_bias, output[1])
    ctx.args = (max_mip_level, filter_mode, boundary_mode)


def _texture_own_mip_autograd(ctx, grad_out, _grad_flat):
    tex, uv, uv_da, mip_level_bias, flat = ctx.saved_tensors
    needs = list(ctx.needs_input_grad[:4])
    wants = _texture_grad_needs(needs + [False], ctx.args[1], uv_da is not None,
                                mip_level_bias is not None, 0)[:4]
    grads = [None] * 4
    if any(wants):
        got = iter(_texture_own_mip_backward_op(tex, uv, uv_da, mip_level_bias, flat,
                                                *ctx.args, grad_out, needs))
        grads = [next(got) if n else None for n in wants]
    return (*grads, None, None, None)


_texture_own_mip_op.register_autograd(_texture_own_mip_autograd,
                                      setup_context=_texture_own_mip_setup)


@custom_ops.custom_op("texture_construct_mip")
def _construct_mip_op(tex: torch.Tensor, max_mip_level: Optional[int], cube_mode: bool
                      ) -> torch.Tensor:
    """The mip levels below ``tex`` (validated) as one flat tensor: the levels one after the
    other, level 1 first, each in the texture's layout (empty without levels)."""
    with torch.no_grad():
        tex = tex.contiguous()
        backend = dispatch.backend("texture", tex.device, tex.dtype)
        levels = backend.construct_mip(tex, max_mip_level, cube_mode)
        if isinstance(levels, _cuda_texture.MipLevels):
            return levels.flat
        return _flatten_levels(levels, tex)


@_construct_mip_op.register_fake
def _(tex, max_mip_level, cube_mode):
    shapes = _level_shapes(tex.shape, cube_mode, max_mip_level)
    return tex.new_empty(sum(_numel(s) for s in shapes))


@custom_ops.custom_op("texture_construct_mip_backward")
def _construct_mip_backward_op(tex: torch.Tensor, max_mip_level: Optional[int],
                               cube_mode: bool, grad: torch.Tensor) -> torch.Tensor:
    """Gradient of ``tex`` from ``grad``, that of the output of :func:`_construct_mip_op`."""
    if dispatch.uses_kernels(tex.device, tex.dtype):
        return _cuda_texture.construct_mip_backward(grad, tex.shape, cube_mode, max_mip_level)

    def flat_levels(t):
        return _flatten_levels(_ref_mipmap.construct_mip_levels(t, max_mip_level, cube_mode), t)

    return custom_ops.vjp(flat_levels, [tex.contiguous()], [grad], [True])[0].contiguous()


@_construct_mip_backward_op.register_fake
def _(tex, max_mip_level, cube_mode, grad):
    return torch.empty_like(tex, memory_format=torch.contiguous_format)


def _construct_mip_setup(ctx, inputs, output):
    tex, max_mip_level, cube_mode = inputs
    ctx.save_for_backward(tex)
    ctx.max_mip_level = max_mip_level
    ctx.cube_mode = cube_mode


def _construct_mip_autograd(ctx, grad):
    (tex,) = ctx.saved_tensors
    if not ctx.needs_input_grad[0]:
        return None, None, None
    return _construct_mip_backward_op(tex, ctx.max_mip_level, ctx.cube_mode, grad), None, None


_construct_mip_op.register_autograd(_construct_mip_autograd, setup_context=_construct_mip_setup)


@custom_ops.custom_op("texture")
def _texture_op(tex: torch.Tensor, uv: torch.Tensor, uv_da: Optional[torch.Tensor],
                mip_level_bias: Optional[torch.Tensor], mip_levels: list[torch.Tensor],
                filter_mode: str, boundary_mode: str) -> torch.Tensor:
    """``texture`` on validated tensors, ``filter_mode`` resolved, ``mip_levels`` the levels
    used (already cut to ``max_mip_level``; ignored outside the mipmapped modes)."""
    with torch.no_grad():
        return dispatch.backend("texture", tex.device, tex.dtype).texture(
            tex.contiguous(), uv.contiguous(), _contiguous(uv_da), _contiguous(mip_level_bias),
            [lvl.contiguous() for lvl in mip_levels], filter_mode, boundary_mode)


@_texture_op.register_fake
def _(tex, uv, uv_da, mip_level_bias, mip_levels, filter_mode, boundary_mode):
    return tex.new_empty(uv.shape[0], uv.shape[1], uv.shape[2], tex.shape[-1])


def _texture_grad_needs(needs, filter_mode: str, has_uv_da: bool, has_bias: bool,
                        num_levels: int) -> list:
    """Which of ``(tex, uv, uv_da, mip_level_bias, mip_levels)`` get a gradient from
    :func:`_texture_backward_op`: those flagged in ``needs`` that the output depends on (as both
    backends' autograd graphs have it: no ``uv`` in 'nearest' mode, ``uv_da`` and
    ``mip_level_bias`` only in 'linear-mipmap-linear' mode, levels only in the mipmapped modes)."""
    mip_linear = filter_mode == "linear-mipmap-linear"
    return [bool(needs[0]), bool(needs[1]) and filter_mode != "nearest",
            bool(needs[2]) and has_uv_da and mip_linear, bool(needs[3]) and has_bias and mip_linear,
            bool(needs[4]) and filter_mode in _MIPMAP_MODES and num_levels > 0]


@custom_ops.custom_op("texture_backward")
def _texture_backward_op(tex: torch.Tensor, uv: torch.Tensor, uv_da: Optional[torch.Tensor],
                         mip_level_bias: Optional[torch.Tensor], mip_levels: list[torch.Tensor],
                         filter_mode: str, boundary_mode: str, grad_out: torch.Tensor,
                         needs: list[bool]) -> list[torch.Tensor]:
    """Gradients of :func:`_texture_op` with respect to those of ``(tex, uv, uv_da,
    mip_level_bias, mip_levels)`` flagged in ``needs`` (5 flags, the last one for all levels)
    that the output depends on (:func:`_texture_grad_needs`), in that order, only those: first,
    if ``tex`` or the levels get one, a flat tensor holding the gradient of ``tex`` (if flagged)
    followed by those of the levels (if flagged), one after the other; then those of ``uv``,
    ``uv_da``, ``mip_level_bias``."""
    needs = _texture_grad_needs(needs, filter_mode, uv_da is not None,
                                mip_level_bias is not None, len(mip_levels))
    want_tex, want_uv, want_da, want_bias, want_mip = needs
    if not any(needs):
        return []
    if dispatch.uses_kernels(tex.device, tex.dtype):
        texels, g_uv, g_da, g_bias = _cuda_texture.texture_backward(
            tex, uv, uv_da, mip_level_bias, list(mip_levels), filter_mode, boundary_mode,
            grad_out, needs)
        if texels is not None and not want_tex:
            texels = texels[tex.numel():].clone()  # (an output at an offset: rare, levels only)
    else:
        def fn(tex, uv, uv_da, mip_level_bias, *levels):
            return _ref_texture.texture(tex, uv, uv_da, mip_level_bias, list(levels),
                                        filter_mode, boundary_mode)

        inputs = [tex.contiguous(), uv.contiguous(), _contiguous(uv_da),
                  _contiguous(mip_level_bias)] + [lvl.contiguous() for lvl in mip_levels]
        grads = custom_ops.vjp(fn, inputs, [grad_out], needs[:4] + [want_mip] * len(mip_levels))
        g_uv, g_da, g_bias = grads[1:4]
        parts = ([grads[0]] if want_tex else []) + (grads[4:] if want_mip else [])
        texels = torch.cat([g.reshape(-1) for g in parts]) if parts else None
    return [g.contiguous() for g, n in zip((texels, g_uv, g_da, g_bias),
                                           (want_tex or want_mip, want_uv, want_da, want_bias))
            if n]


@_texture_backward_op.register_fake
def _(tex, uv, uv_da, mip_level_bias, mip_levels, filter_mode, boundary_mode, grad_out, needs):
    needs = _texture_grad_needs(needs, filter_mode, uv_da is not None,
                                mip_level_bias is not None, len(mip_levels))
    want_tex, want_uv, want_da, want_bias, want_mip = needs
    out = []
    if want_tex or want_mip:
        n = (tex.numel() if want_tex else 0) + (sum(lvl.numel() for lvl in mip_levels)
                                                 if want_mip else 0)
        out.append(tex.new_empty(n))
    out += [torch.empty_like(t, memory_format=torch.contiguous_format)
            for t, n in zip((uv, uv_da, mip_level_bias), needs[1:4]) if n]
    return out


def _texture_setup(ctx, inputs, output):
    tex, uv, uv_da, mip_level_bias, mip_levels, filter_mode, boundary_mode = inputs
    ctx.save_for_backward(tex, uv, uv_da, mip_level_bias, *mip_levels)
    ctx.filter_mode = filter_mode
    ctx.boundary_mode = boundary_mode


def _texture_autograd(ctx, grad_out):
    tex, uv, uv_da, mip_level_bias, *levels = ctx.saved_tensors
    level_needs = list(ctx.needs_input_grad[4])
    needs = _texture_grad_needs(tuple(ctx.needs_input_grad[:4]) + (any(level_needs),),
                                ctx.filter_mode,
                                uv_da is not None, mip_level_bias is not None, len(levels))
    grad_tex = grad_uv = grad_da = grad_bias = None
    grad_levels = [None] * len(levels)
    if any(needs):
        grads = iter(_texture_backward_op(tex, uv, uv_da, mip_level_bias, levels,
                                          ctx.filter_mode, ctx.boundary_mode, grad_out, needs))
        if needs[0] or needs[4]:
            texels, off = next(grads), 0
            if needs[0]:
                grad_tex, off = texels[:tex.numel()].view(tex.shape), tex.numel()
            if needs[4]:
                for k, lvl in enumerate(levels):
                    if level_needs[k]:
                        grad_levels[k] = texels.narrow(0, off, lvl.numel()).view(lvl.shape)
                    off += lvl.numel()
        grad_uv, grad_da, grad_bias = (next(grads) if n else None for n in needs[1:4])
    return grad_tex, grad_uv, grad_da, grad_bias, grad_levels, None, None


_texture_op.register_autograd(_texture_autograd, setup_context=_texture_setup)
