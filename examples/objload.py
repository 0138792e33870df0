"""A small Wavefront OBJ loader for the examples: positions, texture coordinates, normals, faces.

Reads ``v``, ``vt``, ``vn`` and ``f`` records (``f`` vertices as ``v``, ``v/vt``, ``v//vn`` or
``v/vt/vn``, 1-based or negative = relative indices); polygons with more than three vertices are
split into a triangle fan. Everything else (groups, materials, smoothing groups, lines, free-form
geometry) is ignored. OBJ indexes each attribute separately, and so does the result: one triangle
index tensor per attribute, as diffrast wants them — rasterize and antialias with ``pos`` and
``tri_pos`` (so that triangles sharing a position share an edge), interpolate uvs with
``tri_uv`` and normals with ``tri_nrm``, since all three index tensors list the same triangles
in the same order.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch


@dataclass
class ObjMesh:
    """A triangle mesh read from an OBJ file (CPU tensors).

    Attributes:
        pos: ``[Vp, 3]`` float32 positions.
        tri_pos: ``[T, 3]`` int32 indices into ``pos``.
        uv: ``[Vt, 2]`` float32 texture coordinates, or None if the file has no ``vt`` used by
            every face.
        tri_uv: ``[T, 3]`` int32 indices into ``uv``, or None.
        normals: ``[Vn, 3]`` float32 normals (as stored, not renormalized), or None.
        tri_nrm: ``[T, 3]`` int32 indices into ``normals``, or None.
    """
    pos: torch.Tensor
    tri_pos: torch.Tensor
    uv: Optional[torch.Tensor] = None
    tri_uv: Optional[torch.Tensor] = None
    normals: Optional[torch.Tensor] = None
    tri_nrm: Optional[torch.Tensor] = None

    def to(self, device) -> "ObjMesh":
        """A copy with every tensor on ``device``."""
        return ObjMesh(*(None if t is None else t.to(device) for t in
                         (self.pos, self.tri_pos, self.uv, self.tri_uv, self.normals, self.tri_nrm)))


def _index(token: str, count: int, what: str, lineno: int) -> int:
    i = int(token)
    if i > 0:
        i -= 1
    elif i < 0:
        i += count
    else:
        raise ValueError(f"line {lineno}: OBJ {what} index 0 is invalid (indices start at 1)")
    if not 0 <= i < count:
        raise ValueError(f"line {lineno}: OBJ {what} index {token} out of range ({count} defined so far)")
    return i


def load_obj(path: str) -> ObjMesh:
    """Read the OBJ file at ``path``; see the module docstring for what is supported.

    Raises:
        ValueError: malformed records, indices out of range, or no faces.
    """
    v, vt, vn = [], [], []
    fp, ft, fn = [], [], []
    all_uv = all_nrm = True
    with open(path, "r", encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split("#", 1)[0].split()
            if not parts:
                continue
            key, args = parts[0], parts[1:]
            try:
                if key == "v":
                    v.append([float(a) for a in args[:3]])
                elif key == "vt":
                    vt.append([float(a) for a in (args + ["0"])[:2]])
                elif key == "vn":
                    vn.append([float(a) for a in args[:3]])
                elif key == "f":
                    if len(args) < 3:
                        raise ValueError(f"line {lineno}: a face needs at least 3 vertices")
                    ip, it, inn = [], [], []
                    for a in args:
                        s = a.split("/")
                        ip.append(_index(s[0], len(v), "position", lineno))
                        it.append(_index(s[1], len(vt), "texcoord", lineno) if len(s) > 1 and s[1] else None)
                        inn.append(_index(s[2], len(vn), "normal", lineno) if len(s) > 2 and s[2] else None)
                    all_uv &= None not in it
                    all_nrm &= None not in inn
                    for k in range(1, len(args) - 1):      # triangle fan
                        fp.append((ip[0], ip[k], ip[k + 1]))
                        ft.append((it[0], it[k], it[k + 1]))
                        fn.append((inn[0], inn[k], inn[k + 1]))
            except (ValueError, IndexError) as e:
                if str(e).startswith("line "):
                    raise
                raise ValueError(f"line {lineno}: malformed OBJ record {line.strip()!r}") from e
    if not fp:
        raise ValueError(f"{path}: no faces")
    if any(len(p) != 3 for p in v) or any(len(n) != 3 for n in vn):
        raise ValueError(f"{path}: a v or vn record has fewer than 3 coordinates")
    mesh = ObjMesh(torch.tensor(v, dtype=torch.float32), torch.tensor(fp, dtype=torch.int32))
    if all_uv and vt:
        mesh.uv, mesh.tri_uv = torch.tensor(vt, dtype=torch.float32), torch.tensor(ft, dtype=torch.int32)
    if all_nrm and vn:
        mesh.normals = torch.tensor(vn, dtype=torch.float32)
        mesh.tri_nrm = torch.tensor(fn, dtype=torch.int32)
    return mesh


def vertex_normals(pos: torch.Tensor, tri: torch.Tensor) -> torch.Tensor:
    """Smooth unit vertex normals ``[V, 3]``: the area-weighted sum of the adjacent faces'
    normals (for meshes whose file has none; index them with the position indices)."""
    a, b, c = (pos[tri[:, k].long()] for k in range(3))
    fn = torch.linalg.cross(b - a, c - a)               # length = 2 * area
    n = torch.zeros_like(pos).index_add_(0, tri.reshape(-1).long(), fn.repeat_interleave(3, 0))
    return n / n.norm(dim=-1, keepdim=True).clamp(min=1e-12)


def face_normals(pos: torch.Tensor, tri: torch.Tensor):
    """Flat shading: unit face normals ``[T, 3]`` and the index tensor ``[T, 3]`` that gives each
    triangle's three corners its own face's normal."""
    a, b, c = (pos[tri[:, k].long()] for k in range(3))
    fn = torch.linalg.cross(b - a, c - a)
    fn = fn / fn.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    idx = torch.arange(tri.shape[0], dtype=torch.int32, device=tri.device)[:, None].expand(-1, 3)
    return fn, idx.contiguous()


def save_obj(path: str, pos, tri, uv=None, tri_uv=None, normals=None, tri_nrm=None,
             polygons=None, decimals: int = 4, comment: str = "") -> None:
    """Write a mesh as OBJ (what :func:`load_obj` reads). ``polygons``: optional list of
    ``(position indices, uv indices or None, normal indices or None)`` faces (0-based) written
    instead of the triangles, e.g. quads."""
    fmt = f"{{:.{decimals}f}}"
    lines = [f"# {comment}"] if comment else []
    lines += ["v " + " ".join(fmt.format(x) for x in p) for p in torch.as_tensor(pos).tolist()]
    if uv is not None:
        lines += ["vt " + " ".join(fmt.format(x) for x in t) for t in torch.as_tensor(uv).tolist()]
    if normals is not None:
        lines += ["vn " + " ".join(fmt.format(x) for x in n) for n in torch.as_tensor(normals).tolist()]
    if polygons is None:
        polygons = [(tuple(torch.as_tensor(tri)[i].tolist()),
                     None if tri_uv is None else tuple(torch.as_tensor(tri_uv)[i].tolist()),
                     None if tri_nrm is None else tuple(torch.as_tensor(tri_nrm)[i].tolist()))
                    for i in range(len(tri))]
    for ip, it, inn in polygons:
        verts = []
        for k, i in enumerate(ip):
            s = str(i + 1)
            if it is not None or inn is not None:
                s += "/" + ("" if it is None else str(it[k] + 1))
            if inn is not None:
                s += "/" + str(inn[k] + 1)
            verts.append(s)
        lines.append("f " + " ".join(verts))
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
