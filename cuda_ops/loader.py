"""Compiling and launching diffrast's CUDA kernels.

Each op's kernels live in their own ``cuda_ops/<op>_forward.cu`` and ``cuda_ops/<op>_backward.cu``
(``extern "C" __global__`` functions, one module each; shared device code in ``cuda_ops/*.cuh``,
the helpers common to all in ``cuda_ops/common.cuh``). This module is the one place that compiles them —
``cupy.RawModule`` through NVRTC, once per process and device, cached on disk by CuPy (in
``~/.cupy/kernel_cache`` or ``$CUPY_CACHE_DIR``) across processes — and launches them on PyTorch's
current stream with torch tensors passed by pointer. Nothing here allocates through CuPy's
memory pool: outputs are torch tensors made by the caller.
"""
from __future__ import annotations

import ctypes
import functools
import os
import re
import struct
import threading

import numpy as np
import torch

SOURCE_DIR = os.path.dirname(os.path.abspath(__file__))
COMPILE_OPTIONS = ("--std=c++17",)

_modules: dict = {}
_lock = threading.Lock()


@functools.lru_cache(maxsize=None)
def available() -> bool:
    """Whether the kernels can be compiled and launched: CuPy (compiles them) and cuda-bindings
    (launches them) importable; a GPU is checked by the caller."""
    try:
        import cupy  # noqa: F401
        from cuda.bindings import driver  # noqa: F401
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


# Kernel parameters by Python type: struct format code (native C layout) of the C parameter.
_PARAM_CODES = {torch.Tensor: "P", int: "i", bool: "i", float: "f", np.int32: "i",
                np.int64: "q", np.uint64: "Q", np.float32: "f", np.bool_: "i"}


def _param_code(a) -> str:
    """The ``struct`` format code of kernel argument ``a``: a tensor passes its data pointer
    (``P``), a Python int or bool an ``int`` (``i``), a float a ``float`` (``f``), a numpy scalar
    its own type (``np.int64(n)`` for a ``long long``)."""
    code = _PARAM_CODES.get(type(a))
    if code is None:
        if isinstance(a, torch.Tensor):
            return "P"
        raise TypeError(f"unsupported kernel argument {type(a).__name__}")
    return code


class _Params:
    """A kernel's argument buffer for one signature: the packed values in one C buffer and the
    array of pointers to each of them that ``cuLaunchKernel`` reads (it copies the values at the
    call, so the buffer is reused; one per thread)."""

    def __init__(self, args):
        codes = "".join(_param_code(a) for a in args)
        self.tensors = tuple(i for i, c in enumerate(codes) if c == "P")
        self.layout = struct.Struct("@" + codes)
        self.buffer = ctypes.create_string_buffer(max(self.layout.size, 1))
        base = ctypes.addressof(self.buffer)
        offsets = [struct.calcsize("@" + codes[:i + 1]) - struct.calcsize(codes[i]) for i in range(len(codes))]
        self.pointers = (ctypes.c_void_p * max(len(codes), 1))(*[base + o for o in offsets])
        self.address = ctypes.addressof(self.pointers)


_tls = threading.local()


def pack_arguments(args) -> _Params:
    """The per-thread argument buffer for the types of ``args``, filled with their values:
    ``.pointers`` (at ``.address``) is the ``void**`` array a kernel launch takes."""
    try:
        cache = _tls.params
    except AttributeError:
        cache = _tls.params = {}
    sig = tuple(map(type, args))
    params = cache.get(sig)
    if params is None:
        params = cache[sig] = _Params(args)
    values = list(args)
    for i in params.tensors:
        values[i] = args[i].data_ptr()
    params.layout.pack_into(params.buffer, 0, *values)
    return params


def _driver():
    global _driver_api
    if _driver_api is None:
        import cupy
        from cuda.bindings import driver
        _driver_api = (driver.cuLaunchKernel, driver.CUresult.CUDA_SUCCESS,
                       driver.CUresult.CUDA_ERROR_INVALID_CONTEXT, cupy.cuda.runtime)
    return _driver_api


_driver_api = None


def launch(module: str, kernel: str, grid, block, args, device: torch.device, shared_mem: int = 0):
    """Launch ``kernel`` of ``cuda_ops/<module>.cu`` on torch's current stream of ``device``.

    The kernel is compiled by CuPy (:class:`cupy.RawModule`) and launched with the driver's
    ``cuLaunchKernel`` (``cuda-bindings``) from a packed argument buffer: a few microseconds of
    host time per launch.

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
    gx, gy, gz = (tuple(grid) + (1, 1))[:3] if isinstance(grid, (tuple, list)) else (int(grid), 1, 1)
    bx, by, bz = (tuple(block) + (1, 1))[:3] if isinstance(block, (tuple, list)) else (int(block), 1, 1)
    if gx <= 0 or gy <= 0 or gz <= 0:
        return
    index = device.index if device.index is not None else torch.cuda.current_device()
    key = (module, kernel, index)
    fn = _functions.get(key)
    if fn is None:
        import cupy
        with cupy.cuda.Device(index):  # the CUfunction of the device's (primary) context
            function = _module(module, index).get_function(kernel).kernel
        _keep_alive.append(function)
        fn = _functions[key] = function.ptr
    cu_launch, success, invalid_context, runtime = _driver()
    params = pack_arguments(args)
    stream = raw_stream(index)
    if runtime.getDevice() == index:
        result = cu_launch(fn, gx, gy, gz, bx, by, bz, shared_mem, stream, params.address, 0)[0]
        if result == invalid_context:  # no context current on this thread yet
            runtime.setDevice(index)
            result = cu_launch(fn, gx, gy, gz, bx, by, bz, shared_mem, stream, params.address, 0)[0]
    else:
        import cupy
        with cupy.cuda.Device(index):
            result = cu_launch(fn, gx, gy, gz, bx, by, bz, shared_mem, stream, params.address, 0)[0]
    if result != success:
        raise RuntimeError(f"launch of {kernel} (cuda_ops/{module}.cu) failed: {result.name}")


_functions: dict = {}
_keep_alive: list = []

try:  # torch's own fast accessor of the current stream's handle (what the Python API wraps)
    raw_stream = torch._C._cuda_getCurrentRawStream
except AttributeError:  # pragma: no cover - older torch
    def raw_stream(index):
        return torch.cuda.current_stream(index).cuda_stream


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
