"""The kernels' parameters and modes, declared once: the Python side builds them, the CUDA side
reads the C declarations generated from here.

Every kernel family (the kernels of one ``cuda_ops/<module>.cu``) has ONE parameter struct,
declared here by :func:`struct` as a list of ``(name, C type, comment)`` fields; its kernels'
bodies read it as ``kp`` (``const TextureForwardParams& kp``). From that one list come:

* the Python class (a ``namedtuple`` subclass of :class:`KernelParams`) that the backends build
  by keyword, every field defaulting to zero (``None`` for a pointer): ``TextureForwardParams(
  tex=tex, uv=uv, ..., has_da=True)``. Pointer fields take a tensor (its data pointer is passed)
  or ``None`` (a null pointer, for a buffer the kernel does not read in that configuration);
* its ``ctypes.Structure`` (:attr:`KernelParams.ctype`), whose field offsets and size are the C
  layout (natural alignment, as g++ on x86-64 and NVCC lay out these scalar fields), and from it
  the ``struct`` format (:attr:`KernelParams.layout`, explicit ``x`` padding bytes) with which
  :meth:`KernelParams.pack_into` writes the bytes in one ``pack_into`` call;
* the C ``struct`` text (:meth:`KernelParams.c_declaration`), which :func:`c_prelude` puts,
  with the constants of the modes, at the top of every kernel source that
  :func:`diffrast.cuda_ops.loader.source` assembles, and the entry points' parameter lists
  (:meth:`KernelParams.c_parameters`: the kernels take the fields one by one, in this order, and
  rebuild the struct; see :mod:`diffrast.cuda_ops.kernels` for why). There is no hand-written C
  copy; ``tests/test_kernel_params.py`` checks that the C compiler lays every struct out as
  ctypes does, and that the launcher's bytes read back field for field.

Modes (filter, boundary, the texture backward's accumulation pass) are :class:`CEnum` classes:
Python uses the members, the C source gets one ``inline constexpr int k<Name> = value;`` per
member (``Filter.MIP_LINEAR`` is ``kMipLinear``). The public API's mode strings map to them in
:data:`FILTER_MODES` and :data:`BOUNDARY_MODES`, and nowhere else.

The kernel entry points (which kernel takes which struct) are listed in
:mod:`diffrast.cuda_ops.kernels`.
"""
from __future__ import annotations

import collections
import ctypes
import enum
import struct as _struct

__all__ = ["CEnum", "Filter", "Boundary", "TextureGradMode", "FILTER_MODES", "BOUNDARY_MODES",
           "KernelParams", "struct", "STRUCTS", "MAX_SIZE", "c_prelude",
           "InterpolateForwardParams", "InterpolateBackwardParams", "RasterizeForwardParams",
           "RasterizeBackwardParams", "TextureForwardParams", "TextureBackwardParams",
           "MipForwardParams", "MipBackwardParams", "PixelTile", "AntialiasForwardParams",
           "AntialiasBackwardParams", "AntialiasTopologyParams"]


# ==============================================================================================
# Modes.

class CEnum(enum.IntEnum):
    """An integer mode shared with the kernels: member ``MIP_LINEAR = 3`` is the C constant
    ``inline constexpr int kMipLinear = 3;`` (namespace ``diffrast``) in every kernel source that
    uses it (see :func:`c_prelude`)."""

    @property
    def c_name(self) -> str:
        """The member's C name: ``k`` and its name in CamelCase."""
        return "k" + "".join(word.capitalize() for word in self.name.split("_"))

    @classmethod
    def c_declaration(cls) -> str:
        """The C constants of the members, one line each."""
        lines = [f"// {cls.__name__}: {(cls.__doc__ or '').strip().splitlines()[0]}"]
        lines += [f"inline constexpr int {m.c_name} = {int(m)};" for m in cls]
        return "\n".join(lines)


class Filter(CEnum):
    """Texture filter modes (filter_mode of diffrast.texture: see FILTER_MODES)."""
    NEAREST = 0
    LINEAR = 1
    MIP_NEAREST = 2
    MIP_LINEAR = 3


class Boundary(CEnum):
    """Texture boundary modes (boundary_mode of diffrast.texture: see BOUNDARY_MODES)."""
    WRAP = 0
    CLAMP = 1
    ZERO = 2
    CUBE = 3


