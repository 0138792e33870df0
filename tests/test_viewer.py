"""diffrast.viewer: frames reach the window pixel for pixel, the camera follows the mouse, the
viewer coexists with RasterizeGLContext in one process, closing leaves nothing behind, and a
missing display is reported clearly.

The window tests run under a private Xvfb server started by the ``xdisplay`` fixture (skipped only
where Xvfb is not installed); the GL in it is Mesa's llvmpipe. The ``gpu`` tests check the CUDA
path: the CUDA–GL texture interop needs no display; showing CUDA frames needs a display
(``DISPLAY``, else a private Xvfb).
"""
import ctypes
import ctypes.util
import os
import select
import shutil
import subprocess
import sys
import textwrap
import time

import pytest
import torch

XVFB = shutil.which("Xvfb")


# ------------------------------------------------------------------------------------------------
# Xvfb and X11 helpers
# ------------------------------------------------------------------------------------------------

def _children(pid=None):
    """Pids of the live child processes of ``pid`` (default: this process)."""
    pid = os.getpid() if pid is None else pid
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            kids.append(int(entry))
    return kids


def _die_with_parent():
    """A ``preexec_fn`` that makes the child get SIGTERM when this process dies (Linux
    ``PR_SET_PDEATHSIG``), so a test process that crashes or is killed, skipping the fixture's
    teardown, leaves no Xvfb behind. Resolved before the fork; None where unavailable."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    return lambda: prctl(1, 15, 0, 0, 0)  # PR_SET_PDEATHSIG, SIGTERM


def _start_xvfb():
    """Start Xvfb on a display number it picks itself (``-displayfd``: no race with other servers)
    and wait for its socket. Returns ``(process, ':N')``."""
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(
        [XVFB, "-displayfd", str(write_fd), "-screen", "0", "1024x768x24", "-nolisten", "tcp"],
        pass_fds=(write_fd,), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent())
    os.close(write_fd)
    try:
        number = b""
        deadline = time.monotonic() + 10
        while not number.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([read_fd], [], [], left)[0]:
                raise RuntimeError("Xvfb did not report its display number within 10 s")
            chunk = os.read(read_fd, 64)
            if not chunk:
                raise RuntimeError(f"Xvfb exited with status {proc.wait()} before starting")
            number += chunk
        n = int(number)
        socket = f"/tmp/.X11-unix/X{n}"
        while not os.path.exists(socket):
            if time.monotonic() > deadline:
                raise RuntimeError(f"Xvfb :{n} did not create {socket}")
            time.sleep(0.01)
        return proc, f":{n}"
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        os.close(read_fd)


def _stop_xvfb(proc):
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def xdisplay():
    """A private Xvfb server; DISPLAY points at it for the module's tests. After them the server
    is terminated and must leave no child process behind."""
    if XVFB is None:
        pytest.skip("Xvfb is not installed (apt-get install xvfb); the window tests need it")
    # Children that other tests left on purpose (multiprocessing's resource tracker) are not ours.
    before = set(_children())
    proc, display = _start_xvfb()
    saved = {k: os.environ.get(k) for k in ("DISPLAY", "WAYLAND_DISPLAY")}
    os.environ["DISPLAY"] = display
    os.environ.pop("WAYLAND_DISPLAY", None)
    try:
        yield display
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        _stop_xvfb(proc)
        assert proc.returncode is not None
        assert set(_children()) - before == set(), "processes left behind after the viewer tests"


class _X11:
    """A second client connection to the X server (libX11 through ctypes) to count top-level
    windows and, where libXtst exists, to send real mouse events."""

    def __init__(self, display):
        self.lib = ctypes.CDLL(ctypes.util.find_library("X11") or "libX11.so.6")
        self.lib.XOpenDisplay.restype = ctypes.c_void_p
        self.lib.XOpenDisplay.argtypes = [ctypes.c_char_p]
        self.lib.XDefaultRootWindow.restype = ctypes.c_ulong
        self.lib.XDefaultRootWindow.argtypes = [ctypes.c_void_p]
        self.lib.XQueryTree.argtypes = [ctypes.c_void_p, ctypes.c_ulong] + [ctypes.c_void_p] * 4
        self.lib.XFree.argtypes = [ctypes.c_void_p]
        self.lib.XSync.argtypes = [ctypes.c_void_p, ctypes.c_int]
        self.lib.XCloseDisplay.argtypes = [ctypes.c_void_p]
        self.dpy = self.lib.XOpenDisplay(display.encode())
        assert self.dpy, f"cannot connect to {display}"

    def top_level_windows(self) -> int:
        root, parent = ctypes.c_ulong(), ctypes.c_ulong()
        children, n = ctypes.POINTER(ctypes.c_ulong)(), ctypes.c_uint()
        self.lib.XSync(self.dpy, 0)
        assert self.lib.XQueryTree(self.dpy, self.lib.XDefaultRootWindow(self.dpy), ctypes.byref(root),
                                   ctypes.byref(parent), ctypes.byref(children), ctypes.byref(n))
        if children:
            self.lib.XFree(children)
        return n.value

    def xtest(self):
        name = ctypes.util.find_library("Xtst")
        if name is None:
            return None
        tst = ctypes.CDLL(name)
        tst.XTestFakeMotionEvent.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                             ctypes.c_ulong]
        tst.XTestFakeButtonEvent.argtypes = [ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_ulong]
        return tst

    def close(self):
        self.lib.XCloseDisplay(self.dpy)


# ------------------------------------------------------------------------------------------------
# Test images
# ------------------------------------------------------------------------------------------------

def _test_image(h, w, c=3, seed=0):
    """A float image in [0, 1]: horizontal and vertical gradients plus colour blocks in three
    corners, so a flip, a transpose or an offset shows."""
    y = torch.linspace(0, 1, h)[:, None].expand(h, w)
    x = torch.linspace(0, 1, w)[None, :].expand(h, w)
    img = torch.stack([x, y, 1 - x * y * (seed + 1) / (seed + 2)] + [torch.full((h, w), 0.5)] * (c - 3), -1)
    img = img.clone()
    img[: h // 4, : w // 4, :3] = torch.tensor([1.0, 0.0, 0.0])     # bottom left: red
    img[-(h // 4):, : w // 5, :3] = torch.tensor([0.0, 1.0, 0.0])   # top left: green
    img[-(h // 3):, -(w // 4):, :3] = torch.tensor([0.0, 0.0, 1.0])  # top right: blue
    return img


def _quantised(img):
    return torch.round(img.clamp(0, 1) * 255).to(torch.uint8)


# ------------------------------------------------------------------------------------------------
# Frames: pure torch, no display
# ------------------------------------------------------------------------------------------------

def test_frame_quantises_pads_and_tiles_with_item_0_top_left():
    from diffrast.viewer import frame_from_image, grid_shape
    img = _test_image(5, 7)
    f = frame_from_image(img)
    assert f.shape == (5, 7, 4) and f.dtype == torch.uint8
    assert torch.equal(f[..., :3], _quantised(img)) and (f[..., 3] == 255).all()
    assert torch.equal(frame_from_image(_quantised(img))[..., :3], _quantised(img))
    grey = frame_from_image(torch.full((2, 3, 1), 0.5))
    assert (grey[..., :3] == 128).all()
    assert grid_shape(1) == (1, 1) and grid_shape(2) == (1, 2) and grid_shape(3) == (2, 2)
    assert grid_shape(5) == (2, 3)
    batch = torch.stack([_test_image(5, 7, seed=i) for i in range(3)])
    g = frame_from_image(batch)
    assert g.shape == (10, 14, 4)
    q = _quantised(batch)
    assert torch.equal(g[5:, :7, :3], q[0])   # top row of the grid is the upper half (bottom-up)
    assert torch.equal(g[5:, 7:, :3], q[1])
    assert torch.equal(g[:5, :7, :3], q[2])
    assert (g[:5, 7:, :3] == 0).all() and (g[..., 3] == 255).all()
    nan = frame_from_image(torch.tensor([[[float("nan"), 2.0, -1.0]]]))
    assert nan[0, 0, :3].tolist() == [0, 255, 0]


def test_frame_rejects_bad_images():
    from diffrast.viewer import frame_from_image
    with pytest.raises(ValueError, match="image must be"):
        frame_from_image(torch.zeros(4, 4))
    with pytest.raises(ValueError, match="channels"):
        frame_from_image(torch.zeros(4, 4, 2))
    with pytest.raises(ValueError, match="empty"):
        frame_from_image(torch.zeros(0, 4, 3))
    with pytest.raises(TypeError, match="dtype"):
        frame_from_image(torch.zeros(4, 4, 3, dtype=torch.int32))
    with pytest.raises(TypeError, match="torch.Tensor"):
        frame_from_image([[0.0, 0.0, 0.0]])


def test_fit_viewport():
    from diffrast.viewer import fit_viewport
    assert fit_viewport((53, 37), (53, 37)) == (0, 0, 53, 37)
    assert fit_viewport((30, 20), (750, 500)) == (0, 0, 750, 500)
    assert fit_viewport((10, 10), (30, 20)) == (5, 0, 20, 20)


# ------------------------------------------------------------------------------------------------
# Camera: no display
# ------------------------------------------------------------------------------------------------

def test_orbit_camera_matrices():
    from diffrast import geometry
    from diffrast.viewer import OrbitCamera
    cam = OrbitCamera(distance=4.0)
    v = cam.view_matrix()
    assert v.dtype == torch.float32 and v.shape == (4, 4)
    assert torch.allclose(v, geometry.translate(0, 0, -4.0))
    assert torch.allclose(cam.projection_matrix(1.5), geometry.perspective(45.0, 1.5, 0.1, 100.0))
    assert torch.allclose(cam.mvp(), geometry.perspective(45.0, 1.0, 0.1, 100.0) @ v)
    assert torch.allclose(cam.eye(), torch.tensor([0.0, 0.0, 4.0]))
    version = cam.version
    cam.drag(100, 0)  # right: yaw grows by 100 * rotate_speed
    assert cam.yaw == pytest.approx(1.0) and cam.version > version
    assert torch.allclose(cam.view_matrix(), geometry.translate(0, 0, -4.0) @ geometry.rotate_y(1.0), atol=1e-6)
    assert cam.eye().norm().item() == pytest.approx(4.0, rel=1e-5)
    cam.drag(0, 1e6)  # pitch is clamped short of the pole
    assert cam.pitch == pytest.approx(torch.pi / 2 * 89 / 90)
    cam.zoom(2)
    assert cam.distance == pytest.approx(4.0 * 0.81)
    cam.zoom(-1e6)
    assert cam.distance == cam.max_distance
    cam.reset()
    assert (cam.distance, cam.yaw, cam.pitch) == (4.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="distance"):
        OrbitCamera(distance=0)


# ------------------------------------------------------------------------------------------------
# Windows under Xvfb
# ------------------------------------------------------------------------------------------------

def test_uint8_image_is_shown_exactly_and_upright(xdisplay):
    from diffrast.viewer import Viewer
    img = _quantised(_test_image(37, 53))  # odd, non-square; rows bottom-up
    with Viewer(width=53, height=37, title="test") as v:
        assert v.is_open and v.context_api.split()[0] in ("EGL", "native")
        if not os.path.exists("/proc/driver/nvidia"):  # Mesa alone: the EGL context must work
            assert v.context_api == "EGL OpenGL 4.5 core", v.context_api
        assert v.show(img, "iteration 1, loss 0.5")
        assert v.framebuffer_size == (53, 37) and v.frame_size == (53, 37)
        assert v.upload_path == "host"
        px = v.read_pixels()
        assert px.shape == (37, 53, 3)
        assert torch.equal(px, img)
        assert px[0, 0].tolist() == [255, 0, 0] and px[-1, 0].tolist() == [0, 255, 0]  # upright
    assert not v.is_open
    assert v.show(img) is False  # closed: does nothing


def test_float_images_batches_and_channels(xdisplay):
    from diffrast.viewer import Viewer
    a, b = _test_image(29, 41, c=4, seed=0), _test_image(29, 41, c=4, seed=1)
    with Viewer(width=82, height=29) as v:
        assert v.show(torch.stack([a, b]))  # a batch of 2: side by side, item 0 on the left
        px = v.read_pixels()
        assert torch.equal(px[:, :41], _quantised(a[..., :3]))
        assert torch.equal(px[:, 41:], _quantised(b[..., :3]))
        grey = torch.rand(29, 82, 1, dtype=torch.float64)
        assert v.show(grey)
        assert torch.equal(v.read_pixels(), _quantised(grey).expand(29, 82, 3))


def test_window_sized_from_the_first_frame_at_an_integer_scale(xdisplay):
    from diffrast.viewer import Viewer
    img = _test_image(20, 30)
    with Viewer() as v:
        assert v.show(img)
        assert v.framebuffer_size == (750, 500)  # 25x: the longer side at most 768
        px = v.read_pixels()
        expect = _quantised(img).repeat_interleave(25, 0).repeat_interleave(25, 1)
        assert torch.equal(px, expect)
        # A frame of another size is letterboxed: 10x10 in 750x500 -> 500x500 centred, 50x each.
        small = _test_image(10, 10)
        assert v.show(small)
        px = v.read_pixels()
        assert torch.equal(px[:, 125:625], _quantised(small).repeat_interleave(50, 0).repeat_interleave(50, 1))
        assert (px[:, :125] == px[0, 0]).all() and px[0, 0].tolist() == [31, 31, 31]


def test_mouse_callbacks_drive_the_camera(xdisplay):
    import glfw
    from diffrast.viewer import Viewer
    with Viewer(width=64, height=48) as v:
        v.show(_test_image(48, 64))
        mvp0, view0 = v.camera.mvp(), v.camera.view_matrix()
        # The glfw callbacks the viewer installed, called as glfw calls them.
        x0, y0 = glfw.get_cursor_pos(v._window)
        v._on_mouse_button(v._window, glfw.MOUSE_BUTTON_LEFT, glfw.PRESS, 0)
        v._on_cursor_pos(v._window, x0 + 30, y0 + 10)
        v._on_mouse_button(v._window, glfw.MOUSE_BUTTON_LEFT, glfw.RELEASE, 0)
        v._on_cursor_pos(v._window, x0 + 60, y0 + 60)  # not dragging any more: no effect
        assert v.camera.yaw == pytest.approx(0.3) and v.camera.pitch == pytest.approx(0.1)
        view1 = v.camera.view_matrix()
        assert not torch.allclose(view1, view0)
        v._on_scroll(v._window, 0.0, 3.0)
        assert v.camera.distance == pytest.approx(3.5 * 0.9 ** 3)
        assert not torch.allclose(v.camera.mvp(), mvp0)
        assert torch.allclose(v.camera.view_matrix()[:3, :3], view1[:3, :3])  # zoom keeps the rotation
        v._on_key(v._window, glfw.KEY_R, 0, glfw.PRESS, 0)
        assert torch.allclose(v.camera.mvp(), mvp0)
        v._on_key(v._window, glfw.KEY_ESCAPE, 0, glfw.PRESS, 0)
        assert v.show(_test_image(48, 64)) is False and not v.is_open


def test_real_x_mouse_events_drive_the_camera(xdisplay):
    import glfw
    from diffrast.viewer import Viewer
    x11 = _X11(xdisplay)
    try:
        tst = x11.xtest()
        if tst is None:
            pytest.skip("libXtst is not installed: cannot send X input events")
        with Viewer(width=200, height=150) as v:
            v.show(_test_image(150, 200))
            wx, wy = glfw.get_window_pos(v._window)
            tst.XTestFakeMotionEvent(x11.dpy, -1, wx + 50, wy + 50, 0)
            tst.XTestFakeButtonEvent(x11.dpy, 1, 1, 0)
            tst.XTestFakeMotionEvent(x11.dpy, -1, wx + 90, wy + 70, 0)
            tst.XTestFakeButtonEvent(x11.dpy, 1, 0, 0)
            tst.XTestFakeButtonEvent(x11.dpy, 4, 1, 0)  # wheel up: one step closer
            tst.XTestFakeButtonEvent(x11.dpy, 4, 0, 0)
            x11.lib.XSync(x11.dpy, 0)
            deadline = time.monotonic() + 5
            while v.camera.distance == 3.5 and time.monotonic() < deadline:
                assert v.poll()
                time.sleep(0.01)
            assert v.camera.yaw == pytest.approx(0.4) and v.camera.pitch == pytest.approx(0.2)
            assert v.camera.distance == pytest.approx(3.5 * 0.9)
    finally:
        x11.close()


def test_coexists_with_rasterize_contexts(xdisplay):
    """render, show, render again, show — with an automatic- and a manual-mode context."""
    import diffrast as dr
    from OpenGL import EGL
    from diffrast import geometry
    from diffrast.gl_backend.egl import handle_value
    from diffrast.viewer import Viewer
    pos, tri = geometry.cube()
    col = torch.rand(8, 3, generator=torch.Generator().manual_seed(0))
    for mode in ("automatic", "manual"):
        glctx = dr.RasterizeGLContext(device="cpu", mode=mode)
        if mode == "manual":
            glctx.set_context()
            ours = handle_value(EGL.eglGetCurrentContext())
        try:
            with Viewer(width=62, height=31) as v:
                images = []
                for it in range(2):
                    clip = geometry.transform(pos * 0.5, v.camera.mvp(aspect=31 / 31))
                    rast, _ = dr.rasterize(glctx, clip[None].expand(2, -1, -1).contiguous(), tri, (31, 31))
                    img, _ = dr.interpolate(col, rast, tri)
                    images.append(img)
                    assert v.show(img, f"{mode} {it}")
                    assert torch.equal(v.read_pixels(), torch.cat([_quantised(img[0]), _quantised(img[1])], 1))
                    if mode == "manual":  # the viewer restored the manual-mode context
                        assert handle_value(EGL.eglGetCurrentContext()) == ours
                    else:
                        assert handle_value(EGL.eglGetCurrentContext()) == 0
                    v.camera.drag(40, 0)
                assert (images[0][..., :3] > 0).any() and not torch.equal(images[0], images[1])
            clip = geometry.transform(pos * 0.5, v.camera.mvp())
            rast_after, _ = dr.rasterize(glctx, clip[None], tri, (31, 31))  # still works after close
            assert (rast_after[..., 3] > 0).any()
        finally:
            if mode == "manual":
                glctx.release_context()
            glctx.release()


def test_native_glx_context_fallback_coexists(xdisplay, monkeypatch):
    """Where EGL windows fail, the viewer takes a GLX context; switching between it and diffrast's
    EGL context on one thread still works because the viewer releases its context after each
    call."""
    import diffrast as dr
    import diffrast.viewer as viewer
    from diffrast.viewer import window
    monkeypatch.setattr(window, "_CONTEXT_ATTEMPTS", (("native", 3, 3),))
    glctx = dr.RasterizeGLContext(device="cpu", mode="manual")
    glctx.set_context()
    try:
        pos = torch.tensor([[[-0.8, -0.8, 0.0, 1.0], [0.8, -0.8, 0.0, 1.0], [0.0, 0.8, 0.0, 1.0]]])
        tri = torch.tensor([[0, 1, 2]], dtype=torch.int32)
        with viewer.Viewer(width=33, height=21) as v:
            assert v.context_api == "native OpenGL 3.3 core"
            for _ in range(2):
                rast, _ = dr.rasterize(glctx, pos, tri, (21, 33))
                assert v.show(rast[0, ..., :3])
                assert torch.equal(v.read_pixels(), _quantised(rast[0, ..., :3]))
    finally:
        glctx.release_context()
        glctx.release()


def test_close_leaves_no_window_context_or_process(xdisplay):
    import diffrast.viewer as viewer
    from OpenGL import EGL
    from diffrast.gl_backend.egl import handle_value
    from diffrast.viewer import window
    x11 = _X11(xdisplay)
    try:
        before = x11.top_level_windows()
        kids = _children()
        v = viewer.Viewer(width=40, height=30, title="closing")
        v2 = viewer.Viewer(width=40, height=30, title="second")
        assert x11.top_level_windows() > before
        v.show(torch.zeros(30, 40, 3))
        v2.show(torch.ones(30, 40, 3))
        v.close()
        assert v2.show(torch.ones(30, 40, 3)) and v2.read_pixels().eq(255).all()
        v.close()  # twice is fine
        v2.close()
        assert not v.is_open and not v2.is_open
        assert x11.top_level_windows() == before  # windows and glfw's helper window are gone
        assert window.glfw_user_count() == 0 and not list(window.open_viewers)
        assert handle_value(EGL.eglGetCurrentContext()) == 0
        assert _children() == kids  # the viewer started no process
        # After glfw.terminate a new viewer starts from scratch.
        with viewer.Viewer(width=8, height=8, visible=False) as v3:
            assert v3.show(torch.full((8, 8, 3), 0.5))
            assert v3.read_pixels().eq(128).all()
        assert x11.top_level_windows() == before
    finally:
        x11.close()


# ------------------------------------------------------------------------------------------------
# No display: in a subprocess with a clean environment (glfw's state is process-wide)
# ------------------------------------------------------------------------------------------------

_NO_DISPLAY_SCRIPT = textwrap.dedent("""
    import os, sys
    from diffrast.viewer import NoDisplayError, Viewer, maybe_viewer
    try:
        Viewer()
    except NoDisplayError as e:
        assert isinstance(e, RuntimeError)
        print("UNSET:", e)
    assert maybe_viewer(False) is None
    assert maybe_viewer(True) is None
    os.environ["DISPLAY"] = sys.argv[1]  # a display number no server listens on
    try:
        Viewer()
    except NoDisplayError as e:
        print("DEAD:", e)
    assert maybe_viewer(True) is None
    print("DONE")
