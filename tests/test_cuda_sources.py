"""CPU checks of the CUDA sources and of the CUDA backend's host-side pieces (no GPU needed).

* Every module, as ``cuda_ops/loader.py`` assembles it (generated parameter structs, the ``.cu``
  file and its headers, generated entry points), compiles with NVRTC (the ``nvidia-cuda-nvrtc``
  wheel of the test extra; skipped without it) for sm_80 and sm_90, and with ``nvcc --ptx``
  (skipped when nvcc is not on PATH), so a compile error never lands unseen on a machine without
  a GPU.
* The sources follow what NVRTC (through which the loader compiles them at run time) accepts: no
  host headers (NVRTC has no host standard library), local ``.cuh`` includes that exist, and
  every kernel declared ``extern "C" __global__`` (so its name is not mangled).
* The layout: one module per op and direction; no hand-written ``__global__`` function (the
  entry points are generated from the table of ``cuda_ops/kernels.py``, which the backends
  launch by name); the helpers of ``cuda_ops/common.cuh`` defined nowhere else.
(The parameter structs' layout is checked in tests/test_kernel_params.py.)
"""
import glob
import os
import re
import shutil
import subprocess

import pytest
import torch

import diffrast as dr
from diffrast import cuda_backend
from diffrast.cuda_ops import kernels, loader

SOURCES = sorted(glob.glob(os.path.join(loader.SOURCE_DIR, "*.cu")))
HEADERS = sorted(glob.glob(os.path.join(loader.SOURCE_DIR, "*.cuh")))


def _name(path):
    return os.path.basename(path)


MODULES = ["antialias_backward", "antialias_forward", "antialias_topology", "interpolate_backward",
           "interpolate_forward", "rasterize_backward", "rasterize_forward", "rasterize_resolve",
           "texture_backward", "texture_forward", "texture_mip_backward", "texture_mip_forward"]


def test_there_are_kernel_sources():
    assert [_name(p)[:-3] for p in SOURCES] == MODULES
    assert sorted(kernels.modules()) == MODULES


@pytest.mark.parametrize("module", MODULES)
def test_sources_expand(module):
    """loader.source inlines every local header once; what NVRTC compiles has no includes left."""
    text = loader.source(module)
    assert not re.search(r'^\s*#\s*include\s+"', text, re.M)
    assert "#pragma once" not in text


_ENTRY = re.compile(r'extern\s+"C"\s+__global__\s+(?:__launch_bounds__\([^)]*\)\s+)?void\s+(\w+)'
                    r'\s*\(([^)]*)\)\s*\{\s*const\s+diffrast::(\w+)\s+kp\s*\{([^}]*)\};')


def test_entry_points_come_from_the_kernel_table():
    """No hand-written file declares a kernel; each module's assembled source defines exactly the
    kernels of its rows in cuda_ops/kernels.py, each taking the fields of its row's parameter
    struct as its parameters, in the struct's order, and rebuilding the struct from them."""
    for path in SOURCES + HEADERS:
        with open(path) as f:
            assert "__global__" not in _strip_comments(f.read()), _name(path)
    for module in MODULES:
        defined = _ENTRY.findall(loader.source(module))
        assert [d[0] for d in defined] == [k.name for k in kernels.of_module(module)], module
        for (name, plist, struct, init), k in zip(defined, kernels.of_module(module)):
            fields = k.params.fields
            assert struct == k.params.c_name, name
            assert " ".join(plist.split()) == k.params.c_parameters(), name
            assert [x.strip() for x in init.split(",")] == [f.name for f in fields], name


_DEFINITION = re.compile(r"^(?:template\s*<[^>]*>\s*)?(?:__device__\s+__forceinline__|inline)\s+"
                         r"[\w:<>\s*&]+?\b(\w+)\s*\(", re.M)


def test_common_helpers_are_defined_once():
    """The helpers of common.cuh (rounded arithmetic, finite tests, load4, warp sums, ...) are
    not defined again in another file."""
    with open(os.path.join(loader.SOURCE_DIR, "common.cuh")) as f:
        common = set(_DEFINITION.findall(f.read()))
    assert {"add_rn", "mul_rn", "fma_rn", "is_finite", "imin", "load4", "lane_id",
            "warp_sum_fixed_order"} <= common
    for path in SOURCES + HEADERS:
        if _name(path) == "common.cuh":
            continue
        with open(path) as f:
            again = common & set(_DEFINITION.findall(_strip_comments(f.read())))
        assert not again, f"{_name(path)} defines {sorted(again)} again (see common.cuh)"


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on PATH")
@pytest.mark.parametrize("module", MODULES)
def test_compiles_with_nvcc(module, tmp_path):
    path = tmp_path / f"{module}.cu"
    path.write_text(loader.source(module))
    cmd = ["nvcc", "--ptx", "-arch=sm_80", "--std=c++17", str(path),
           "-o", str(tmp_path / "out.ptx")]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, f"{' '.join(cmd)} failed:\n{res.stderr}"