class TextureGradMode(CEnum):
    """Passes of the texture backward kernels (how they sum texture gradients, see
    cuda_ops/texture_accumulate.cuh)."""
    FAST = 0      # float atomics
    DET_SCAN = 1  # deterministic mode, pass 1: largest contribution per texel channel
    DET_SUM = 2   # deterministic mode, pass 2: fixed-point sums


class PixelTile(CEnum):
    """The tile of output pixels of a block, a thread each, of kernels launched a block per tile
    (pixel_tile.cuh: the antialias forward)."""
    TILE_WIDTH = 32   # a warp per row
    TILE_HEIGHT = 8


#: The ``filter_mode`` strings of :func:`diffrast.texture` (and of the reference,
#: :data:`diffrast.reference.texture.FILTER_MODES`) and the kernels' ids.
FILTER_MODES = {"nearest": Filter.NEAREST, "linear": Filter.LINEAR,
                "linear-mipmap-nearest": Filter.MIP_NEAREST,
                "linear-mipmap-linear": Filter.MIP_LINEAR}
#: The ``boundary_mode`` strings of :func:`diffrast.texture` and the kernels' ids.
BOUNDARY_MODES = {"wrap": Boundary.WRAP, "clamp": Boundary.CLAMP, "zero": Boundary.ZERO,
                  "cube": Boundary.CUBE}


# ==============================================================================================
# Parameter structs.

# C scalar type -> (ctypes type, struct format code, Python default).
_SCALARS = {
    "int": (ctypes.c_int32, "i", 0),
    "long long": (ctypes.c_int64, "q", 0),
    "float": (ctypes.c_float, "f", 0.0),
    "bool": (ctypes.c_bool, "?", False),
}


class Field(collections.namedtuple("Field", "name c_type comment enum")):
    """One field of a parameter struct: its name, C type (``"int"``, ``"long long"``,
    ``"float"``, ``"bool"`` or a pointer type such as ``"const float* __restrict__"``), comment,
    and the :class:`CEnum` whose values an ``int`` field holds (or ``None``)."""

    __slots__ = ()

    @property
    def is_pointer(self) -> bool:
        return "*" in self.c_type


def _c_type(f: Field) -> str:
    return "int" if f.enum is not None else f.c_type


class KernelParams(tuple):
    """Base of the parameter structs made by :func:`struct` (``namedtuple`` subclasses: build
    them by keyword; ``_replace`` gives a copy with some fields changed).

    Class attributes: ``c_name`` (the C struct's name), ``fields`` (:class:`Field` tuple),
    ``ctype`` (the ``ctypes.Structure``), ``layout`` (the ``struct.Struct`` of its bytes),
    ``size`` (its ``sizeof``) and ``enums`` (the :class:`CEnum` classes its kernels use)."""

    __slots__ = ()
    c_name = ""
    fields: tuple = ()
    enums: tuple = ()
    ctype = None
    layout = None
    size = 0

    def pack_into(self, buffer) -> None:  # replaced in each struct by generated code
        """Write the struct's bytes (C layout) at the start of ``buffer``: tensors as their data
        pointers, ``None`` as a null pointer."""
        raise NotImplementedError

    @classmethod
    def c_parameters(cls) -> str:
        """The struct's fields as a kernel's parameter list (``const float* __restrict__ tex,
        ..., bool has_bias``): the entry points take them one by one (see
        :mod:`diffrast.cuda_ops.kernels`), so that the pointers are ``__restrict__`` kernel
        parameters, which the compiler needs for read-only cached loads (``ld.global.nc``)."""
        return ", ".join(f"{_c_type(f)} {f.name}" for f in cls.fields)

    @classmethod
    def c_declaration(cls) -> str:
        """The C declaration of the struct."""
        doc = (cls.__doc__ or "").strip().splitlines()
        lines = [f"// {line}".rstrip() for line in doc]
        lines.append(f"struct {cls.c_name} {{")
        for f in cls.fields:
            c_type = _c_type(f)
            note = f.comment
            if f.enum is not None:
                note = f"{f.enum.__name__}: " + ", ".join(m.c_name for m in f.enum) + (
                    f"; {note}" if note else "")
            lines.append(f"    {c_type} {f.name};" + (f"  // {note}" if note else ""))
        lines.append("};")
        return "\n".join(lines)

    def check(self) -> None:
        """Raise ``TypeError`` naming the first field whose value the C type cannot take (what
        :meth:`pack_into` failed on)."""
        for f, value in zip(self.fields, self):
            if f.is_pointer:
                ok = value is None or hasattr(value, "data_ptr")
            else:
                try:
                    _struct.pack(_SCALARS[f.c_type][1], value)
                    ok = True
                except (_struct.error, TypeError):
                    ok = False
            if not ok:
                raise TypeError(f"{self.c_name}.{f.name} ({f.c_type}): cannot pass "
                                f"{type(value).__name__} {value!r}")


