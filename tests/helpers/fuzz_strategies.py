"""Property-based fuzzing of every public function: strategies and properties.

Shared by ``tests/test_fuzz.py`` (a bounded number of examples per property, in CI) and
``benchmarks/fuzz_long.py`` (a long run with a JSON summary).

Each ``*_cases`` strategy draws the *structure* of an input with hypothesis (sizes, batch, modes,
the kind of every triangle, which values are special) plus a seed; the numbers themselves come
from a seeded ``torch.Generator``, which keeps drawing fast enough for tens of thousands of
examples. Every case builds its tensors on the CPU (``case.build()``); an :class:`Env` moves them
to the device under test.

Each ``prop_*`` function runs one public function on a case, forward and backward, and asserts:

* shapes, dtypes and devices as documented;
* outputs and gradients finite wherever the inputs are finite, and NaN only where the docstrings
  say (``texture``: NaN coordinates give NaN samples; ``interpolate``: a NaN attribute reaches the
  pixels of its triangles); corrupt triangle ids in ``rast`` read as empty pixels;
* the rasterizer draws no triangle with a NaN/inf coordinate and no id outside its range, and its
  ``(u, v, z/w)`` and ``rast_db`` are the reference formulas (float64) at the covered pixels;
* on CUDA: results equal to the reference (the CPU path, i.e. ``diffrast.reference``, on the same
  inputs) to float32 tolerance; for the rasterizer, agreement with Mesa's OpenGL on the CPU on
  >= 99.9% of the pixels (at least ``RAST_MIN_FLIPS`` pixels may differ in any one image).

:func:`prop_invalid` checks that invalid arguments raise ``ValueError`` or ``TypeError``, never
anything else (no crash, no hang, no ``RuntimeError`` or ``IndexError`` from deep inside).
"""
from __future__ import annotations

import contextlib
import math
import os
import threading
from dataclasses import dataclass, field

import numpy as np
import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

import diffrast as dr
from diffrast import dispatch, triangle_id
from diffrast.reference.rasterize import pixel_barycentrics
from diffrast.reference import rasterize as _ref_rasterize

# ----------------------------------------------------------------------------------------------
# Settings profiles

_EXAMPLES = int(os.environ.get("DIFFRAST_FUZZ_EXAMPLES", "40"))
settings.register_profile(
    "diffrast-fuzz-ci", max_examples=_EXAMPLES, deadline=None, derandomize=True, database=None,
    suppress_health_check=list(HealthCheck), print_blob=True)
settings.register_profile(
    "diffrast-fuzz-random", max_examples=_EXAMPLES, deadline=None, database=None,
    suppress_health_check=list(HealthCheck), print_blob=True)
# The profile the tests use: reproducible in CI (derandomize) unless DIFFRAST_FUZZ_PROFILE says
# otherwise (e.g. ``diffrast-fuzz-random`` to explore).
FUZZ_SETTINGS = settings.get_profile(os.environ.get("DIFFRAST_FUZZ_PROFILE", "diffrast-fuzz-ci"))

# Rasterizer agreement between two renderers: at most this fraction of the pixels of an image
# may have a different triangle id, and never less than RAST_MIN_FLIPS pixels.
RAST_AGREEMENT = 0.999
RAST_MIN_FLIPS = 2

# ----------------------------------------------------------------------------------------------
# Environment: device and rasterizer contexts


