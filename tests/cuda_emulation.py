"""Run a ``cuda_ops/<name>.cu`` kernel file on the CPU, for tests on machines without a GPU.

The ``.cu`` source is compiled as plain C++ by the host compiler (``g++``), with a small shim that
defines the CUDA keywords away and gives host versions of the intrinsics the kernels use:
exactly rounded ``__fadd_rn`` & co. (IEEE single precision, ``-ffp-contract=off``), ``__fmaf_rn``
as ``std::fma``, bit casts, float ``atomicAdd`` as a plain add. :func:`launch` has the signature
of :func:`diffrast.cuda_ops.loader.launch` and runs the grid's threads one after the other with
the kernel's arguments, CPU tensors passed by pointer; monkeypatching the loader's ``launch``
with it runs a CUDA backend's Python glue end to end on CPU tensors.

Limits: threads run sequentially, so only kernels that do not depend on warps or blocks running
together (no shuffles, ballots, shared memory or barriers) can be emulated; a call of such an
intrinsic aborts. Float results equal the GPU's where the kernel uses explicitly rounded
intrinsics; plain expressions may be contracted into FMAs on the GPU and not here.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile

import torch

from diffrast.cuda_ops import loader

SHIM = r"""
#include <cmath>
#include <cstdlib>
#include <cstring>
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
struct float2 { float x, y; };
struct float4 { float x, y, z, w; };
inline float2 make_float2(float x, float y) { return float2{x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
struct EmuDim3 { unsigned x, y, z; };
static EmuDim3 threadIdx, blockIdx, blockDim, gridDim;
extern "C" void emu_set_thread(unsigned block, unsigned thread, unsigned bdim, unsigned gdim)
{
    blockIdx.x = block; threadIdx.x = thread; blockDim.x = bdim; gridDim.x = gdim;
    blockIdx.y = blockIdx.z = threadIdx.y = threadIdx.z = 0;
    blockDim.y = blockDim.z = gridDim.y = gridDim.z = 1;
}
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
inline int __float_as_int(float f) { int u; std::memcpy(&u, &f, 4); return u; }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline float __uint_as_float(unsigned i) { float f; std::memcpy(&f, &i, 4); return f; }
using std::fabs; using std::isfinite; using std::isnan;
inline float atomicAdd(float* p, float v) { float o = *p; *p = o + v; return o; }
inline int atomicAdd(int* p, int v) { int o = *p; *p = o + v; return o; }
template <class... A> inline int __shfl_down_sync(A...) { std::abort(); }
template <class... A> inline int __shfl_up_sync(A...) { std::abort(); }
template <class... A> inline unsigned __ballot_sync(A...) { std::abort(); }
template <class... A> inline bool __any_sync(A...) { std::abort(); }
inline void __syncthreads() { std::abort(); }
"""

_libs: dict = {}


def compiler() -> str | None:
    """The host C++ compiler used, or ``None`` if there is none."""
    return shutil.which(os.environ.get("CXX", "g++"))


def build(name: str) -> ctypes.CDLL:
    """Compile ``cuda_ops/<name>.cu`` for the host (cached per source and header text) and load
    it."""
    h = hashlib.sha1((SHIM + loader.source(name)).encode())
    for header in sorted(os.listdir(loader.SOURCE_DIR)):  # the .cuh files it may include
        if header.endswith(".cuh"):
            with open(os.path.join(loader.SOURCE_DIR, header), "rb") as f:
                h.update(header.encode() + f.read())
    digest = h.hexdigest()[:16]
    lib = _libs.get(digest)
    if lib is not None:
        return lib
    cxx = compiler()
    if cxx is None:
        raise RuntimeError("no host C++ compiler (g++) for the kernel emulation")
    out_dir = os.path.join(tempfile.gettempdir(), f"diffrast_emu_{os.getuid()}")
    os.makedirs(out_dir, exist_ok=True)
    shim = os.path.join(out_dir, f"shim_{digest}.h")
    so = os.path.join(out_dir, f"{name}_{digest}.so")
    if not os.path.exists(so):
        with open(shim, "w") as f:
            f.write(SHIM)
        tmp = so + f".{os.getpid()}.tmp"
        cmd = [cxx, "-std=c++17", "-O1", "-ffp-contract=off", "-fno-fast-math", "-shared",
               "-fPIC", "-include", shim, "-I", loader.SOURCE_DIR, "-x", "c++",
               os.path.join(loader.SOURCE_DIR, name + ".cu"), "-o", tmp]
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        os.replace(tmp, so)
    lib = ctypes.CDLL(so)
    _libs[digest] = lib
    return lib


def _carg(a):
    if isinstance(a, torch.Tensor):
        if a.device.type != "cpu":
            raise ValueError("the kernel emulation needs CPU tensors")
        return ctypes.c_void_p(a.data_ptr())
    if isinstance(a, bool):
        return ctypes.c_int(int(a))
    if isinstance(a, int):
        return ctypes.c_int(a)
    if isinstance(a, float):
        return ctypes.c_float(a)
    raise TypeError(f"unsupported kernel argument {type(a).__name__}")


def launch(module, kernel, grid, block, args, device=None, shared_mem=0):
    """:func:`diffrast.cuda_ops.loader.launch` on the CPU (1-D grids)."""
    grid = grid[0] if isinstance(grid, (tuple, list)) else int(grid)
    block = block[0] if isinstance(block, (tuple, list)) else int(block)
    lib = build(module)
    fn = getattr(lib, kernel)
    fn.restype = None
    cargs = [_carg(a) for a in args]
    set_thread = lib.emu_set_thread
    for b in range(grid):
        for t in range(block):
            set_thread(b, t, block, grid)
            fn(*cargs)
