"""The kernel entry points: every ``extern "C" __global__`` function of ``cuda_ops/``, listed once.

Each row of :data:`KERNELS` names a kernel (its literal name, what the backends launch), its
module (``cuda_ops/<module>.cu``), its parameter struct (:mod:`diffrast.cuda_ops.params`) and
the device function that does the work, with its template arguments. The ``.cu`` files hold only
those device functions (``__device__ __forceinline__ void <body>(const <Struct>& kp)``); the
loader appends the entry points generated from this table to the module's source
(:func:`entry_points`), e.g. ::

    extern "C" __global__ void texture_fwd_cube_miplinear(
        const float* __restrict__ tex, const float* __restrict__ mip, ..., bool has_bias)
    {
        const diffrast::TextureForwardParams kp{tex, mip, ..., has_bias};
        texture_fwd_impl<true, diffrast::kMipLinear>(kp);
    }

The entry points take the struct's fields one by one, in its order, rather than the struct
itself: a pointer read through a struct parameter is not a ``__restrict__`` kernel parameter,
and NVRTC then gives up the read-only cached loads (``ld.global.nc``) of most kernels (28 of 37
lost them in a test with NVRTC 13). The launcher still packs the struct's bytes once; the
driver reads each parameter from its offset in them (see
:func:`diffrast.cuda_ops.loader.pack`).

Kernels chosen by a mode are looked up by it, never spelled with string formatting:
:data:`TEXTURE_FORWARD` and :data:`TEXTURE_BACKWARD` map ``(cube, Filter)`` to the kernel.
"""
from __future__ import annotations

from dataclasses import dataclass

from .params import (AntialiasBackwardParams, AntialiasForwardParams, AntialiasTopologyParams,
                     CEnum, Filter, InterpolateBackwardParams, InterpolateForwardParams,
                     KernelParams, MipBackwardParams, MipForwardParams, RasterizeBackwardParams,
                     RasterizeForwardParams, TextureBackwardParams, TextureForwardParams)

__all__ = ["Kernel", "KERNELS", "BY_NAME", "TEXTURE_FORWARD", "TEXTURE_BACKWARD", "get",
           "of_module", "modules", "structs_of", "entry_points", "params_for"]


@dataclass(frozen=True)
class Kernel:
    """One kernel entry point.

    Attributes:
        name: the ``extern "C"`` name.
        module: the source, ``cuda_ops/<module>.cu``.
        params: its parameter struct (a :class:`~diffrast.cuda_ops.params.KernelParams` class).
        body: the device function the entry point calls with the struct.
        template: the body's template arguments (``bool``, :class:`CEnum` members, ints).
        bounds: ``__launch_bounds__`` arguments, if any.
        args: for a kernel that callers may also launch with a plain tuple of values (tests that
            drive single topology passes by hand), the fields those values fill, in order.
    """

    name: str
    module: str
    params: type
    body: str
    template: tuple = ()
    bounds: str = ""
    args: tuple = ()

    def c_call(self) -> str:
        """The body's call, e.g. ``texture_fwd_impl<true, diffrast::kMipLinear>(kp)``."""
        if not self.template:
            return f"{self.body}(kp)"
        targs = ", ".join(_c_value(v) for v in self.template)
        return f"{self.body}<{targs}>(kp)"


def _c_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, CEnum):
        return f"diffrast::{v.c_name}"
    return str(int(v))


_2D, _CUBE = False, True
_TOPOLOGY = "antialias_topology"

