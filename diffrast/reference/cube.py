"""Cube map addressing in plain PyTorch: face selection, face coordinates and seam crossing.

Faces are stored in OpenGL's order ``+x, -x, +y, -y, +z, -z``. A direction ``(rx, ry, rz)`` selects
the face of its major axis (the component of largest magnitude; ties go to x before y before z,
OpenGL leaves the tie rule to the implementation), and OpenGL's table (GL 4.x spec, "Cube Map
Texture Selection")

    major axis   face   sc    tc    ma
    +rx          0      -rz   -ry   rx
    -rx          1      +rz   -ry   rx
    +ry          2      +rx   +rz   ry
    -ry          3      +rx   -rz   ry
    +rz          4      +rx   -ry   rz
    -rz          5      -rx   -ry   rz

gives the face coordinates ``s = (sc / |ma| + 1) / 2`` and ``t = (tc / |ma| + 1) / 2`` in
``[0, 1]``; ``s`` runs along the face's width (texel column), ``t`` along its height (texel row),
exactly as ``u`` and ``v`` do for a 2-D texture.

Subnormal direction components (magnitude below ``torch.finfo(dtype).tiny``, for float32
``2^-126``) count as zero, so a direction whose components are all subnormal or zero is
zero-length: it samples nothing (output 0, no gradient). A direction with a normal major axis
picks its face as above, the subnormal components reading as 0 in its face coordinates (their
gradients pass through unchanged). This is the arithmetic of the CUDA kernels, which CuPy compiles
with ``-ftz=true`` (flush to zero: single-precision arithmetic and comparisons read subnormal
operands as zero); stating it here keeps the reference and the kernels equal on CPU and GPU.

We write the table as three integer vectors per face: the outward normal ``N`` and the axes ``S``,
``T`` with ``sc = r·S``, ``tc = r·T``, ``|ma| = r·N``; a point on the face is
``|ma| (N + sc_n S + tc_n T)`` with ``sc_n, tc_n`` in ``[-1, 1]``.

Seams (bilinear taps that fall off a face): texel ``(i, j)`` of a face of size ``n`` has its centre
at the doubled integer position ``P = n N + (2i + 1 - n) S + (2j + 1 - n) T`` on the cube of
half-side ``n``. A tap one texel past an edge has ``|2i + 1 - n| = n + 1``; folding it over the edge
onto the neighbouring face moves it to ``(n - 1) N + sign · n S + (2j + 1 - n) T``, the centre of
the neighbour's edge texel that touches the same edge at the same position along it. Re-running
face selection on that integer point gives the neighbour face and texel exactly. A tap past a
corner (off both edges) has no texel; as OpenGL's seamless cube maps specify, its value is the
average of the three texels that meet at that cube corner, which are the other three taps of the
bilinear footprint.
"""
from __future__ import annotations

import torch

# Rows: faces +x, -x, +y, -y, +z, -z. Columns: x, y, z components.
FACE_N = ((1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1))
FACE_S = ((0, 0, -1), (0, 0, 1), (1, 0, 0), (1, 0, 0), (1, 0, 0), (-1, 0, 0))
FACE_T = ((0, -1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1), (0, -1, 0), (0, -1, 0))


def _basis(device, dtype):
    return (torch.tensor(FACE_N, device=device, dtype=dtype),
            torch.tensor(FACE_S, device=device, dtype=dtype),
            torch.tensor(FACE_T, device=device, dtype=dtype))


def flush_subnormal(d: torch.Tensor) -> torch.Tensor:
    """``d`` with its subnormal entries (``0 < |d| < tiny``) replaced by 0 and its other entries
    (normal, zero, inf, NaN) unchanged, exactly; the gradient passes through as the identity."""
    tiny = torch.finfo(d.dtype).tiny
    return d - torch.where(d.detach().abs() < tiny, d.detach(), torch.zeros_like(d))


def select_face(d: torch.Tensor) -> torch.Tensor:
    """Face index (0..5, OpenGL order) of the major axis of each direction in ``d`` ``[n, 3]``.
    NaN components are treated as 0 (the caller marks such samples NaN)."""
    a = torch.nan_to_num(d.detach(), nan=0.0).abs()
    ax, ay, az = a.unbind(-1)
    axis = torch.where((ax >= ay) & (ax >= az), 0, torch.where(ay >= az, 1, 2))
    comp = d.detach().gather(-1, axis[:, None])[:, 0]
    return 2 * axis + (comp < 0).long()