STRUCTS: list = []  # every struct declared below, in order


def struct(c_name: str, doc: str, *fields, uses=()) -> type:
    """Declare a kernel parameter struct.

    Args:
        c_name: name of the struct, in Python and in C (namespace ``diffrast``).
        doc: what the struct is for (the C comment above it, the Python docstring).
        fields: ``(name, C type, comment)`` each, the C type a string or a :class:`CEnum` class
            (an ``int`` field holding its values). Pointers are passed as 64-bit addresses;
            ``bool`` fields are C ``bool`` (one byte). Order = C order; put the bools last to
            save padding.
        uses: further :class:`CEnum` classes the kernels of the struct use (template arguments,
            say): their constants are emitted with the struct.

    Returns:
        The :class:`KernelParams` subclass.
    """
    decl = []
    for name, c_type, comment in fields:
        enum_cls = c_type if isinstance(c_type, type) and issubclass(c_type, CEnum) else None
        c_type = "int" if enum_cls is not None else c_type
        if "*" not in c_type and c_type not in _SCALARS:
            raise ValueError(f"{c_name}.{name}: unsupported C type {c_type!r}")
        decl.append(Field(name, c_type, comment, enum_cls))
    decl = tuple(decl)
    names = [f.name for f in decl]

    # ctypes: the C layout (pointers as 64-bit integers).
    ctype = type(c_name + "_C", (ctypes.Structure,), {
        "_fields_": [(f.name, ctypes.c_uint64 if f.is_pointer else _SCALARS[f.c_type][0])
                     for f in decl]})
    # The struct format: each field at its ctypes offset, padding as explicit "x" bytes.
    fmt, pos = "=", 0
    for f in decl:
        offset = getattr(ctype, f.name).offset
        fmt += "x" * (offset - pos) + ("Q" if f.is_pointer else _SCALARS[f.c_type][1])
        pos = offset + getattr(ctype, f.name).size
    fmt += "x" * (ctypes.sizeof(ctype) - pos)
    layout = _struct.Struct(fmt)
    assert layout.size == ctypes.sizeof(ctype), (c_name, fmt)

    # Generated: one unpacking of the tuple and one pack_into.
    values = ", ".join(f"0 if {f.name} is None else {f.name}.data_ptr()" if f.is_pointer
                       else f.name for f in decl)
    code = (f"def pack_into(self, buffer):\n"
            f"    ({', '.join(names)},) = self\n"
            f"    _pack_into(buffer, 0, {values})\n")
    namespace = {"_pack_into": layout.pack_into}
    exec(compile(code, f"<{c_name}.pack_into>", "exec"), namespace)

    defaults = [None if f.is_pointer else _SCALARS[f.c_type][2] for f in decl]
    base = collections.namedtuple(c_name, names, defaults=defaults)
    enums = tuple(dict.fromkeys([f.enum for f in decl if f.enum is not None] + list(uses)))
    cls = type(c_name, (base, KernelParams), {
        "__slots__": (), "__doc__": doc, "__module__": __name__, "c_name": c_name,
        "fields": decl, "enums": enums, "ctype": ctype, "layout": layout,
        "size": layout.size, "pack_into": namespace["pack_into"]})
    STRUCTS.append(cls)
    return cls


def c_prelude(structs) -> str:
    """The C text that :func:`diffrast.cuda_ops.loader.source` puts before a module's code: the
    constants of the enums that ``structs`` use, then the structs."""
    enums = dict.fromkeys(e for s in structs for e in s.enums)
    parts = ["// ---- generated from cuda_ops/params.py (edit the declarations there) ----",
             "namespace diffrast {", ""]
    parts += [e.c_declaration() + "\n" for e in enums]
    parts += [s.c_declaration() + "\n" for s in structs]
    parts += ["}  // namespace diffrast", "// ---- end of generated declarations ----", ""]
    return "\n".join(parts) + "\n"


