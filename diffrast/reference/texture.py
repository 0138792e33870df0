"""Texture sampling in plain PyTorch: the reference (CPU backend and oracle) for ``texture``.

Conventions (nvdiffrast's documented semantics):

* A 2-D texture is ``[Bt, H, W, C]`` with ``Bt`` 1 (broadcast) or the batch size; ``uv`` is
  ``[B, h, w, 2]``. ``u`` runs along the width (texel column ``x``), ``v`` along the height (texel
  row ``y``, row 0 at ``v = 0``). ``uv`` in ``[0, 1]`` spans the texture and texel ``i`` has its
  centre at ``(i + 0.5) / W``, i.e. the continuous texel coordinate is ``x = u W - 0.5``.
* Boundary modes: ``'wrap'`` takes the fractional part of ``uv`` (taps wrap around); ``'clamp'``
  clamps to the centres of the boundary texels; ``'zero'`` extends the texture with zeros.
* A cube map is ``[Bt, 6, S, S, C]``, ``uv`` holds directions ``[B, h, w, 3]`` and the faces and
  seams follow :mod:`diffrast.reference.cube`. Zero-length directions give zeros and no gradient;
  subnormal components count as zero, so all-subnormal directions are zero-length.
* ``'nearest'`` reads the texel containing the sample point; ``'linear'`` is bilinear on the base
  level; ``'linear-mipmap-nearest'`` is bilinear on level ``floor(lod)`` (nvdiffrast's rule,
  the API's meaning of the mode: it rounds down, where OpenGL would take the nearest level);
  ``'linear-mipmap-linear'`` blends bilinear samples of levels ``floor(lod)`` and
  ``floor(lod) + 1`` by the fractional part.
* Level of detail: with the texel-space Jacobian ``J = [[ds/dX, ds/dY], [dt/dX, dt/dY]]``
  (``s = u W``, ``t = v H``; for cube maps the face coordinates times the face size), a
  pixel-sized circle maps to an ellipse whose axis lengths are the singular values of ``J``.
  With ``A = |J e_X|^2``, ``B = |J e_Y|^2``, ``C = (J e_X)·(J e_Y)`` the squared major axis length
  is the larger eigenvalue of ``J^T J``: ``(A + B)/2 + sqrt(((A - B)/2)^2 + C^2)``, and
  ``lod = log2(major axis length) = 0.5 log2(...)``. ``mip_level_bias`` is added, then the result
  is clamped to ``[0, number of mip levels]``.

NaN coordinates give NaN samples; indices are always sanitized before any gather, so no input can
index out of bounds. Everything is differentiable by autograd: gradients reach ``tex``, ``uv``,
``uv_da``, ``mip_level_bias`` and the mip levels (and through them, when they were built from
``tex`` by :func:`diffrast.reference.mipmap.construct_mip_levels`, the base texture).
"""
from __future__ import annotations

import torch

from . import cube as _cube

FILTER_MODES = ("nearest", "linear", "linear-mipmap-nearest", "linear-mipmap-linear")
BOUNDARY_MODES = ("wrap", "clamp", "zero", "cube")


# ----------------------------------------------------------------------------------------------
# 2-D addressing


def _prepare_coord(c: torch.Tensor, n: int, boundary: str, offset: float) -> torch.Tensor:
    """Continuous texel coordinate ``c n - offset`` after the boundary rule on the normalized
    coordinate. For 'clamp' and 'zero' the result is clamped to ``[-1, n]`` (beyond that every
    tap is the same); NaN stays NaN."""
    if boundary == "wrap":
        c = c - torch.floor(c)
    x = c * n - offset
    if boundary != "wrap":
        x = x.clamp(-1.0, float(n))
    return x


def _wrap_index(i: torch.Tensor, n: int, boundary: str):
    """Map integer taps to valid indices; returns ``(index, inside)``, ``inside`` being ``None``
    unless the mode is 'zero' (taps outside read zero)."""
    if boundary == "wrap":
        return torch.remainder(i, n), None
    inside = None
    if boundary == "zero":
        inside = (i >= 0) & (i < n)
    return i.clamp(0, n - 1), inside


