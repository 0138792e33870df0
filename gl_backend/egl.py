"""Headless EGL: pick a device, open its display, create an OpenGL 4.5 core context.

With a CUDA device wanted, the EGL device whose ``EGL_CUDA_DEVICE_NV`` equals its ordinal is used
(NVIDIA's driver). Without one, Mesa's software device (llvmpipe), surfaceless. The extension
entry points are taken from ``eglGetProcAddress`` with ctypes: PyOpenGL's wrappers query the
extension string of an uninitialised display first, which NVIDIA's EGL refuses.

The thread-binding helpers (:func:`current_binding`, :func:`release_current`,
:func:`restore_binding`, :func:`handle_value`) work on whichever EGL context is current, diffrast's
or another one: ``diffrast.viewer`` saves and restores the caller's context with them.
"""
from __future__ import annotations

import ctypes
import os

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

_INSTALL_HINT = (
    "diffrast renders through headless EGL/OpenGL. On Debian/Ubuntu install the loader and Mesa's "
    "software driver with `apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri libgles2`; on an "
    "NVIDIA machine the driver's EGL vendor library must be visible to libglvnd (set "
    "__EGL_VENDOR_LIBRARY_FILENAMES to its 10_nvidia.json if it is not in a standard place), and "
    "PYOPENGL_PLATFORM must be 'egl' (diffrast sets it when it is unset)."
)

EGL_CUDA_DEVICE_NV = 0x323A
EGL_PLATFORM_DEVICE_EXT = 0x313F
EGL_EXTENSIONS = 0x3055
EGL_CONTEXT_OPENGL_PROFILE_MASK = 0x30FD
EGL_CONTEXT_OPENGL_CORE_PROFILE_BIT = 1


class EGLError(RuntimeError):
    """EGL could not be initialised or used; the message says what is missing."""


def load_egl():
    """PyOpenGL's EGL bindings, loading libEGL on first use.

    Returns:
        The ``OpenGL.EGL`` module.

    Raises:
        EGLError: libEGL (or PyOpenGL's EGL support) could not be loaded; the message says what
            to install.
    """
    try:
        from OpenGL import EGL  # noqa: F401  (imports libEGL through PyOpenGL)
    except Exception as exc:  # ImportError, or OSError/AttributeError when libEGL is absent
        raise EGLError(f"could not load libEGL ({exc}). {_INSTALL_HINT}") from exc
    return EGL


def handle_value(handle) -> int:
    """An EGL handle or other C pointer, as ctypes or PyOpenGL hand it out, as an int.

    Args:
        handle: ``None``, an int, a ctypes pointer or ``c_void_p``, or a PyOpenGL handle (e.g.
            what ``eglGetCurrentContext`` or ``glfw.get_current_context`` returns).

    Returns:
        The address as an int; 0 for a null handle.
    """
    if handle is None:
        return 0
    if isinstance(handle, int):
        return handle
    try:
        return ctypes.cast(handle, ctypes.c_void_p).value or 0
    except (TypeError, ctypes.ArgumentError):
        return int(getattr(handle, "value", 0) or 0)


def current_binding():
    """The EGL context current on the calling thread, with its display and surfaces.

    Returns:
        ``(display, draw_surface, read_surface, context)`` as EGL reports them (the arguments of
        ``eglMakeCurrent``, for :func:`restore_binding`), or ``None`` when no EGL context is
        current on the thread.
    """
    EGL = load_egl()
    context = EGL.eglGetCurrentContext()
    if not handle_value(context):
        return None
    return (EGL.eglGetCurrentDisplay(), EGL.eglGetCurrentSurface(EGL.EGL_DRAW),
            EGL.eglGetCurrentSurface(EGL.EGL_READ), context)


def release_current(display) -> None:
    """Unbind whatever context is current on the calling thread (``eglMakeCurrent`` with no
    context and no surfaces).

    Args:
        display: The ``EGLDisplay`` of the current context.
    """
    EGL = load_egl()
    EGL.eglMakeCurrent(display, EGL.EGL_NO_SURFACE, EGL.EGL_NO_SURFACE, EGL.EGL_NO_CONTEXT)


def restore_binding(binding) -> None:
    """Make a context that :func:`current_binding` reported current on the calling thread again.

    Args:
        binding: ``(display, draw_surface, read_surface, context)`` from :func:`current_binding`.

    Raises:
        EGLError: ``eglMakeCurrent`` failed; the message gives the EGL error code.
    """
    EGL = load_egl()
    if not EGL.eglMakeCurrent(*binding):
        raise EGLError(f"eglMakeCurrent failed (EGL error 0x{EGL.eglGetError():x})")


def _proc(EGL, name, restype, *argtypes):
    addr = handle_value(EGL.eglGetProcAddress(name.encode()))
    if not addr:
        raise EGLError(f"EGL entry point {name} is missing. {_INSTALL_HINT}")
    return ctypes.CFUNCTYPE(restype, *argtypes)(addr)


