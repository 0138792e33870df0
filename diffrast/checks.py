"""Input validation shared by the public functions.

Every public function checks its arguments here before any GL or CUDA work and raises a
``ValueError`` or ``TypeError`` whose message names the argument, what was expected and what
came. Inner code trusts its callers.
"""
from __future__ import annotations

import operator
import weakref

import numpy as np
import torch

from . import custom_ops

FLOAT_DTYPES = (torch.float32, torch.float64)
# Accepted for attributes and textures: computed in float32, results returned in these dtypes.
HALF_DTYPES = (torch.float16, torch.bfloat16)


def describe(t: torch.Tensor) -> str:
    return f"shape {tuple(t.shape)}, dtype {str(t.dtype).replace('torch.', '')}, device {t.device}"


def as_integer(value):
    """``value`` as a Python ``int`` where it is of an integer type: an ``int`` (not a
    ``bool``), a NumPy integer, or a one-element tensor or array of an integer dtype; ``None``
    otherwise (floats included, even integral ones)."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        if (value.size if isinstance(value, np.ndarray) else value.numel()) != 1:
            return None
        value = value.item()
    if isinstance(value, (bool, np.bool_)):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def check_tensor(name: str, t, *, dtypes=None, ndims=None, last_dim=None) -> torch.Tensor:
    """Check that ``t`` is a tensor with one of ``dtypes``, one of ``ndims`` dimensions and a last
    dimension of ``last_dim`` (an int or a tuple of allowed sizes). Returns ``t`` made contiguous."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if dtypes is not None and t.dtype not in dtypes:
        allowed = " or ".join(str(d).replace("torch.", "") for d in dtypes)
        raise TypeError(f"{name} must have dtype {allowed}, got {str(t.dtype).replace('torch.', '')}")
    # (the passing case builds nothing: these checks run on every argument of every call)
    if ndims is not None and not (t.ndim == ndims if isinstance(ndims, int) else t.ndim in ndims):
        ndims = (ndims,) if isinstance(ndims, int) else tuple(ndims)
        want = " or ".join(f"{n}-D" for n in ndims)
        raise ValueError(f"{name} must be {want}, got {describe(t)}")
    if last_dim is not None and (t.ndim == 0 or not (
            t.shape[-1] == last_dim if isinstance(last_dim, int) else t.shape[-1] in last_dim)):
        last = (last_dim,) if isinstance(last_dim, int) else tuple(last_dim)
        want = " or ".join(str(n) for n in last)
        raise ValueError(f"{name} must have last dimension {want}, got {describe(t)}")
    return t.contiguous()


def check_float(name: str, t, **kw) -> torch.Tensor:
    """``check_tensor`` for float32 (or float64, accepted for gradient checks) tensors."""
    return check_tensor(name, t, dtypes=FLOAT_DTYPES, **kw)


def float32_if_half(t):
    """``t`` as float32 when it is a float16 or bfloat16 tensor (a differentiable cast, so its
    gradient comes back in ``t``'s dtype), otherwise ``t`` itself (``None`` included)."""
    if isinstance(t, torch.Tensor) and t.dtype in HALF_DTYPES:
        return t.float()
    return t


def check_device(name: str, t: torch.Tensor) -> torch.device:
    """Check that ``t`` is on a CPU or CUDA device (not 'meta', 'mps', ...); return it."""
    if t.device.type not in ("cpu", "cuda"):
        raise ValueError(f"{name} must be on a CPU or CUDA device, got device {t.device}")
    return t.device


def check_same_device(**tensors) -> torch.device:
    """Check that all given tensors (``None`` skipped) are on one device, a CPU or CUDA one;
    return it."""
    first = dev = None
    for k, v in tensors.items():
        if v is None:
            continue
        if dev is None:
            first, dev = (k, v), v.device
        elif v.device != dev:
            raise ValueError(
                f"{k} must be on the same device as {first[0]} ({dev}), got {v.device}")
    return check_device(*first)


def check_same_dtype(**tensors) -> torch.dtype:
    """Check that all given float tensors (``None`` skipped) share one dtype; return it."""
    items = [(k, v) for k, v in tensors.items() if v is not None]
    dt = items[0][1].dtype
    for k, v in items[1:]:
        if v.dtype != dt:
            raise TypeError(
                f"{k} must have the same dtype as {items[0][0]} ({str(dt).replace('torch.', '')}), "
                f"got {str(v.dtype).replace('torch.', '')}")
    return dt


def check_choice(name: str, value, choices) -> str:
    """Check that ``value`` is one of the strings ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}, got {value!r}")
    return value


# id(tensor) -> (weak reference, version counter, min, max) of index tensors already reduced
_tri_range_cache: dict = {}


def _index_range(tri: torch.Tensor) -> tuple:
    """``(min, max)`` of the entries of a non-empty int32 ``tri``: a reduction (on a CUDA tensor
    with a read back to the host, a synchronization), cached per tensor object and version
    counter, so that a mesh reused across iterations is reduced once, whatever is checked."""
    hit = _tri_range_cache.get(id(tri))
    if hit is not None and hit[0]() is tri and hit[1] == tri._version:
        return hit[2], hit[3]
    lo, hi = torch.aminmax(tri)
    lo, hi = int(lo), int(hi)
    if len(_tri_range_cache) > 64:
        _tri_range_cache.clear()
    _tri_range_cache[id(tri)] = (weakref.ref(tri), tri._version, lo, hi)
    return lo, hi


def check_triangles(name: str, tri, num_vertices=None) -> torch.Tensor:
    """Check a triangle index tensor: int32, ``[T, 3]``, every index in ``[0, num_vertices)``
    (only ``>= 0`` when ``num_vertices`` is ``None``, as for a topology hash built from ``tri``
    alone).

    The range is a reduction over the indices (on a CUDA tensor with one scalar read back from
    the device, a host synchronization); the minimum and maximum are cached per tensor object
    and version counter, so a mesh reused across iterations is reduced once, on the CPU as on a
    GPU, and checks against other vertex counts reuse them. (Kernels and shaders still guard
    every index, so a stale cache can never cause an illegal memory access.)
    """
    tri = check_tensor(name, tri, dtypes=(torch.int32,), ndims=2, last_dim=3)
    if tri.shape[0] == 0 or custom_ops.compiling():
        # Under torch.compile the range check (a data-dependent read) is left to the kernels and
        # shaders, which guard every index (call eagerly once to get the error message).
        return tri
    lo, hi = _index_range(tri)
    if num_vertices is None:
        if lo < 0:
            raise ValueError(f"{name} indices must be non-negative, got a minimum of {lo}")
    elif lo < 0 or hi >= num_vertices:
        raise ValueError(
            f"{name} indices must lie in [0, {num_vertices}) (the number of vertices), "
            f"got values in [{lo}, {hi}]")
    return tri
