"""``get_log_level`` / ``set_log_level`` (nvdiffrast's API) and what diffrast reports at Info."""
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import diffrast as dr
from diffrast.log import size_text

GL_CONTEXT = "import diffrast as dr; ctx = dr.RasterizeGLContext(device='cpu')"


@pytest.fixture(autouse=True)
def _restore_level():
    saved = dr.get_log_level()
    yield
    dr.set_log_level(saved)


def _python(code):
    """Run ``code`` in a fresh interpreter (no GPU, no display); ``(stdout, stderr)``."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env.update(CUDA_VISIBLE_DEVICES="", PYOPENGL_PLATFORM="egl")
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    return run.stdout, run.stderr


def _triangle(batch=1):
    pos = torch.tensor([[[-0.8, -0.8, 0.0, 1.0], [0.8, -0.8, 0.0, 1.0], [0.0, 0.8, 0.0, 1.0]]])
    return pos.expand(batch, 3, 4).contiguous(), torch.tensor([[0, 1, 2]], dtype=torch.int32)


def test_default_level_is_warning_as_in_nvdiffrast():
    out, _ = _python("import logging, diffrast as dr; "
                     "print(dr.get_log_level(), logging.getLogger('diffrast').level)")
    assert out.split() == ["1", str(logging.WARNING)]


@pytest.mark.parametrize("level, enabled, silent", [
    (0, logging.INFO, logging.DEBUG),
    (1, logging.WARNING, logging.INFO),
    (2, logging.ERROR, logging.WARNING),
    (3, logging.CRITICAL, logging.ERROR),
    (-1, logging.INFO, logging.DEBUG),
    (4, None, logging.CRITICAL),
])
def test_levels_follow_torchs_cpp_convention(level, enabled, silent):
    dr.set_log_level(level)
    assert dr.get_log_level() == level
    logger = logging.getLogger("diffrast")
    if enabled is not None:
        assert logger.isEnabledFor(enabled)
    assert not logger.isEnabledFor(silent)


def test_level_takes_integers_only():
    dr.set_log_level(torch.tensor(0))
    assert dr.get_log_level() == 0
    dr.set_log_level(np.int64(2))
    assert dr.get_log_level() == 2 and type(dr.get_log_level()) is int
    for bad in (1.0, "0", True, None, torch.tensor(1.0)):
        with pytest.raises(TypeError, match="level must be an int"):
            dr.set_log_level(bad)
    assert dr.get_log_level() == 2


def test_size_text():
    assert [size_text(n) for n in (0, 268, 1024, 24 * 1024, 3 * 2**20 + 2**19, 5 * 2**40)] == \
        ["0 bytes", "268 bytes", "1.0 KiB", "24.0 KiB", "3.5 MiB", "5120.0 GiB"]


def test_info_reports_the_context_and_each_growth_of_its_buffers_never_a_call(caplog):
    caplog.set_level(logging.DEBUG, logger="diffrast")
    dr.set_log_level(0)
    ctx = dr.RasterizeGLContext(device="cpu")
    created = [r.getMessage() for r in caplog.records]
    assert len(created) == 1 and caplog.records[0].levelno == logging.INFO
    assert created[0].startswith("RasterizeGLContext on cpu: ") and ctx.renderer in created[0]
    assert "OpenGL 4." in created[0] and "layers per batch" in created[0]

    caplog.clear()
    pos, tri = _triangle(3)
    dr.rasterize(ctx, pos, tri, (64, 32))
    assert [r.getMessage() for r in caplog.records] == [  # 3 x 64 x 32 x (id + 2 depths) x 4 B
        "OpenGL render targets allocated at 64 x 32 pixels, 3 layer(s): 72.0 KiB",
        # positions (144 B) padded to 256 B, then the triangle (12 B)
        "OpenGL geometry buffer (positions and triangles) grown to 268 bytes"]

    caplog.clear()  # the same call again, a smaller one, and peeling within the targets
    dr.rasterize(ctx, pos, tri, (64, 32))
    dr.rasterize(ctx, pos[:1], tri, (16, 16))
    with dr.DepthPeeler(ctx, pos, tri, (64, 32)) as peeler:
        peeler.rasterize_next_layer()
    assert caplog.records == []

    dr.rasterize(ctx, pos, tri, (128, 32))  # taller: the targets grow, the geometry does not
    assert [r.getMessage() for r in caplog.records] == [
        "OpenGL render targets allocated at 128 x 32 pixels, 3 layer(s): 144.0 KiB"]
    ctx.release()


def test_warning_level_reports_nothing_of_this(caplog):
    caplog.set_level(logging.DEBUG, logger="diffrast")
    dr.set_log_level(1)
    ctx = dr.RasterizeGLContext(device="cpu")
    pos, tri = _triangle()
    dr.rasterize(ctx, pos, tri, (32, 32))
    ctx.release()
    assert caplog.records == []


def test_printed_to_stderr_where_the_application_configures_no_logging():
    _, err = _python(GL_CONTEXT)
    assert err == ""
    _, err = _python("import diffrast as dr; dr.set_log_level(0); "
                     "ctx = dr.RasterizeGLContext(device='cpu')")
    assert err.startswith("diffrast INFO: RasterizeGLContext on cpu: ") and err.count("\n") == 1


def test_an_applications_logging_configuration_gets_the_records_once():
    out, err = _python("import logging, sys; "
                       "logging.basicConfig(stream=sys.stdout, format='%(name)s|%(message)s'); "
                       "import diffrast as dr; dr.set_log_level(0); "
                       "ctx = dr.RasterizeGLContext(device='cpu')")
    assert err == ""
    assert out.startswith("diffrast|RasterizeGLContext on cpu: ") and out.count("\n") == 1


@pytest.mark.gpu
def test_cuda_context_reports_its_device(caplog):
    caplog.set_level(logging.DEBUG, logger="diffrast")
    dr.set_log_level(0)
    dr.RasterizeCudaContext()
    messages = [r.getMessage() for r in caplog.records
                if not r.getMessage().startswith("CUDA module ")]  # (a first use compiles)
    assert len(messages) == 1
    assert messages[0].startswith(f"RasterizeCudaContext on cuda:{torch.cuda.current_device()}: "
                                  f"{torch.cuda.get_device_name()}, ")


def test_info_reports_a_cuda_modules_first_use(caplog, monkeypatch):
    """The loader reports each kernel module it compiles (or loads from CuPy's cache) with the
    time it took, once per module and device; here with a stand-in for CuPy."""
    import contextlib
    import types

    from diffrast.cuda_ops import loader

    built = []

    class RawModule:
        def __init__(self, code, options):
            self.code = code

        def compile(self):
            built.append(self.code)

    fake = types.SimpleNamespace(RawModule=RawModule,
                                 cuda=types.SimpleNamespace(Device=contextlib.nullcontext))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setattr(loader, "_modules", {})
    caplog.set_level(logging.DEBUG, logger="diffrast")
    dr.set_log_level(0)
    mod = loader._module("interpolate_forward", 3)
    assert built == [loader.source("interpolate_forward")] and mod.code == built[0]
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and caplog.records[0].levelno == logging.INFO
    assert messages[0].startswith("CUDA module interpolate_forward ready on cuda:3 in ")
    assert loader._module("interpolate_forward", 3) is mod and len(caplog.records) == 1