# ==============================================================================================
# The structs, one per kernel family. Pointer types are those the kernels read and write
# through; __restrict__ promises that, within one launch, no other pointer of the kernel reaches
# the same memory.

_IN = "const float* __restrict__"
_OUT = "float* __restrict__"
_IN_INT = "const int* __restrict__"
_IN_LL = "const long long* __restrict__"

InterpolateForwardParams = struct(
    "InterpolateForwardParams",
    "interpolate_fwd (cuda_ops/interpolate_forward.cu).",
    ("attr", _IN, "[Ba * V, A] attribute rows"),
    ("rast", _IN, "[N, 4] (u, v, z/w, id + 1), 16-byte aligned"),
    ("tri", _IN_INT, "[T, 3]"),
    ("rast_db", _IN, "[N, 4], 16-byte aligned; read when num_diff > 0"),
    ("diff_table", _IN_INT, "selected attributes and their inverse map (see the .cu)"),
    ("out", _OUT, "[N, A]"),
    ("out_da", _OUT, "[N, 2 * num_diff]"),
    ("num_pixels", "long long", "N (64-bit: B * H * W may pass 2^31)"),
    ("pixels_per_image", "long long", ""),
    ("num_vertices", "int", "V"),
    ("num_attrs", "int", "A"),
    ("num_triangles", "int", "T"),
    ("num_diff", "int", "K, the length of diff_attrs"),
    ("attr_batched", "bool", "attr has one block of V rows per image"),
)

InterpolateBackwardParams = struct(
    "InterpolateBackwardParams",
    "interpolate_bwd and interpolate_bwd_reduce (cuda_ops/interpolate_backward.cu).",
    ("attr", _IN, "[Ba * V, A]"),
    ("rast", _IN, "[N, 4], 16-byte aligned"),
    ("tri", _IN_INT, "[T, 3]"),
    ("rast_db", _IN, "[N, 4], 16-byte aligned; read when num_diff > 0"),
    ("diff_table", _IN_INT, "as interpolate_fwd's"),
    ("grad_out", _IN, "element (p, c) at p * g_sp + c * g_sc"),
    ("grad_out_da", _IN, "element (p, c) at p * gda_sp + c * gda_sc"),
    ("grad_attr", _OUT, "[copies, Ba * V, A] zeroed (atomics), or [Ba * V, A] written (reduce)"),
    ("grad_rast", _OUT, "[N, 4] when want_rast"),
    ("grad_rast_db", _OUT, "[N, 4] when want_db"),
    ("entry_rows", "int* __restrict__", "deterministic: [3N] row of each (pixel, corner)"),
    ("order", _IN_LL, "reduce: the entries sorted by row"),
    ("row_start", _IN_LL, "reduce: [num_rows + 1] each row's part of order"),
    ("g_sp", "long long", "pixel stride of grad_out"),
    ("g_sc", "long long", "channel stride of grad_out"),
    ("gda_sp", "long long", "pixel stride of grad_out_da"),
    ("gda_sc", "long long", "channel stride of grad_out_da"),
    ("num_pixels", "long long", "N (64-bit: B * H * W may pass 2^31)"),
    ("pixels_per_image", "long long", ""),
    ("num_vertices", "int", "V"),
    ("num_attrs", "int", "A"),
    ("num_triangles", "int", "T"),
    ("num_diff", "int", "K"),
    ("num_rows", "int", "rows of one copy of grad_attr (Ba * V)"),
    ("copy_mask", "int", "atomics: warp w adds into copy w & copy_mask (copies a power of 2)"),
    ("attr_batched", "bool", ""),
    ("want_attr", "bool", ""),
    ("want_rast", "bool", ""),
    ("want_db", "bool", ""),
    ("deterministic", "bool", "record entry_rows instead of atomics"),
)

