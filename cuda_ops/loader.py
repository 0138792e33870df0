"""Compiling and launching diffrast's CUDA kernels.

Each op's kernels live in their own ``cuda_ops/<op>_forward.cu`` and ``cuda_ops/<op>_backward.cu``
(shared device code in ``cuda_ops/*.cuh``, the helpers common to all in ``cuda_ops/common.cuh``).
A module's source, as compiled, is assembled by :func:`source`: the C declarations of its
parameter structs and modes (generated from :mod:`diffrast.cuda_ops.params`), the ``.cu`` file
with its headers inlined, and its ``extern "C" __global__`` entry points (generated from the
table of :mod:`diffrast.cuda_ops.kernels`). This module is the one place that compiles them —
``cupy.RawModule`` through NVRTC, once per process and device, cached on disk by CuPy (in
``~/.cupy/kernel_cache`` or ``$CUPY_CACHE_DIR``) across processes — and launches them on PyTorch's
current stream. Every kernel takes the fields of one parameter struct: :func:`launch` packs the
struct's bytes into a per-thread buffer (one ``pack_into``) and hands ``cuLaunchKernel`` the
array of pointers to its fields. Nothing here allocates through CuPy's memory pool: outputs are
torch tensors made by the caller.

``print(loader.source("texture_forward"))`` shows a module's source as compiled.
"""
from __future__ import annotations

import ctypes
import functools
import os
import re
import threading
import time

import torch

from ..log import logger
from . import kernels, params

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
    """The source of module ``name`` as it is compiled: the generated declarations of its
    parameter structs and modes (:func:`diffrast.cuda_ops.params.c_prelude`), the text of
    ``cuda_ops/<name>.cu`` with its local ``#include "..."`` headers inlined (each once, with
    ``#line`` markers, so that compiler messages name the real files), then its generated entry
    points (:func:`diffrast.cuda_ops.kernels.entry_points`). CuPy's on-disk cache is keyed by
    this text, so it sees changes to headers, structs and the kernel table alike."""
    seen = set()

    def expand(filename):
        with open(os.path.join(SOURCE_DIR, filename)) as f:
            text = f.read().replace("#pragma once", "")

        def inline(match):
            header = match.group(1)
            if header in seen:
                return ""
            seen.add(header)
            resume = text.count("\n", 0, match.end()) + 2  # the line after the #include
            return (f'#line 1 "{header}"\n{expand(header)}\n'
                    f'#line {resume} "{filename}"')
        return _INCLUDE.sub(inline, text)
    body = expand(name + ".cu")
    return (params.c_prelude(kernels.structs_of(name)) + f'#line 1 "{name}.cu"\n' + body
            + '\n#line 1 "cuda_ops/kernels.py (generated)"' + kernels.entry_points(name))


def _module(name: str, device_index: int):
    key = (name, device_index)
    mod = _modules.get(key)
    if mod is None:
        with _lock:
            mod = _modules.get(key)
            if mod is None:
                import cupy
                start = time.perf_counter()
                with cupy.cuda.Device(device_index):
                    mod = cupy.RawModule(code=source(name), options=COMPILE_OPTIONS)
                    mod.compile()
                # (the first use of a module in a process: compiled by NVRTC, or loaded from
                # CuPy's kernel cache when its source was compiled before)
                logger.info("CUDA module %s ready on cuda:%d in %.2f s (compiled, or from "
                            "CuPy's kernel cache)", name, device_index,
                            time.perf_counter() - start)
                _modules[key] = mod
    return mod


class _ArgumentBuffer:
    """A thread's argument buffer for one parameter struct: its bytes (filled by one
    ``pack_into``) and the array of pointers to each field in them, the ``kernelParams`` that
    ``cuLaunchKernel`` reads (the kernels take the fields one by one, see
    :mod:`diffrast.cuda_ops.kernels`; the call copies them, so the buffer is reused)."""

    __slots__ = ("data", "pointers", "address")

    def __init__(self, struct_type):
        self.data = ctypes.create_string_buffer(struct_type.size)
        base = ctypes.addressof(self.data)
        offsets = [getattr(struct_type.ctype, f.name).offset for f in struct_type.fields]
        self.pointers = (ctypes.c_void_p * len(offsets))(*[base + o for o in offsets])
        self.address = ctypes.addressof(self.pointers)


_tls = threading.local()


