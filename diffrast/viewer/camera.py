"""The viewer's orbit camera: yaw, pitch and distance about a target, and the matrices a program
renders with (:meth:`OrbitCamera.mvp`). Pure torch on the CPU; no window needed."""
from __future__ import annotations

import math

import torch

from .. import geometry


class OrbitCamera:
    """A camera orbiting a target point, driven by the viewer's mouse input.

    The camera sits at ``distance`` from ``target`` and looks at it; ``yaw`` turns the scene about
    the world's y axis and ``pitch`` tilts it about the camera's x axis (both in radians, pitch
    limited to ±89°). With ``yaw = pitch = 0`` it looks down the world's -z axis from
    ``(0, 0, distance)``. In a :class:`Viewer`, dragging with the left mouse button calls
    :meth:`drag` and the wheel calls :meth:`zoom`; a program reads the matrices each frame.

    Args:
        distance (float): Distance from the target (> 0).
        yaw (float): Initial yaw in radians.
        pitch (float): Initial pitch in radians.
        fov_y (float): Vertical field of view in degrees.
        near (float): Near clipping distance (> 0).
        far (float): Far clipping distance (> near).
        target: The point orbited, a 3-sequence in world coordinates.
        rotate_speed (float): Radians of yaw/pitch per pixel dragged.
        zoom_factor (float): Factor on the distance per wheel step towards the target (< 1).
        min_distance (float), max_distance (float): Limits of the distance.

    Attributes:
        version (int): Incremented on every change, so a program can re-render only when the
            camera moved.
    """

    def __init__(self, distance=3.5, yaw=0.0, pitch=0.0, fov_y=45.0, near=0.1, far=100.0,
                 target=(0.0, 0.0, 0.0), rotate_speed=0.01, zoom_factor=0.9,
                 min_distance=1e-3, max_distance=1e4):
        if not distance > 0:
            raise ValueError(f"distance must be positive, got {distance!r}")
        if not (0 < near < far):
            raise ValueError(f"near and far must satisfy 0 < near < far, got near={near!r}, far={far!r}")
        if not 0 < zoom_factor < 1:
            raise ValueError(f"zoom_factor must be in (0, 1), got {zoom_factor!r}")
        self.fov_y, self.near, self.far = float(fov_y), float(near), float(far)
        self.rotate_speed, self.zoom_factor = float(rotate_speed), float(zoom_factor)
        self.min_distance, self.max_distance = float(min_distance), float(max_distance)
        self.target = tuple(float(v) for v in target)
        if len(self.target) != 3:
            raise ValueError(f"target must have 3 coordinates, got {target!r}")
        self._initial = (float(distance), float(yaw), float(pitch))
        self.version = 0
        self.reset()

    _PITCH_LIMIT = math.radians(89.0)

    def reset(self) -> None:
        """Return to the distance, yaw and pitch given at construction."""
        self.distance, self.yaw, self.pitch = self._initial
        self.pitch = min(max(self.pitch, -self._PITCH_LIMIT), self._PITCH_LIMIT)
        self.version += 1

    def drag(self, dx: float, dy: float) -> None:
        """Rotate as a mouse drag of ``(dx, dy)`` pixels does (window coordinates: ``dy > 0`` is
        downwards). Dragging right turns the scene to the right (yaw grows); dragging down tilts
        its top towards the viewer (pitch grows).

        Args:
            dx (float): Horizontal motion in pixels.
            dy (float): Vertical motion in pixels.
        """
        self.yaw = math.remainder(self.yaw + float(dx) * self.rotate_speed, 2 * math.pi)
        self.pitch = min(max(self.pitch + float(dy) * self.rotate_speed, -self._PITCH_LIMIT),
                         self._PITCH_LIMIT)
        self.version += 1

    def zoom(self, steps: float) -> None:
        """Move towards the target by ``steps`` wheel steps (negative: away): the distance is
        multiplied by ``zoom_factor ** steps`` and kept within its limits.

        Args:
            steps (float): Wheel steps, as glfw's scroll offset reports them.
        """
        log_d = math.log(self.distance) + float(steps) * math.log(self.zoom_factor)  # no overflow
        self.distance = min(max(math.exp(min(log_d, 700.0)), self.min_distance), self.max_distance)
        self.version += 1

    def view_matrix(self) -> torch.Tensor:
        """World-to-camera matrix (OpenGL conventions: the camera looks down its -z axis).

        Returns:
            ``[4, 4]`` float32 tensor on the CPU:
            ``translate(0, 0, -distance) @ rotate_x(pitch) @ rotate_y(yaw) @ translate(-target)``.
        """
        tx, ty, tz = self.target
        return (geometry.translate(0.0, 0.0, -self.distance) @ geometry.rotate_x(self.pitch)
                @ geometry.rotate_y(self.yaw) @ geometry.translate(-tx, -ty, -tz))

    def projection_matrix(self, aspect: float = 1.0) -> torch.Tensor:
        """OpenGL perspective projection with the camera's ``fov_y``, ``near`` and ``far``.

        Args:
            aspect (float): Width over height of the image rendered with it.

        Returns:
            ``[4, 4]`` float32 tensor on the CPU.
        """
        return geometry.perspective(self.fov_y, float(aspect), self.near, self.far)

    def mvp(self, aspect: float = 1.0) -> torch.Tensor:
        """Projection times view: the matrix that takes world positions to clip space, as
        ``geometry.transform(pos, camera.mvp())`` uses it.

        Args:
            aspect (float): Width over height of the image rendered with it.

        Returns:
            ``[4, 4]`` float32 tensor on the CPU.
        """
        return self.projection_matrix(aspect) @ self.view_matrix()

    def eye(self) -> torch.Tensor:
        """The camera's position in world coordinates (e.g. for lighting).

        Returns:
            ``[3]`` float32 tensor on the CPU.
        """
        return torch.linalg.inv(self.view_matrix().double())[:3, 3].float()