class Env:
    """Where properties run and what they compare with.

    ``device``: 'cpu' (the CPU path: Mesa and the PyTorch reference), 'cuda' (CUDA tensors: the
    kernels, every result compared with the CPU path on the same inputs) or 'emulated' (CPU
    tensors, but interpolate, texture, antialias and the rasterize backward run their CUDA
    kernels through the CPU emulator of tests/helpers/kernel_emulator.py,
    and are compared with the reference like on CUDA; needs a C++ compiler; slow).

    ``raster_kind``: 'gl' (:class:`diffrast.RasterizeGLContext` on the device) or 'cudarast'
    (:class:`diffrast.RasterizeCudaContext`, CUDA only)."""

    def __init__(self, device="cpu", raster_kind="gl"):
        self.emulated = str(device) == "emulated"
        self.device = torch.device("cpu" if self.emulated else device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        if raster_kind not in ("gl", "cudarast"):
            raise ValueError(f"raster_kind must be 'gl' or 'cudarast', got {raster_kind!r}")
        if raster_kind == "cudarast" and self.device.type != "cuda":
            raise ValueError("raster_kind='cudarast' needs device='cuda'")
        self.raster_kind = raster_kind
        self._contexts = {}
        self._lock = threading.Lock()
        self._forced = None  # the dispatch.force of the emulation, while it lasts
        if self.emulated:
            self._emulate()

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def compare(self) -> bool:
        """Whether results are compared with the reference (CUDA or emulated kernels)."""
        return self.is_cuda or self.emulated

    # -- emulation ---------------------------------------------------------------------------
    def _emulate(self):
        from . import kernel_emulator
        if kernel_emulator.compiler() is None:
            raise RuntimeError("device='emulated' needs a C++ compiler (g++)")
        self._forced = dispatch.force(dispatch.KERNELS, launch=kernel_emulator.launch)
        self._forced.__enter__()

    @contextlib.contextmanager
    def reference(self):
        """Within the block, the CPU path runs the reference (undoes the emulation)."""
        if not self.emulated:
            yield
            return
        with dispatch.force(dispatch.REFERENCE):
            yield

    def kernel_backward(self):
        """The rasterize backward that the device under test runs."""
        return dispatch.backend("rasterize_backward", self.device)

    # -- contexts ----------------------------------------------------------------------------
    def context(self, output_db=True, kind=None, device=None):
        """The context of ``kind`` (default: this env's) on ``device`` (default: this env's)."""
        kind = kind or self.raster_kind
        device = torch.device(device) if device is not None else self.device
        key = (kind, str(device), bool(output_db))
        with self._lock:
            if key not in self._contexts:
                if kind == "cudarast":
                    self._contexts[key] = dr.RasterizeCudaContext(device=device, output_db=output_db)
                else:
                    self._contexts[key] = dr.RasterizeGLContext(output_db=output_db, device=device)
            return self._contexts[key]

    def cpu_context(self, output_db=True):
        return self.context(output_db, kind="gl", device="cpu")

    def to(self, x):
        return x.to(self.device) if isinstance(x, torch.Tensor) else x

    def release(self):
        for ctx in self._contexts.values():
            if hasattr(ctx, "release"):
                ctx.release()
        self._contexts.clear()
        if self._forced is not None:
            self._forced.__exit__(None, None, None)
            self._forced = None


# ----------------------------------------------------------------------------------------------
# Small helpers


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def _uniform(g, shape, lo, hi, dtype=torch.float64):
    return torch.rand(shape, generator=g, dtype=dtype) * (hi - lo) + lo


def _cpu(x):
    if x is None:
        return None
    return x.detach().cpu() if isinstance(x, torch.Tensor) else x


def _assert_shape(name, t, shape, dtype=torch.float32, device=None):
    assert isinstance(t, torch.Tensor), f"{name}: not a tensor but {type(t).__name__}"
    assert tuple(t.shape) == tuple(shape), f"{name}: shape {tuple(t.shape)}, expected {tuple(shape)}"
    assert t.dtype == dtype, f"{name}: dtype {t.dtype}, expected {dtype}"
    if device is not None:
        assert t.device.type == torch.device(device).type, f"{name}: device {t.device}, expected {device}"


def _assert_finite(name, t, where=None):
    """``t`` finite everywhere, or at the entries of ``where`` (broadcast over trailing dims)."""
    t = _cpu(t)
    if t is None:
        return
    bad = ~torch.isfinite(t)
    if where is not None:
        w = _cpu(where)
        while w.ndim < bad.ndim:
            w = w.unsqueeze(-1)
        bad = bad & w.expand_as(bad)
    n = int(bad.sum())
    assert n == 0, f"{name}: {n} non-finite entries where the inputs are finite (of {t.numel()})"


def _pixel_mismatches(got, want, rtol, atol, scale=None):
    """Per-pixel count of disagreement (NaN pattern, or beyond ``atol * scale + rtol * |want|``)
    between two ``[..., C]`` tensors; returns ``(mismatch mask [...], max abs diff)``."""
    got, want = _cpu(got).double(), _cpu(want).double()
    assert got.shape == want.shape, f"shape {tuple(got.shape)} != reference {tuple(want.shape)}"
    nan_g, nan_w = torch.isnan(got), torch.isnan(want)
    fin = torch.isfinite(want) & torch.isfinite(got)
    if scale is None:
        scale = float(want[torch.isfinite(want)].abs().max()) if torch.isfinite(want).any() else 1.0
    scale = max(scale, 1.0)
    diff = torch.where(fin, (got - want).abs(), torch.zeros_like(got))
    bad = (nan_g != nan_w) | (fin & (diff > atol * scale + rtol * want.abs()))
    bad = bad | (torch.isinf(got) != torch.isinf(want)) | (torch.isinf(want) & (got != want))
    return bad, float(diff.max()) if diff.numel() else 0.0


def assert_matches(name, got, want, rtol=1e-4, atol=1e-5, max_bad=0, per_pixel=True):
    """``got`` equals the reference ``want``: the same NaN/inf pattern and finite values within
    ``atol * max|want| + rtol * |want|``, except on at most ``max_bad`` pixels (entries when not
    ``per_pixel``)."""
    if got is None or want is None:
        other = got if got is not None else want
        assert other is None or not _cpu(other).any(), f"{name}: one side None, the other non-zero"
        return
    bad, maxdiff = _pixel_mismatches(got, want, rtol, atol)
    if bad.numel() == 0:
        return
    if per_pixel and bad.ndim > 1:
        bad = bad.reshape(-1, bad.shape[-1]).any(-1)
    n = int(bad.sum())
    assert n <= max_bad, (f"{name}: {n} mismatching {'pixels' if per_pixel else 'entries'} "
                          f"against the reference (allowed {max_bad}); max |diff| {maxdiff:.3g}")


def _strided(t, on=True):
    """A non-contiguous view of ``t`` with the same values (every other element of a
    buffer twice as large), differentiable; the ops must make it contiguous themselves."""
    if not on or t is None or not isinstance(t, torch.Tensor) or t.numel() == 0:
        return t
    return torch.stack([t, torch.zeros_like(t)], -1)[..., 0]


_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _flip_budget(num_pixels: int) -> int:
    return max(RAST_MIN_FLIPS, int(num_pixels * (1.0 - RAST_AGREEMENT)))


# ----------------------------------------------------------------------------------------------
# Meshes


TRI_KINDS = (
    "normal", "backfacing", "degenerate", "collinear", "collinear_exact", "sliver", "tiny",
    "snapped", "offscreen", "large", "huge", "behind", "crossing", "w_zero", "depth_clip",
    "nan", "inf", "all_nan",
)
# Kinds whose vertices are special (for the shared-vertex topologies).
VERTEX_KINDS = ("normal", "normal", "normal", "behind", "w_zero", "far", "nan", "inf")


def _ndc_triangle(g):
    xy = _uniform(g, (3, 2), -1.2, 1.2)
    z = _uniform(g, (3, 1), -0.9, 0.9)
    w = _uniform(g, (3, 1), 0.5, 2.5)
    return xy, z, w


def _clip(xy, z, w):
    return torch.cat([xy * w, z * w, w], -1)


def _triangle(g, kind: str) -> torch.Tensor:
    """Three clip-space vertices ``[3, 4]`` (float64) of a triangle of ``kind``."""
    xy, z, w = _ndc_triangle(g)
    r = lambda *s: torch.rand(s, generator=g, dtype=torch.float64)  # noqa: E731
    if kind == "backfacing":
        c = _clip(xy, z, w)
        # Make it clockwise in screen space whatever it was.
        p = c[:, :2] / c[:, 3:]
        area = (p[1, 0] - p[0, 0]) * (p[2, 1] - p[0, 1]) - (p[2, 0] - p[0, 0]) * (p[1, 1] - p[0, 1])
        return c[[0, 2, 1]] if area > 0 else c
    if kind == "degenerate":
        c = _clip(xy, z, w)
        if r(1) < 0.5:
            c[2] = c[1]
        else:
            c[1] = c[0]
            c[2] = c[0]
        return c
    if kind == "collinear":
        c = _clip(xy, z, w)
        c[2] = c[0] + float(r(1) * 3 - 1) * (c[1] - c[0])
        return c
    if kind == "collinear_exact":
        # Exactly collinear corners on a binary grid (s == 0 at every pixel), which GL's sub-pixel
        # snapping can still turn into a sliver covering a pixel or two.
        ri = lambda lo, hi: int(torch.randint(lo, hi + 1, (1,), generator=g))  # noqa: E731
        a = ri(1, 64) / 64.0
        d = torch.tensor([ri(-8, 8) / 8.0, ri(-8, 8) / 8.0], dtype=torch.float64) * a / 8
        p0 = torch.tensor([ri(-48, 48) / 64.0, ri(-48, 48) / 64.0], dtype=torch.float64)
        xy = torch.stack([p0, p0 + d * ri(1, 8), p0 + d * ri(9, 16)])[torch.randperm(3, generator=g)]
        return _clip(xy, z, torch.full_like(w, float(2.0 ** ri(-1, 1))))
    if kind == "sliver":
        c = _clip(xy, z, w)
        c[2] = c[0] + float(r(1)) * (c[1] - c[0])
        c[2, :2] += (r(2) - 0.5) * 1e-3 * c[2, 3]
        return c
    if kind == "tiny":
        xy[1:] = xy[0] + (r(2, 2) - 0.5) * 10.0 ** float(-2 - 3 * r(1))
        return _clip(xy, z, w)
    if kind == "snapped":
        # Vertices on a 1/8 NDC grid, w = 1: edges through pixel centres and corners.
        xy = torch.round(xy * 8) / 8
        return _clip(xy, z, torch.ones_like(w))
    if kind == "offscreen":
        off = (r(2) * 8 + 2.5) * torch.where(r(2) < 0.5, -1.0, 1.0)
        return _clip(xy + off, z, w)
    if kind == "large":
        return _clip(xy * 40, z, w)
    if kind == "huge":
        return _clip(xy * 1e4, z, w)
    if kind == "behind":
        return _clip(xy, z, -w)
    if kind == "crossing":
        w = _uniform(g, (3, 1), -1.5, 2.0)
        k = int(torch.randint(0, 3, (1,), generator=g))
        w[k] = -abs(float(w[k])) - 0.1
        w[(k + 1) % 3] = abs(float(w[(k + 1) % 3])) + 0.1
        return torch.cat([xy * 1.5, z * w, w], -1)
    if kind == "w_zero":
        c = _clip(xy, z, w)
        c[int(torch.randint(0, 3, (1,), generator=g)), 3] = 0.0
        return c
    if kind == "depth_clip":
        return _clip(xy, _uniform(g, (3, 1), -3.0, 3.0), w)
    if kind in ("nan", "inf"):
        c = _clip(xy, z, w)
        i, j = (int(v) for v in torch.randint(0, 4, (2,), generator=g))
        c[i % 3, j] = float("nan") if kind == "nan" else float("inf") * (1 if r(1) < 0.5 else -1)
        return c
    if kind == "all_nan":
        return torch.full((3, 4), float("nan"), dtype=torch.float64)
    return _clip(xy, z, w)  # normal


def _vertex(g, kind: str) -> torch.Tensor:
    """One clip-space vertex ``[4]`` (float64) of ``kind`` (for shared-vertex meshes)."""
    xy = _uniform(g, (2,), -1.3, 1.3)
    z = _uniform(g, (1,), -0.9, 0.9)
    w = _uniform(g, (1,), 0.5, 2.5)
    if kind == "behind":
        w = -w
    elif kind == "w_zero":
        w = torch.zeros(1, dtype=torch.float64)
        return torch.cat([xy, z, w])
    elif kind == "far":
        xy = xy * 30
    v = torch.cat([xy * w, z * w, w])
    if kind == "nan":
        v[int(torch.randint(0, 4, (1,), generator=g))] = float("nan")
    elif kind == "inf":
        v[int(torch.randint(0, 4, (1,), generator=g))] = -float("inf")
    return v


@dataclass
class MeshCase:
    """A valid ``rasterize`` input (and a mesh for ``antialias``), built on the CPU."""
    batch: int
    num_triangles: int
    topology: str               # 'soup', 'indexed' or 'grid'
    kinds: tuple                # the kind of each triangle (soup) or of each vertex (others)
    resolution: tuple
    range_mode: bool
    extra_vertices: int
    output_db: bool
    grad_db: bool
    seed: int
    noncontig: bool = False
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def build(self):
        """``(pos, tri, ranges)``: pos float32 ``[B, V, 4]`` or ``[V, 4]``, tri int32
        ``[T, 3]``, ranges int32 CPU ``[B, 2]`` or None."""
        if "built" in self._cache:
            return tuple(None if t is None else t.clone() for t in self._cache["built"])
        g = _gen(self.seed)
        T = self.num_triangles
        if self.topology == "grid":
            verts, tri = self._grid(g)
        elif self.topology == "indexed":
            verts = torch.stack([_vertex(g, k) for k in self.kinds]) if self.kinds else \
                torch.zeros(0, 4, dtype=torch.float64)
            V = verts.shape[0]
            tri = torch.randint(0, max(V, 1), (T, 3), generator=g) if V else torch.zeros(0, 3, dtype=torch.int64)
        else:
            verts = torch.cat([_triangle(g, k) for k in self.kinds]) if T else torch.zeros(0, 4, dtype=torch.float64)
            tri = torch.arange(3 * T).reshape(T, 3)
            order = list(range(T))
            if T and torch.rand(1, generator=g) < 0.5:
                order = torch.randperm(T, generator=g).tolist()
                tri = tri[order]
            self._cache["tri_kinds"] = [self.kinds[i] for i in order]
        if self.extra_vertices:
            extra = torch.stack([_vertex(g, VERTEX_KINDS[int(i)]) for i in
                                 torch.randint(0, len(VERTEX_KINDS), (self.extra_vertices,), generator=g)])
            verts = torch.cat([verts, extra])
        tri = tri.to(torch.int32)
        if self.range_mode:
            pos = verts.float()
            starts = torch.randint(0, T + 1, (self.batch,), generator=g)
            counts = (torch.rand(self.batch, generator=g, dtype=torch.float64)
                      * (T - starts + 1).double()).long().clamp_max(T - starts)
            ranges = torch.stack([starts, counts], -1).to(torch.int32).reshape(self.batch, 2)
        else:
            items = []
            for b in range(self.batch):
                p = verts.clone()
                if b:
                    s = 1.0 + 0.08 * b
                    p[:, 0] = p[:, 0] * s + 0.05 * b * p[:, 3]
                    p[:, 1] = p[:, 1] / s
                items.append(p)
            pos = (torch.stack(items) if items else verts[None].expand(0, -1, -1)).float().contiguous()
            ranges = None
        self._cache["built"] = (pos, tri, ranges)
        return pos.clone(), tri.clone(), None if ranges is None else ranges.clone()

    def _grid(self, g):
        n = max(1, int(math.isqrt(max(self.num_triangles // 2, 1))))
        s = torch.linspace(-1.1, 1.1, n + 1, dtype=torch.float64)
        gy, gx = torch.meshgrid(s, s, indexing="ij")
        xy = torch.stack([gx, gy], -1).reshape(-1, 2) + _uniform(g, ((n + 1) ** 2, 2), -0.3, 0.3) / n
        V = xy.shape[0]
        z = _uniform(g, (V, 1), -0.9, 0.9)
        w = _uniform(g, (V, 1), 0.6, 2.0)
        verts = _clip(xy, z, w)
        for i, k in enumerate(self.kinds[:V]):
            if k != "normal":
                verts[i] = _vertex(g, k)
        j, i = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
        v00 = (j * (n + 1) + i).reshape(-1)
        v10, v01, v11 = v00 + 1, v00 + n + 1, v00 + n + 2
        tri = torch.stack([torch.stack([v00, v10, v01], -1), torch.stack([v11, v01, v10], -1)], 1)
        tri = tri.reshape(-1, 3)[: self.num_triangles]
        return verts, tri


def resolutions(max_side=48):
    # Hypothesis favours the first option of a choice: common sizes first, edge cases last.
    sides = tuple(n for n in (24, 17, 32, 16, 31, 40, 48, 7, 3, 2, 1) if n <= max_side)
    side = st.one_of(st.sampled_from(sides), st.integers(1, max_side))
    return st.one_of(
        st.tuples(side, side),
        st.sampled_from([(1, 1), (1, 7), (9, 1), (2, 3), (64, 64), (16, 96), (33, 17)]),
    )


@st.composite
def mesh_cases(draw, max_batch=3, max_triangles=12, max_side=48, allow_empty_batch=True):
    topology = draw(st.sampled_from(("soup", "soup", "indexed", "grid")))
    T = draw(st.one_of(st.sampled_from(tuple(range(max_triangles, -1, -1))),
                       st.integers(0, max_triangles)))
    if draw(st.integers(0, 9)) == 0:
        T = draw(st.sampled_from((64, 200)))  # now and then a crowded scene
    if topology == "soup":
        kinds = tuple(draw(st.lists(st.sampled_from(("normal",) * 4 + TRI_KINDS), min_size=T, max_size=T)))
    elif topology == "indexed":
        V = 0 if T == 0 and draw(st.booleans()) else draw(st.integers(1, max(3, T + 3)))
        kinds = tuple(draw(st.lists(st.sampled_from(VERTEX_KINDS), min_size=V, max_size=V)))
    else:
        T = max(T, 2)
        n = max(1, int(math.isqrt(T // 2)))
        kinds = tuple(draw(st.lists(st.sampled_from(VERTEX_KINDS), min_size=(n + 1) ** 2,
                                    max_size=(n + 1) ** 2)))
        T = min(T, 2 * n * n)
    return MeshCase(
        batch=draw(st.sampled_from(tuple(range(1, max_batch + 1)) + ((0,) if allow_empty_batch else ())
                                   + (8,))),
        num_triangles=T, topology=topology, kinds=kinds,
        resolution=draw(resolutions(max_side)),
        range_mode=draw(st.sampled_from((False, True))),
        extra_vertices=draw(st.sampled_from((0, 0, 1, 3))),
        output_db=draw(st.sampled_from((True, True, False))),
        grad_db=draw(st.booleans()),
        seed=draw(st.integers(0, 2**31 - 1)),
        noncontig=draw(st.integers(0, 4)) == 0,
    )


# ----------------------------------------------------------------------------------------------
# rasterize / DepthPeeler


def _expected_ids(case: MeshCase, pos, tri, ranges, rast):
    """Checks on the triangle ids of ``rast`` (CPU): every id in range (in range mode, within the
    image's range), no pixel showing a triangle with a non-finite vertex, empty pixels all zero.
    Returns the decoded ``id + 1`` ``[B, H, W]``."""
    ids = triangle_id.decode(rast[..., 3].contiguous())
    T = tri.shape[0]
    if ids.numel():
        assert int(ids.min()) >= 0 and int(ids.max()) <= T, "triangle id outside [0, num_triangles]"
    empty = ids == 0
    assert not rast[empty].any(), "an empty pixel is not all zeros"
    b, y, x = torch.nonzero(~empty, as_tuple=True)
    if b.numel():
        t = ids[b, y, x] - 1
        if ranges is not None:
            start, count = ranges[b, 0].long(), ranges[b, 1].long()
            assert bool(((t >= start) & (t < start + count)).all()), "a pixel shows a triangle outside its image's range"
        verts = tri[t].long()
        corners = pos[b[:, None], verts] if pos.ndim == 3 else pos[verts]
        assert bool(torch.isfinite(corners).all()), "a triangle with a NaN/inf vertex was drawn"
    return ids


def _check_rast_values(pos, tri, rast, rast_db):
    """(u, v, z/w) and rast_db at covered pixels are the reference formulas, in float64."""
    ids = triangle_id.decode(rast[..., 3].contiguous())
    if not bool((ids > 0).any()):
        return
    uv64, db64 = pixel_barycentrics(pos.double(), tri, rast)
    cov = ids > 0
    got_uv = rast[..., :2][cov].double()
    want_uv = uv64[cov]
    err = (got_uv - want_uv).abs()
    tol = 1e-5 * (1.0 + want_uv.abs())
    assert bool((err <= tol).all()), f"(u, v) differ from the float64 formula by up to {float(err.max()):.3g}"
    # z/w is the depth of the same point: sum b_i z_i / sum b_i w_i. (Not checked: that it lies
    # in [-1, 1]. GL clips at the near and far planes with float32 arithmetic and snapped
    # vertices, so a pixel next to a clip boundary can be a little outside, and a pixel that
    # snapping adds to a nearly degenerate triangle, far outside: it extrapolates.)
    b, y, x = torch.nonzero(cov, as_tuple=True)
    verts = tri[ids[b, y, x] - 1].long()
    corners = (pos[b[:, None], verts] if pos.ndim == 3 else pos[verts]).double()   # [N, 3, 4]
    u, v = want_uv[:, 0:1], want_uv[:, 1:2]
    bary = torch.cat([u, v, 1 - u - v], -1)
    want_z = (bary * corners[..., 2]).sum(-1) / (bary * corners[..., 3]).sum(-1)
    z = rast[..., 2][cov].double()
    assert bool(torch.isfinite(z).all()), "non-finite z/w"
    err = (z - want_z).abs()
    assert bool((err <= 1e-5 * (1.0 + want_z.abs())).all()), \
        f"z/w differs from the float64 formula by up to {float(err.max()):.3g}"
    if rast_db is not None and rast_db.shape[-1] == 4:
        gd, wd = rast_db[cov].double(), db64[cov]
        err = (gd - wd).abs()
        tol = 1e-4 * (1.0 + wd.abs())
        assert bool((err <= tol).all()), \
            f"rast_db differs from the float64 formula by up to {float(err.max()):.3g}"


def run_rasterize(env: Env, case: MeshCase, device=None, kind=None):
    """Rasterize ``case`` on ``device`` with a context of ``kind``, backward with fixed random
    upstream gradients. Returns CPU ``(rast, rast_db, grad_pos)``."""
    device = torch.device(device) if device is not None else env.device
    ctx = env.context(case.output_db, kind=kind if device.type == "cuda" else "gl", device=device)
    pos, tri, ranges = case.build()
    p = pos.to(device).requires_grad_(True)
    rast, rast_db = dr.rasterize(ctx, _strided(p, case.noncontig), _strided(tri.to(device), case.noncontig),
                                 case.resolution, ranges=_strided(ranges, case.noncontig),
                                 grad_db=case.grad_db)
    g = _gen(case.seed + 1)
    w_rast = torch.randn(rast.shape, generator=g).to(device)
    w_db = torch.randn(rast_db.shape, generator=g).to(device)
    loss = (rast * w_rast).sum() + (rast_db * w_db).sum()
    if loss.requires_grad:
        loss.backward()
    grad = p.grad if p.grad is not None else torch.zeros_like(p)
    return _cpu(rast), _cpu(rast_db), _cpu(grad), (w_rast.cpu(), w_db.cpu())


def prop_rasterize(env: Env, case: MeshCase):
    pos, tri, ranges = case.build()
    B = pos.shape[0] if ranges is None else ranges.shape[0]
    H, W = case.resolution
    rast, rast_db, grad, (w_rast, w_db) = run_rasterize(env, case)
    _assert_shape("rast", rast, (B, H, W, 4))
    _assert_shape("rast_db", rast_db, (B, H, W, 4 if case.output_db else 0))
    _assert_finite("rast", rast)
    _assert_finite("rast_db", rast_db)
    _assert_shape("pos.grad", grad, pos.shape)
    _assert_finite("pos.grad", grad)
    _expected_ids(case, pos, tri, ranges, rast)
    assert not grad[..., 2].any(), "z carries a gradient into pos"
    _check_rast_values(pos, tri, rast, rast_db if case.output_db else None)
    if env.is_cuda:
        want, want_db, _, _ = run_rasterize(env, case, device="cpu")
        compare_rasts(rast, rast_db, want, want_db, geometry=(pos, tri))
    if env.compare:
        # The backward kernel against the reference on the same rast, at the well-conditioned
        # pixels (pixel centre inside or near the triangle): elsewhere float32 rounds arbitrarily
        # (both sides only promise a finite result, checked above).
        clean = well_conditioned(pos, tri, rast)
        gdb = w_db if (case.output_db and case.grad_db) else None
        backward = env.kernel_backward()
        got = backward(pos.to(env.device), tri.to(env.device), clean.to(env.device),
                       w_rast.to(env.device), None if gdb is None else gdb.to(env.device)).cpu()
        assert torch.isfinite(got).all(), "the backward kernel gives a non-finite gradient"
        with env.reference():
            ref64 = _ref_rasterize.rasterize_grad(pos.double(), tri, clean, w_rast.double(),
                                                  None if gdb is None else gdb.double())
            ref32 = _ref_rasterize.rasterize_grad(pos, tri, clean, w_rast, gdb)
        assert_grad_close("pos.grad", got, ref64, ref32)


def well_conditioned(pos, tri, rast, bound=3.0):
    """``rast`` with the pixels emptied whose exact barycentrics are far outside the triangle
    (``|u| + |v| + |1 - u - v| > bound``: snapped coverage of a nearly degenerate triangle)."""
    ids = triangle_id.decode(rast[..., 3].contiguous())
    if not bool((ids > 0).any()):
        return rast
    uv, _ = pixel_barycentrics(pos.double(), tri, rast)
    size = uv[..., 0].abs() + uv[..., 1].abs() + (1 - uv[..., 0] - uv[..., 1]).abs()
    bad = (ids > 0) & ~(size <= bound)
    return torch.where(bad[..., None], torch.zeros_like(rast), rast)


def assert_grad_close(name, got, ref64, ref32, tol=1e-3):
    """A float32 gradient against the float64 and float32 references: within ``tol`` of the
    gradient's scale of either."""
    scale = max(1e-3, float(ref64.abs().max()) if ref64.numel() else 0.0)
    e64 = (got.double() - ref64).abs()
    e32 = (got.double() - ref32.double()).abs()
    err = torch.minimum(e64, e32)
    ok = err <= tol * scale + tol * ref64.abs()
    assert bool(ok.all()), f"{name}: differs from the reference by up to {float(err.max()):.3g} (scale {scale:.3g})"


def _exact_cover(pos, tri, b, t, x, y, height, width):
    """Float64: whether triangle t of image b covers the centre of pixel (x, y) -- 'in' (clearly:
    inside, in front of the eye, within the depth range), 'out' (clearly not) or 'edge' -- and
    its z/w there (the reference's barycentric formulas)."""
    p = (pos[b] if pos.ndim == 3 else pos).double()[tri[t].long()]  # [3, 4]
    uv, _ = _ref_rasterize._formulas(p[None][..., [0, 1, 3]], torch.tensor([x]), torch.tensor([y]),
                                     height, width)
    u, v = uv[0]
    bary = torch.stack([u, v, 1 - u - v])
    if not bool(torch.isfinite(bary).all()):
        return "edge", 0.0
    w = (bary * p[:, 3]).sum()  # the w of the triangle's point on the pixel's ray: > 0 in front
    zw = float((bary * p[:, 2]).sum() / w)
    if bool((bary < -1e-6).any()) or not bool(w > 0) or abs(zw) > 1 + 1e-7:
        return "out", zw
    if bool((bary >= 1e-6).all()) and abs(zw) <= 1 - 1e-7:
        return "in", zw
    return "edge", zw


def _provably_right(geometry, b, y, x, ours, other, height, width) -> bool:
    """Whether float64 arithmetic shows that a pixel where two renders disagree must show triangle
    ``ours`` (-1: nothing) rather than ``other``: ours covers it clearly and is nearer (by more
    than rounding) or other clearly does not cover it. Such a pixel is the other render's error
    (e.g. a GL driver's float depth for triangles clipped near w = 0)."""
    pos, tri = geometry
    a = _exact_cover(pos, tri, b, ours, x, y, height, width) if ours >= 0 else ("out", 0.0)
    o = _exact_cover(pos, tri, b, other, x, y, height, width) if other >= 0 else ("out", 0.0)
    if ours < 0:
        return o[0] == "out"
    return a[0] == "in" and (o[0] == "out" or a[1] < o[1] - 1e-9)


def compare_rasts(rast, rast_db, want, want_db, geometry=None):
    """Two renders of the same input: triangle ids equal on >= RAST_AGREEMENT of each image's
    pixels (at least RAST_MIN_FLIPS may differ), values close where the ids agree. With
    ``geometry`` = ``(pos, tri)`` of a single-layer render, a pixel where float64 arithmetic shows
    ``rast`` right (:func:`_provably_right`) does not count against the budget."""
    assert rast.shape == want.shape and rast_db.shape == want_db.shape
    ids, wids = (triangle_id.decode(r[..., 3].contiguous()) for r in (rast, want))
    height, width = rast.shape[1:3]
    for b in range(rast.shape[0]):
        differ = int((ids[b] != wids[b]).sum())
        budget = _flip_budget(ids[b].numel())
        if geometry is not None and budget < differ <= 10 * budget:
            differ -= sum(_provably_right(geometry, b, y, x, int(ids[b, y, x]) - 1,
                                          int(wids[b, y, x]) - 1, height, width)
                          for y, x in (ids[b] != wids[b]).nonzero().tolist())
        assert differ <= budget, f"image {b}: {differ} of {ids[b].numel()} pixels show another triangle (allowed {budget})"
    same = (ids == wids) & (wids > 0)
    if bool(same.any()):
        a, b = rast[same].double(), want[same].double()
        assert bool(((a - b).abs() <= 1e-5 * (1 + b.abs())).all()), \
            f"rast differs by up to {float((a - b).abs().max()):.3g} where the ids agree"
        if rast_db.shape[-1]:
            a, b = rast_db[same].double(), want_db[same].double()
            assert bool(((a - b).abs() <= 1e-4 * (1 + b.abs())).all()), \
                f"rast_db differs by up to {float((a - b).abs().max()):.3g} where the ids agree"


@st.composite
def peel_cases(draw):
    return draw(mesh_cases(max_batch=2, max_triangles=8, max_side=24)), draw(st.integers(1, 4))


def run_peeler(env: Env, case: MeshCase, layers: int, device=None, kind=None):
    device = torch.device(device) if device is not None else env.device
    ctx = env.context(case.output_db, kind=kind if device.type == "cuda" else "gl", device=device)
    pos, tri, ranges = case.build()
    p = pos.to(device).requires_grad_(True)
    out = []
    with dr.DepthPeeler(ctx, p, tri.to(device), case.resolution, ranges=ranges,
                        grad_db=case.grad_db) as peeler:
        for _ in range(layers):
            out.append(peeler.rasterize_next_layer())
    g = _gen(case.seed + 2)
    loss = sum((r * torch.randn(r.shape, generator=g).to(device)).sum()
               + (d * torch.randn(d.shape, generator=g).to(device)).sum() for r, d in out)
    if loss.requires_grad:
        loss.backward()
    grad = p.grad if p.grad is not None else torch.zeros_like(p)
    return [(_cpu(r), _cpu(d)) for r, d in out], _cpu(grad)


def prop_depth_peeler(env: Env, case_layers):
    case, layers = case_layers
    pos, tri, ranges = case.build()
    B = pos.shape[0] if ranges is None else ranges.shape[0]
    H, W = case.resolution
    out, grad = run_peeler(env, case, layers)
    first, _, _, _ = run_rasterize(env, case)
    assert torch.equal(out[0][0], first), "the first peeled layer differs from rasterize()"
    _assert_finite("pos.grad", grad)
    prev_ids, prev_z = None, None
    for k, (rast, rast_db) in enumerate(out):
        _assert_shape(f"layer {k} rast", rast, (B, H, W, 4))
        _assert_shape(f"layer {k} rast_db", rast_db, (B, H, W, 4 if case.output_db else 0))
        _assert_finite(f"layer {k} rast", rast)
        _assert_finite(f"layer {k} rast_db", rast_db)
        ids = _expected_ids(case, pos, tri, ranges, rast)
        _check_rast_values(pos, tri, rast, rast_db if case.output_db else None)
        if prev_ids is not None:
            cov = ids > 0
            assert not bool((cov & (prev_ids == 0)).any()), \
                f"layer {k} covers a pixel that layer {k - 1} left empty"
            assert not bool((cov & (ids == prev_ids)).any()), f"layer {k} repeats a triangle of layer {k - 1}"
            z = rast[..., 2]
            assert bool((z[cov] >= prev_z[cov] - 1e-6).all()), f"layer {k} is in front of layer {k - 1}"
        prev_ids, prev_z = ids, rast[..., 2]
    if env.is_cuda:
        want, _ = run_peeler(env, case, layers, device="cpu")
        for (r, d), (wr, wd) in zip(out, want):
            compare_rasts(r, d, wr, wd)


# ----------------------------------------------------------------------------------------------
# interpolate


CORRUPT_CODES = ("nan", "inf", "-inf", "neg", "zero_neg", "frac", "past_T", "big_past_T", "max")


def _corrupt_code(code: str, T: int) -> float:
    return {
        "nan": float("nan"), "inf": float("inf"), "-inf": -float("inf"), "neg": -1.0,
        "zero_neg": -0.0, "frac": 0.5, "past_T": float(T + 1), "max": 3.4e38,
        "big_past_T": float(triangle_id.encode(torch.tensor([2**24 + 5 + T]))[0]),
    }[code]


@dataclass
class InterpCase:
    batch: int
    height: int
    width: int
    num_vertices: int
    num_triangles: int
    num_attributes: int
    attr_layout: str            # '2d', 'broadcast', 'batched'
    empty_fraction: float
    corrupt: tuple              # corrupt id codes used
    nan_attr: bool
    diff_attrs: object          # None, 'all', or a list
    give_db: bool
    uv_scale: float
    seed: int
    dtype: str = "float32"
    noncontig: bool = False

    def build(self):
        g = _gen(self.seed)
        B, H, W, V, T, A = (self.batch, self.height, self.width, self.num_vertices,
                            self.num_triangles, self.num_attributes)
        shape = {"2d": (V, A), "broadcast": (1, V, A), "batched": (B, V, A)}[self.attr_layout]
        attr = torch.randn(shape, generator=g)
        if self.nan_attr and V:
            attr.reshape(-1, V, A)[:, int(torch.randint(0, V, (1,), generator=g)),
                                   int(torch.randint(0, A, (1,), generator=g))] = float("nan")
        tri = torch.randint(0, max(V, 1), (T, 3), generator=g, dtype=torch.int32) if V else \
            torch.zeros(0, 3, dtype=torch.int32)
        ids = torch.randint(1, T + 1, (B, H, W), generator=g) if T else torch.zeros(B, H, W, dtype=torch.int64)
        ids[torch.rand(B, H, W, generator=g) < self.empty_fraction] = 0
        uv = torch.rand(B, H, W, 2, generator=g) * self.uv_scale
        z = torch.rand(B, H, W, 1, generator=g) * 2 - 1
        rast = torch.cat([uv, z, triangle_id.encode(ids)[..., None]], -1)
        rast[ids == 0] = 0
        if self.corrupt:
            bad = torch.rand(B, H, W, generator=g) < 0.25
            n = int(bad.sum())
            codes = torch.tensor([_corrupt_code(c, T) for c in self.corrupt], dtype=torch.float32)
            vals = rast[bad]
            vals[:, 0], vals[:, 1] = 1e6, -1e6
            vals[:, 3] = codes[torch.arange(n) % codes.numel()]
            rast[bad] = vals
        rast_db = torch.randn(B, H, W, 4, generator=g) * 3 if self.give_db else None
        return attr, rast, tri, rast_db

    def diff_list(self):
        if self.diff_attrs is None:
            return []
        if self.diff_attrs == "all":
            return list(range(self.num_attributes))
        return list(self.diff_attrs)


@st.composite
def interp_cases(draw):
    V = draw(st.integers(0, 10))
    T = draw(st.integers(0, 8)) if V else 0
    A = draw(st.integers(1, 5))
    B = draw(st.sampled_from((1, 2, 3, 0)))
    layout = draw(st.sampled_from(("2d", "broadcast", "batched")))
    give_db = draw(st.booleans())
    diff = None
    if give_db:
        diff = draw(st.one_of(st.none(), st.just("all"),
                              st.lists(st.integers(0, A - 1), min_size=0, max_size=4)))
    return InterpCase(
        batch=B, height=draw(st.integers(1, 12)), width=draw(st.integers(1, 12)),
        num_vertices=V, num_triangles=T, num_attributes=A, attr_layout=layout,
        empty_fraction=draw(st.sampled_from((0.0, 0.3, 1.0))),
        corrupt=tuple(draw(st.lists(st.sampled_from(CORRUPT_CODES), max_size=3, unique=True))),
        nan_attr=draw(st.booleans()) and draw(st.booleans()),
        diff_attrs=diff, give_db=give_db,
        uv_scale=draw(st.sampled_from((1.0, 1.0, 10.0, 1e4))),
        seed=draw(st.integers(0, 2**31 - 1)),
        dtype=draw(st.sampled_from(("float32", "float32", "float32", "float64"))),
        noncontig=draw(st.integers(0, 4)) == 0)


def run_interpolate(case: InterpCase, device):
    attr, rast, tri, rast_db = case.build()
    dev, dt, nc = torch.device(device), _DTYPES[case.dtype], case.noncontig
    a = attr.to(dev, dt).requires_grad_(True)
    # (float64: ids stay exact, a float64 holds the value of the float32 code)
    r = rast.to(dev, dt).requires_grad_(True)
    d = rast_db.to(dev, dt).requires_grad_(True) if rast_db is not None else None
    out, out_da = dr.interpolate(_strided(a, nc), _strided(r, nc), _strided(tri.to(dev), nc),
                                 _strided(d, nc), diff_attrs=case.diff_attrs)
    g = _gen(case.seed + 1)
    w1, w2 = torch.randn(out.shape, generator=g), torch.randn(out_da.shape, generator=g)
    loss = (out * w1.to(dev, dt)).sum() + (out_da * w2.to(dev, dt)).sum()
    if loss.requires_grad:
        loss.backward()
    grads = [None if t is None else (t.grad if t.grad is not None else torch.zeros_like(t)) for t in (a, r, d)]
    return [_cpu(out), _cpu(out_da)] + [_cpu(x) for x in grads]


def prop_interpolate(env: Env, case: InterpCase):
    attr, rast, tri, rast_db = case.build()
    B, H, W, A = case.batch, case.height, case.width, case.num_attributes
    diff = case.diff_list()
    out, out_da, g_attr, g_rast, g_db = run_interpolate(case, env.device)
    dt = _DTYPES[case.dtype]
    _assert_shape("out", out, (B, H, W, A), dt)
    _assert_shape("out_da", out_da, (B, H, W, 2 * len(diff)), dt)
    if dt == torch.float64:
        rast = rast.double()
        attr = attr.double()
    ids = triangle_id.decode(rast[..., 3].contiguous())
    T = tri.shape[0]
    valid = (ids >= 1) & (ids <= T) & torch.isfinite(rast[..., 3])
    assert not out[~valid].any() and not out_da[~valid].any(), "an empty or corrupt pixel is not zero"
    # Pixels whose triangle has only finite attributes are finite.
    attr3 = attr if attr.ndim == 3 else attr[None]
    finite_v = torch.isfinite(attr3).all(-1)                          # [Ba, V]
    tid = torch.where(valid, ids - 1, torch.zeros_like(ids)).clamp_max(max(T - 1, 0))
    if T:
        fv = finite_v.expand(B, -1) if finite_v.shape[0] == 1 else finite_v
        corners_ok = torch.stack([fv[b][tri[tid[b]].long()].all(-1) for b in range(B)]) if B else valid
        ok = ~valid | corners_ok
    else:
        ok = torch.ones_like(valid)
    _assert_finite("out", out, ok)
    _assert_finite("out_da", out_da, ok)
    _assert_finite("attr.grad", g_attr)
    _assert_finite("rast.grad", g_rast, ok)
    _assert_finite("rast_db.grad", g_db, ok)
    assert not g_rast[..., 2:].any(), "z/w or the id channel of rast received a gradient"
    # The documented formula, independently, at the valid pixels.
    if T and B and bool(valid.any()):
        b, y, x = torch.nonzero(valid, as_tuple=True)
        t = tri[ids[b, y, x] - 1].long()
        ab = b if attr3.shape[0] > 1 else torch.zeros_like(b)
        a0, a1, a2 = (attr3[ab, t[:, k]] for k in range(3))
        u, v = rast[b, y, x, 0:1], rast[b, y, x, 1:2]
        want = u * a0 + v * a1 + (1 - u - v) * a2
        assert_matches("out (formula)", out[b, y, x], want, rtol=1e-5, atol=1e-6, per_pixel=False)
    if env.compare:
        with env.reference():
            want = run_interpolate(case, "cpu")
        names = ("out", "out_da", "attr.grad", "rast.grad", "rast_db.grad")
        # Barycentrics of size k make float32 cancel: u g + v g + (1 - u - v) g is g with an
        # error of k ulps (attr.grad sums those in another order in the kernel).
        k = case.uv_scale
        for name, x, y in zip(names, (out, out_da, g_attr, g_rast, g_db), want):
            assert_matches(name, x, y, rtol=1e-4 * k, atol=1e-5 * k)


# ----------------------------------------------------------------------------------------------
# texture / texture_construct_mip


FILTER_MODES = ("auto", "nearest", "linear", "linear-mipmap-nearest", "linear-mipmap-linear")
UV_KINDS = ("unit", "unit", "wide", "texel_edges", "huge", "nan", "inf")
DIR_KINDS = ("random", "random", "axis", "corner", "edge", "zero", "subnormal", "nan", "inf", "huge")


@dataclass
class TexCase:
    cube: bool
    tex_batch: int
    tex_h: int
    tex_w: int
    channels: int
    batch: int
    height: int
    width: int
    uv_kinds: tuple
    filter_mode: str
    boundary_mode: str
    use_uv_da: bool
    use_bias: bool
    da_log_scale: float
    mip: str                    # 'none', 'stack', 'list', 'partial'
    max_mip_level: object
    nonfinite_lod: bool
    grad_tex: bool
    seed: int
    dtype: str = "float32"
    noncontig: bool = False

    def build(self):
        g = _gen(self.seed)
        B, h, w = self.batch, self.height, self.width
        if self.cube:
            tex = torch.rand(self.tex_batch, 6, self.tex_h, self.tex_h, self.channels, generator=g)
            uv = self._directions(g, B * h * w).reshape(B, h, w, 3)
        else:
            tex = torch.rand(self.tex_batch, self.tex_h, self.tex_w, self.channels, generator=g)
            uv = self._coords(g, B * h * w).reshape(B, h, w, 2)
        nd = 6 if self.cube else 4
        uv_da = bias = None
        if self.use_uv_da:
            uv_da = torch.randn(B, h, w, nd, generator=g) * 10.0 ** self.da_log_scale
            zero = torch.rand(B, h, w, generator=g) < 0.1
            uv_da[zero] = 0.0
        if self.use_bias:
            bias = torch.rand(B, h, w, generator=g) * 12 - 3
        if self.nonfinite_lod:
            for t in (uv_da, bias):
                if t is not None and t.numel():
                    t.view(-1)[int(torch.randint(0, t.numel(), (1,), generator=g))] = float("nan")
        return tex, uv, uv_da, bias

    def _coords(self, g, n):
        kinds = torch.randint(0, len(self.uv_kinds), (n,), generator=g)
        uv = torch.rand(n, 2, generator=g)
        for i, k in enumerate(self.uv_kinds):
            sel = kinds == i
            m = int(sel.sum())
            if k == "wide":
                uv[sel] = torch.rand(m, 2, generator=g) * 8 - 4
            elif k == "texel_edges":
                size = torch.tensor([self.tex_w, self.tex_h], dtype=torch.float32)
                half = torch.randint(-2, 2 * max(self.tex_w, self.tex_h) + 2, (m, 2), generator=g)
                uv[sel] = half.float() * 0.5 / size
            elif k == "huge":
                uv[sel] = (torch.rand(m, 2, generator=g) - 0.5) * 2e6
            elif k == "nan":
                uv[sel, int(torch.randint(0, 2, (1,), generator=g))] = float("nan")
            elif k == "inf":
                uv[sel, int(torch.randint(0, 2, (1,), generator=g))] = float("inf")
        return uv

    def _directions(self, g, n):
        kinds = torch.randint(0, len(DIR_KINDS), (n,), generator=g)
        d = torch.randn(n, 3, generator=g)
        for i, k in enumerate(DIR_KINDS):
            sel = kinds == i
            m = int(sel.sum())
            if not m:
                continue
            if k == "axis":
                e = torch.zeros(m, 3)
                e[torch.arange(m), torch.randint(0, 3, (m,), generator=g)] = torch.where(
                    torch.rand(m, generator=g) < 0.5, -1.0, 1.0) * (torch.rand(m, generator=g) + 0.1)
                d[sel] = e
            elif k == "corner":
                d[sel] = torch.where(torch.rand(m, 3, generator=g) < 0.5, -1.0, 1.0) * 0.7
            elif k == "edge":
                e = torch.where(torch.rand(m, 3, generator=g) < 0.5, -1.0, 1.0)
                e[torch.arange(m), torch.randint(0, 3, (m,), generator=g)] = torch.rand(m, generator=g) * 2 - 1
                d[sel] = e
            elif k == "zero":
                d[sel] = 0.0
            elif k == "subnormal":
                d[sel] = torch.randn(m, 3, generator=g) * 1e-39
            elif k == "huge":
                d[sel] = torch.randn(m, 3, generator=g) * 1e30
            elif k == "nan":
                d[sel, int(torch.randint(0, 3, (1,), generator=g))] = float("nan")
            elif k == "inf":
                d[sel, int(torch.randint(0, 3, (1,), generator=g))] = float("inf")
        return d


@st.composite
def tex_cases(draw, max_side=64):
    cube = draw(st.booleans()) and draw(st.booleans())
    side = st.one_of(st.just(1), st.integers(1, 9), st.integers(1, max_side),
                     st.sampled_from((2, 4, 8, 16, 32)))
    th = draw(side)
    tw = th if cube else draw(side)
    if not cube and draw(st.integers(0, 9)) == 0:
        th, tw = draw(st.sampled_from(((256, 256), (1, 200), (129, 3))))
    B = draw(st.sampled_from((1, 2, 0)))
    filter_mode = draw(st.sampled_from(FILTER_MODES))
    use_uv_da = draw(st.booleans())
    use_bias = draw(st.booleans())
    if filter_mode in ("linear-mipmap-nearest", "linear-mipmap-linear") and not (use_uv_da or use_bias):
        use_uv_da = True
    return TexCase(
        cube=cube, tex_batch=draw(st.sampled_from((1, B))) if B else 1, tex_h=th, tex_w=tw,
        channels=draw(st.sampled_from((1, 2, 3, 4, 5))), batch=B,
        height=draw(st.integers(1, 8)), width=draw(st.integers(1, 8)),
        uv_kinds=tuple(draw(st.lists(st.sampled_from(UV_KINDS), min_size=1, max_size=3))),
        filter_mode=filter_mode,
        boundary_mode="cube" if cube else draw(st.sampled_from(("wrap", "clamp", "zero"))),
        use_uv_da=use_uv_da, use_bias=use_bias,
        da_log_scale=draw(st.sampled_from((-6.0, -2.0, -1.0, 0.0, 1.0, 3.0))),
        mip=draw(st.sampled_from(("none", "none", "stack", "list", "partial"))),
        max_mip_level=draw(st.one_of(st.none(), st.integers(0, 12))),
        nonfinite_lod=draw(st.integers(0, 5)) == 0,
        grad_tex=draw(st.booleans()),
        seed=draw(st.integers(0, 2**31 - 1)),
        dtype=draw(st.sampled_from(("float32", "float32", "float32", "float64"))),
        noncontig=draw(st.integers(0, 4)) == 0)


def run_texture(case: TexCase, device):
    """``dr.texture`` on ``device``; returns CPU ``[out, grad_tex, grad_uv, grad_uv_da,
    grad_bias, grad of each custom mip level...]``."""
    tex, uv, uv_da, bias = case.build()
    dev, dt, nc = torch.device(device), _DTYPES[case.dtype], case.noncontig
    leaves = [x.to(dev, dt).requires_grad_(i > 0 or case.grad_tex) if x is not None else None
              for i, x in enumerate((tex, uv, uv_da, bias))]
    t, u, d, b = leaves
    mip = None
    custom = []
    if case.mip == "stack":
        mip = dr.texture_construct_mip(t, max_mip_level=case.max_mip_level, cube_mode=case.cube)
    elif case.mip in ("list", "partial"):
        with torch.no_grad():
            levels = dr.texture_construct_mip(t.detach(), cube_mode=case.cube).levels
        if case.mip == "partial":
            levels = levels[: len(levels) // 2]
        custom = [lvl.detach().clone().requires_grad_(True) for lvl in levels]
        mip = [_strided(lvl, nc) for lvl in custom]
    out = dr.texture(_strided(t, nc), _strided(u, nc), _strided(d, nc), _strided(b, nc), mip=mip,
                     filter_mode=case.filter_mode, boundary_mode=case.boundary_mode,
                     max_mip_level=case.max_mip_level)
    w = torch.randn(out.shape, generator=_gen(case.seed + 1)).to(dev, dt)
    # The loss is NaN where a sample is; the gradients must still be finite elsewhere.
    loss = (out * w).sum()
    if loss.requires_grad:
        loss.backward()
    grads = [None if x is None else (x.grad if x.grad is not None else torch.zeros_like(x))
             for x in leaves + custom]
    return [_cpu(out)] + [_cpu(x) for x in grads]


def prop_texture(env: Env, case: TexCase):
    tex, uv, uv_da, bias = case.build()
    res = run_texture(case, env.device)
    out, g_tex, g_uv, g_da, g_bias = res[:5]
    _assert_shape("out", out, (case.batch, case.height, case.width, case.channels), _DTYPES[case.dtype])
    mipmapped = case.filter_mode in ("linear-mipmap-nearest", "linear-mipmap-linear") or \
        (case.filter_mode == "auto" and (uv_da is not None or bias is not None))
    ok = torch.isfinite(uv).all(-1)
    if mipmapped:
        if uv_da is not None:
            ok &= torch.isfinite(uv_da).all(-1)
        if bias is not None:
            ok &= torch.isfinite(bias)
    _assert_finite("out", out, ok)
    # Documented: samples at NaN coordinates are NaN; cube fetches in zero directions are zero.
    nan_uv = torch.isnan(uv).any(-1)
    assert bool(torch.isnan(out[nan_uv]).all()), "a sample at a NaN coordinate is not NaN"
    if case.cube:
        zero = (uv == 0).all(-1) & ok
        assert not out[zero].any(), "a cube map fetch in the zero direction is not zero"
    _assert_finite("tex.grad", g_tex)
    _assert_finite("uv.grad", g_uv, ok)
    _assert_finite("uv_da.grad", g_da, ok)
    _assert_finite("mip_level_bias.grad", g_bias, ok)
    for k, gl in enumerate(res[5:]):
        _assert_finite(f"mip[{k}].grad", gl)
    if env.compare:
        with env.reference():
            want = run_texture(case, "cpu")
        names = ["out", "tex.grad", "uv.grad", "uv_da.grad", "bias.grad"] + \
            [f"mip[{k}].grad" for k in range(len(res) - 5)]
        # Discontinuous decisions (nearest texel, mip level of linear-mipmap-nearest, wrap of
        # exact texel edges) may flip at float32 round-off on a few pixels.
        flips = max(1, out[..., 0].numel() // 1000)
        for name, x, y in zip(names, res, want):
            # A flipped pixel moves its gradient between up to 8 texels (2 levels x 2 x 2).
            per_texel = name == "tex.grad" or name.startswith("mip[")
            assert_matches(name, x, y, rtol=1e-4, atol=1e-5, max_bad=8 * flips if per_texel else flips)


@st.composite
def mip_cases(draw):
    cube = draw(st.booleans())
    side = st.one_of(st.just(1), st.integers(1, 40), st.sampled_from((2, 16, 64, 256)))
    h = draw(side)
    w = h if cube else draw(side)
    return (cube, draw(st.integers(1, 2)), h, w, draw(st.integers(1, 4)),
            draw(st.one_of(st.none(), st.integers(0, 10))), draw(st.integers(0, 2**31 - 1)))


def run_construct_mip(case, device):
    cube, B, h, w, C, max_level, seed = case
    g = _gen(seed)
    shape = (B, 6, h, w, C) if cube else (B, h, w, C)
    tex = torch.rand(shape, generator=g).to(device).requires_grad_(True)
    stack = dr.texture_construct_mip(tex, max_mip_level=max_level, cube_mode=cube)
    loss = sum((lvl * torch.randn(lvl.shape, generator=g).to(device)).sum() for lvl in stack.levels)
    if isinstance(loss, torch.Tensor) and loss.requires_grad:
        loss.backward()
    grad = tex.grad if tex.grad is not None else torch.zeros_like(tex)
    return _cpu(tex), stack, [_cpu(lvl) for lvl in stack.levels], _cpu(grad)


def prop_construct_mip(env: Env, case):
    cube, B, h, w, C, max_level, seed = case
    tex, stack, levels, grad = run_construct_mip(case, env.device)
    from diffrast.reference.mipmap import mip_level_sizes
    sizes = mip_level_sizes(h, w, max_level)
    assert len(levels) == len(sizes), f"{len(levels)} levels, expected {len(sizes)}"
    assert stack.cube_mode == cube and stack.base_shape == tuple(tex.shape)
    prev = tex
    for k, (lvl, (lh, lw)) in enumerate(zip(levels, sizes)):
        want = (B, 6, lh, lw, C) if cube else (B, lh, lw, C)
        _assert_shape(f"level {k + 1}", lvl, want)
        _assert_finite(f"level {k + 1}", lvl)
        # Documented: the mean of every level equals that of the level above it.
        dims = tuple(range(lvl.ndim - 3, lvl.ndim - 1))
        torch.testing.assert_close(lvl.double().mean(dims), prev.double().mean(dims),
                                   rtol=1e-4, atol=1e-5)
        prev = lvl
    _assert_finite("tex.grad", grad)
    if env.compare:
        with env.reference():
            _, _, want, wgrad = run_construct_mip(case, "cpu")
        for k, (a, b) in enumerate(zip(levels, want)):
            assert_matches(f"level {k + 1}", a, b, rtol=1e-5, atol=1e-6)
        assert_matches("tex.grad", grad, wgrad, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# antialias / antialias_construct_topology_hash


@st.composite
def antialias_cases(draw):
    mesh = draw(mesh_cases(max_batch=2, max_triangles=10, max_side=32))
    return (mesh, draw(st.integers(1, 4)), draw(st.booleans()),
            draw(st.sampled_from((1.0, 1.0, 0.0, 3.5, -2.0))), draw(st.booleans()),
            draw(st.sampled_from(("float32", "float32", "float32", "float64"))),
            draw(st.integers(0, 4)) == 0)


def _aa_inputs(env: Env, case):
    """CPU ``(color, rast, pos, tri)``: rast from Mesa (the CPU context), some ids corrupted."""
    mesh, C, corrupt, boost, prebuilt, dtype, nc = case
    pos, tri, ranges = mesh.build()
    if "rast" not in mesh._cache:
        rast, _ = dr.rasterize(env.cpu_context(False), pos, tri, mesh.resolution, ranges=ranges)
        mesh._cache["rast"] = rast
    rast = mesh._cache["rast"].clone()
    g = _gen(mesh.seed + 3)
    if corrupt and rast.numel():
        bad = torch.rand(rast.shape[:3], generator=g) < 0.1
        codes = torch.tensor([_corrupt_code(c, tri.shape[0]) for c in CORRUPT_CODES])
        vals = rast[bad]
        vals[:, 3] = codes[torch.arange(vals.shape[0]) % codes.numel()]
        vals[:, 2] = torch.rand(vals.shape[0], generator=g) * 2 - 1
        rast[bad] = vals
    color = torch.rand(*rast.shape[:3], C, generator=g)
    if ranges is not None and pos.ndim == 2:
        pass  # range mode: pos [V, 4] is used as is
    return color, rast, pos, tri


def run_antialias(env: Env, case, device):
    mesh, C, corrupt, boost, prebuilt, dtype, nc = case
    color, rast, pos, tri = _aa_inputs(env, case)
    dev, dt = torch.device(device), _DTYPES[dtype]
    c = color.to(dev, dt).requires_grad_(True)
    p = pos.to(dev, dt).requires_grad_(True)
    t = tri.to(dev)
    topo = dr.antialias_construct_topology_hash(_strided(t, nc)) if prebuilt else None
    out = dr.antialias(_strided(c, nc), _strided(rast.to(dev), nc), _strided(p, nc), _strided(t, nc),
                       topology_hash=topo, pos_gradient_boost=boost)
    w = torch.randn(out.shape, generator=_gen(mesh.seed + 4)).to(dev, dt)
    (out * w).sum().backward()
    gp = p.grad if p.grad is not None else torch.zeros_like(p)
    gc = c.grad if c.grad is not None else torch.zeros_like(c)
    return _cpu(out), _cpu(gc), _cpu(gp)


def prop_antialias(env: Env, case):
    mesh, C, corrupt, boost, prebuilt, dtype, nc = case
    color, rast, pos, tri = _aa_inputs(env, case)
    out, gc, gp = run_antialias(env, case, env.device)
    dt = _DTYPES[dtype]
    color = color.to(dt)
    _assert_shape("out", out, color.shape, dt)
    _assert_shape("color.grad", gc, color.shape, dt)
    _assert_shape("pos.grad", gp, pos.shape, dt)
    _assert_finite("out", out)
    _assert_finite("color.grad", gc)
    # Documented: NaN or degenerate geometry never puts NaN into gradients.
    _assert_finite("pos.grad", gp)
    if boost == 0.0:
        assert not gp.any(), "pos_gradient_boost=0 still gives pos a gradient"
    # Pixels with no neighbour of another triangle id are unchanged.
    ids = triangle_id.decode(rast[..., 3].contiguous())
    T = tri.shape[0]
    ids = torch.where((ids >= 0) & (ids <= T) & torch.isfinite(rast[..., 3]), ids, torch.zeros_like(ids))
    edge = torch.zeros_like(ids, dtype=torch.bool)
    dx = ids[:, :, 1:] != ids[:, :, :-1]
    dy = ids[:, 1:, :] != ids[:, :-1, :]
    edge[:, :, 1:] |= dx
    edge[:, :, :-1] |= dx
    edge[:, 1:, :] |= dy
    edge[:, :-1, :] |= dy
    assert torch.equal(out[~edge], color[~edge]), "a pixel away from any id change was modified"
    if env.compare:
        with env.reference():
            want = run_antialias(env, case, "cpu")
        flips = 2
        (o1, c1, p1), (o2, c2, p2) = want, (out, gc, gp)
        assert_matches("out", o2, o1, rtol=0, atol=1e-5, max_bad=flips)
        assert_matches("color.grad", c2, c1, rtol=0, atol=1e-5, max_bad=2 * flips)
        scale = max(float(p1.abs().max()) if p1.numel() else 0.0, 1.0)
        bad = ((p2 - p1).abs() > 1e-4 * scale + 1e-4 * p1.abs()).reshape(-1, 4).any(-1)
        assert int(bad.sum()) <= 2 * flips, f"pos.grad: {int(bad.sum())} rows differ from the reference"


@st.composite
def topology_cases(draw):
    T = draw(st.integers(0, 30))
    V = draw(st.sampled_from((1, 3, 5, 40, 2**31 - 1)))
    return T, V, draw(st.sampled_from(("random", "shared", "degenerate"))), draw(st.integers(0, 2**31 - 1))


def _topology_tri(case):
    T, V, kind, seed = case
    g = _gen(seed)
    if kind == "degenerate":
        tri = torch.randint(0, min(V, 3), (T, 3), generator=g)
    elif kind == "shared":
        tri = torch.stack([torch.arange(T), torch.arange(T) + 1, torch.arange(T) + 2], -1) % max(min(V, T + 2), 1)
    else:
        tri = torch.randint(0, V, (T, 3), generator=g, dtype=torch.int64)
    return tri.to(torch.int32)


def prop_topology_hash(env: Env, case):
    tri = _topology_tri(case)
    topo = dr.antialias_construct_topology_hash(env.to(tri))
    assert topo.num_triangles == tri.shape[0]
    assert topo.device.type == env.device.type
    # Every edge of every triangle appears once among the incidences of its edge id.
    te = topo.tri_edge.cpu()
    assert tuple(te.shape) == (tri.shape[0], 3)
    ptr = topo.edge_ptr.cpu()
    assert int(ptr[0]) == 0 and int(ptr[-1]) == 3 * tri.shape[0]
    assert bool((ptr[1:] >= ptr[:-1]).all())
    inc_tri = topo.inc_tri.cpu()
    for t in range(min(tri.shape[0], 8)):
        for k in range(3):
            e = int(te[t, k])
            assert t in inc_tri[int(ptr[e]):int(ptr[e + 1])].tolist()
    if env.compare:
        with env.reference():
            want = dr.antialias_construct_topology_hash(tri)
        got = [getattr(topo, name) for name in ("tri_edge", "edge_ptr", "inc_tri", "inc_opp")]
        from diffrast import cuda_backend_antialias as cb
        if isinstance(topo, cb.GpuTopologyHash):
            # Built by the kernels (on a GPU, or emulated on the CPU), the edges are numbered by
            # first incidence; renumbered, the tables must equal the reference's.
            t = cb.renumbered_like_reference(env.to(tri), cb.topology_tables(topo))
            got = [t[0], t[1][:want.num_edges + 1], t[2], t[3]]
        for name, g in zip(("tri_edge", "edge_ptr", "inc_tri", "inc_opp"), got):
            assert torch.equal(g.cpu(), getattr(want, name)), name


# ----------------------------------------------------------------------------------------------
# A whole pipeline on the fuzzed meshes


@st.composite
def pipeline_cases(draw):
    mesh = draw(mesh_cases(max_batch=2, max_triangles=10, max_side=32))
    return mesh, draw(st.sampled_from(FILTER_MODES[1:])), draw(st.sampled_from(("wrap", "clamp", "zero"))), \
        draw(st.sampled_from((1, 7, 32)))


def run_pipeline(env: Env, case, device):
    """rasterize -> interpolate (uv with derivatives) -> texture -> antialias -> backward."""
    mesh, filter_mode, boundary, tex_side = case
    dev = torch.device(device)
    ctx = env.context(True, device=dev) if dev.type == "cuda" else env.cpu_context(True)
    pos, tri, ranges = mesh.build()
    g = _gen(mesh.seed + 5)
    V = pos.shape[-2]
    uv_attr = torch.rand(V, 2, generator=g).to(dev).requires_grad_(True)
    tex = torch.rand(1, tex_side, tex_side, 3, generator=g).to(dev).requires_grad_(True)
    p = pos.to(dev).requires_grad_(True)
    t = tri.to(dev)
    rast, rast_db = dr.rasterize(ctx, p, t, mesh.resolution, ranges=ranges)
    uv, uv_da = dr.interpolate(uv_attr, rast, t, rast_db, diff_attrs="all")
    col = dr.texture(tex, uv, uv_da, filter_mode=filter_mode, boundary_mode=boundary)
    col = col * (rast[..., 3:] > 0).float()
    aa = dr.antialias(col, rast, p, t)
    loss = (aa * torch.randn(aa.shape, generator=g).to(dev)).sum()
    if loss.requires_grad:
        loss.backward()
    grads = [x.grad if x.grad is not None else torch.zeros_like(x) for x in (p, uv_attr, tex)]
    return [_cpu(rast), _cpu(aa)] + [_cpu(x) for x in grads]


def prop_pipeline(env: Env, case):
    mesh = case[0]
    rast, aa, gp, guv, gtex = run_pipeline(env, case, env.device)
    pos, tri, ranges = mesh.build()
    B = pos.shape[0] if ranges is None else ranges.shape[0]
    _assert_shape("image", aa, (B, *mesh.resolution, 3))
    for name, x in (("image", aa), ("pos.grad", gp), ("uv.grad", guv), ("tex.grad", gtex)):
        _assert_finite(name, x)


# ----------------------------------------------------------------------------------------------
# Invalid input


def _other_device(env: Env):
    """A device that differs from the env's: the CPU for CUDA tensors, 'meta' for CPU ones."""
    return torch.device("cpu") if env.is_cuda else torch.device("meta")


def _valid_args(env: Env, fn: str, g):
    """A small valid call of ``fn``: ``(callable, kwargs)``."""
    dev = env.device
    pos = torch.tensor([[[-0.8, -0.8, 0.0, 1.0], [0.8, -0.8, 0.0, 1.0], [0.0, 0.8, 0.0, 1.0],
                         [0.5, 0.5, 0.5, 1.0]]], device=dev)
    tri = torch.tensor([[0, 1, 2], [1, 3, 2]], dtype=torch.int32, device=dev)
    if fn in ("rasterize", "DepthPeeler"):
        return dict(glctx=env.context(True), pos=pos, tri=tri, resolution=(5, 7), ranges=None)
    if fn == "rasterize_range":
        return dict(glctx=env.context(True), pos=pos[0], tri=tri, resolution=(5, 7),
                    ranges=torch.tensor([[0, 1], [1, 1]], dtype=torch.int32))
    if fn == "interpolate":
        rast = torch.zeros(1, 5, 7, 4, device=dev)
        rast[0, 2, 3] = torch.tensor([0.2, 0.3, 0.1, 1.0])
        return dict(attr=torch.rand(4, 3, generator=g).to(dev), rast=rast, tri=tri,
                    rast_db=torch.zeros(1, 5, 7, 4, device=dev), diff_attrs=[0, 2])
    if fn == "texture":
        return dict(tex=torch.rand(1, 8, 8, 3, generator=g).to(dev),
                    uv=torch.rand(2, 4, 5, 2, generator=g).to(dev),
                    uv_da=torch.rand(2, 4, 5, 4, generator=g).to(dev) * 0.1,
                    mip_level_bias=None, filter_mode="linear-mipmap-linear", boundary_mode="wrap")
    if fn == "texture_cube":
        return dict(tex=torch.rand(1, 6, 4, 4, 2, generator=g).to(dev),
                    uv=torch.randn(1, 3, 3, 3, generator=g).to(dev), boundary_mode="cube")
    if fn == "texture_construct_mip":
        return dict(tex=torch.rand(1, 8, 4, 2, generator=g).to(dev))
    if fn == "antialias":
        rast = torch.zeros(1, 5, 7, 4, device=dev)
        rast[0, :3, :4, 3] = 1.0
        return dict(color=torch.rand(1, 5, 7, 3, generator=g).to(dev), rast=rast, pos=pos, tri=tri)
    if fn == "antialias_construct_topology_hash":
        return dict(tri=tri)
    if fn == "RasterizeGLContext":
        return dict(output_db=True, mode="automatic", device=str(dev))
    if fn == "set_deterministic":
        return dict(enabled=False)
    raise AssertionError(fn)


def _call(env: Env, fn: str, args: dict):
    if fn in ("rasterize", "rasterize_range"):
        return dr.rasterize(**args)
    if fn == "DepthPeeler":
        with dr.DepthPeeler(**args) as peeler:
            return peeler.rasterize_next_layer()
    if fn in ("texture", "texture_cube"):
        return dr.texture(**args)
    return getattr(dr, fn)(**args)


def _set(name, value):
    def f(env, a, g):
        a[name] = value(env, a, g) if callable(value) else value
    return f


def _retype(name, dtype):
    return _set(name, lambda env, a, g: a[name].to(dtype))


def _reshape(name, shape_fn):
    return _set(name, lambda env, a, g: torch.zeros(shape_fn(a[name].shape), dtype=a[name].dtype,
                                                       device=a[name].device))


def _to_other_device(name):
    return _set(name, lambda env, a, g: a[name].to(_other_device(env)))


def _all_to_meta(env, a, g):
    for k, v in a.items():
        if isinstance(v, torch.Tensor) and not (k == "ranges"):
            a[k] = v.to("meta")


def _tri_value(value):
    def f(env, a, g):
        t = a["tri"].clone()
        t.view(-1)[int(torch.randint(0, t.numel(), (1,), generator=g))] = value(a)
        a["tri"] = t
    return f


def _num_vertices(a):
    if "pos" in a:
        return a["pos"].shape[-2]
    return a["attr"].shape[-2]


def _topology_elsewhere(env: Env, tri):
    """A topology hash of ``tri`` on another device (a hand-made one on 'meta' for CPU runs)."""
    other = _other_device(env)
    if other.type != "meta":
        return dr.antialias_construct_topology_hash(tri.to(other))
    from diffrast.reference.antialias import TopologyHash
    T = tri.shape[0]
    z = lambda *s: torch.zeros(s, dtype=torch.int32, device=other)  # noqa: E731
    return TopologyHash(T, z(T, 3), z(2), z(3 * T), z(3 * T))


_TENSOR_JUNK = (None, 3, 2.5, "tensor", [[0.0, 1.0]], np.zeros((1, 2, 2, 4), np.float32))

# fn -> {corruption name: mutator(env, args, generator)}
INVALID = {
    "rasterize": {
        "all tensors on meta": _all_to_meta,
        "glctx None": _set("glctx", None),
        "glctx str": _set("glctx", "gl"),
        "pos float16": _retype("pos", torch.float16),
        "pos float64": _retype("pos", torch.float64),
        "pos int32": _retype("pos", torch.int32),
        "pos list": _set("pos", lambda env, a, g: a["pos"].tolist()),
        "pos numpy": _set("pos", lambda env, a, g: a["pos"].cpu().numpy()),
        "pos rank 1": _reshape("pos", lambda s: (s[-1],)),
        "pos rank 4": _reshape("pos", lambda s: (1,) + tuple(s)),
        "pos last dim 3": _reshape("pos", lambda s: tuple(s[:-1]) + (3,)),
        "pos last dim 2": _reshape("pos", lambda s: tuple(s[:-1]) + (2,)),
        "pos other device": _to_other_device("pos"),
        "tri other device": _to_other_device("tri"),
        "tri int64": _retype("tri", torch.int64),
        "tri int16": _retype("tri", torch.int16),
        "tri float32": _retype("tri", torch.float32),
        "tri rank 1": _set("tri", lambda env, a, g: a["tri"].reshape(-1)),
        "tri last dim 4": _reshape("tri", lambda s: (s[0], 4)),
        "tri last dim 2": _reshape("tri", lambda s: (s[0], 2)),
        "tri index = V": _tri_value(lambda a: _num_vertices(a)),
        "tri index huge": _tri_value(lambda a: 2**31 - 1),
        "tri index -1": _tri_value(lambda a: -1),
        "tri index min int": _tri_value(lambda a: -2**31),
        "tri None": _set("tri", None),
        "resolution zero": _set("resolution", (0, 4)),
        "resolution negative": _set("resolution", (5, -3)),
        "resolution too large": _set("resolution", (4, 1 << 20)),
        "resolution float": _set("resolution", (4.0, 4)),
        "resolution int": _set("resolution", 4),
        "resolution str": _set("resolution", "44"),
        "resolution 3-tuple": _set("resolution", (4, 4, 4)),
        "resolution 1-tuple": _set("resolution", (4,)),
        "resolution None": _set("resolution", None),
        "resolution float tensor": _set("resolution", lambda env, a, g: torch.tensor([4.0, 4.0])),
        "resolution 2-D array": _set("resolution", np.array([[4, 4]])),
        "resolution tensor of one": _set("resolution", lambda env, a, g: torch.tensor([4])),
        "resolution nan": _set("resolution", (float("nan"), 4)),
        "ranges in instance mode": _set("ranges", lambda env, a, g: torch.tensor([[0, 1]], dtype=torch.int32)),
    },
    "rasterize_range": {
        "ranges None": _set("ranges", None),
        "ranges int64": _retype("ranges", torch.int64),
        "ranges float32": _retype("ranges", torch.float32),
        "ranges rank 1": _set("ranges", lambda env, a, g: a["ranges"].reshape(-1)),
        "ranges last dim 3": _reshape("ranges", lambda s: (s[0], 3)),
        "ranges past the end": _set("ranges", lambda env, a, g: torch.tensor([[1, 2]], dtype=torch.int32)),
        "ranges start past the end": _set("ranges", lambda env, a, g: torch.tensor([[3, 0]], dtype=torch.int32)),
        "ranges negative start": _set("ranges", lambda env, a, g: torch.tensor([[-1, 1]], dtype=torch.int32)),
        "ranges negative count": _set("ranges", lambda env, a, g: torch.tensor([[1, -1]], dtype=torch.int32)),
        "ranges overflow": _set("ranges", lambda env, a, g: torch.tensor([[2**31 - 1, 2**31 - 1]], dtype=torch.int32)),
        "ranges list": _set("ranges", [[0, 1]]),
        "ranges on the meta device": _set("ranges", lambda env, a, g: a["ranges"].to("meta")),
        "pos rank 3 with ranges": _set("pos", lambda env, a, g: a["pos"][None]),
        "tri index = V": _tri_value(lambda a: _num_vertices(a)),
    },
    "DepthPeeler": {
        "pos float16": _retype("pos", torch.float16),
        "tri index -1": _tri_value(lambda a: -1),
        "resolution zero": _set("resolution", (4, 0)),
        "glctx None": _set("glctx", None),
    },
    "interpolate": {
        "all tensors on meta": _all_to_meta,
        "attr int32": _retype("attr", torch.int32),
        "attr rank 1": _reshape("attr", lambda s: (s[0],)),
        "attr rank 4": _reshape("attr", lambda s: (1, 1) + tuple(s)),
        "attr batch 3": _reshape("attr", lambda s: (3,) + tuple(s)),
        "attr float64 (dtype mix)": _retype("attr", torch.float64),
        "attr junk": _set("attr", lambda env, a, g: _TENSOR_JUNK[int(torch.randint(0, 6, (1,), generator=g))]),
        "attr other device": _to_other_device("attr"),
        "rast float16": _retype("rast", torch.float16),
        "rast rank 3": _set("rast", lambda env, a, g: a["rast"][0]),
        "rast last dim 3": _reshape("rast", lambda s: tuple(s[:-1]) + (3,)),
        "rast other device": _to_other_device("rast"),
        "rast junk": _set("rast", lambda env, a, g: _TENSOR_JUNK[int(torch.randint(0, 6, (1,), generator=g))]),
        "tri int64": _retype("tri", torch.int64),
        "tri last dim 2": _reshape("tri", lambda s: (s[0], 2)),
        "tri index = V": _tri_value(lambda a: _num_vertices(a)),
        "tri index -1": _tri_value(lambda a: -1),
        "tri other device": _to_other_device("tri"),
        "diff_attrs out of range": _set("diff_attrs", [0, 3]),
        "diff_attrs negative": _set("diff_attrs", [-1]),
        "diff_attrs str": _set("diff_attrs", "some"),
        "diff_attrs float": _set("diff_attrs", [0.5]),
        "diff_attrs bool": _set("diff_attrs", [True]),
        "diff_attrs int": _set("diff_attrs", 1),
        "diff_attrs float tensor": _set("diff_attrs", lambda env, a, g: torch.tensor([0.0])),
        "diff_attrs 2-D tensor": _set("diff_attrs", lambda env, a, g: torch.tensor([[0]])),
        "diff_attrs None entry": _set("diff_attrs", [None]),
        "rast_db None with diff_attrs": _set("rast_db", None),
        "rast_db wrong shape": _reshape("rast_db", lambda s: (s[0], s[1] + 1, s[2], 4)),
        "rast_db last dim 2": _reshape("rast_db", lambda s: tuple(s[:-1]) + (2,)),
        "rast_db float64": _retype("rast_db", torch.float64),
        "rast_db other device": _to_other_device("rast_db"),
        "rast_db junk": _set("rast_db", "db"),
    },
    "texture": {
        "all tensors on meta": _all_to_meta,
        "tex int": _retype("tex", torch.int32),
        "tex rank 3": _set("tex", lambda env, a, g: a["tex"][0]),
        "tex rank 6": _reshape("tex", lambda s: (1, 1) + tuple(s)),
        "tex empty": _reshape("tex", lambda s: (s[0], 0, s[2], s[3])),
        "tex zero channels": _reshape("tex", lambda s: (s[0], s[1], s[2], 0)),
        "tex batch 3": _reshape("tex", lambda s: (3,) + tuple(s[1:])),
        "tex junk": _set("tex", lambda env, a, g: _TENSOR_JUNK[int(torch.randint(0, 6, (1,), generator=g))]),
        "uv float64 (dtype mix)": _retype("uv", torch.float64),
        "uv float16": _retype("uv", torch.float16),
        "uv rank 3": _set("uv", lambda env, a, g: a["uv"][0]),
        "uv last dim 3": _reshape("uv", lambda s: tuple(s[:-1]) + (3,)),
        "uv other device": _to_other_device("uv"),
        "uv junk": _set("uv", lambda env, a, g: _TENSOR_JUNK[int(torch.randint(0, 6, (1,), generator=g))]),
        "uv_da wrong shape": _reshape("uv_da", lambda s: tuple(s[:-1]) + (2,)),
        "uv_da rank 3": _set("uv_da", lambda env, a, g: a["uv_da"][0]),
        "uv_da float64": _retype("uv_da", torch.float64),
        "uv_da other device": _to_other_device("uv_da"),
        "uv_da junk": _set("uv_da", 0.5),
        "mip_level_bias wrong shape": _set("mip_level_bias", lambda env, a, g: torch.zeros(2, 4, 4, device=env.device)),
        "mip_level_bias rank 4": _set("mip_level_bias", lambda env, a, g: torch.zeros(2, 4, 5, 1, device=env.device)),
        "mip_level_bias int": _set("mip_level_bias", lambda env, a, g: torch.zeros(2, 4, 5, dtype=torch.int32, device=env.device)),
        "filter_mode unknown": _set("filter_mode", "cubic"),
        "filter_mode None": _set("filter_mode", None),
        "filter_mode int": _set("filter_mode", 1),
        "filter_mode upper case": _set("filter_mode", "LINEAR"),
        "filter_mode list": _set("filter_mode", ["linear"]),
        "boundary_mode unknown": _set("boundary_mode", "mirror"),
        "boundary_mode None": _set("boundary_mode", None),
        "boundary_mode cube for 2-D": _set("boundary_mode", "cube"),
        "mipmap without lod": lambda env, a, g: a.update(uv_da=None, mip_level_bias=None),
        "max_mip_level -1": _set("max_mip_level", -1),
        "max_mip_level float": _set("max_mip_level", 1.5),
        "max_mip_level str": _set("max_mip_level", "2"),
        "max_mip_level bool": _set("max_mip_level", True),
        "max_mip_level float tensor": _set("max_mip_level", lambda env, a, g: torch.tensor(2.0)),
        "max_mip_level numpy -1": _set("max_mip_level", np.int64(-1)),
        "mip str": _set("mip", "stack"),
        "mip of other texture": _set("mip", lambda env, a, g: dr.texture_construct_mip(torch.rand(1, 16, 16, 3, device=env.device))),
        "mip list wrong shape": _set("mip", lambda env, a, g: [torch.rand(1, 3, 3, 3, device=env.device)]),
        "mip list too long": _set("mip", lambda env, a, g: [torch.rand(1, 1, 1, 3, device=env.device)] * 5),
        "mip list junk": _set("mip", [1.0]),
        "mip list float64": _set("mip", lambda env, a, g: [torch.rand(1, 4, 4, 3, dtype=torch.float64, device=env.device)]),
        "mip list other device": _set("mip", lambda env, a, g: [torch.rand(1, 4, 4, 3).to(_other_device(env))]),
        "mip cube stack for 2-D": _set("mip", lambda env, a, g: dr.texture_construct_mip(
            torch.rand(1, 6, 8, 8, 3, device=env.device), cube_mode=True)),
    },
    "texture_cube": {
        "boundary_mode wrap": _set("boundary_mode", "wrap"),
        "faces 5": _reshape("tex", lambda s: (s[0], 5) + tuple(s[2:])),
        "faces not square": _reshape("tex", lambda s: (s[0], 6, s[2], s[3] + 1, s[4])),
        "uv last dim 2": _reshape("uv", lambda s: tuple(s[:-1]) + (2,)),
        "uv_da last dim 4": _set("uv_da", lambda env, a, g: torch.zeros(1, 3, 3, 4, device=env.device)),
        "mip 2-D stack for cube": _set("mip", lambda env, a, g: dr.texture_construct_mip(
            torch.rand(1, 4, 4, 2, device=env.device))),
    },
    "texture_construct_mip": {
        "all tensors on meta": _all_to_meta,
        "tex rank 3": _set("tex", lambda env, a, g: a["tex"][0]),
        "tex empty": _reshape("tex", lambda s: (0,) + tuple(s[1:])),
        "tex junk": _set("tex", lambda env, a, g: _TENSOR_JUNK[int(torch.randint(0, 6, (1,), generator=g))]),
        "cube_mode for 2-D": _set("cube_mode", True),
        "cube_mode str": _set("cube_mode", "yes"),
        "cube_mode int": _set("cube_mode", 1),
        "cube tex without cube_mode": _set("tex", lambda env, a, g: torch.rand(1, 6, 4, 4, 1, device=env.device)),
        "max_mip_level -2": _set("max_mip_level", -2),
        "max_mip_level float": _set("max_mip_level", 2.0),
    },
    "antialias": {
        "all tensors on meta": _all_to_meta,
        "color float16": _retype("color", torch.float16),
        "color int": _retype("color", torch.int32),
        "color rank 3": _set("color", lambda env, a, g: a["color"][0]),
        "color junk": _set("color", lambda env, a, g: _TENSOR_JUNK[int(torch.randint(0, 6, (1,), generator=g))]),
        "color other device": _to_other_device("color"),
        "rast last dim 3": _reshape("rast", lambda s: tuple(s[:-1]) + (3,)),
        "rast size mismatch": _reshape("rast", lambda s: (s[0], s[1] + 1, s[2], 4)),
        "rast other device": _to_other_device("rast"),
        "pos float64 (dtype mix)": _retype("pos", torch.float64),
        "pos last dim 3": _reshape("pos", lambda s: tuple(s[:-1]) + (3,)),
        "pos batch 2": _set("pos", lambda env, a, g: a["pos"].expand(2, -1, -1)),
        "pos other device": _to_other_device("pos"),
        "tri int64": _retype("tri", torch.int64),
        "tri index = V": _tri_value(lambda a: _num_vertices(a)),
        "tri index -1": _tri_value(lambda a: -1),
        "tri other device": _to_other_device("tri"),
        "topology_hash str": _set("topology_hash", "hash"),
        "topology_hash of other tri": _set("topology_hash", lambda env, a, g: dr.antialias_construct_topology_hash(
            torch.tensor([[0, 1, 2]], dtype=torch.int32, device=env.device))),
        "topology_hash other device": _set("topology_hash", lambda env, a, g: _topology_elsewhere(env, a["tri"])),
        "pos_gradient_boost str": _set("pos_gradient_boost", "2"),
        "pos_gradient_boost nan": _set("pos_gradient_boost", float("nan")),
        "pos_gradient_boost inf": _set("pos_gradient_boost", float("inf")),
        "pos_gradient_boost None": _set("pos_gradient_boost", None),
        "pos_gradient_boost bool": _set("pos_gradient_boost", True),
        "pos_gradient_boost tensor": _set("pos_gradient_boost", lambda env, a, g: torch.tensor([1.0, 2.0])),
    },
    "antialias_construct_topology_hash": {
        "all tensors on meta": _all_to_meta,
        "tri int64": _retype("tri", torch.int64),
        "tri float32": _retype("tri", torch.float32),
        "tri rank 1": _set("tri", lambda env, a, g: a["tri"].reshape(-1)),
        "tri last dim 2": _reshape("tri", lambda s: (s[0], 2)),
        "tri index -1": _tri_value(lambda a: -1),
        "tri None": _set("tri", None),
        "tri list": _set("tri", [[0, 1, 2]]),
    },
}

INVALID["RasterizeGLContext"] = {
    "mode unknown": _set("mode", "auto"),
    "mode None": _set("mode", None),
    "device unknown": _set("device", "foo"),
    "device meta": _set("device", "meta"),
    "device negative": _set("device", -1),
    "device float": _set("device", 1.5),
    "device list": _set("device", ["cpu"]),
}
INVALID["set_deterministic"] = {
    "enabled str": _set("enabled", "yes"),
    "enabled int": _set("enabled", 1),
    "enabled None": _set("enabled", None),
}

INVALID_CASES = tuple((fn, name) for fn, d in INVALID.items() for name in d)


@st.composite
def invalid_cases(draw):
    first = draw(st.sampled_from(INVALID_CASES))
    extra = draw(st.one_of(st.none(), st.sampled_from([c for c in INVALID_CASES if c[0] == first[0]])))
    names = (first[1],) if extra is None or extra[1] == first[1] else (first[1], extra[1])
    return first[0], names, draw(st.integers(0, 2**31 - 1))


def prop_invalid(env: Env, case):
    """An invalid call raises ValueError or TypeError (never another exception, crash or hang).
    Two corruptions may cancel out (a cube map with cube_mode=True is valid again): such a call
    may also succeed, but never raise anything else."""
    fn, names, seed = case
    g = _gen(seed)
    args = _valid_args(env, fn, g)
    INVALID[fn][names[0]](env, args, g)
    for name in names[1:]:
        try:  # a second corruption may not apply on top of the first (e.g. retype of None)
            INVALID[fn][name](env, args, g)
        except (AttributeError, TypeError, IndexError, RuntimeError, ValueError):
            pass
    try:
        _call(env, fn, args)
    except (ValueError, TypeError) as exc:
        assert str(exc), f"{fn} with {names}: {type(exc).__name__} without a message"
        return
    except Exception as exc:
        raise AssertionError(f"{fn} with {', '.join(names)} raised {type(exc).__name__} "
                             f"instead of ValueError/TypeError: {exc}") from exc
    if len(names) == 1:
        raise AssertionError(f"{fn} with {', '.join(names)} did not raise")


# ----------------------------------------------------------------------------------------------
# The list of properties: name -> (strategy, property, needs a rasterizer context)

PROPERTIES = {
    "rasterize": (mesh_cases(), prop_rasterize),
    "depth_peeler": (peel_cases(), prop_depth_peeler),
    "interpolate": (interp_cases(), prop_interpolate),
    "texture": (tex_cases(), prop_texture),
    "texture_construct_mip": (mip_cases(), prop_construct_mip),
    "antialias": (antialias_cases(), prop_antialias),
    "antialias_construct_topology_hash": (topology_cases(), prop_topology_hash),
    "pipeline": (pipeline_cases(), prop_pipeline),
    "invalid": (invalid_cases(), prop_invalid),
}
