"""Small geometry helpers for examples, tests and benchmarks: built-in meshes and camera
matrices. Everything returns float32 (positions) and int32 (indices) tensors on the CPU unless a
device is given."""
from __future__ import annotations

import math

import torch


def uv_sphere(rows: int, cols: int, device=None):
    """A UV sphere of radius 1 with ``2 * rows * cols`` triangles (the poles' degenerate
    triangles included, so the count is exact).

    Args:
        rows: number of latitude bands (>= 2).
        cols: number of longitude segments (>= 3).
        device: device of the returned tensors.

    Returns:
        ``(pos, tri, uv)``: positions ``[(rows + 1) * (cols + 1), 3]`` float32, triangles
        ``[2 * rows * cols, 3]`` int32 (counter-clockwise seen from outside), texture
        coordinates ``[(rows + 1) * (cols + 1), 2]`` float32 in ``[0, 1]``.
    """
    theta = torch.linspace(0, math.pi, rows + 1, dtype=torch.float64)  # from the north pole
    phi = torch.linspace(0, 2 * math.pi, cols + 1, dtype=torch.float64)
    t, p = torch.meshgrid(theta, phi, indexing="ij")
    pos = torch.stack([torch.sin(t) * torch.cos(p), torch.cos(t), -torch.sin(t) * torch.sin(p)], -1)
    uv = torch.stack([p / (2 * math.pi), 1 - t / math.pi], -1)
    r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    v00 = r * (cols + 1) + c
    v01, v10, v11 = v00 + 1, v00 + cols + 1, v00 + cols + 2
    tri = torch.cat([torch.stack([v00, v10, v11], -1).reshape(-1, 3),
                     torch.stack([v00, v11, v01], -1).reshape(-1, 3)])
    return (pos.reshape(-1, 3).float().to(device), tri.int().to(device),
            uv.reshape(-1, 2).float().to(device))


def cube(device=None):
    """A unit cube ``[-1, 1]^3`` with 8 shared vertices and 12 triangles, counter-clockwise seen
    from outside.

    Returns:
        ``(pos, tri)``: ``[8, 3]`` float32 and ``[12, 3]`` int32.
    """
    pos = torch.tensor([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=torch.float32)
    tri = torch.tensor([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                        [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]],
                       dtype=torch.int32)
    return pos.to(device), tri.to(device)


def perspective(fov_y: float = 45.0, aspect: float = 1.0, near: float = 0.1, far: float = 100.0):
    """OpenGL perspective projection matrix ``[4, 4]`` (float32), ``fov_y`` in degrees."""
    f = 1.0 / math.tan(math.radians(fov_y) / 2)
    return torch.tensor([[f / aspect, 0, 0, 0],
                         [0, f, 0, 0],
                         [0, 0, (far + near) / (near - far), 2 * far * near / (near - far)],
                         [0, 0, -1, 0]], dtype=torch.float32)


def translate(x: float, y: float, z: float):
    """Translation matrix ``[4, 4]`` (float32)."""
    m = torch.eye(4)
    m[:3, 3] = torch.tensor([x, y, z])
    return m


def rotate_y(angle: float):
    """Rotation about the y axis by ``angle`` radians, ``[4, 4]`` (float32)."""
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, 0, s, 0], [0, 1, 0, 0], [-s, 0, c, 0], [0, 0, 0, 1]], dtype=torch.float32)


def rotate_x(angle: float):
    """Rotation about the x axis by ``angle`` radians, ``[4, 4]`` (float32)."""
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[1, 0, 0, 0], [0, c, -s, 0], [0, s, c, 0], [0, 0, 0, 1]], dtype=torch.float32)


def transform(pos: torch.Tensor, mtx: torch.Tensor) -> torch.Tensor:
    """Apply ``[..., 4, 4]`` matrices to ``[V, 3]`` positions: returns clip-space
    ``[..., V, 4]``."""
    homo = torch.cat([pos, torch.ones_like(pos[:, :1])], -1)
    return torch.matmul(homo, mtx.transpose(-1, -2).to(pos.device, pos.dtype))