KERNELS = (
    # cuda_ops/interpolate_forward.cu, interpolate_backward.cu
    Kernel("interpolate_fwd", "interpolate_forward", InterpolateForwardParams,
           "interpolate_fwd_impl"),
    Kernel("interpolate_bwd", "interpolate_backward", InterpolateBackwardParams,
           "interpolate_bwd_impl"),
    Kernel("interpolate_bwd_reduce", "interpolate_backward", InterpolateBackwardParams,
           "interpolate_bwd_reduce_impl"),
    # cuda_ops/rasterize_forward.cu (RasterizeCudaContext), rasterize_backward.cu
    Kernel("setup_and_raster_small", "rasterize_forward", RasterizeForwardParams,
           "setup_and_raster_small_impl", bounds="kSetupThreads"),
    Kernel("setup_and_raster_by_warp", "rasterize_forward", RasterizeForwardParams,
           "setup_and_raster_by_warp_impl"),
    Kernel("raster_big", "rasterize_forward", RasterizeForwardParams, "raster_big_impl"),
    # (66 registers unbounded, three blocks of 256 per SM; 64 with the bound, four, no spills)
    Kernel("resolve", "rasterize_forward", RasterizeForwardParams, "resolve_impl",
           bounds="256, 4"),
    Kernel("resolve_ids", "rasterize_resolve", RasterizeForwardParams, "resolve_ids_impl"),
    Kernel("rasterize_grad", "rasterize_backward", RasterizeBackwardParams,
           "rasterize_grad_impl"),
    Kernel("rasterize_grad_reduce", "rasterize_backward", RasterizeBackwardParams,
           "rasterize_grad_reduce_impl"),
    # cuda_ops/texture_forward.cu: one kernel per (2D / cube, filter)
    Kernel("texture_fwd_2d_nearest", "texture_forward", TextureForwardParams, "texture_fwd_impl",
           (_2D, Filter.NEAREST)),
    Kernel("texture_fwd_2d_linear", "texture_forward", TextureForwardParams, "texture_fwd_impl",
           (_2D, Filter.LINEAR)),
    Kernel("texture_fwd_2d_mipnearest", "texture_forward", TextureForwardParams,
           "texture_fwd_impl", (_2D, Filter.MIP_NEAREST)),
    # (trilinear: 56 registers unbounded, four blocks of 256 per SM; 48 with the bound, five,
    # no spills: more samples' loads in flight)
    Kernel("texture_fwd_2d_miplinear", "texture_forward", TextureForwardParams,
           "texture_fwd_impl", (_2D, Filter.MIP_LINEAR), bounds="256, 5"),
    Kernel("texture_fwd_cube_nearest", "texture_forward", TextureForwardParams,
           "texture_fwd_impl", (_CUBE, Filter.NEAREST)),
    Kernel("texture_fwd_cube_linear", "texture_forward", TextureForwardParams,
           "texture_fwd_impl", (_CUBE, Filter.LINEAR)),
    Kernel("texture_fwd_cube_mipnearest", "texture_forward", TextureForwardParams,
           "texture_fwd_impl", (_CUBE, Filter.MIP_NEAREST)),
    Kernel("texture_fwd_cube_miplinear", "texture_forward", TextureForwardParams,
           "texture_fwd_impl", (_CUBE, Filter.MIP_LINEAR)),
    # cuda_ops/texture_backward.cu: likewise, limited to the registers that let three blocks of
    # 256 threads share a multiprocessor (their latency-bound atomics need the occupancy)
    Kernel("texture_bwd_2d_nearest", "texture_backward", TextureBackwardParams,
           "texture_bwd_impl", (_2D, Filter.NEAREST), bounds="256, 3"),
    Kernel("texture_bwd_2d_linear", "texture_backward", TextureBackwardParams,
           "texture_bwd_impl", (_2D, Filter.LINEAR), bounds="256, 3"),
    Kernel("texture_bwd_2d_mipnearest", "texture_backward", TextureBackwardParams,
           "texture_bwd_impl", (_2D, Filter.MIP_NEAREST), bounds="256, 3"),
    Kernel("texture_bwd_2d_miplinear", "texture_backward", TextureBackwardParams,
           "texture_bwd_impl", (_2D, Filter.MIP_LINEAR), bounds="256, 3"),
    Kernel("texture_bwd_cube_nearest", "texture_backward", TextureBackwardParams,
           "texture_bwd_impl", (_CUBE, Filter.NEAREST), bounds="256, 3"),
    Kernel("texture_bwd_cube_linear", "texture_backward", TextureBackwardParams,
           "texture_bwd_impl", (_CUBE, Filter.LINEAR), bounds="256, 3"),
    Kernel("texture_bwd_cube_mipnearest", "texture_backward", TextureBackwardParams,
           "texture_bwd_impl", (_CUBE, Filter.MIP_NEAREST), bounds="256, 3"),
    Kernel("texture_bwd_cube_miplinear", "texture_backward", TextureBackwardParams,
           "texture_bwd_impl", (_CUBE, Filter.MIP_LINEAR), bounds="256, 3"),
    Kernel("texture_grad_stage_reduce", "texture_backward", TextureBackwardParams,
           "texture_grad_stage_reduce_impl"),
    Kernel("texture_grad_finish", "texture_backward", TextureBackwardParams,
           "texture_grad_finish_impl"),
    # cuda_ops/texture_mip_forward.cu, texture_mip_backward.cu
    Kernel("mip_down", "texture_mip_forward", MipForwardParams, "mip_down_impl"),
    Kernel("mip_up", "texture_mip_backward", MipBackwardParams, "mip_up_impl"),
    Kernel("mip_up_chain", "texture_mip_backward", MipBackwardParams, "mip_up_chain_impl"),
    # cuda_ops/antialias_forward.cu, antialias_backward.cu, antialias_topology.cu
    Kernel("antialias_fwd", "antialias_forward", AntialiasForwardParams, "antialias_fwd_impl",
           bounds="256, 4"),
    Kernel("antialias_bwd", "antialias_backward", AntialiasBackwardParams, "antialias_bwd_impl"),
    Kernel("antialias_bwd_pos_reduce", "antialias_backward", AntialiasBackwardParams,
           "antialias_bwd_pos_reduce_impl"),
    Kernel("topology_insert", _TOPOLOGY, AntialiasTopologyParams, "topology_insert_impl",
           args=("tri", "table", "tri_edge", "num_slots", "capacity")),
    Kernel("topology_scan", _TOPOLOGY, AntialiasTopologyParams, "topology_scan_impl",
           args=("table", "tri_edge", "edge_ptr", "nbr", "num_slots", "capacity", "num_tiles")),
    Kernel("topology_place", _TOPOLOGY, AntialiasTopologyParams, "topology_place_impl",
           args=("tri", "table", "list", "tri_edge", "edge_ptr", "inc_tri", "inc_opp", "nbr",
                 "num_slots", "capacity", "num_tiles")),
    Kernel("topology_rank", _TOPOLOGY, AntialiasTopologyParams, "topology_rank_impl",
           args=("tri", "list", "tri_edge", "edge_ptr", "inc_tri", "inc_opp", "num_slots")),
)