def _devices(EGL):
    query_devices = _proc(EGL, "eglQueryDevicesEXT", ctypes.c_uint, ctypes.c_int,
                          ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_int))
    devs = (ctypes.c_void_p * 32)()
    n = ctypes.c_int()
    if not query_devices(32, devs, ctypes.byref(n)) or n.value == 0:
        raise EGLError(f"EGL reports no devices. {_INSTALL_HINT}")
    return [devs[i] for i in range(n.value)]


def _choose_device(EGL, cuda_index):
    devices = _devices(EGL)
    if cuda_index is not None:
        query_attrib = _proc(EGL, "eglQueryDeviceAttribEXT", ctypes.c_uint, ctypes.c_void_p,
                             ctypes.c_int, ctypes.POINTER(ctypes.c_ssize_t))
        for dev in devices:
            value = ctypes.c_ssize_t()
            if query_attrib(dev, EGL_CUDA_DEVICE_NV, ctypes.byref(value)) and value.value == cuda_index:
                return dev
        raise EGLError(
            f"no EGL device reports CUDA device {cuda_index} (EGL_CUDA_DEVICE_NV); found "
            f"{len(devices)} EGL device(s). Is NVIDIA's EGL vendor library installed? {_INSTALL_HINT}")
    query_string = _proc(EGL, "eglQueryDeviceStringEXT", ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int)
    for dev in devices:
        ext = query_string(dev, EGL_EXTENSIONS) or b""
        if b"EGL_MESA_device_software" in ext:
            return dev
    return devices[0]


class EGLContext:
    """An OpenGL 4.5 core context on a headless EGL display, without a surface.

    Args:
        cuda_index: CUDA ordinal whose EGL device to use, or ``None`` for Mesa's software device.
    """

    def __init__(self, cuda_index: int | None):
        EGL = self._EGL = load_egl()
        get_display = _proc(EGL, "eglGetPlatformDisplayEXT", EGL.EGLDisplay, ctypes.c_uint,
                            ctypes.c_void_p, ctypes.c_void_p)
        device = _choose_device(EGL, cuda_index)
        self.display = get_display(EGL_PLATFORM_DEVICE_EXT, device, None)
        major, minor = EGL.EGLint(), EGL.EGLint()
        if not EGL.eglInitialize(self.display, ctypes.byref(major), ctypes.byref(minor)):
            raise EGLError(f"eglInitialize failed on the chosen device. {_INSTALL_HINT}")
        if not EGL.eglBindAPI(EGL.EGL_OPENGL_API):
            raise EGLError("eglBindAPI(EGL_OPENGL_API) failed: the EGL driver has no desktop OpenGL")
        attribs = (EGL.EGLint * 7)(EGL.EGL_CONTEXT_MAJOR_VERSION, 4, EGL.EGL_CONTEXT_MINOR_VERSION, 5,
                                   EGL_CONTEXT_OPENGL_PROFILE_MASK, EGL_CONTEXT_OPENGL_CORE_PROFILE_BIT,
                                   EGL.EGL_NONE)
        self.context = EGL.eglCreateContext(self.display, self._config(), EGL.EGL_NO_CONTEXT, attribs)
        if not self.context:
            raise EGLError(
                f"eglCreateContext for OpenGL 4.5 core failed (EGL error 0x{EGL.eglGetError():x}); "
                f"diffrast needs OpenGL 4.5 with EGL_KHR_surfaceless_context. {_INSTALL_HINT}")
        self.vendor = EGL.eglQueryString(self.display, EGL.EGL_VENDOR).decode()

    def _config(self):
        # A pbuffer-capable OpenGL config where the driver lists one (NVIDIA); otherwise no config
        # at all (EGL_KHR_no_config_context), which Mesa's surfaceless device accepts.
        EGL = self._EGL
        want = (EGL.EGLint * 5)(EGL.EGL_SURFACE_TYPE, EGL.EGL_PBUFFER_BIT,
                                EGL.EGL_RENDERABLE_TYPE, EGL.EGL_OPENGL_BIT, EGL.EGL_NONE)
        config, count = EGL.EGLConfig(), EGL.EGLint()
        if EGL.eglChooseConfig(self.display, want, ctypes.byref(config), 1, ctypes.byref(count)) \
                and count.value > 0:
            return config
        return EGL.EGLConfig()

    def make_current(self) -> None:
        """Bind the context to the calling thread."""
        EGL = self._EGL
        if not EGL.eglMakeCurrent(self.display, EGL.EGL_NO_SURFACE, EGL.EGL_NO_SURFACE, self.context):
            raise EGLError(
                f"eglMakeCurrent failed (EGL error 0x{EGL.eglGetError():x}): the context may be "
                "current in another thread")

    def release(self) -> None:
        """Unbind whatever context is current on the calling thread."""
        release_current(self.display)

    def destroy(self) -> None:
        """Destroy the context. The display stays initialised: EGL shares it per device."""
        if self.context:
            self._EGL.eglDestroyContext(self.display, self.context)
            self.context = None
