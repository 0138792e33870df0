"""Compiling and launching diffrast's CUDA kernels.

Each op's kernels live in their own ``cuda_ops/<op>.cu`` (``extern "C" __global__`` functions,
shared device code in ``cuda_ops/*.cuh``). This module is the one place that compiles them —
``cupy.RawModule`` through NVRTC, once per process and device, cached on disk by CuPy (in
``~/.cupy/kernel_cache`` or ``$CUPY_CACHE_DIR``) across processes — and launches them on PyTorch's
current stream with torch tensors passed by pointer. Nothing here allocates through CuPy's
memory pool: outputs are torch tensors made by the caller.
"""
from __future__ import annotations

import os
import re
import threading
import warnings

import numpy as np
import torch

SOURCE_DIR = os.path.dirname(os.path.abspath(__file__))
COMPILE_OPTIONS = ("--std=c++17",)

_modules: dict = {}
_lock = threading.Lock()


def available() -> bool:
    """Whether CuPy can be imported (the CUDA kernels can run if a GPU is present)."""
    try:
        import cupy  # noqa: F401
    except Exception:
        return False
    return True


_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"\s*$', re.M)


def source(name: str) -> str:
    """The text of ``cuda_ops/<name>.cu`` with its local ``#include "..."`` headers inlined (each
    once), so that CuPy's on-disk cache, keyed by the source text, also sees header changes."""
    seen = set()

    def expand(filename):
        with open(os.path.join(SOURCE_DIR, filename)) as f:
            text = f.read().replace("#pragma once", "")

        def inline(match):
            header = match.group(1)
            if header in seen:
                return ""
            seen.add(header)
            return expand(header)
        return _INCLUDE.sub(inline, text)
    return expand(name + ".cu")


def _module(name: str, device_index: int):
    key = (name, device_index)
    mod = _modules.get(key)
    if mod is None:
        with _lock:
            mod = _modules.get(key)
            if mod is None:
                import cupy
                with cupy.cuda.Device(device_index):
                    mod = cupy.RawModule(code=source(name), options=COMPILE_OPTIONS)
                    mod.compile()
                _modules[key] = mod
    return mod


def _arg(a):
    cls = type(a)
    if cls is torch.Tensor or isinstance(a, torch.Tensor):
        return np.uint64(a.data_ptr())
    if cls is int:
        return np.int32(a)
    if isinstance(a, np.generic) and not isinstance(a, np.bool_):
        return a  # numpy scalars pass as they are (np.int64 for 64-bit params)
    if isinstance(a, (bool, np.bool_)):
        return np.int32(int(a))
    if isinstance(a, (int, np.integer)):
        return np.int32(a)
    if isinstance(a, (float, np.floating)):
        return np.float32(a)
    raise TypeError(f"unsupported kernel argument {type(a).__name__}")


def launch(module: str, kernel: str, grid, block, args, device: torch.device, shared_mem: int = 0):
    """Launch ``kernel`` of ``cuda_ops/<module>.cu`` on torch's current stream of ``device``.

    Args:
        module: file name of the ``.cu`` source without extension.
        kernel: name of an ``extern "C" __global__`` function in it.
        grid, block: launch dimensions (ints or tuples of up to three ints).
        args: kernel arguments: torch tensors (passed as device pointers; they must be
            contiguous and on ``device``), Python ints (``int``), floats (``float``), bools
            (``int``), numpy scalars as typed (``np.int64(n)`` for a ``long long``).
        device: the CUDA device of the tensors.
        shared_mem: dynamic shared memory in bytes.
    """
    grid = tuple(grid) if isinstance(grid, (tuple, list)) else (int(grid),)
    block = tuple(block) if isinstance(block, (tuple, list)) else (int(block),)
    if any(g <= 0 for g in grid):
        return
    index = device.index if device.index is not None else torch.cuda.current_device()
    key = (module, kernel, index)
    fn = _functions.get(key)
    if fn is None:
        fn = _functions[key] = _module(module, index).get_function(kernel)
    import cupy
    stream = _cupy_stream(device, index)
    cargs = tuple(_arg(a) for a in args)
    if cupy.cuda.runtime.getDevice() == index:
        fn(grid, block, cargs, stream=stream, shared_mem=shared_mem)
    else:
        with cupy.cuda.Device(index):
            fn(grid, block, cargs, stream=stream, shared_mem=shared_mem)


_functions: dict = {}
_streams: dict = {}

try:  # torch's own fast accessor of the current stream's handle (what the Python API wraps)
    _raw_stream = torch._C._cuda_getCurrentRawStream
except AttributeError:  # pragma: no cover - older torch
    def _raw_stream(index):
        return torch.cuda.current_stream(index).cuda_stream


def _cupy_stream(device, index):
    """CuPy's view of torch's current stream on ``device`` (cached per stream handle)."""
    handle = _raw_stream(index)
    stream = _streams.get((index, handle))
    if stream is None:
        import cupy
        if len(_streams) > 256:
            _streams.clear()
        with warnings.catch_warnings():  # CuPy 14 prefers Stream.from_external(protocol object)
            warnings.simplefilter("ignore", DeprecationWarning)
            stream = _streams[(index, handle)] = cupy.cuda.ExternalStream(handle, index)
    return stream


def blocks(n: int, threads: int) -> int:
    """Number of blocks of ``threads`` covering ``n`` items."""
    return (n + threads - 1) // threads


_deterministic = False


def set_deterministic(enabled: bool) -> None:
    """See :func:`diffrast.set_deterministic`."""
    global _deterministic
    _deterministic = bool(enabled)


def deterministic() -> bool:
    """Whether kernels must produce bit-identical results run to run (no float atomics)."""
    return _deterministic