#: Kernel by name.
BY_NAME = {k.name: k for k in KERNELS}
assert len(BY_NAME) == len(KERNELS), "kernel names must be unique"

#: The texture sampling kernels by ``(cube, Filter)``.
TEXTURE_FORWARD = {k.template: k.name for k in KERNELS if k.module == "texture_forward"}
TEXTURE_BACKWARD = {k.template: k.name for k in KERNELS
                    if k.module == "texture_backward" and k.template}


def get(name: str) -> Kernel:
    """The :class:`Kernel` named ``name`` (``KeyError`` with the known names otherwise)."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"no kernel {name!r} in cuda_ops/ (see diffrast.cuda_ops.kernels)") from None


def of_module(module: str) -> list:
    """The kernels of ``cuda_ops/<module>.cu``, in table order."""
    return [k for k in KERNELS if k.module == module]


def modules() -> list:
    """The modules with kernels, in table order."""
    return list(dict.fromkeys(k.module for k in KERNELS))


def structs_of(module: str) -> list:
    """The parameter structs of a module's kernels."""
    return list(dict.fromkeys(k.params for k in of_module(module)))


def entry_points(module: str) -> str:
    """The C text of the module's ``extern "C" __global__`` entry points: each takes the fields
    of its parameter struct as its parameters, in the struct's order (so that its pointers are
    ``__restrict__`` kernel parameters, as the compiler's read-only loads need), rebuilds the
    struct and calls its body with it."""
    parts = ["", "// ---- entry points, generated from cuda_ops/kernels.py ----"]
    for k in of_module(module):
        params = _wrap(k.params.c_parameters().split(", "), "    ")
        signature = f"void {k.name}(\n{params})"
        if k.bounds:
            # a plain declaration first, then the definition with the bounds
            parts.append(f'extern "C" __global__ {signature};')
            parts.append(f'extern "C" __global__ __launch_bounds__({k.bounds}) {signature}')
        else:
            parts.append(f'extern "C" __global__ {signature}')
        fields = _wrap([f.name for f in k.params.fields], "        ")
        parts += ["{", f"    const diffrast::{k.params.c_name} kp{{\n{fields}}};",
                  f"    {k.c_call()};", "}", ""]
    return "\n".join(parts)


def _wrap(items, indent: str, width: int = 100) -> str:
    """``items`` joined by commas, as many per line as fit in ``width``."""
    lines, line = [], ""
    for item in items:
        if line and len(indent) + len(line) + len(item) + 2 > width:
            lines.append(indent + line + ",")
            line = ""
        line = f"{line}, {item}" if line else item
    return "\n".join(lines + [indent + line])


def params_for(kernel: Kernel, params) -> KernelParams:
    """``params`` as the struct that ``kernel`` takes: itself when it is one, or the struct
    filled from a plain tuple for a kernel that declares ``args``. ``TypeError`` otherwise."""
    expected = kernel.params
    if type(params) is expected:
        return params
    if isinstance(params, KernelParams):
        raise TypeError(f"{kernel.name} takes {expected.c_name}, not {params.c_name}")
    if kernel.args and type(params) in (tuple, list) and len(params) == len(kernel.args):
        return expected(**dict(zip(kernel.args, params)))
    raise TypeError(f"{kernel.name} takes {expected.c_name} (diffrast.cuda_ops.params), not "
                    f"{type(params).__name__}")
