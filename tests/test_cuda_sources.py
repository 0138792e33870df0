"""CPU checks of the CUDA sources and of the CUDA backend's host-side pieces (no GPU needed).

* Every ``cuda_ops/*.cu`` compiles with ``nvcc --ptx`` (skipped when nvcc is not on PATH), so a
  syntax error never lands unseen on a machine without a GPU.
* The sources follow what NVRTC (through which ``cuda_ops/loader.py`` compiles them at run time)
  accepts: no host headers (NVRTC has no host standard library), local ``.cuh`` includes that
  exist, and every kernel declared ``extern "C" __global__`` (so its name is not mangled).
* The layout: kernels only in ``.cu`` files, one module per op and direction, the helpers of
  ``cuda_ops/common.cuh`` defined nowhere else.
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
from diffrast.cuda_ops import loader

SOURCES = sorted(glob.glob(os.path.join(loader.SOURCE_DIR, "*.cu")))
HEADERS = sorted(glob.glob(os.path.join(loader.SOURCE_DIR, "*.cuh")))


def _name(path):
    return os.path.basename(path)


MODULES = ["antialias_backward", "antialias_forward", "antialias_topology", "interpolate_backward",
           "interpolate_forward", "rasterize_backward", "rasterize_forward", "texture_backward",
           "texture_forward", "texture_mip_backward", "texture_mip_forward"]


def test_there_are_kernel_sources():
    assert [_name(p)[:-3] for p in SOURCES] == MODULES


@pytest.mark.parametrize("module", MODULES)
def test_sources_expand(module):
    """loader.source inlines every local header once; what NVRTC compiles has no includes left."""
    text = loader.source(module)
    assert not re.search(r'^\s*#\s*include\s+"', text, re.M)
    assert "#pragma once" not in text


def test_kernels_live_in_the_module_files():
    """Headers hold no kernels (the CPU kernel emulator finds a module's kernels in its own file's
    text), and each kernel name belongs to one module."""
    for path in HEADERS:
        with open(path) as f:
            assert "__global__" not in _strip_comments(f.read()), _name(path)
    owner = {}
    for path in SOURCES:
        with open(path) as f:
            for k in set(re.findall(r'extern\s+"C"\s+__global__\s+\w*\s*void\s+(\w+)', f.read())):
                assert k not in owner, f"{k} in {owner.get(k)} and {_name(path)}"
                owner[k] = _name(path)


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
@pytest.mark.parametrize("path", SOURCES, ids=_name)
def test_compiles_with_nvcc(path, tmp_path):
    cmd = ["nvcc", "--ptx", "-arch=sm_80", "--std=c++17", "-I", loader.SOURCE_DIR, path,
           "-o", str(tmp_path / "out.ptx")]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, f"{' '.join(cmd)} failed:\n{res.stderr}"


def _strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


@pytest.mark.parametrize("path", SOURCES + HEADERS, ids=_name)
def test_follows_nvrtc_rules(path):
    with open(path) as f:
        code = _strip_comments(f.read())
    for line in code.splitlines():
        m = re.match(r"\s*#\s*include\s*(.+)", line)
        if not m:
            continue
        target = m.group(1).strip()
        if target.startswith("<"):
            # NVRTC has no host standard library (<cstdio>, <cmath>, <stdio.h>, ...); only the
            # CUDA toolkit's device headers, which CuPy puts on NVRTC's include path.
            assert re.match(r"<(cuda_fp16|cuda_bf16)\.h>|<(cuda|cooperative_groups)/", target), (
                f"{_name(path)}: {line.strip()!r}: NVRTC lacks host headers; include local "
                f"\"*.cuh\" files or CUDA device headers only")
            continue
        local = target.strip('"')
        assert os.path.isfile(os.path.join(loader.SOURCE_DIR, local)), f"{local} not found"
    for m in re.finditer(r"((?:extern\s+\"C\"\s+)?)__global__", code):
        assert m.group(1), f"{_name(path)}: every __global__ kernel must be extern \"C\""


def test_kernels_named_by_the_backend_exist():
    """Every launch with literal names, in every backend module, names a module of cuda_ops/ and
    a kernel in it."""
    package = os.path.dirname(cuda_backend.__file__)
    modules = set()
    for name in ("cuda_backend.py", "cuda_backend_texture.py", "cuda_backend_antialias.py",
                 "cuda_context.py"):
        with open(os.path.join(package, name)) as f:
            backend = f.read()
        launches = re.findall(r'(?:_launch|loader\.launch)\(\s*"(\w+)",\s*(?:"(\w+)")?', backend)
        assert launches, name
        for module, kernel in launches:
            assert module in MODULES, f"{name}: no cuda_ops/{module}.cu"
            modules.add(module)
            if kernel:
                assert re.search(rf'extern\s+"C"\s+__global__\s+void\s+{kernel}\s*\(',
                                 loader.source(module)), f"{kernel} not in cuda_ops/{module}.cu"
    assert modules == set(MODULES)


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
    order, start = cuda_backend._row_segments(rows, 4)
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


def test_launch_packs_arguments_in_the_kernels_c_layout():
    """loader.launch's argument buffer: tensors (subclasses such as nn.Parameter included) as
    their data pointers, ints as int, np.int64 as long long, floats as float, each at its C
    alignment."""
    import ctypes

    import numpy as np
    param = torch.nn.Parameter(torch.zeros(3))
    plain = torch.zeros(2)
    args = (param, 7, np.int64(-5), 2.5, True, plain)
    p = loader.pack_arguments(args)
    assert p.layout.format == "@PiqfiP"
    assert p.layout.unpack_from(p.buffer) == (param.data_ptr(), 7, -5, 2.5, 1, plain.data_ptr())
    base = ctypes.addressof(p.buffer)
    assert [p.pointers[i] - base for i in range(6)] == [0, 8, 16, 24, 28, 32]