RasterizeForwardParams = struct(
    "RasterizeForwardParams",
    "setup_and_raster_small, setup_and_raster_by_warp, raster_big, resolve "
    "(cuda_ops/rasterize_forward.cu) and resolve_ids (cuda_ops/rasterize_resolve.cu).",
    ("pos", _IN, "[rows, 4] clip-space positions, 16-byte aligned"),
    ("tri", _IN_INT, "[T, 3]"),
    ("range_offsets", _IN_LL, "range mode: [num_images + 1] first work item of each image"),
    ("range_starts", _IN_INT, "range mode: [num_images] first triangle of each image"),
    ("keys", "unsigned long long* __restrict__", "[num_images * H * W] (depth, id) per pixel"),
    ("prev", "const unsigned long long* __restrict__", "the previous depth layer's keys"),
    ("ids", _IN_INT, "resolve_ids: [num_images * H * W] triangle id + 1 per pixel, 0: none"),
    ("big_items", "long long* __restrict__", "the big-triangle list: work items"),
    ("big_start", "long long* __restrict__", "the big-triangle list: first tiles"),
    ("big_state", "unsigned long long* __restrict__", "this chunk's list counter"),
    ("big_states", "unsigned long long* __restrict__", "resolve: every chunk's counter"),
    ("rast", _OUT, "resolve: [N, 4]"),
    ("rast_db", _OUT, "resolve: [N, 4] when output_db"),
    ("item_offset", "long long", "first work item of the chunk"),
    ("num_items", "long long", "work items of the chunk"),
    ("num_vertices", "int", "V"),
    ("num_triangles", "int", "T"),
    ("num_images", "int", ""),
    ("width", "int", ""),
    ("height", "int", ""),
    ("big_area", "int", "largest box (pixels) rasterized by a warp in setup"),
    ("tile_bits", "int", "bits of the tile count in a list counter"),
    ("num_states", "int", "resolve: counters to zero"),
    ("instanced", "bool", "pos is [num_images, V, 4] (else range mode)"),
    ("use_prev", "bool", "depth peeling: keep only fragments behind prev"),
    ("output_db", "bool", "resolve: write rast_db"),
)

RasterizeBackwardParams = struct(
    "RasterizeBackwardParams",
    "rasterize_grad and rasterize_grad_reduce (cuda_ops/rasterize_backward.cu). The loss "
    "gradients are read through element strides (image, row, pixel, channel).",
    ("pos", _IN, "[rows, 4], 16-byte aligned"),
    ("tri", _IN_INT, "[T, 3]"),
    ("rast", _IN, "[N, 4], 16-byte aligned"),
    ("grad_rast", _IN, "gradient of rast"),
    ("grad_db", _IN, "gradient of rast_db when has_db"),
    ("grad_pos", _OUT, "[rows, 4]: zeroed (atomics) or written (reduce)"),
    ("entry_rows", "int* __restrict__", "deterministic: [3N] pos row of each (pixel, corner)"),
    ("order", _IN_LL, "reduce: the entries sorted by row"),
    ("row_start", _IN_LL, "reduce: [num_rows + 1]"),
    ("grad_rast_sb", "long long", "64-bit: H * W * 4 passes 2^31 at 32768 x 32768"),
    ("grad_rast_sy", "long long", ""),
    ("grad_rast_sx", "long long", ""),
    ("grad_rast_sc", "long long", ""),
    ("grad_db_sb", "long long", ""),
    ("grad_db_sy", "long long", ""),
    ("grad_db_sx", "long long", ""),
    ("grad_db_sc", "long long", ""),
    ("num_pixels", "long long", "N (64-bit: B * H * W may pass 2^31)"),
    ("num_rows", "int", "reduce: rows of grad_pos"),
    ("width", "int", ""),
    ("height", "int", ""),
    ("num_vertices", "int", "V"),
    ("num_triangles", "int", "T"),
    ("sx", "float", "2 / width"),
    ("sy", "float", "2 / height"),
    ("instance_mode", "bool", "pos is [B, V, 4]"),
    ("has_db", "bool", "grad_db given"),
    ("has_depth", "bool", "propagate the gradient of z/w"),
    ("deterministic", "bool", "record entry_rows instead of atomics"),
)

TextureForwardParams = struct(
    "TextureForwardParams",
    "texture_fwd_* (cuda_ops/texture_forward.cu; layouts in texture_address.cuh).",
    ("tex", _IN, "level 0"),
    ("mip", _IN, "levels 1..num_levels, one after the other"),
    ("uv", _IN, "[N, 2] (2D) or [N, 3] (cube)"),
    ("uv_da", _IN, "[N, 4] or [N, 6] when has_da"),
    ("bias", _IN, "[N] mip level bias when has_bias"),
    ("out", _OUT, "[N, C]"),
    ("num_pixels", "long long", "N"),
    ("pixels_per_image", "long long", ""),
    ("tex_batch", "int", "textures in tex"),
    ("height", "int", "of level 0"),
    ("width", "int", "of level 0"),
    ("channels", "int", "C"),
    ("num_levels", "int", "mip levels below level 0"),
    ("boundary", Boundary, ""),
    ("tex_batched", "bool", "one texture per image (else texture 0 for all)"),
    ("has_da", "bool", "uv_da given"),
    ("has_bias", "bool", "bias given"),
    uses=(Filter,),
)

