"""The GL side of ``rasterize``: buffers, layered render targets, draws and read-back.

One ``RasterPipeline`` lives in each ``RasterizeGLContext``; every method expects that context to
be current. Each batch item renders into its own layer of ``GL_TEXTURE_2D_ARRAY`` targets (the
geometry shader sets ``gl_Layer``); batches larger than the layer limit go through in chunks.
Targets and buffers grow on demand and are never shrunk, so a steady workload allocates nothing.
"""
from __future__ import annotations

import ctypes

import numpy as np
import torch
from OpenGL import GL

from .program import Program


def _names(*names) -> np.ndarray:
    """GL object names as an array for ``glDelete*``: PyOpenGL converts a NumPy array with a
    handler it has loaded already, where a Python list would make it import one, which fails
    (with a message) when a context is freed while the interpreter shuts down."""
    return np.array(names, dtype=np.uint32)


class _GrowingBuffer:
    """A GL buffer that is reallocated (and re-registered for interop) only when it must grow."""

    def __init__(self):
        self.name = GL.glGenBuffers(1)
        self.capacity = 0
        self.registered = None

    def upload(self, parts) -> None:
        """Write each ``(byte offset, contiguous tensor)`` of ``parts`` into the buffer; all
        tensors on one device. CUDA tensors go device to device in one interop mapping."""
        nbytes = max(max(off + t.numel() * t.element_size() for off, t in parts), 16)
        if nbytes > self.capacity:
            if self.registered is not None:
                self.registered.release()
                self.registered = None
            self.capacity = max(nbytes, self.capacity * 3 // 2)
            GL.glBindBuffer(GL.GL_COPY_WRITE_BUFFER, self.name)
            GL.glBufferData(GL.GL_COPY_WRITE_BUFFER, self.capacity, None, GL.GL_DYNAMIC_DRAW)
        parts = [(off, t) for off, t in parts if t.numel() > 0]
        if not parts:
            return
        if parts[0][1].is_cuda:
            if self.registered is None:
                from .interop import RegisteredBuffer
                self.registered = RegisteredBuffer(self.name)
            self.registered.write(parts)
        else:
            GL.glBindBuffer(GL.GL_COPY_WRITE_BUFFER, self.name)
            for off, t in parts:
                arr = np.ascontiguousarray(t.numpy())
                GL.glBufferSubData(GL.GL_COPY_WRITE_BUFFER, off, arr.nbytes, arr)

    def release(self) -> None:
        if self.registered is not None:
            self.registered.release()
            self.registered = None
        if self.name:
            GL.glDeleteBuffers(1, _names(self.name))
            self.name = 0


_RGBA32F_BYTES = 16  # a texel of the colour targets (GL_RGBA32F)
_DEPTH32F_BYTES = 4  # a texel of the depth targets (GL_DEPTH_COMPONENT32F)


def reserve_device_memory(device: torch.device, nbytes: int, what: str) -> None:
    """Make sure ``nbytes`` (plus a margin for the driver) are free on ``device`` for an
    allocation outside torch's allocator, releasing torch's cached blocks if needed.

    Raises:
        torch.cuda.OutOfMemoryError: the memory is not free even then.
    """
    need = nbytes + max(256 << 20, nbytes // 20)
    free, total = torch.cuda.mem_get_info(device)
    if free < need:
        torch.cuda.empty_cache()
        free, total = torch.cuda.mem_get_info(device)
    if free < need:
        raise torch.cuda.OutOfMemoryError(
            f"CUDA out of memory: {what} need {nbytes / 2**30:.2f} GiB on {device}, which has "
            f"{free / 2**30:.2f} GiB free of {total / 2**30:.2f} GiB (render fewer or smaller "
            f"images per call, or free tensors first)")


class RasterPipeline:
    """Program, buffers and render targets of one rasterizing context.

    Args:
        output_db: whether to render the barycentric derivatives into a second target.
        device: the ``torch.device`` the context renders for; on a CUDA device, render targets
            are only allocated where the GPU's free memory holds them.
    """

    def __init__(self, output_db: bool, device: torch.device | None = None):
        self.output_db = output_db
        self.device = device
        self.max_layers = int(GL.glGetIntegerv(GL.GL_MAX_ARRAY_TEXTURE_LAYERS))
        tex = int(GL.glGetIntegerv(GL.GL_MAX_TEXTURE_SIZE))
        vp = GL.glGetIntegerv(GL.GL_MAX_VIEWPORT_DIMS)
        fbw = int(GL.glGetIntegerv(GL.GL_MAX_FRAMEBUFFER_WIDTH))
        fbh = int(GL.glGetIntegerv(GL.GL_MAX_FRAMEBUFFER_HEIGHT))
        self.max_width = min(tex, int(vp[0]), fbw)
        self.max_height = min(tex, int(vp[1]), fbh)
        self.program = Program(["rasterize.vert", "rasterize.geom", "rasterize.frag"])
        self.program.set_int("u_prev_depth", 0)
        self.program.set_int("u_prev_rast", 1)
        self.vao = GL.glGenVertexArrays(1)
        # Positions at offset 0 (the vertex shader's storage buffer), then the triangle indices
        # (the element buffer) at ``_index_offset``: one buffer, one interop mapping per call.
        self.geometry = _GrowingBuffer()
        self._index_offset = 0
        self.fbo = GL.glGenFramebuffers(1)
        self.size = (0, 0, 0)  # allocated width, height, layers
        self.rast_tex = [0, 0]  # [1]: depth peeling's odd layers (the previous layer is read)
        self.db_tex = 0
        self.depth_tex = [0, 0]
        self._registered = {}

    # -- render targets ------------------------------------------------------------------------
    def _release_targets(self) -> None:
        for reg in self._registered.values():
            reg.release()
        self._registered.clear()
        names = [t for t in (*self.rast_tex, self.db_tex, *self.depth_tex) if t]
        if names:
            GL.glDeleteTextures(len(names), _names(*names))
        self.rast_tex = [0, 0]
        self.db_tex = 0
        self.depth_tex = [0, 0]
        self.size = (0, 0, 0)

    @staticmethod
    def _layered(internal_format, width, height, layers) -> int:
        tex = GL.glGenTextures(1)
        GL.glBindTexture(GL.GL_TEXTURE_2D_ARRAY, tex)
        GL.glTexStorage3D(GL.GL_TEXTURE_2D_ARRAY, 1, internal_format, width, height, layers)
        GL.glTexParameteri(GL.GL_TEXTURE_2D_ARRAY, GL.GL_TEXTURE_MIN_FILTER, GL.GL_NEAREST)
        GL.glTexParameteri(GL.GL_TEXTURE_2D_ARRAY, GL.GL_TEXTURE_MAG_FILTER, GL.GL_NEAREST)
        return tex

    def _reserve(self, nbytes: int) -> None:
        if self.device is not None and self.device.type == "cuda":
            reserve_device_memory(self.device, nbytes, "the OpenGL render targets")

    def _target_bytes(self, width: int, height: int, layers: int) -> int:
        """Bytes of the targets :meth:`ensure_targets` makes at ``width`` × ``height`` ×
        ``layers``: the colour target, the derivative target when the context outputs them, and
        two depth targets (depth peeling's second colour target is made, and reserved, later)."""
        colour = 2 if self.output_db else 1
        return width * height * layers * (_RGBA32F_BYTES * colour + _DEPTH32F_BYTES * 2)

    def ensure_targets(self, width: int, height: int, layers: int) -> None:
        """Make the render targets at least ``width`` × ``height`` × ``layers``.

        Targets grow to the union of the sizes asked for, so that alternating sizes allocate
        once, unless the union would hold more than twice the texels asked for (one tall and
        one wide image, or one large image and a batch of smaller ones): then they are made at
        exactly the size asked for. On a CUDA device the GPU's free memory is checked first
        (releasing torch's cached blocks if that makes room): OpenGL drivers may place a texture
        that does not fit in system memory or fail later without an error, where the user should
        get torch's out-of-memory error."""
        w0, h0, l0 = self.size
        if width <= w0 and height <= h0 and layers <= l0:
            return
        w, h, n = max(width, w0), max(height, h0), max(layers, l0)
        if w * h * n > 2 * width * height * layers:
            w, h, n = width, height, layers
        self._release_targets()
        self._reserve(self._target_bytes(w, h, n))
        self.rast_tex = [self._layered(GL.GL_RGBA32F, w, h, n), 0]
        if self.output_db:
            self.db_tex = self._layered(GL.GL_RGBA32F, w, h, n)
        self.depth_tex = [self._layered(GL.GL_DEPTH_COMPONENT32F, w, h, n) for _ in range(2)]
        self.size = (w, h, n)

    # -- uploads -------------------------------------------------------------------------------
    def upload(self, pos: torch.Tensor, tri: torch.Tensor) -> None:
        """Upload clip-space positions (float32, contiguous) and triangle indices (int32).

        Both are uploaded on every call. (An earlier version skipped the index upload when
        ``tri`` looked unchanged by its ``id``, address and version counter; a new tensor with
        other indices can match all three once the old one is freed, and the stale indices drew
        the wrong triangles, issue 19.)"""
        self._index_offset = -(-pos.numel() * 4 // 256) * 256
        self.geometry.upload([(0, pos), (self._index_offset, tri)])

    # -- drawing -------------------------------------------------------------------------------
    def _begin(self, width, height, depth_index, peel) -> None:
        GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, self.fbo)
        if not self.rast_tex[depth_index]:  # the second rast target: made for depth peeling
            w, h, n = self.size
            self._reserve(_RGBA32F_BYTES * w * h * n)
            self.rast_tex[depth_index] = self._layered(GL.GL_RGBA32F, w, h, n)
        GL.glFramebufferTexture(GL.GL_FRAMEBUFFER, GL.GL_COLOR_ATTACHMENT0, self.rast_tex[depth_index], 0)
        if self.output_db:
            GL.glFramebufferTexture(GL.GL_FRAMEBUFFER, GL.GL_COLOR_ATTACHMENT1, self.db_tex, 0)
            GL.glDrawBuffers(2, [GL.GL_COLOR_ATTACHMENT0, GL.GL_COLOR_ATTACHMENT1])
        else:
            GL.glDrawBuffers(1, [GL.GL_COLOR_ATTACHMENT0])
        GL.glFramebufferTexture(GL.GL_FRAMEBUFFER, GL.GL_DEPTH_ATTACHMENT, self.depth_tex[depth_index], 0)
        GL.glViewport(0, 0, width, height)
        GL.glDisable(GL.GL_CULL_FACE)
        GL.glDisable(GL.GL_BLEND)
        GL.glEnable(GL.GL_DEPTH_TEST)
        GL.glDepthFunc(GL.GL_LESS)
        GL.glDepthMask(GL.GL_TRUE)
        zero = (GL.GLfloat * 4)(0, 0, 0, 0)
        GL.glClearBufferfv(GL.GL_COLOR, 0, zero)
        if self.output_db:
            GL.glClearBufferfv(GL.GL_COLOR, 1, zero)
        GL.glClearBufferfv(GL.GL_DEPTH, 0, (GL.GLfloat * 1)(1.0))
        prog = self.program
        prog.use()
        prog.set_vec2("u_size", width, height)
        prog.set_int("u_peel", 1 if peel else 0)
        GL.glActiveTexture(GL.GL_TEXTURE0)
        GL.glBindTexture(GL.GL_TEXTURE_2D_ARRAY, self.depth_tex[1 - depth_index] if peel else 0)
        GL.glActiveTexture(GL.GL_TEXTURE1)
        GL.glBindTexture(GL.GL_TEXTURE_2D_ARRAY, self.rast_tex[1 - depth_index] if peel else 0)
        GL.glActiveTexture(GL.GL_TEXTURE0)
        GL.glBindVertexArray(self.vao)
        GL.glBindBuffer(GL.GL_ELEMENT_ARRAY_BUFFER, self.geometry.name)
        GL.glBindBufferBase(GL.GL_SHADER_STORAGE_BUFFER, 0, self.geometry.name)

    def draw_instances(self, num_vertices, num_triangles, first, count, width, height,
                       depth_index=0, peel=False) -> None:
        """Instance mode: draw all triangles for batch items ``[first, first + count)`` into
        layers ``[0, count)``. Depth peeling alternates ``depth_index`` (0, 1, 0, ...) from layer
        to layer; ``peel``: drop fragments not behind the previous layer (of the other index)."""
        self._begin(width, height, depth_index, peel)
        prog = self.program
        prog.set_int("u_num_vertices", num_vertices)
        prog.set_int("u_instance_base", first)
        prog.set_int("u_instanced", 1)
        prog.set_int("u_layer", 0)
        prog.set_int("u_tri_offset", 0)
        if num_triangles > 0:
            GL.glDrawElementsInstanced(GL.GL_TRIANGLES, 3 * num_triangles, GL.GL_UNSIGNED_INT,
                                       ctypes.c_void_p(self._index_offset), count)

    def draw_ranges(self, num_vertices, ranges, width, height, depth_index=0, peel=False) -> None:
        """Range mode: ``ranges`` is a list of (first triangle, count); entry ``i`` draws into
        layer ``i``. ``depth_index``, ``peel``: as for :meth:`draw_instances`."""
        self._begin(width, height, depth_index, peel)
        prog = self.program
        prog.set_int("u_num_vertices", num_vertices)
        prog.set_int("u_instance_base", 0)
        prog.set_int("u_instanced", 0)
        for layer, (start, count) in enumerate(ranges):
            if count <= 0:
                continue
            prog.set_int("u_layer", layer)
            prog.set_int("u_tri_offset", start)
            GL.glDrawElements(GL.GL_TRIANGLES, 3 * count, GL.GL_UNSIGNED_INT,
                              ctypes.c_void_p(self._index_offset + 12 * start))

    # -- read-back -----------------------------------------------------------------------------
    def _read(self, tex, out: torch.Tensor) -> None:
        layers, height, width, _ = out.shape
        if out.is_cuda:
            reg = self._registered.get(tex)
            if reg is None:
                from .interop import RegisteredLayeredTexture
                reg = self._registered[tex] = RegisteredLayeredTexture(tex)
            reg.read(out)
        else:
            GL.glGetTextureSubImage(tex, 0, 0, 0, 0, width, height, layers, GL.GL_RGBA, GL.GL_FLOAT,
                                    out.numel() * 4, ctypes.c_void_p(out.data_ptr()))

    def read(self, rast: torch.Tensor, rast_db: torch.Tensor | None, depth_index: int = 0) -> None:
        """Copy the first ``L`` layers into ``rast`` (and ``rast_db``), each ``[L, H, W, 4]``, from
        the targets of the last draw (its ``depth_index``)."""
        self._read(self.rast_tex[depth_index], rast)
        if rast_db is not None:
            self._read(self.db_tex, rast_db)

    def release(self) -> None:
        self._release_targets()
        self.geometry.release()
        if self.fbo:
            GL.glDeleteFramebuffers(1, _names(self.fbo))
            self.fbo = 0
        if self.vao:
            GL.glDeleteVertexArrays(1, _names(self.vao))
            self.vao = 0
        self.program.release()