def pack(kernel_params: params.KernelParams) -> int:
    """Write a parameter struct's bytes into the calling thread's buffer for its type and return
    the address of the array of pointers to its fields (``kernelParams`` of ``cuLaunchKernel``),
    valid until the thread's next call for the same type. ``TypeError`` naming the field when a
    value does not fit its C type."""
    try:
        buffers = _tls.buffers
    except AttributeError:
        buffers = _tls.buffers = {}
    buf = buffers.get(type(kernel_params))
    if buf is None:
        buf = buffers[type(kernel_params)] = _ArgumentBuffer(type(kernel_params))
    try:
        kernel_params.pack_into(buf.data)
    except Exception as e:
        kernel_params.check()  # raises the TypeError naming the field
        raise TypeError(f"packing {kernel_params.c_name}: {e}") from e
    return buf.address


def _driver():
    global _driver_api
    if _driver_api is None:
        import cupy
        from cuda.bindings import driver
        _driver_api = (driver.cuLaunchKernel, driver.CUresult.CUDA_SUCCESS,
                       driver.CUresult.CUDA_ERROR_INVALID_CONTEXT, cupy.cuda.runtime)
    return _driver_api


_driver_api = None


def launch(module: str, kernel: str, grid, block, kernel_params, device: torch.device,
           shared_mem: int = 0):
    """Launch ``kernel`` of ``cuda_ops/<module>.cu`` on torch's current stream of ``device``.

    The kernel is compiled by CuPy (:class:`cupy.RawModule`) and launched with the driver's
    ``cuLaunchKernel`` (``cuda-bindings``) from its packed parameter struct (:func:`pack`): a
    few microseconds of host time per launch.

    Args:
        module: file name of the ``.cu`` source without extension.
        kernel: the kernel's name, a row of :data:`diffrast.cuda_ops.kernels.KERNELS`.
        grid, block: launch dimensions (ints or tuples of up to three ints).
        kernel_params: the kernel's parameter struct (the class its row names, built by keyword;
            its tensors must be contiguous where the kernel says so, and on ``device``).
        device: the CUDA device of the tensors.
        shared_mem: dynamic shared memory in bytes.
    """
    gx, gy, gz = (tuple(grid) + (1, 1))[:3] if isinstance(grid, (tuple, list)) else (int(grid), 1, 1)
    bx, by, bz = (tuple(block) + (1, 1))[:3] if isinstance(block, (tuple, list)) else (int(block), 1, 1)
    if gx <= 0 or gy <= 0 or gz <= 0:
        return
    index = device.index if device.index is not None else torch.cuda.current_device()
    key = (module, kernel, index)
    entry = _functions.get(key)
    if entry is None:
        entry = _function(module, kernel, index)
    fn, struct_type = entry
    if type(kernel_params) is not struct_type:
        kernel_params = kernels.params_for(kernels.get(kernel), kernel_params)
    cu_launch, success, invalid_context, runtime = _driver()
    address = pack(kernel_params)
    stream = raw_stream(index)
    if runtime.getDevice() == index:
        result = cu_launch(fn, gx, gy, gz, bx, by, bz, shared_mem, stream, address, 0)[0]
        if result == invalid_context:  # no context current on this thread yet
            runtime.setDevice(index)
            result = cu_launch(fn, gx, gy, gz, bx, by, bz, shared_mem, stream, address, 0)[0]
    else:
        import cupy
        with cupy.cuda.Device(index):
            result = cu_launch(fn, gx, gy, gz, bx, by, bz, shared_mem, stream, address, 0)[0]
    if result != success:
        raise RuntimeError(f"launch of {kernel} (cuda_ops/{module}.cu) failed: {result.name}")


def kernel_of(module: str, kernel: str) -> kernels.Kernel:
    """The table row of ``kernel``, checked to belong to ``cuda_ops/<module>.cu``."""
    k = kernels.get(kernel)
    if k.module != module:
        raise ValueError(f"kernel {kernel} is in cuda_ops/{k.module}.cu, not {module}.cu")
    return k


def _function(module: str, kernel: str, index: int):
    """``(CUfunction handle, parameter struct class)`` of a kernel on a device, cached."""
    import cupy
    k = kernel_of(module, kernel)
    with cupy.cuda.Device(index):  # the CUfunction of the device's (primary) context
        function = _module(module, index).get_function(kernel).kernel
    _keep_alive.append(function)
    entry = _functions[(module, kernel, index)] = (function.ptr, k.params)
    return entry


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


# Deterministic mode: process-wide, set by diffrast.set_deterministic (diffrast/determinism.py)
# and read through deterministic().
_deterministic = False


def set_deterministic(enabled: bool) -> None:
    """See :func:`diffrast.set_deterministic`."""
    global _deterministic
    _deterministic = bool(enabled)


def deterministic() -> bool:
    """Whether kernels must produce bit-identical results run to run (no float atomics)."""
    return _deterministic

