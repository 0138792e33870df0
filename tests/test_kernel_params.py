"""The kernels' parameter structs and modes (cuda_ops/params.py) and entry points
(cuda_ops/kernels.py): Python and C agree.

Each struct is declared once in Python; its C declaration is generated into every kernel source
by the loader, and its bytes are written by a ``struct`` format derived from the ctypes layout.
Checked here:

* the C compiler lays every struct out as ctypes does: ``sizeof`` and every field's offset, from
  a small program compiled with g++ out of the same generated declarations (skipped without a
  compiler), and on a GPU from a kernel compiled by NVRTC (marked ``gpu``);
* the packed bytes are the ctypes struct's: every field reads back its value;
* the generated C constants of the modes have the enums' values; the public mode strings map to
  them in one table, the reference's;
* a value that does not fit its field is refused, naming the field;
* the kernel table is consistent (names unique, structs declared, tuple fields existing).
"""
import ctypes
import os
import re
import shutil
import subprocess

import pytest
import torch

from diffrast.cuda_ops import kernels, loader, params
from diffrast.reference import texture as ref_texture

STRUCTS = params.STRUCTS
ENUMS = [params.Filter, params.Boundary, params.TextureGradMode]


def _cxx():
    return shutil.which(os.environ.get("CXX", "g++"))


def _probe_source(kernel: bool) -> str:
    """C++ that reports, for every struct, its size and each field's offset, and each enum
    constant: printed by main() on the host, or written to `out` by a kernel (one value per
    slot, in the order of _expected())."""
    lines = [params.c_prelude(STRUCTS)]
    body = []
    for s in STRUCTS:
        body.append(f"{{ diffrast::{s.c_name} v; const char* b = (const char*)&v;")
        body.append(f"  put((long long)sizeof(v));")
        for f in s.fields:
            body.append(f"  put((long long)((const char*)&v.{f.name} - b));")
        body.append("}")
    for e in ENUMS:
        for m in e:
            body.append(f"put((long long)diffrast::{m.c_name});")
    if kernel:
        lines.append('extern "C" __global__ void probe(long long* out)\n{\n    int i = 0;\n'
                     '    auto put = [&](long long x) { out[i++] = x; };')
    else:
        lines.append("#include <cstdio>\nint main()\n{\n"
                     '    auto put = [](long long x) { std::printf("%lld\\n", x); };')
    lines += ["    " + b for b in body]
    lines.append("    return;" if kernel else "    return 0;")
    lines.append("}")
    return "\n".join(lines)


def _expected():
    values = []
    for s in STRUCTS:
        values.append(ctypes.sizeof(s.ctype))
        values += [getattr(s.ctype, f.name).offset for f in s.fields]
    for e in ENUMS:
        values += [int(m) for m in e]
    return values


def _describe(values):
    """Values of _expected() by name, for readable failures."""
    names = []
    for s in STRUCTS:
        names.append(f"sizeof({s.c_name})")
        names += [f"offsetof({s.c_name}, {f.name})" for f in s.fields]
    for e in ENUMS:
        names += [m.c_name for m in e]
    return dict(zip(names, values))


