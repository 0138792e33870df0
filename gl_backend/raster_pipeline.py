"""The GL side of ``rasterize``: buffers, layered render targets, draws and read-back.

One ``RasterPipeline`` lives in each ``RasterizeGLContext``; every method expects that context to
be current. OpenGL decides visibility only: each batch item renders the id + 1 of its nearest
triangle per pixel into its own layer of a ``GL_TEXTURE_2D_ARRAY`` of ``GL_R32I`` (the geometry
shader sets ``gl_Layer``), with a depth target beside it; batches larger than the layer limit go
through in chunks. The ids are read back and the context resolves them into ``rast`` (see
``RasterizeGLContext.render``). Targets grow on demand (see :meth:`RasterPipeline.ensure_targets`)
and buffers are never shrunk, so a steady workload allocates nothing.
"""
from __future__ import annotations

import ctypes

import numpy as np
import torch
from OpenGL import GL

from ..log import logger, size_text
from .program import Program

_SHADERS = ["rasterize.vert", "rasterize.geom", "rasterize.frag"]


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
            logger.info("OpenGL geometry buffer (positions and triangles) grown to %s",
                        size_text(self.capacity))
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


_R32I_BYTES = 4  # a texel of the id target (GL_R32I)
_R32F_BYTES = 4  # a texel of depth peeling's z/w texture (GL_R32F)
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
        device: the ``torch.device`` the context renders for; on a CUDA device, render targets
            are only allocated where the GPU's free memory holds them.
    """

    def __init__(self, device: torch.device | None = None):
        self.device = device
        self.max_layers = int(GL.glGetIntegerv(GL.GL_MAX_ARRAY_TEXTURE_LAYERS))
        tex = int(GL.glGetIntegerv(GL.GL_MAX_TEXTURE_SIZE))
        vp = GL.glGetIntegerv(GL.GL_MAX_VIEWPORT_DIMS)
        fbw = int(GL.glGetIntegerv(GL.GL_MAX_FRAMEBUFFER_WIDTH))
        fbh = int(GL.glGetIntegerv(GL.GL_MAX_FRAMEBUFFER_HEIGHT))
        self.max_width = min(tex, int(vp[0]), fbw)
        self.max_height = min(tex, int(vp[1]), fbh)
        self.program = Program(_SHADERS)
        self.peel_program = None  # the variant for peeling's layers after the first (made on use)
        self._active = self.program
        self.vao = GL.glGenVertexArrays(1)
        # Positions at offset 0 (the vertex shader's storage buffer), then the triangle indices
        # (the element buffer) at ``_index_offset``: one buffer, one interop mapping per call.
        self.geometry = _GrowingBuffer()
        self._index_offset = 0
        self.fbo = GL.glGenFramebuffers(1)
        self.size = (0, 0, 0)  # allocated width, height, layers
        self.id_tex = 0
        self.depth_tex = [0, 0]  # [1]: depth peeling's odd layers (the previous layer is read)
        self.prev_z_tex = 0  # depth peeling: the z/w rasterize returned for the previous layer
        self._registered = None
        self._registered_z = None

    # -- render targets ------------------------------------------------------------------------
    def _release_targets(self) -> None:
        for reg in (self._registered, self._registered_z):
            if reg is not None:
                reg.release()
        self._registered = self._registered_z = None
        names = [t for t in (self.id_tex, *self.depth_tex, self.prev_z_tex) if t]
        if names:
            GL.glDeleteTextures(len(names), _names(*names))
        self.id_tex = self.prev_z_tex = 0
        self.depth_tex = [0, 0]
        self.size = (0, 0, 0)

    @staticmethod
    def _layered(internal_format, width, height, layers) -> int:
        tex = GL.glGenTextures(1)
        GL.glBindTexture(GL.GL_TEXTURE_2D_ARRAY, tex)
        GL.glTexStorage3D(GL.GL_TEXTURE_2D_ARRAY, 1, internal_format, width, height, layers)
        GL.glTexParameteri(GL.GL_TEXTURE_2D_ARRAY, GL.GL_TEXTURE_MIN_FILTER, GL.GL_NEAREST)
        GL.glTexParameteri(GL.GL_TEXTURE_2D_ARRAY, GL.GL_TEXTURE_MAG_FILTER, GL.GL_NEAREST)
        GL.glBindTexture(GL.GL_TEXTURE_2D_ARRAY, 0)
        return tex

    def _reserve(self, nbytes: int) -> None:
        if self.device is not None and self.device.type == "cuda":
            reserve_device_memory(self.device, nbytes, "the OpenGL render targets")

    @staticmethod
    def _target_bytes(width: int, height: int, layers: int) -> int:
        """Bytes of the targets :meth:`ensure_targets` makes at ``width`` × ``height`` ×
        ``layers``: the id target and two depth targets (depth peeling alternates between
        them; its z/w texture is made, and reserved, on its first use)."""
        return width * height * layers * (_R32I_BYTES + _DEPTH32F_BYTES * 2)

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
        self.id_tex = self._layered(GL.GL_R32I, w, h, n)
        self.depth_tex = [self._layered(GL.GL_DEPTH_COMPONENT32F, w, h, n) for _ in range(2)]
        self.size = (w, h, n)
        logger.info("OpenGL render targets allocated at %d x %d pixels, %d layer(s): %s", h, w,
                    n, size_text(self._target_bytes(w, h, n)))

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
        GL.glFramebufferTexture(GL.GL_FRAMEBUFFER, GL.GL_COLOR_ATTACHMENT0, self.id_tex, 0)
        GL.glDrawBuffers(1, [GL.GL_COLOR_ATTACHMENT0])
        GL.glFramebufferTexture(GL.GL_FRAMEBUFFER, GL.GL_DEPTH_ATTACHMENT, self.depth_tex[depth_index], 0)
        GL.glViewport(0, 0, width, height)
        GL.glDisable(GL.GL_CULL_FACE)
        GL.glDisable(GL.GL_BLEND)
        GL.glEnable(GL.GL_DEPTH_TEST)
        GL.glDepthFunc(GL.GL_LESS)
        GL.glDepthMask(GL.GL_TRUE)
        GL.glClearBufferiv(GL.GL_COLOR, 0, (GL.GLint * 4)(0, 0, 0, 0))
        GL.glClearBufferfv(GL.GL_DEPTH, 0, (GL.GLfloat * 1)(1.0))
        prog = self._active = self._peel_program() if peel else self.program
        prog.use()
        if peel:
            prog.set_vec2("u_size", width, height)
        for unit, tex in enumerate((self.depth_tex[1 - depth_index], self.prev_z_tex)):
            GL.glActiveTexture(GL.GL_TEXTURE0 + unit)
            GL.glBindTexture(GL.GL_TEXTURE_2D_ARRAY, tex if peel else 0)
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
        prog = self._active
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
        prog = self._active
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

    def _peel_program(self) -> Program:
        if self.peel_program is None:
            self.peel_program = Program(_SHADERS, defines=("PEEL",))
            self.peel_program.set_int("u_prev_depth", 0)
            self.peel_program.set_int("u_prev_z", 1)
        return self.peel_program

    # -- read-back -----------------------------------------------------------------------------
    def read_ids(self, ids: torch.Tensor) -> None:
        """Copy the first ``L`` layers of the id target into ``ids``, int32 ``[L, H, W]``
        (contiguous): triangle id + 1 per pixel, 0 where none is drawn."""
        layers, height, width = ids.shape
        if ids.is_cuda:
            if self._registered is None:
                from .interop import RegisteredLayeredTexture
                self._registered = RegisteredLayeredTexture(self.id_tex)
            self._registered.read(ids)
        else:
            GL.glGetTextureSubImage(self.id_tex, 0, 0, 0, 0, width, height, layers,
                                    GL.GL_RED_INTEGER, GL.GL_INT, ids.numel() * 4,
                                    ctypes.c_void_p(ids.data_ptr()))

    def store_peel_depth(self, z: torch.Tensor) -> None:
        """Depth peeling: keep ``z``, float32 ``[L, H, W]`` (contiguous), the ``z/w`` that
        ``rasterize`` returned for the layer just drawn, for the next layer's draw to test
        against."""
        layers, height, width = z.shape
        if not self.prev_z_tex:
            w, h, n = self.size
            self._reserve(_R32F_BYTES * w * h * n)
            self.prev_z_tex = self._layered(GL.GL_R32F, w, h, n)
        if z.is_cuda:
            if self._registered_z is None:
                from .interop import RegisteredLayeredTexture
                self._registered_z = RegisteredLayeredTexture(self.prev_z_tex, write=True)
            self._registered_z.write(z)
        else:
            GL.glTextureSubImage3D(self.prev_z_tex, 0, 0, 0, 0, width, height, layers, GL.GL_RED,
                                   GL.GL_FLOAT, ctypes.c_void_p(z.data_ptr()))

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
        if self.peel_program is not None:
            self.peel_program.release()