def _load_nvrtc():
    """NVRTC, the compiler the loader uses at run time (through CuPy), as a ``ctypes`` library:
    from the ``nvidia-cuda-nvrtc`` wheel of the test extra, else the system's; ``None`` if
    neither loads. It needs no GPU."""
    import ctypes
    import ctypes.util
    import importlib.util
    paths = []
    spec = importlib.util.find_spec("nvidia")
    for base in (spec.submodule_search_locations or []) if spec else []:
        paths += sorted(glob.glob(os.path.join(base, "*", "lib", "libnvrtc.so*")))
    if ctypes.util.find_library("nvrtc"):
        paths.append(ctypes.util.find_library("nvrtc"))
    for path in paths:
        try:
            return ctypes.CDLL(path)
        except OSError:
            continue
    return None


_NVRTC = _load_nvrtc()


@pytest.mark.skipif(_NVRTC is None, reason="NVRTC not installed (pip install nvidia-cuda-nvrtc)")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])  # (sm_90 and later: the vector atomics)
@pytest.mark.parametrize("module", MODULES)
def test_compiles_with_nvrtc(module, arch):
    """Each module compiles with NVRTC, the loader's options and a GPU architecture, as CuPy
    compiles it on a GPU: kernels written without a GPU at hand are compiled here in CI."""
    import ctypes
    prog = ctypes.c_void_p()
    source = loader.source(module).encode()
    assert _NVRTC.nvrtcCreateProgram(ctypes.byref(prog), source, f"{module}.cu".encode(), 0,
                                     None, None) == 0
    try:
        options = [o.encode() for o in loader.COMPILE_OPTIONS + (f"-arch={arch}",)]
        status = _NVRTC.nvrtcCompileProgram(prog, len(options),
                                            (ctypes.c_char_p * len(options))(*options))
        size = ctypes.c_size_t()
        _NVRTC.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        _NVRTC.nvrtcGetProgramLog(prog, log)
    finally:
        _NVRTC.nvrtcDestroyProgram(ctypes.byref(prog))
    assert status == 0, f"NVRTC could not compile {module} for {arch}:\n{log.value.decode()}"


def _strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def _read(path):
    with open(path) as f:
        return f.read()


@pytest.mark.parametrize("name", [_name(p) for p in SOURCES + HEADERS] + MODULES)
def test_follows_nvrtc_rules(name):
    """The hand-written files, and each module as assembled (``loader.source``)."""
    path = os.path.join(loader.SOURCE_DIR, name)
    code = _strip_comments(_read(path) if os.path.isfile(path) else loader.source(name))
    for line in code.splitlines():
        m = re.match(r"\s*#\s*include\s*(.+)", line)
        if not m:
            continue
        target = m.group(1).strip()
        if target.startswith("<"):
            # NVRTC has no host standard library (<cstdio>, <cmath>, <stdio.h>, ...); only the
            # CUDA toolkit's device headers, which CuPy puts on NVRTC's include path.
            assert re.match(r"<(cuda_fp16|cuda_bf16)\.h>|<(cuda|cooperative_groups)/", target), (
                f"{name}: {line.strip()!r}: NVRTC lacks host headers; include local "
                f"\"*.cuh\" files or CUDA device headers only")
            continue
        local = target.strip('"')
        assert os.path.isfile(os.path.join(loader.SOURCE_DIR, local)), f"{local} not found"
    for m in re.finditer(r"((?:extern\s+\"C\"\s+)?)__global__", code):
        assert m.group(1), f"{name}: every __global__ kernel must be extern \"C\""


BACKENDS = ("cuda_backend.py", "cuda_backend_texture.py", "cuda_backend_antialias.py",
            "cuda_context.py")


