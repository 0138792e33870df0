"""Run diffrast's CUDA kernels on the CPU through a warp emulator, for tests without a GPU.

:func:`build` compiles the source of ``cuda_ops/<module>.cu`` exactly as
:func:`diffrast.cuda_ops.loader.source` assembles it for the GPU (generated parameter structs
and entry points included) as C++ with g++, force-including
``tests/helpers/emulator/warp_emulator.h`` (host versions of the CUDA built-ins the kernels use:
thread indices, float4, rounded arithmetic, warp shuffles and votes in lockstep, atomicAdd) and
linking ``tests/helpers/emulator/launch.cpp``; the shared library is cached per source hash in
the temporary directory. :func:`launch` stands in for :func:`diffrast.cuda_ops.loader.launch`
(:func:`kernel_device` patches it in for a test), so that the CUDA backends run unchanged on CPU
tensors, kernels included. It is the tests' one emulator: the interpolate, rasterize-backward,
texture and antialias kernels all run on it in CI.

This checks the kernels' logic (indexing, guards, warp-level reduction, deterministic
reduction) against the reference; it says nothing about the GPU itself (memory model, NVRTC,
speed), which the GPU tests cover.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile

import torch

from diffrast.cuda_ops import kernels, loader

HERE = os.path.dirname(os.path.abspath(__file__))
EMU_DIR = os.path.join(HERE, "emulator")
_libs: dict = {}
# Names of kernels that :func:`launch` runs with their blocks, warps and lanes in the reverse order
# (so their atomics in another order; the scheduling of a GPU is arbitrary). Tests patch it.
reversed_kernels: frozenset = frozenset()


def compiler():
    """The C++ compiler used, or None when there is none (tests then skip)."""
    return shutil.which(os.environ.get("CXX", "g++"))


def build(module: str):
    """The emulator's shared library of ``cuda_ops/<module>.cu``: the module's source exactly as
    the GPU build assembles it (:func:`diffrast.cuda_ops.loader.source`: generated parameter
    structs and modes, the ``.cu`` file and its headers, the generated entry points), written
    to a file and compiled with g++; cached per source text."""
    lib = _libs.get(module)
    if lib is not None:
        return lib
    source = loader.source(module)
    names = [k.name for k in kernels.of_module(module)]
    digest = hashlib.sha256(source.encode())
    for name in sorted(os.listdir(EMU_DIR)):
        p = os.path.join(EMU_DIR, name)
        if os.path.isfile(p) and name.endswith((".h", ".cpp")):
            with open(p, "rb") as f:
                digest.update(name.encode() + f.read())
    out_dir = os.path.join(tempfile.gettempdir(), "diffrast_kernel_emulator")
    os.makedirs(out_dir, exist_ok=True)
    stem = os.path.join(out_dir, f"{module}_{digest.hexdigest()[:16]}")
    so = stem + ".so"
    if not os.path.exists(so):
        src_path = stem + ".cu"
        tmp_src = src_path + f".{os.getpid()}.tmp"
        with open(tmp_src, "w") as f:
            f.write(source)
        os.replace(tmp_src, src_path)
        table = " ".join(f"EMU_KERNEL({k})" for k in names)
        tmp = so + f".{os.getpid()}.tmp"
        cmd = [compiler(), "-std=c++17", "-O1", "-ffp-contract=off", "-fPIC", "-shared",
               "-x", "c++", "-include", os.path.join(EMU_DIR, "warp_emulator.h"),
               f"-DEMU_KERNELS={table}", f'-DEMU_SOURCE="{src_path}"',
               os.path.join(EMU_DIR, "launch.cpp"), "-o", tmp]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"emulator build of cuda_ops/{module}.cu failed:\n{res.stderr}")
        os.replace(tmp, so)
    lib = ctypes.CDLL(so)
    lib.emu_launch.argtypes = [ctypes.c_char_p, ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p]
    lib.emu_launch.restype = ctypes.c_int
    lib.emu_last_error.argtypes = []
    lib.emu_last_error.restype = ctypes.c_char_p
    lib.emu_set_reverse.argtypes = [ctypes.c_int]
    lib.emu_set_reverse.restype = None
    _libs[module] = lib
    return lib


def launch(module, kernel, grid, block, kernel_params, device, shared_mem=0):
    """Drop-in for :func:`loader.launch` running the kernel on the CPU (1-D launches only).
    The parameter struct is packed by the real launcher's :func:`loader.pack` (tensors pass
    their data pointers, whatever their strides: a kernel given explicit strides, like
    antialias's upstream gradient, reads a strided tensor, as on the GPU)."""
    grid = tuple(grid) if isinstance(grid, (tuple, list)) else (int(grid),)
    block = tuple(block) if isinstance(block, (tuple, list)) else (int(block),)
    if any(g <= 0 for g in grid):
        return
    assert len(grid) == 1 and len(block) == 1 and shared_mem == 0
    kernel_params = kernels.params_for(loader.kernel_of(module, kernel), kernel_params)
    for a in kernel_params:
        if isinstance(a, torch.Tensor):
            assert a.device.type == "cpu", "the kernel emulator needs CPU tensors"
    argv = loader.pack(kernel_params)  # the real launcher's packing
    lib = build(module)
    lib.emu_set_reverse(int(kernel in reversed_kernels))
    rc = lib.emu_launch(kernel.encode(), grid[0], block[0], argv)
    if rc == 1:
        raise RuntimeError(f"kernel {kernel} not found in cuda_ops/{module}.cu")
    if rc != 0:
        raise RuntimeError(f"kernel {kernel}: {lib.emu_last_error().decode()} (undefined "
                           f"behaviour on a GPU)")


def kernel_device(param, request):
    """The device on which a test runs the ops' CUDA kernels: ``'cuda'`` (the GPU) or
    ``'emulated'`` (the CPU through this emulator: for the rest of the test, every op runs its
    kernels for float32 tensors, launched by :func:`launch`; see
    :func:`diffrast.dispatch.force`). ``request`` is the calling fixture's (the switch is undone
    at its teardown). Skips the emulated case where no C++ compiler exists."""
    import pytest
    import torch
    from diffrast import dispatch
    if param == "emulated":
        if compiler() is None:
            pytest.skip("no C++ compiler for the kernel emulator")
        forced = dispatch.force(dispatch.KERNELS, launch=launch)
        forced.__enter__()
        request.addfinalizer(lambda: forced.__exit__(None, None, None))
        return torch.device("cpu")
    assert dispatch.uses_kernels(torch.device("cuda"))
    return torch.device("cuda")
