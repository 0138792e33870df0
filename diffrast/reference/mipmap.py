"""Mipmap stack construction in plain PyTorch (reference for ``texture_construct_mip``).

Every level halves the previous one's sides, rounding down as OpenGL does, and a side of 1 stays
1: ``n -> max(n // 2, 1)``. The stack ends when both sides are 1, or after ``max_mip_level``
levels.

Each output texel is the *area-weighted box average* of the input texels under its footprint.
Along one axis, output texel ``j`` of ``m`` covers the input interval ``[j n/m, (j+1) n/m)`` in
input-texel units (a footprint of ``n/m`` texels), and input texel ``i`` (the interval
``[i, i+1)``) gets the weight

    w_ji = |[i, i+1) ∩ [j n/m, (j+1) n/m)| / (n/m).

The weights of one output texel sum to 1, so a constant texture stays constant, and every input
texel is covered exactly once by the footprints, with total weight ``m/n``, so the mean of every
level equals the mean of the level above it exactly. For an even side (``n = 2m``) the footprint is
2 texels wide and aligned, which is the plain 2-texel box average (nvdiffrast's 2×2 average); for an
odd side ``n = 2m + 1 > 1`` (which nvdiffrast refuses) the footprint is ``2 + 1/m`` texels and
touches at most 4 input texels, e.g. ``n = 5, m = 2``: ``(x0 + x1 + x2/2) / 2.5`` and
``(x2/2 + x3 + x4) / 2.5``. The 2-D filter is the product of the two 1-D filters (the area of the
intersection of the 2-D footprints), applied one axis after the other. Cube maps are filtered face
by face.

Everything is ordinary differentiable torch code, so gradients flow from every level back to the
base texture through autograd.
"""
from __future__ import annotations

import torch


def halve(n: int) -> int:
    """Size of the next mip level along one axis: ``max(n // 2, 1)``."""
    return max(n // 2, 1)


def mip_level_sizes(height: int, width: int, max_mip_level=None) -> list:
    """Sizes ``[(h1, w1), (h2, w2), ...]`` of the mip levels below a ``height × width`` base,
    down to 1×1, or at most ``max_mip_level`` levels."""
    sizes = []
    h, w = height, width
    while (h, w) != (1, 1) and (max_mip_level is None or len(sizes) < max_mip_level):
        h, w = halve(h), halve(w)
        sizes.append((h, w))
    return sizes


def _downsample_axis(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Area-weighted box downsampling of ``x`` along ``dim`` from ``n`` to ``max(n // 2, 1)``."""
    n = x.shape[dim]
    if n == 1:
        return x
    m = n // 2
    if n % 2 == 0:
        shape = list(x.shape)
        shape[dim:dim + 1] = [m, 2]
        return x.reshape(shape).mean(dim=dim + 1)
    # Odd side: footprint of n/m texels; overlaps are computed exactly in units of 1/m texel.
    j = torch.arange(m, device=x.device)
    lo = j * n                      # footprint start, in units of 1/m input texel
    hi = lo + n
    first = torch.div(lo, m, rounding_mode="floor")
    out = None
    for k in range(4):              # a footprint of 2 + 1/m <= 3 texels touches at most 4 texels
        i = first + k
        overlap = (torch.minimum(hi, (i + 1) * m) - torch.maximum(lo, i * m)).clamp_min(0)
        weight = (overlap.to(x.dtype) / n)
        i = i.clamp_max(n - 1)      # taps past the end have zero weight
        shape = [1] * x.ndim
        shape[dim] = m
        term = x.index_select(dim, i) * weight.reshape(shape)
        out = term if out is None else out + term
    return out


def downsample(x: torch.Tensor, h_dim: int, w_dim: int) -> torch.Tensor:
    """One mip step: halve both spatial axes of ``x`` with the area-weighted box filter."""
    return _downsample_axis(_downsample_axis(x, w_dim), h_dim)


def construct_mip_levels(tex: torch.Tensor, max_mip_level=None, cube_mode: bool = False) -> list:
    """Build the mip levels below ``tex`` (not including it), differentiably.

    ``tex`` is ``[B, H, W, C]``, or ``[B, 6, H, W, C]`` with ``cube_mode``. Returns the list of level
    tensors in the same layout, level 1 first.
    """
    h_dim, w_dim = (2, 3) if cube_mode else (1, 2)
    levels = []
    cur = tex
    for _ in mip_level_sizes(tex.shape[h_dim], tex.shape[w_dim], max_mip_level):
        cur = downsample(cur, h_dim, w_dim).contiguous()
        levels.append(cur)
    return levels