""")


def test_no_display_raises_a_clear_error():
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    n = next(n for n in range(990, 1100) if not os.path.exists(f"/tmp/.X11-unix/X{n}")
             and not os.path.exists(f"/tmp/.X{n}-lock"))
    r = subprocess.run([sys.executable, "-c", _NO_DISPLAY_SCRIPT, f":{n}"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    unset = next(line for line in lines if line.startswith("UNSET:"))
    assert "DISPLAY" in unset and "headless" in unset and "xvfb-run" in unset
    dead = next(line for line in lines if line.startswith("DEAD:"))
    assert f":{n}" in dead and "xvfb-run" in dead
    assert lines[-1] == "DONE"
    assert r.stderr.count("continuing headless") == 2  # maybe_viewer's note, once per fallback


# ------------------------------------------------------------------------------------------------
# CUDA (run with `python -m pytest -m gpu tests/test_viewer.py` on a GPU machine)
# ------------------------------------------------------------------------------------------------

@pytest.mark.gpu
def test_texture_interop_writes_cuda_frames():
    """RegisteredTexture2D (the viewer's CUDA path) on NVIDIA's headless EGL: a CUDA frame lands
    in a GL texture device to device, exactly. Needs no display."""
    from OpenGL import GL
    from diffrast.gl_backend.egl import EGLContext
    from diffrast.gl_backend.interop import RegisteredTexture2D
    from diffrast.viewer import frame_from_image
    dev = torch.device("cuda", torch.cuda.current_device())
    torch.zeros(1, device=dev)
    frame = frame_from_image(torch.stack([_test_image(37, 53, seed=i) for i in range(3)]).to(dev))
    h, w = frame.shape[:2]
    egl = EGLContext(dev.index)
    egl.make_current()
    try:
        tex = GL.glGenTextures(1)
        GL.glBindTexture(GL.GL_TEXTURE_2D, tex)
        GL.glTexImage2D(GL.GL_TEXTURE_2D, 0, GL.GL_RGBA8, w, h, 0, GL.GL_RGBA, GL.GL_UNSIGNED_BYTE, None)
        reg = RegisteredTexture2D(tex)
        reg.write(frame)
        GL.glPixelStorei(GL.GL_PACK_ALIGNMENT, 1)
        GL.glBindTexture(GL.GL_TEXTURE_2D, tex)
        data = GL.glGetTexImage(GL.GL_TEXTURE_2D, 0, GL.GL_RGBA, GL.GL_UNSIGNED_BYTE)
        import numpy as np
        back = torch.from_numpy(np.frombuffer(data, np.uint8).reshape(h, w, 4).copy())
        assert torch.equal(back, frame.cpu())
        reg.release()
        GL.glDeleteTextures(1, [tex])
    finally:
        egl.release()
        egl.destroy()


@pytest.fixture
def any_display():
    """The session's display if DISPLAY is set, else a private Xvfb; skip if neither exists."""
    if os.environ.get("DISPLAY"):
        yield os.environ["DISPLAY"]
        return
    if XVFB is None:
        pytest.skip("needs a display: DISPLAY is unset and Xvfb is not installed")
    proc, display = _start_xvfb()
    os.environ["DISPLAY"] = display
    try:
        yield display
    finally:
        os.environ.pop("DISPLAY", None)
        _stop_xvfb(proc)


@pytest.mark.gpu
def test_viewer_shows_cuda_frames(any_display):
    """A CUDA frame reaches the window exactly: through CUDA–GL interop when the window's OpenGL
    is NVIDIA's (an X server on the NVIDIA driver), through host memory otherwise (Xvfb: Mesa)."""
    from diffrast.viewer import Viewer
    img = torch.stack([_test_image(37, 53, seed=i) for i in range(2)]).cuda()
    with Viewer(width=106, height=37) as v:
        for _ in range(2):  # the second frame reuses the registration
            assert v.show(img)
            assert torch.equal(v.read_pixels(), torch.cat([_quantised(img[0]), _quantised(img[1])], 1).cpu())
        nvidia = "NVIDIA" in v.vendor.upper()
        print(f"viewer: {v.context_api} on {v.renderer}; CUDA frames via {v.upload_path}")
        assert v.upload_path == ("interop" if nvidia else "host")