def face_coords(d: torch.Tensor):
    """Project directions ``d`` ``[n, 3]`` onto the cube.

    Returns ``(face, s, t, valid, ma, sc, tc)``: face index (long), face coordinates ``s, t`` in
    ``[0, 1]`` (differentiable), ``valid`` (false for zero-length or non-finite directions, whose
    ``s, t`` are set to 0.5 with no gradient), and the major-axis length ``ma = |r·N|`` (invalid
    entries replaced by 1) and minor coordinates ``sc, tc`` (invalid entries 0) for derivative
    computations. Subnormal components count as 0 (:func:`flush_subnormal`, module docstring):
    a valid ``ma`` is at least ``tiny``.
    """
    n_, s_, t_ = _basis(d.device, d.dtype)
    d = flush_subnormal(d)
    face = select_face(d)
    ma = (d * n_[face]).sum(-1)
    sc = (d * s_[face]).sum(-1)
    tc = (d * t_[face]).sum(-1)
    valid = (ma > 0) & torch.isfinite(ma) & torch.isfinite(sc) & torch.isfinite(tc)
    one = torch.ones_like(ma)
    ma_safe = torch.where(valid, ma, one)
    sc = torch.where(valid, sc, torch.zeros_like(sc))
    tc = torch.where(valid, tc, torch.zeros_like(tc))
    s = 0.5 * (sc / ma_safe + 1.0)
    t = 0.5 * (tc / ma_safe + 1.0)
    return face, s, t, valid, ma_safe, sc, tc


def scaled_face_coord_derivatives(dd: torch.Tensor, face: torch.Tensor, ma, sc, tc):
    """``ma`` times the derivatives of the face coordinates ``(s, t)`` along one image axis, given
    the derivative ``dd`` ``[n, 3]`` of the direction along that axis. From
    ``s = (sc / ma + 1) / 2``: ``ds = (dsc ma - sc dma) / (2 ma^2)``, so
    ``ma ds = (dsc - (sc / ma) dma) / 2`` (and likewise for ``t``), which stays finite for any
    finite ``ma > 0``; ``sc / ma`` lies in ``[-1, 1]``. ``ma, sc, tc`` come from
    :func:`face_coords` (safe for invalid samples)."""
    n_, s_, t_ = _basis(dd.device, dd.dtype)
    dma = (dd * n_[face]).sum(-1)
    dsc = (dd * s_[face]).sum(-1)
    dtc = (dd * t_[face]).sum(-1)
    return 0.5 * (dsc - (sc / ma) * dma), 0.5 * (dtc - (tc / ma) * dma)


def face_coord_derivatives(dd: torch.Tensor, face: torch.Tensor, ma, sc, tc):
    """Derivatives ``(ds, dt)`` of the face coordinates along one image axis (see
    :func:`scaled_face_coord_derivatives`)."""
    ds, dt = scaled_face_coord_derivatives(dd, face, ma, sc, tc)
    return ds / ma, dt / ma


def fold_taps(face: torch.Tensor, ix: torch.Tensor, iy: torch.Tensor, size: int):
    """Map texel taps ``(face, ix, iy)`` with ``ix, iy`` in ``[-1, size]`` to the texel that holds
    them: taps inside the face are unchanged, taps one texel past an edge move to the neighbouring
    face's edge texel. Corner taps (past two edges) must be resolved by the caller; for them this
    returns an arbitrary valid texel. All integer arithmetic, exact."""
    n_, s_, t_ = _basis(face.device, torch.long)
    n = size
    ix = ix.clamp(-1, n)
    iy = iy.clamp(-1, n)
    cs = 2 * ix + 1 - n
    ct = 2 * iy + 1 - n
    off_x = cs.abs() > n
    off_y = ct.abs() > n
    corner = off_x & off_y
    # Corner taps: keep them on this face (value replaced by the caller).
    cs = torch.where(corner, cs.clamp(1 - n, n - 1), cs)
    ct = torch.where(corner, ct.clamp(1 - n, n - 1), ct)
    off_x = off_x & ~corner
    off_y = off_y & ~corner
    ma = torch.full_like(cs, n)
    ma = torch.where(off_x, 2 * n - cs.abs(), ma)
    ma = torch.where(off_y, 2 * n - ct.abs(), ma)
    cs = torch.where(off_x, cs.sign() * n, cs)
    ct = torch.where(off_y, ct.sign() * n, ct)
    q = ma[:, None] * n_[face] + cs[:, None] * s_[face] + ct[:, None] * t_[face]
    axis = q.abs().argmax(-1)
    comp = q.gather(-1, axis[:, None])[:, 0]
    g = 2 * axis + (comp < 0).long()
    cs2 = (q * s_[g]).sum(-1)
    ct2 = (q * t_[g]).sum(-1)
    ix2 = torch.div(cs2 + n - 1, 2, rounding_mode="floor").clamp(0, n - 1)
    iy2 = torch.div(ct2 + n - 1, 2, rounding_mode="floor").clamp(0, n - 1)
    return g, ix2, iy2, corner
