"""Triangle ids as floats in ``rast[..., 3]``, with nvdiffrast's encoding.

``rast[..., 3]`` holds ``triangle_id + 1`` (0 where no triangle covers the pixel). Values up to
2^24 are the float of that integer. A larger value ``n`` is stored as the float whose bit
pattern is ``0x4a800000 + n``: unique and monotonic, though not equal to ``n``. That reaches
``MAX_TRIANGLES`` triangles before the pattern would become inf or NaN.
"""
from __future__ import annotations

import torch

EXACT_LIMIT = 1 << 24
_BIAS = 0x4A800000
MAX_TRIANGLES = 0x7F800000 - _BIAS - 1  # 889,192,447: the last id + 1 below inf's bit pattern


def encode(id_plus_one: torch.Tensor) -> torch.Tensor:
    """Encode int ``triangle_id + 1`` values (0 for empty) as float32, as stored in ``rast``."""
    n = id_plus_one.to(torch.int64)
    big = n > EXACT_LIMIT
    bits = torch.where(big, n + _BIAS, torch.zeros_like(n)).to(torch.int32)
    return torch.where(big, bits.view(torch.float32), n.to(torch.float32))


def decode(value: torch.Tensor) -> torch.Tensor:
    """Decode ``rast[..., 3]`` into int64 ``triangle_id + 1`` (0 for empty). Accepts float32 or
    float64 (the latter only for the exact range, as produced by float64 reference tests)."""
    if value.dtype == torch.float64:
        return value.to(torch.int64)
    v = value.contiguous()
    bits = v.view(torch.int32).to(torch.int64)
    big = v > float(EXACT_LIMIT)
    return torch.where(big, bits - _BIAS, v.to(torch.int64))
