"""Frames into the window's OpenGL: the frame texture (``GL_RGBA8``), filled from a CUDA tensor
through CUDA–GL interop, device to device, when the context is NVIDIA's, else from host memory
with ``glTexSubImage2D``; the program that draws it letterboxed; and reading the window back.
Everything here runs with the window's context current (see :class:`~diffrast.viewer.window.SavedContext`).
"""
from __future__ import annotations

import warnings

import torch

from .frame import fit_viewport

BACKGROUND = (0.12, 0.12, 0.12, 1.0)
"""RGBA the framebuffer is cleared to around the letterboxed frame."""


class FrameTexture:
    """The texture a window shows and the program that draws it. Create, use and release it with
    the window's context current.

    Args:
        vendor (str): ``GL_VENDOR`` of the context; CUDA frames use interop only when it is
            NVIDIA.

    Attributes:
        size (tuple): ``(width, height)`` of the texture's content, or ``None`` before the first
            frame.
        max_size (int): ``GL_MAX_TEXTURE_SIZE`` of the context: the largest side a frame may have.
    """

    def __init__(self, vendor: str):
        from OpenGL import GL

        from ..gl_backend.program import Program
        self.vendor = vendor
        self.size: tuple | None = None
        self._registered: tuple | None = None  # (CUDA device, RegisteredTexture2D) once a CUDA frame came
        self._interop_failed = False
        self._tex = self._vao = 0
        self._program = None
        try:
            self.max_size = int(GL.glGetIntegerv(GL.GL_MAX_TEXTURE_SIZE))
            self._program = Program(["viewer.vert", "viewer.frag"])
            GL.glUseProgram(self._program.name)
            GL.glUniform1i(self._program.location("u_image"), 0)
            GL.glUseProgram(0)
            self._vao = GL.glGenVertexArrays(1)
            self._tex = GL.glGenTextures(1)
            GL.glBindTexture(GL.GL_TEXTURE_2D, self._tex)
            GL.glTexParameteri(GL.GL_TEXTURE_2D, GL.GL_TEXTURE_MIN_FILTER, GL.GL_LINEAR)
            GL.glTexParameteri(GL.GL_TEXTURE_2D, GL.GL_TEXTURE_MAG_FILTER, GL.GL_NEAREST)
            GL.glTexParameteri(GL.GL_TEXTURE_2D, GL.GL_TEXTURE_WRAP_S, GL.GL_CLAMP_TO_EDGE)
            GL.glTexParameteri(GL.GL_TEXTURE_2D, GL.GL_TEXTURE_WRAP_T, GL.GL_CLAMP_TO_EDGE)
            GL.glBindTexture(GL.GL_TEXTURE_2D, 0)
        except BaseException:
            self.release()
            raise

    def upload(self, frame: torch.Tensor) -> str:
        """Fill the texture with a frame, reallocating it when the frame's size changed.

        Args:
            frame: ``[H, W, 4]`` uint8 contiguous tensor, CPU or CUDA, as
                :func:`~diffrast.viewer.frame_from_image` makes it; ``H`` and ``W`` at most
                ``max_size``.

        Returns:
            How the frame got there: ``'interop'`` (CUDA–GL, device to device) or ``'host'``
            (``glTexSubImage2D`` from host memory). After an interop failure (warned once) CUDA
            frames go through host memory.
        """
        from OpenGL import GL
        height, width = int(frame.shape[0]), int(frame.shape[1])
        if self.size != (width, height):
            self._release_registration()
            GL.glBindTexture(GL.GL_TEXTURE_2D, self._tex)
            GL.glTexImage2D(GL.GL_TEXTURE_2D, 0, GL.GL_RGBA8, width, height, 0, GL.GL_RGBA,
                            GL.GL_UNSIGNED_BYTE, None)
            GL.glBindTexture(GL.GL_TEXTURE_2D, 0)
            self.size = (width, height)
        if frame.is_cuda and self._interop_usable():
            try:
                if self._registered is not None and self._registered[0] != frame.device:
                    self._release_registration()
                with torch.cuda.device(frame.device):
                    if self._registered is None:
                        from ..gl_backend.interop import RegisteredTexture2D
                        self._registered = (frame.device, RegisteredTexture2D(self._tex))
                    self._registered[1].write(frame)
                return "interop"
            except Exception as exc:  # e.g. the window's GPU is not the tensor's GPU
                self._interop_failed = True
                self._release_registration()
                warnings.warn(f"diffrast.viewer: CUDA–GL interop failed ({exc}); CUDA frames go "
                              "through host memory from now on", RuntimeWarning)
        data = frame.cpu().numpy()
        GL.glBindTexture(GL.GL_TEXTURE_2D, self._tex)
        GL.glPixelStorei(GL.GL_UNPACK_ALIGNMENT, 1)
        GL.glPixelStorei(GL.GL_UNPACK_ROW_LENGTH, 0)
        GL.glTexSubImage2D(GL.GL_TEXTURE_2D, 0, 0, 0, width, height, GL.GL_RGBA, GL.GL_UNSIGNED_BYTE, data)
        GL.glBindTexture(GL.GL_TEXTURE_2D, 0)
        return "host"

    def _interop_usable(self) -> bool:
        # CUDA can only register textures of NVIDIA's OpenGL (not Mesa's, e.g. under Xvfb).
        return not self._interop_failed and "NVIDIA" in self.vendor.upper()

    def draw(self, framebuffer_size) -> None:
        """Clear the framebuffer to :data:`BACKGROUND` and draw the frame letterboxed into it
        (:func:`~diffrast.viewer.fit_viewport`), nearest-neighbour when magnified.

        Args:
            framebuffer_size: ``(width, height)`` of the window's framebuffer in pixels.
        """
        from OpenGL import GL
        bw, bh = framebuffer_size
        GL.glViewport(0, 0, max(bw, 1), max(bh, 1))
        GL.glClearColor(*BACKGROUND)
        GL.glClear(GL.GL_COLOR_BUFFER_BIT)
        if self.size is not None and bw > 0 and bh > 0:
            GL.glViewport(*fit_viewport(self.size, (bw, bh)))
            GL.glUseProgram(self._program.name)
            GL.glBindVertexArray(self._vao)
            GL.glActiveTexture(GL.GL_TEXTURE0)
            GL.glBindTexture(GL.GL_TEXTURE_2D, self._tex)
            GL.glDrawArrays(GL.GL_TRIANGLE_STRIP, 0, 4)
            GL.glBindTexture(GL.GL_TEXTURE_2D, 0)
            GL.glBindVertexArray(0)
            GL.glUseProgram(0)

    def _release_registration(self):
        reg, self._registered = self._registered, None
        if reg is not None:
            device, registered = reg
            try:
                with torch.cuda.device(device):
                    registered.release()
            except Exception as exc:  # nothing to recover; the texture is deleted next anyway
                warnings.warn(f"diffrast.viewer: unregistering the frame texture failed ({exc})",
                              RuntimeWarning)

    def release(self) -> None:
        """Free the interop registration, the texture, the program and the vertex array. Safe to
        call more than once; ``size`` keeps the last frame's size."""
        from OpenGL import GL
        self._release_registration()
        if self._program is not None:
            self._program.release()
            self._program = None
        if self._tex:
            GL.glDeleteTextures(1, [self._tex])
            self._tex = 0
        if self._vao:
            GL.glDeleteVertexArrays(1, [self._vao])
            self._vao = 0


def read_framebuffer(width: int, height: int) -> torch.Tensor:
    """Read the back buffer of the current window's default framebuffer.

    Args:
        width (int): Framebuffer width in pixels.
        height (int): Framebuffer height in pixels.

    Returns:
        ``[height, width, 3]`` uint8 CPU tensor, rows bottom-up.
    """
    from OpenGL import GL
    import numpy as np
    GL.glReadBuffer(GL.GL_BACK)
    GL.glPixelStorei(GL.GL_PACK_ALIGNMENT, 1)
    data = GL.glReadPixels(0, 0, width, height, GL.GL_RGB, GL.GL_UNSIGNED_BYTE)
    arr = np.frombuffer(data, dtype=np.uint8).reshape(height, width, 3)
    return torch.from_numpy(arr.copy())