def test_kernels_named_by_the_backend_exist():
    """Every launch in the backend modules names a module of cuda_ops/ and, when literal, a kernel
    of that module's rows in the kernel table; every kernel of the table is launched: by its
    literal name, or (texture sampling) through the table's lookups. No backend builds a kernel
    name from pieces (no string literal is a proper prefix of a kernel name)."""
    package = os.path.dirname(cuda_backend.__file__)
    modules, named = set(), set()
    for name in BACKENDS:
        backend = _read(os.path.join(package, name))
        launches = re.findall(r'\b_?launch(?:_tiles)?\(\s*"(\w+)",\s*(?:"(\w+)")?', backend)
        assert launches, name
        for module, kernel in launches:
            assert module in MODULES, f"{name}: no cuda_ops/{module}.cu"
            modules.add(module)
            if kernel:
                assert kernels.get(kernel).module == module, f"{kernel} not in cuda_ops/{module}.cu"
        literals = set(re.findall(r'"(\w+)"', backend))
        named |= literals & set(kernels.BY_NAME)
        if "kernels.TEXTURE_FORWARD[" in backend:
            named |= set(kernels.TEXTURE_FORWARD.values())
        if "kernels.TEXTURE_BACKWARD[" in backend:
            named |= set(kernels.TEXTURE_BACKWARD.values())
        for lit in literals:
            assert not any(k.startswith(lit) and k != lit for k in kernels.BY_NAME
                           if len(lit) >= 4 and lit.endswith("_")), (name, lit)
    assert modules == set(MODULES)
    assert named == set(kernels.BY_NAME), set(kernels.BY_NAME) - named


# ----------------------------------------------------------------------------------------------
# Host-side pieces of the backend.

@pytest.mark.parametrize("sel, A, want", [
    ([], 3, []),
    ([0, 1, 2], 3, [0, 1, 2] + [0, 1, 2, 3] + [0, 1, 2]),
    ([2, 0, 0], 4, [2, 0, 0] + [0, 2, 2, 3, 3] + [1, 2, 0]),
    ([1], 1 + 1, [1] + [0, 0, 1] + [0]),
])
def test_diff_table(sel, A, want):
    assert cuda_backend.diff_table_values(sel, A) == want


def test_diff_table_inverse_is_consistent():
    sel = [5, 1, 5, 0, 3, 1, 1]
    A = 7
    t = cuda_backend.diff_table_values(sel, A)
    K = len(sel)
    inv_ptr, inv_k = t[K:K + A + 1], t[K + A + 1:]
    for i in range(A):
        ks = inv_k[inv_ptr[i]:inv_ptr[i + 1]]
        assert ks == [k for k, j in enumerate(sel) if j == i]


def test_row_segments_group_entries_in_a_fixed_order():
    rows = torch.tensor([2, 0, 0x7fffffff, 2, 1, 0, 0x7fffffff, 2], dtype=torch.int32)
    order, start = cuda_backend.row_segments(rows, 4)
    assert order.tolist() == [1, 5, 4, 0, 3, 7, 2, 6]
    assert start.tolist() == [0, 2, 3, 6, 6]


def test_set_deterministic():
    saved = dr.is_deterministic()
    try:
        dr.set_deterministic(True)
        assert dr.is_deterministic() and loader.deterministic() and cuda_backend.deterministic()
        dr.set_deterministic(False)
        assert not dr.is_deterministic() and not loader.deterministic()
        with pytest.raises(TypeError, match="enabled must be a bool"):
            dr.set_deterministic("yes")
    finally:
        dr.set_deterministic(saved)


def test_launch_packs_the_parameter_struct():
    """loader.pack writes a parameter struct's bytes into the thread's buffer for its type and
    returns the address of the array of pointers to its fields (cuLaunchKernel's kernelParams):
    tensors (subclasses such as nn.Parameter included) as their data pointers, None as null."""
    import ctypes

    from diffrast.cuda_ops.params import MipBackwardParams
    raw = torch.nn.Parameter(torch.zeros(3))
    out = torch.zeros(2)
    kp = MipBackwardParams(raw=raw, out=out, images=6, height=5, width=4, channels=3, level=2,
                           steps=1, top_is_raw=True)
    address = loader.pack(kp)
    fields = MipBackwardParams.fields
    pointers = (ctypes.c_void_p * len(fields)).from_address(address)
    base = pointers[0]
    assert [pointers[i] - base for i in range(len(fields))] == [
        getattr(MipBackwardParams.ctype, f.name).offset for f in fields]
    c = MipBackwardParams.ctype.from_address(base)
    assert (c.raw, c.totals, c.out) == (raw.data_ptr(), 0, out.data_ptr())
    assert (c.images, c.height, c.width, c.channels, c.level, c.steps, c.top_is_raw) == (
        6, 5, 4, 3, 2, 1, True)
    assert ctypes.c_int.from_address(pointers[7]).value == 2  # the kernel's `level`
    assert loader.pack(kp._replace(level=7)) == address  # one buffer per thread and type, reused
    assert c.level == 7