def _safe_floor(x: torch.Tensor) -> torch.Tensor:
    """``floor(x)`` as a float tensor with NaN/inf replaced by 0 (index sanitization)."""
    return torch.floor(torch.nan_to_num(x.detach(), nan=0.0, posinf=0.0, neginf=0.0))


def _gather(flat: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    return flat.index_select(0, idx.reshape(-1)).reshape(*idx.shape, flat.shape[-1])


def _sanitize(x: torch.Tensor, y: torch.Tensor):
    """Replace non-finite coordinates by 0 and return the mask of those samples. Their samples
    are computed at 0 and then set to NaN by :func:`_poison`, so NaN reaches the output but no
    NaN or inf ever reaches a weight (a masked-out NaN sample must not send NaN gradients into the
    texture)."""
    bad = ~(torch.isfinite(x) & torch.isfinite(y))
    zero = torch.zeros_like(x)
    return torch.where(bad, zero, x), torch.where(bad, zero, y), bad


def _poison(val: torch.Tensor, bad: torch.Tensor) -> torch.Tensor:
    return torch.where(bad[:, None], torch.full_like(val, float("nan")), val)


def _sample_2d_nearest(level, bidx, u, v, boundary):
    _, h, w, c = level.shape
    x, y, bad = _sanitize(_prepare_coord(u, w, boundary, 0.0), _prepare_coord(v, h, boundary, 0.0))
    ix, inx = _wrap_index(_safe_floor(x).long(), w, boundary)
    iy, iny = _wrap_index(_safe_floor(y).long(), h, boundary)
    val = _gather(level.reshape(-1, c), (bidx * h + iy) * w + ix)
    if boundary == "zero":
        val = torch.where((inx & iny)[:, None], val, torch.zeros_like(val))
    return _poison(val, bad)


def _sample_2d_bilinear(level, bidx, u, v, boundary):
    _, h, w, c = level.shape
    x, y, bad = _sanitize(_prepare_coord(u, w, boundary, 0.5), _prepare_coord(v, h, boundary, 0.5))
    x0f, y0f = _safe_floor(x), _safe_floor(y)
    fx, fy = x - x0f, y - y0f
    x0, y0 = x0f.long(), y0f.long()
    ix0, inx0 = _wrap_index(x0, w, boundary)
    ix1, inx1 = _wrap_index(x0 + 1, w, boundary)
    iy0, iny0 = _wrap_index(y0, h, boundary)
    iy1, iny1 = _wrap_index(y0 + 1, h, boundary)
    row0 = (bidx * h + iy0) * w
    row1 = (bidx * h + iy1) * w
    idx = torch.stack([row0 + ix0, row0 + ix1, row1 + ix0, row1 + ix1])      # [4, n]
    taps = _gather(level.reshape(-1, c), idx)                                # [4, n, c]
    if boundary == "zero":
        inside = torch.stack([iny0 & inx0, iny0 & inx1, iny1 & inx0, iny1 & inx1])
        taps = torch.where(inside[..., None], taps, torch.zeros_like(taps))
    gx, gy = 1.0 - fx, 1.0 - fy
    weights = torch.stack([gx * gy, fx * gy, gx * fy, fx * fy])[..., None]   # [4, n, 1]
    return _poison((taps * weights).sum(0), bad)


# ----------------------------------------------------------------------------------------------
# Cube map addressing


def _sample_cube_nearest(level, bidx, face, s, t):
    _, _, n, _, c = level.shape
    ix = _safe_floor(s * n).long().clamp(0, n - 1)
    iy = _safe_floor(t * n).long().clamp(0, n - 1)
    return _gather(level.reshape(-1, c), ((bidx * 6 + face) * n + iy) * n + ix)


def _sample_cube_bilinear(level, bidx, face, s, t):
    _, _, n, _, c = level.shape
    x = s * n - 0.5
    y = t * n - 0.5
    x0f = _safe_floor(x).clamp(-1.0, float(n - 1))
    y0f = _safe_floor(y).clamp(-1.0, float(n - 1))
    fx, fy = x - x0f, y - y0f
    x0, y0 = x0f.long(), y0f.long()
    tx = torch.stack([x0, x0 + 1, x0, x0 + 1])          # tap order: (0,0), (1,0), (0,1), (1,1)
    ty = torch.stack([y0, y0, y0 + 1, y0 + 1])
    g, gx_, gy_, corner = _cube.fold_taps(face.repeat(4), tx.reshape(-1), ty.reshape(-1), n)
    idx = ((bidx.repeat(4) * 6 + g) * n + gy_) * n + gx_
    taps = _gather(level.reshape(-1, c), idx.reshape(4, -1))                  # [4, n, c]
    corner = corner.reshape(4, -1, 1)
    if bool(corner.any()):
        # A tap past a cube corner reads the average of the three texels meeting there, which
        # are the other three taps of the footprint.
        taps = torch.where(corner, torch.zeros_like(taps), taps)
        taps = torch.where(corner, taps.sum(0, keepdim=True) / 3.0, taps)
    gx, gy = 1.0 - fx, 1.0 - fy
    weights = torch.stack([gx * gy, fx * gy, gx * fy, fx * fy])[..., None]
    return (taps * weights).sum(0)


# ----------------------------------------------------------------------------------------------
# Level of detail


def _lod_from_jacobian(sx, sy, tx, ty) -> torch.Tensor:
    """``log2`` of the major axis length of the texel-space footprint ellipse. Safe (no NaN
    gradient) for isotropic and degenerate footprints; -inf for a vanishing one."""
    a = sx * sx + tx * tx
    b = sy * sy + ty * ty
    c = sx * sy + tx * ty
    tiny = torch.finfo(a.dtype).tiny
    half_sum = 0.5 * (a + b)
    half_diff = 0.5 * (a - b)
    disc = half_diff * half_diff + c * c
    # sqrt has an infinite derivative at 0 (isotropic footprints): take it only above `tiny`.
    root = torch.where(disc > tiny, torch.sqrt(disc.clamp_min(tiny)), torch.zeros_like(disc))
    major_sqr = half_sum + root
    lod = 0.5 * torch.log2(major_sqr.clamp_min(tiny))
    # A vanishing footprint has lod -inf (clamped to level 0 later, with zero gradient).
    return torch.where(major_sqr <= tiny, torch.full_like(lod, -float("inf")), lod)


def _lod_2d(uv_da: torch.Tensor, h: int, w: int) -> torch.Tensor:
    # Squaring the Jacobian of a huge footprint would overflow float32 (and give NaN gradients):
    # where the largest |uv_da| component m exceeds 2^14 (finite), uv_da is divided by 2^e,
    # e = min(floor(log2 m), 126) (exact), and e is added to the lod.
    m = uv_da.abs().amax(-1)
    e = torch.where((m > 16384.0) & (m <= torch.finfo(torch.float32).max),
                    (torch.frexp(m).exponent - 1).clamp_max(126), torch.zeros_like(m, dtype=torch.int32))
    dudx, dudy, dvdx, dvdy = torch.ldexp(uv_da, -e[..., None]).unbind(-1)
    return _lod_from_jacobian(dudx * w, dudy * w, dvdx * h, dvdy * h) + e.to(uv_da.dtype)


def _lod_cube(uv_da: torch.Tensor, face, ma, sc, tc, n: int) -> torch.Tensor:
    dx = uv_da[:, 0::2]     # d(direction)/dX: channels 0, 2, 4
    dy = uv_da[:, 1::2]     # d(direction)/dY: channels 1, 3, 5
    # The Jacobian is K / ma with K finite; log2 of its major axis is log2(|K|) - log2(ma), which
    # cannot overflow for short direction vectors.
    sx, tx = _cube.scaled_face_coord_derivatives(dx, face, ma, sc, tc)
    sy, ty = _cube.scaled_face_coord_derivatives(dy, face, ma, sc, tc)
    return _lod_from_jacobian(sx * n, sy * n, tx * n, ty * n) - torch.log2(ma)


# ----------------------------------------------------------------------------------------------
# The op


def texture(tex: torch.Tensor, uv: torch.Tensor, uv_da=None, mip_level_bias=None,
            mip_levels=None, filter_mode: str = "linear", boundary_mode: str = "wrap") -> torch.Tensor:
    """Sample ``tex`` at ``uv``. Inputs are validated by :func:`diffrast.texture`.

    ``filter_mode`` is one of :data:`FILTER_MODES` ('auto' already resolved); ``mip_levels`` is
    the list of levels below ``tex`` to use in the mipmapped modes (already limited by
    ``max_mip_level``; may be empty). A mipmapped mode needs ``uv_da`` and/or ``mip_level_bias``.
    Returns ``[B, h, w, C]``.
    """
    cube = boundary_mode == "cube"
    batch, oh, ow, _ = uv.shape
    channels = tex.shape[-1]
    npix = batch * oh * ow
    coords = uv.reshape(npix, uv.shape[-1])
    if tex.shape[0] == 1:
        bidx = torch.zeros(npix, dtype=torch.long, device=uv.device)
    else:
        bidx = torch.arange(batch, device=uv.device).repeat_interleave(oh * ow)

    if cube:
        face, c0, c1, valid, ma, sc, tc = _cube.face_coords(coords)
        nan_in = torch.isnan(coords).any(-1)
        sample_nearest = lambda lvl, sel: _sample_cube_nearest(lvl, bidx[sel], face[sel], c0[sel], c1[sel])  # noqa: E731
        sample_linear = lambda lvl, sel: _sample_cube_bilinear(lvl, bidx[sel], face[sel], c0[sel], c1[sel])  # noqa: E731
    else:
        c0, c1 = coords[:, 0], coords[:, 1]
        sample_nearest = lambda lvl, sel: _sample_2d_nearest(lvl, bidx[sel], c0[sel], c1[sel], boundary_mode)  # noqa: E731
        sample_linear = lambda lvl, sel: _sample_2d_bilinear(lvl, bidx[sel], c0[sel], c1[sel], boundary_mode)  # noqa: E731

    everything = slice(None)
    if filter_mode == "nearest":
        out = sample_nearest(tex, everything)
    elif filter_mode == "linear":
        out = sample_linear(tex, everything)
    else:
        levels = [tex] + list(mip_levels or [])
        top = len(levels) - 1
        lod = torch.zeros(npix, dtype=tex.dtype, device=tex.device)
        if uv_da is not None:
            da = uv_da.reshape(npix, uv_da.shape[-1])
            if cube:
                lod = _lod_cube(da, face, ma, sc, tc, tex.shape[2])
            else:
                lod = _lod_2d(da, tex.shape[1], tex.shape[2])
        if mip_level_bias is not None:
            lod = lod + mip_level_bias.reshape(npix)
        level = lod.clamp(0.0, float(top))
        level_nan = torch.isnan(level)
        level = torch.where(level_nan, torch.zeros_like(level), level)   # NaN is re-applied below
        safe = level.detach()
        if filter_mode == "linear-mipmap-nearest":
            l0 = torch.floor(safe).long()  # (nvdiffrast's rule: round down)
            l1 = l0
            frac = torch.zeros_like(level)
        else:
            l0f = torch.floor(safe)
            l0 = l0f.long()
            l1 = (l0 + 1).clamp_max(top)
            frac = level - l0f
        out = torch.zeros(npix, channels, dtype=tex.dtype, device=tex.device)
        for k, lvl in enumerate(levels):
            use = (l0 == k) | (l1 == k)
            sel = torch.nonzero(use, as_tuple=True)[0]
            if sel.numel() == 0 and k > 0:
                continue        # level 0 always runs, so the output is connected to the graph
            f = frac[sel]
            weight = (1.0 - f) * (l0[sel] == k) + f * (l1[sel] == k)
            out = out.index_add(0, sel, sample_linear(lvl, sel) * weight[:, None])
        out = _poison(out, level_nan)

    if cube:
        out = torch.where(valid[:, None], out, torch.zeros_like(out))
        out = _poison(out, nan_in)
    return out.reshape(batch, oh, ow, channels)