TextureBackwardParams = struct(
    "TextureBackwardParams",
    "texture_bwd_*, texture_grad_stage_reduce and texture_grad_finish "
    "(cuda_ops/texture_backward.cu).",
    ("tex", _IN, "level 0"),
    ("mip", _IN, "levels 1..num_levels"),
    ("uv", _IN, "[N, 2] or [N, 3]"),
    ("uv_da", _IN, "[N, 4] or [N, 6] when has_da"),
    ("bias", _IN, "[N] when has_bias"),
    ("grad_out", _IN, "element (p, c) at p * g_sp + c * g_sc"),
    ("grad_tex", _OUT, "flat gradient of level 0 then of the mip levels"),
    ("grad_uv", _OUT, "when want_uv"),
    ("grad_uv_da", _OUT, "when want_da"),
    ("grad_bias", _OUT, "when want_bias"),
    ("max_bits", "unsigned*", "deterministic: per texel channel, largest |contribution|"),
    ("flags", "int*", "deterministic: per texel channel, non-finite contributions"),
    ("acc", "long long*", "deterministic: per texel channel, fixed-point sums"),
    ("stage_keys", "long long*", "fast mode: [warps * stage_slots] texel key of each warp-uniform "
     "tap (-1: none), see texture_accumulate.cuh"),
    ("stage_vals", "float*", "fast mode: [warps * stage_slots, C] the warps' summed contributions"),
    ("g_sp", "long long", "pixel stride of grad_out"),
    ("g_sc", "long long", "channel stride of grad_out"),
    ("num_pixels", "long long", "N"),
    ("pixels_per_image", "long long", ""),
    ("num_texels", "long long", "texture_grad_finish: texels of grad_tex"),
    ("stage_warps", "long long", "texture_grad_stage_reduce: warps staged"),
    ("tex_batch", "int", ""),
    ("height", "int", "of level 0"),
    ("width", "int", "of level 0"),
    ("channels", "int", "C"),
    ("num_levels", "int", ""),
    ("count_log2", "int", "deterministic: bound on the contributions per texel (log2)"),
    ("stage_slots", "int", "taps per pixel: stage slots per warp"),
    ("boundary", Boundary, ""),
    ("mode", TextureGradMode, "the pass"),
    ("tex_batched", "bool", ""),
    ("has_da", "bool", ""),
    ("has_bias", "bool", ""),
    ("want_tex0", "bool", "gradient of level 0"),
    ("want_mip", "bool", "gradient of the mip levels"),
    ("want_uv", "bool", ""),
    ("want_da", "bool", ""),
    ("want_bias", "bool", ""),
    uses=(Filter,),
)

MipForwardParams = struct(
    "MipForwardParams",
    "mip_down (cuda_ops/texture_mip_forward.cu; layout in texture_mip.cuh).",
    ("tex", _IN, "level 0"),
    ("flat", _OUT, "levels 1..L, one after the other"),
    ("images", "int", "Bt (2D) or 6 Bt (cube)"),
    ("height", "int", "of level 0"),
    ("width", "int", "of level 0"),
    ("channels", "int", ""),
    ("level", "int", "the level read"),
    ("depth", "int", "levels written below it (1 to 4)"),
)

MipBackwardParams = struct(
    "MipBackwardParams",
    "mip_up and mip_up_chain (cuda_ops/texture_mip_backward.cu).",
    ("raw", _IN, "the levels' own gradients (flat)"),
    ("totals", _OUT, "full gradients of the intermediate levels (flat)"),
    ("out", _OUT, "gradient of level 0"),
    ("images", "int", ""),
    ("height", "int", "of level 0"),
    ("width", "int", "of level 0"),
    ("channels", "int", ""),
    ("level", "int", "the level written"),
    ("steps", "int", "mip_up_chain: levels gone down"),
    ("top_is_raw", "bool", "the level read is the top one (its own gradient is its full one)"),
    ("add_to_out", "bool", "level 0: add to what `out` holds (the base texture's own gradient)"),
)

