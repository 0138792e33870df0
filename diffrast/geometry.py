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


def look_at(eye, target=(0.0, 0.0, 0.0), up=(0.0, 1.0, 0.0)):
    """View matrix ``[4, 4]`` (float32) of a camera at ``eye`` looking at ``target``, OpenGL
    style: the camera looks down its -z axis, ``up`` maps to +y on screen as far as it is
    orthogonal to the view direction. Compose as ``perspective(...) @ look_at(...)``.

    Args:
        eye, target, up: 3-sequences (or tensors) in world coordinates; ``up`` must not be
            parallel to ``target - eye``.
    """
    eye = torch.as_tensor(eye, dtype=torch.float64).reshape(3)
    target = torch.as_tensor(target, dtype=torch.float64).reshape(3)
    up = torch.as_tensor(up, dtype=torch.float64).reshape(3)
    f = target - eye
    f = f / f.norm()
    s = torch.linalg.cross(f, up)
    s = s / s.norm()
    u = torch.linalg.cross(s, f)
    m = torch.eye(4, dtype=torch.float64)
    m[0, :3], m[1, :3], m[2, :3] = s, u, -f
    m[:3, 3] = -(m[:3, :3] @ eye)
    return m.float()


def quaternion_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``[..., 4, 4]`` from quaternions ``[..., 4]`` stored ``(w, x, y, z)``.

    The quaternions need not be unit length: they are normalized first, so the result is always a
    rotation and the function is differentiable in ``q`` (away from ``q = 0``). ``q`` and ``-q``
    give the same rotation. dtype and device follow ``q``.
    """
    q = q / q.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    zero, one = torch.zeros_like(w), torch.ones_like(w)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w), zero,
        2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w), zero,
        2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y), zero,
        zero, zero, zero, one,
    ]
    return torch.stack(rows, -1).reshape(q.shape[:-1] + (4, 4))


def random_quaternion(n: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniformly distributed random unit quaternions ``(w, x, y, z)``: ``[4]``, or ``[n, 4]`` when
    ``n`` is given (float32, CPU; normalized Gaussian samples, uniform over rotations)."""
    q = torch.randn((1 if n is None else n, 4), generator=generator, dtype=torch.float64)
    q = (q / q.norm(dim=-1, keepdim=True)).float()
    return q[0] if n is None else q


def quaternion_angle(q1: torch.Tensor, q2: torch.Tensor) -> torch.Tensor:
    """The angle in degrees of the rotation between the orientations ``q1`` and ``q2``
    (``[..., 4]`` each, any length; ``q`` and ``-q`` are the same orientation). Accurate for
    small angles too: it uses ``|q1 - q2| = 2 sin(angle / 4)`` for unit quaternions rather than
    the arccosine of their dot product."""
    q1 = q1 / q1.norm(dim=-1, keepdim=True)
    q2 = q2 / q2.norm(dim=-1, keepdim=True)
    chord = torch.minimum((q1 - q2).norm(dim=-1), (q1 + q2).norm(dim=-1))
    return torch.rad2deg(4 * torch.asin((chord / 2).clamp(max=1.0)))
