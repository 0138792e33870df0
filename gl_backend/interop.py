"""CUDA–GL interop through ``cuda-bindings``: torch memory into GL buffers and GL textures into
torch memory, device to device, on torch's current stream.

Resources are registered once per GL allocation (registration is expensive) and mapped around
each copy. Mapping orders the copy after the GL work issued before it, and unmapping orders later
GL work after the copy, so no host synchronisation is needed.
"""
from __future__ import annotations

import torch

_cudart = None


def _rt():
    global _cudart
    if _cudart is None:
        try:
            from cuda.bindings import runtime as rt
        except ImportError:
            try:
                from cuda import cudart as rt  # cuda-python before 12.6
            except ImportError as exc:
                raise ImportError(
                    "CUDA tensors need CUDA–GL interop from the package cuda-bindings: "
                    "install diffrast[cuda13] (or [cuda12]) to match your CUDA driver") from exc
        _cudart = rt
    return _cudart


def _check(result):
    err = result[0] if isinstance(result, tuple) else result
    if int(err) != 0:
        raise RuntimeError(f"CUDA–GL interop call failed: {err!r}")
    if isinstance(result, tuple):
        rest = result[1:]
        return rest[0] if len(rest) == 1 else rest
    return None


def _stream() -> int:
    return torch.cuda.current_stream().cuda_stream


class _Registered:
    """A registered GL object; ``release()`` unregisters it (needs the GL context current)."""

    def __init__(self, resource):
        self.resource = resource

    def release(self) -> None:
        if self.resource is not None:
            _check(_rt().cudaGraphicsUnregisterResource(self.resource))
            self.resource = None

    def map(self, stream):
        _check(_rt().cudaGraphicsMapResources(1, self.resource, stream))

    def unmap(self, stream):
        _check(_rt().cudaGraphicsUnmapResources(1, self.resource, stream))


class RegisteredBuffer(_Registered):
    """A GL buffer that torch writes into (registered write-discard)."""

    def __init__(self, gl_buffer: int):
        rt = _rt()
        flags = rt.cudaGraphicsRegisterFlags.cudaGraphicsRegisterFlagsWriteDiscard
        super().__init__(_check(rt.cudaGraphicsGLRegisterBuffer(int(gl_buffer), flags)))

    def write(self, parts) -> None:
        """Copy each ``(byte offset, contiguous CUDA tensor)`` of ``parts`` into the buffer, in
        one mapping. The buffer is registered write-discard: bytes no part covers are undefined
        afterwards."""
        rt = _rt()
        stream = _stream()
        self.map(stream)
        try:
            ptr, size = _check(rt.cudaGraphicsResourceGetMappedPointer(self.resource))
            for offset, src in parts:
                nbytes = src.numel() * src.element_size()
                if offset + nbytes > size:
                    raise RuntimeError(f"interop buffer of {size} bytes is too small for "
                                       f"{nbytes} bytes at offset {offset}")
                _check(rt.cudaMemcpyAsync(int(ptr) + offset, src.data_ptr(), nbytes,
                                          rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice, stream))
        finally:
            self.unmap(stream)