AntialiasForwardParams = struct(
    "AntialiasForwardParams",
    "antialias_fwd (cuda_ops/antialias_forward.cu; layouts in antialias_pairs.cuh).",
    ("rast", _IN, "[N, 4], 16-byte aligned"),
    ("pos", _IN, "[rows, 4], 16-byte aligned"),
    ("tri", _IN_INT, "[T, 3]"),
    ("nbr", _IN_INT, "[T, 3] neighbour table"),
    ("edge_ptr", _IN_INT, "CSR offsets of the edges' incidences"),
    ("inc_tri", _IN_INT, "[3T]"),
    ("inc_opp", _IN_INT, "[3T]"),
    ("color", _IN, "[N, C]"),
    ("pair_t", "float* __restrict__", "[N, 2], or null: no records for the backward"),
    ("pair_meta", "int* __restrict__", "[N], or null with pair_t"),
    ("out", _OUT, "[N, C]"),
    ("width", "int", ""),
    ("height", "int", ""),
    ("channels", "int", "C"),
    ("num_vertices", "int", "V"),
    ("num_triangles", "int", "T"),
    ("num_edges", "int", "entries of edge_ptr - 1"),
    ("pos_batched", "bool", "pos is [B, V, 4]"),
    uses=(PixelTile,),
)

AntialiasBackwardParams = struct(
    "AntialiasBackwardParams",
    "antialias_bwd and antialias_bwd_pos_reduce (cuda_ops/antialias_backward.cu).",
    ("color", _IN, "[N, C]"),
    ("grad_out", _IN, "read through the g_stride_* element strides"),
    ("rast", _IN, "[N, 4], 16-byte aligned"),
    ("pos", _IN, "[rows, 4], 16-byte aligned"),
    ("tri", _IN_INT, "[T, 3]"),
    ("pair_t", _IN, "[N, 2] from the forward pass"),
    ("pair_meta", _IN_INT, "[N] from the forward pass"),
    ("grad_color", _OUT, "[N, C] when want_color"),
    ("grad_pos", _OUT, "[rows, 4]: zeroed (atomics) or written (reduce)"),
    ("pair_grad", _OUT, "deterministic: [2N] dLoss/dt of each pair"),
    ("entry_rows", "int* __restrict__", "deterministic: [4N] vertex row of each edge end"),
    ("order", _IN_LL, "reduce: the entries sorted by row"),
    ("row_start", _IN_LL, "reduce: [num_rows + 1]"),
    ("num_pixels", "long long", "N"),
    ("g_stride_b", "long long", "element strides of grad_out"),
    ("g_stride_y", "long long", ""),
    ("g_stride_x", "long long", ""),
    ("g_stride_c", "long long", ""),
    ("num_rows", "int", "reduce: rows of grad_pos"),
    ("width", "int", ""),
    ("height", "int", ""),
    ("channels", "int", "C"),
    ("num_vertices", "int", "V"),
    ("num_triangles", "int", "T"),
    ("boost", "float", "pos_gradient_boost"),
    ("pos_batched", "bool", ""),
    ("want_color", "bool", ""),
    ("want_pos", "bool", ""),
    ("deterministic", "bool", "record pair_grad and entry_rows instead of atomics"),
)

AntialiasTopologyParams = struct(
    "AntialiasTopologyParams",
    "topology_insert, topology_scan, topology_place and topology_rank "
    "(cuda_ops/antialias_topology.cu, which describes the buffers).",
    ("tri", _IN_INT, "[T, 3]"),
    ("table", "long long*", "hash table, then the scan's tile status and ticket"),
    ("list", "unsigned* __restrict__", "[3T] the lists of the edges of three or more incidences"),
    ("edge_ptr", "int* __restrict__", "[3T + 1] CSR offsets (padded)"),
    ("tri_edge", "int* __restrict__", "[T, 3]"),
    ("inc_tri", "int* __restrict__", "[3T]"),
    ("inc_opp", "int* __restrict__", "[3T]"),
    ("nbr", "int* __restrict__", "[T, 3]"),
    ("num_slots", "int", "3T"),
    ("capacity", "int", "entries of the hash table"),
    ("num_tiles", "int", "tiles of the scan"),
)

#: The largest struct's size in bytes (the launcher's argument buffer).
MAX_SIZE = max(s.size for s in STRUCTS)
