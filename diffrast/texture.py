"""Texture sampling: ``texture`` and ``texture_construct_mip``, with nvdiffrast's API.

The public functions validate their arguments (see :mod:`diffrast._checks`), then hand the work
to the backend for the tensors' device and dtype (:func:`_backend_for`): the CUDA kernels of
:mod:`diffrast.cuda_backend_texture` for float32 CUDA tensors, otherwise the reference
implementation in :mod:`diffrast.reference.texture` (plain differentiable PyTorch). Both backends
have the same two entry points.
"""
from __future__ import annotations

import torch

from . import _checks
from . import cuda_backend_texture as _cuda_texture
from .cuda_ops import loader as _loader
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
            texture (if it required grad when the stack was built).
        cube_mode: Whether the stack belongs to a cube map.
        base_shape: Shape of the texture the stack was built from.
    """

    __slots__ = ("levels", "cube_mode", "base_shape")

    def __init__(self, levels, cube_mode: bool, base_shape):
        self.levels = list(levels)
        self.cube_mode = bool(cube_mode)
        self.base_shape = tuple(base_shape)

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


def _backend_for(device: torch.device, dtype: torch.dtype):
    """The backend for tensors of ``dtype`` on ``device``: the CUDA kernels
    (:mod:`diffrast.cuda_backend_texture`) for float32 CUDA tensors when CuPy is available, the
    reference otherwise (float64 included)."""
    if device.type == "cuda" and dtype == torch.float32 and _loader.available():
        return _cuda_texture.Backend
    return _ReferenceBackend


# ----------------------------------------------------------------------------------------------
# Validation helpers


def _check_max_mip_level(max_mip_level):
    if max_mip_level is None:
        return None
    if isinstance(max_mip_level, bool) or not isinstance(max_mip_level, int):
        raise TypeError(f"max_mip_level must be None or a non-negative int, "
                        f"got {type(max_mip_level).__name__}")
    if max_mip_level < 0:
        raise ValueError(f"max_mip_level must be None or a non-negative int, got {max_mip_level}")
    return max_mip_level


def _check_texture(name: str, tex, cube: bool) -> torch.Tensor:
    """Check a texture tensor's layout: ``[B, H, W, C]``, or ``[B, 6, H, W, C]`` for a cube map
    with square faces; every dimension positive."""
    if cube:
        tex = _checks.check_float(name, tex, ndims=5)
        if tex.shape[1] != 6:
            raise ValueError(f"{name} must have shape [minibatch_size, 6, height, width, channels] "
                             f"for a cube map, got shape {tuple(tex.shape)} (dimension 1 is not 6)")
        if tex.shape[2] != tex.shape[3]:
            raise ValueError(f"{name} must have square cube map faces (height == width), "
                             f"got shape {tuple(tex.shape)}")
    else:
        tex = _checks.check_float(name, tex, ndims=4)
    if any(s == 0 for s in tex.shape):
        raise ValueError(f"{name} must have no empty dimension, got shape {tuple(tex.shape)}")
    return tex


def _expected_levels(tex: torch.Tensor, cube: bool, max_mip_level):
    h, w = (tex.shape[2], tex.shape[3]) if cube else (tex.shape[1], tex.shape[2])
    return _ref_mipmap.mip_level_sizes(h, w, max_mip_level)


def _check_mip(mip, tex: torch.Tensor, cube: bool) -> list:
    """Validate ``mip`` (a :class:`TextureMipStack` or a list of level tensors) against ``tex``;
    return the list of level tensors."""
    if isinstance(mip, TextureMipStack):
        if mip.cube_mode != cube:
            want = "a cube map" if cube else "a 2D texture"
            got = "a cube map" if mip.cube_mode else "a 2D texture"
            raise ValueError(f"mip must be a mipmap stack of {want} like tex, got one of {got} "
                             f"(texture_construct_mip(..., cube_mode={mip.cube_mode}))")
        if mip.base_shape != tuple(tex.shape):
            raise ValueError(f"mip was built from a texture of shape {mip.base_shape}, "
                             f"but tex has shape {tuple(tex.shape)}")
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
        lvl = _checks.check_float(lname, lvl, ndims=tex.ndim)
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
    in nvdiffrast; ``torch.float64`` is also accepted, e.g. for ``torch.autograd.gradcheck``).
    Non-contiguous inputs are made contiguous. The output is on the same device.

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
            'linear-mipmap-nearest' or 'linear-mipmap-linear'. 'auto' selects 'linear' if
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
        TypeError: an argument has the wrong type or dtype (e.g. float16, or mixed dtypes).
        ValueError: wrong rank, shape, batch size or device; unknown mode; a cube map without
            boundary_mode='cube' or vice versa; a mipmapped filter mode without ``uv_da`` or
            ``mip_level_bias``; a ``mip`` stack that does not fit ``tex``.
    """
    _checks.check_choice("filter_mode", filter_mode, _FILTER_MODES)
    _checks.check_choice("boundary_mode", boundary_mode, _BOUNDARY_MODES)
    max_mip_level = _check_max_mip_level(max_mip_level)
    if not isinstance(tex, torch.Tensor):
        raise TypeError(f"tex must be a torch.Tensor, got {type(tex).__name__}")
    cube = boundary_mode == "cube"
    _check_cube_layout(tex, cube, "boundary_mode='cube'", "sampling a cube map needs "
                       "boundary_mode='cube'", f"boundary_mode={boundary_mode!r}")
    tex = _check_texture("tex", tex, cube)
    uv = _checks.check_float("uv", uv, ndims=4, last_dim=3 if cube else 2)
    batch = uv.shape[0]
    if tex.shape[0] not in (1, batch):
        raise ValueError(f"tex minibatch size must be 1 or match uv's ({batch}), "
                         f"got tex shape {tuple(tex.shape)} and uv shape {tuple(uv.shape)}")
    if uv_da is not None:
        uv_da = _checks.check_float("uv_da", uv_da, ndims=4)
        want = tuple(uv.shape[:3]) + (2 * uv.shape[3],)
        if tuple(uv_da.shape) != want:
            raise ValueError(f"uv_da must have shape {want} (uv's shape with a last dimension "
                             f"twice as long), got shape {tuple(uv_da.shape)}")
    if mip_level_bias is not None:
        mip_level_bias = _checks.check_float("mip_level_bias", mip_level_bias, ndims=3)
        if tuple(mip_level_bias.shape) != tuple(uv.shape[:3]):
            raise ValueError(f"mip_level_bias must have shape {tuple(uv.shape[:3])} "
                             f"([minibatch_size, height, width] of uv), "
                             f"got shape {tuple(mip_level_bias.shape)}")
    device = _checks.check_same_device(tex=tex, uv=uv, uv_da=uv_da, mip_level_bias=mip_level_bias)
    _checks.check_same_dtype(tex=tex, uv=uv, uv_da=uv_da, mip_level_bias=mip_level_bias)

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

    backend = _backend_for(device, tex.dtype)
    if mipmapped:
        if levels is None:
            levels = backend.construct_mip(tex, max_mip_level, cube)
        elif max_mip_level is not None:
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
            tex_channels] with ``cube_mode``. float32 (or float64).
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
    _checks.check_device("tex", tex)
    levels = _backend_for(tex.device, tex.dtype).construct_mip(tex, max_mip_level, cube_mode)
    return TextureMipStack(levels, cube_mode, tex.shape)