class RegisteredLayeredTexture(_Registered):
    """A ``GL_TEXTURE_2D_ARRAY`` that torch reads from (the id target of the rasterizer) or,
    registered with ``write=True``, writes into (depth peeling's previous ``z/w``).

    Registered under the target ``GL_TEXTURE_3D`` so that it maps to one 3D CUDA array and all
    layers move in one ``cudaMemcpy3DAsync`` (registered as a 2D array, each layer would map
    separately). Tensors are ``[L, H, W]`` or ``[L, H, W, C]``, contiguous, whose texels (one
    ``[W]`` or ``[W, C]`` element each) have the texture's layout, e.g. int32 ``[L, H, W]`` for
    ``GL_R32I``.
    """

    def __init__(self, gl_texture: int, write: bool = False):
        rt = _rt()
        from OpenGL import GL
        flags = rt.cudaGraphicsRegisterFlags
        flags = flags.cudaGraphicsRegisterFlagsWriteDiscard if write else \
            flags.cudaGraphicsRegisterFlagsReadOnly
        super().__init__(_check(rt.cudaGraphicsGLRegisterImage(int(gl_texture), GL.GL_TEXTURE_3D, flags)))
        stream = _stream()
        self.map(stream)
        try:
            array = _check(rt.cudaGraphicsSubResourceGetMappedArray(self.resource, 0, 0))
            _, extent, _ = _check(rt.cudaArrayGetInfo(array))
        finally:
            self.unmap(stream)
        # what CUDA sees of the texture; a copy past it would fault on the device
        self.extent = (int(extent.depth), int(extent.height), int(extent.width))

    def read(self, out: torch.Tensor) -> None:
        """Copy layers ``[0, L)``, rows ``[0, H)``, columns ``[0, W)`` into the CUDA tensor
        ``out``.

        Raises:
            RuntimeError: the registered texture is smaller than ``out`` (checked before the
                copy, which would otherwise read past the texture on the device).
        """
        self._copy(out, to_texture=False)

    def write(self, src: torch.Tensor) -> None:
        """Copy the CUDA tensor ``src`` into layers ``[0, L)``, rows ``[0, H)``, columns
        ``[0, W)`` (a texture registered with ``write=True``).

        Raises:
            RuntimeError: the registered texture is smaller than ``src``.
        """
        self._copy(src, to_texture=True)

    def _copy(self, t: torch.Tensor, to_texture: bool) -> None:
        rt = _rt()
        layers, height, width = t.shape[:3]
        texel_bytes = t[0, 0, 0].numel() * t.element_size()
        if layers > self.extent[0] or height > self.extent[1] or width > self.extent[2]:
            raise RuntimeError(f"CUDA–GL interop: the texture holds {self.extent} "
                               f"(layers, height, width) texels, too few for {tuple(t.shape[:3])}")
        stream = _stream()
        self.map(stream)
        try:
            array = _check(rt.cudaGraphicsSubResourceGetMappedArray(self.resource, 0, 0))
            p = rt.cudaMemcpy3DParms()
            pitched = rt.make_cudaPitchedPtr(t.data_ptr(), width * texel_bytes, width, height)
            if to_texture:
                p.srcPtr, p.dstArray, p.dstPos = pitched, array, rt.make_cudaPos(0, 0, 0)
            else:
                p.srcArray, p.srcPos, p.dstPtr = array, rt.make_cudaPos(0, 0, 0), pitched
            p.extent = rt.make_cudaExtent(width, height, layers)
            p.kind = rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice
            _check(rt.cudaMemcpy3DAsync(p, stream))
        finally:
            self.unmap(stream)


class RegisteredTexture2D(_Registered):
    """A ``GL_TEXTURE_2D`` that torch writes into (registered write-discard): the frame texture of
    ``diffrast.viewer``.

    The texture's level 0 maps to one CUDA array; ``write`` fills it from a CUDA tensor with one
    ``cudaMemcpy2DToArrayAsync`` on torch's current stream, device to device. Mapping orders the
    copy after the GL work issued before it and unmapping orders later draws after the copy, so
    nothing waits on the host. Create it, and call ``write`` and ``release``, with the texture's
    GL context current and the tensor's CUDA device current.

    Args:
        gl_texture: name of a ``GL_TEXTURE_2D`` with storage allocated (e.g. ``GL_RGBA8``).
    """

    def __init__(self, gl_texture: int):
        rt = _rt()
        from OpenGL import GL
        flags = rt.cudaGraphicsRegisterFlags.cudaGraphicsRegisterFlagsWriteDiscard
        super().__init__(_check(rt.cudaGraphicsGLRegisterImage(int(gl_texture), GL.GL_TEXTURE_2D, flags)))

    def write(self, src: torch.Tensor) -> None:
        """Copy the contiguous CUDA tensor ``src`` of shape ``[H, W, C]`` into texels ``[0, W)``
        by ``[0, H)`` of level 0; row ``i`` of ``src`` becomes texture row ``i`` (``t`` grows with
        ``i``). ``C`` times the element size must equal the texel size of the texture's format
        (4 bytes for ``GL_RGBA8`` with ``uint8``), and ``W``, ``H`` must not exceed its size."""
        rt = _rt()
        height, width = int(src.shape[0]), int(src.shape[1])
        row_bytes = width * int(src.shape[2]) * src.element_size()
        stream = _stream()
        self.map(stream)
        try:
            array = _check(rt.cudaGraphicsSubResourceGetMappedArray(self.resource, 0, 0))
            _check(rt.cudaMemcpy2DToArrayAsync(array, 0, 0, src.data_ptr(), row_bytes, row_bytes, height,
                                               rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice, stream))
        finally:
            self.unmap(stream)