@pytest.mark.skipif(_cxx() is None, reason="no C++ compiler")
def test_c_compiler_lays_out_the_structs_as_ctypes(tmp_path):
    src = tmp_path / "probe.cpp"
    src.write_text(_probe_source(kernel=False))
    exe = tmp_path / "probe"
    res = subprocess.run([_cxx(), "-std=c++17", str(src), "-o", str(exe)], capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stderr
    got = [int(x) for x in subprocess.run([str(exe)], capture_output=True, text=True,
                                          check=True).stdout.split()]
    assert _describe(got) == _describe(_expected())


@pytest.mark.gpu
def test_nvrtc_lays_out_the_structs_as_ctypes():
    """The same probe as a kernel compiled by NVRTC with the loader's options."""
    import cupy
    want = _expected()
    module = cupy.RawModule(code=_probe_source(kernel=True), options=loader.COMPILE_OPTIONS)
    out = cupy.zeros(len(want), dtype=cupy.int64)
    module.get_function("probe")((1,), (1,), (out,))
    assert _describe([int(x) for x in out.get()]) == _describe(want)


@pytest.mark.parametrize("cls", STRUCTS, ids=lambda c: c.c_name)
def test_packed_bytes_are_the_ctypes_struct(cls):
    """Every field packed by the generated pack_into reads back through the ctypes struct."""
    tensors = {}
    values = {}
    for i, f in enumerate(cls.fields):
        if f.is_pointer:
            tensors[f.name] = torch.zeros(i + 1)
            values[f.name] = tensors[f.name]
        elif f.c_type == "bool":
            values[f.name] = i % 2 == 0
        elif f.c_type == "float":
            values[f.name] = 0.5 + i
        elif f.c_type == "long long":
            values[f.name] = -(3 ** 30) - i
        else:
            values[f.name] = -1000 - i
    kp = cls(**values)
    buf = ctypes.create_string_buffer(cls.size)
    kp.pack_into(buf)
    c = cls.ctype.from_buffer_copy(buf)
    for f in cls.fields:
        want = values[f.name].data_ptr() if f.is_pointer else values[f.name]
        assert getattr(c, f.name) == want, f.name
    assert cls.layout.size == ctypes.sizeof(cls.ctype) == cls.size <= params.MAX_SIZE


@pytest.mark.parametrize("cls", STRUCTS, ids=lambda c: c.c_name)
def test_defaults_are_zero(cls):
    buf = ctypes.create_string_buffer(b"\xff" * cls.size, cls.size)
    cls().pack_into(buf)
    assert buf.raw == bytes(cls.size)


def test_a_value_that_does_not_fit_names_its_field():
    kp = params.MipForwardParams(images=1.5)
    with pytest.raises(TypeError, match=r"MipForwardParams\.images \(int\)"):
        loader.pack(kp)
    with pytest.raises(TypeError, match=r"MipForwardParams\.tex"):
        loader.pack(params.MipForwardParams(tex=3))
    with pytest.raises(TypeError, match=r"MipForwardParams\.level"):
        loader.pack(params.MipForwardParams(level=2 ** 31))


def test_c_declarations_are_generated_into_the_sources():
    """Each module's source starts with the generated declarations of its structs and of the
    enums they use; no hand-written file declares them (or the mode constants) again."""
    for module in kernels.modules():
        text = loader.source(module)
        for s in kernels.structs_of(module):
            assert s.c_declaration() in text
            for e in s.enums:
                assert e.c_declaration() in text
    names = [s.c_name for s in STRUCTS] + [m.c_name for e in ENUMS for m in e]
    for name in os.listdir(loader.SOURCE_DIR):
        if name.endswith((".cu", ".cuh")):
            with open(os.path.join(loader.SOURCE_DIR, name)) as f:
                code = f.read()
            for n in names:
                assert not re.search(rf"(struct\s+{n}\b|\b{n}\s*=)", code), (name, n)


def test_enum_c_names():
    assert [m.c_name for m in params.Filter] == ["kNearest", "kLinear", "kMipNearest",
                                                 "kMipLinear"]
    assert params.Boundary.CUBE.c_name == "kCube"
    assert params.TextureGradMode.DET_SCAN.c_name == "kDetScan"


def test_mode_strings_map_to_the_enums():
    """The public mode strings (the reference's) and the kernels' ids: one table each."""
    assert tuple(params.FILTER_MODES) == ref_texture.FILTER_MODES
    assert tuple(params.BOUNDARY_MODES) == ref_texture.BOUNDARY_MODES
    assert list(params.FILTER_MODES.values()) == list(params.Filter)
    assert list(params.BOUNDARY_MODES.values()) == list(params.Boundary)


def test_kernel_table():
    assert len(kernels.BY_NAME) == len(kernels.KERNELS)
    for k in kernels.KERNELS:
        assert k.params in STRUCTS, k.name
        names = [f.name for f in k.params.fields]
        assert set(k.args) <= set(names), k.name
        assert os.path.isfile(os.path.join(loader.SOURCE_DIR, k.module + ".cu")), k.name
    for table, module in ((kernels.TEXTURE_FORWARD, "texture_forward"),
                          (kernels.TEXTURE_BACKWARD, "texture_backward")):
        assert set(table) == {(cube, f) for cube in (False, True) for f in params.Filter}
        assert all(kernels.get(name).module == module for name in table.values())


def test_a_launch_takes_its_struct_or_its_declared_tuple():
    insert = kernels.get("topology_insert")
    kp = kernels.params_for(insert, (None, None, None, 9, 20))
    assert isinstance(kp, params.AntialiasTopologyParams)
    assert (kp.num_slots, kp.capacity, kp.num_tiles) == (9, 20, 0)
    assert kernels.params_for(insert, kp) is kp
    with pytest.raises(TypeError, match="takes AntialiasTopologyParams, not MipForwardParams"):
        kernels.params_for(insert, params.MipForwardParams())
    with pytest.raises(TypeError, match="takes InterpolateForwardParams"):
        kernels.params_for(kernels.get("interpolate_fwd"), (1, 2))
    with pytest.raises(ValueError, match="texture_forward.cu, not"):
        loader.kernel_of("texture_backward", "texture_fwd_2d_linear")
