"""The examples with ``--display`` under ``xvfb-run -a``: a window opens, and the program exits
after its run unless ``--hold`` asks it to keep the window open (skipped without xvfb-run)."""
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples")
XVFB_RUN = shutil.which("xvfb-run")
pytestmark = pytest.mark.skipif(XVFB_RUN is None,
                                reason="xvfb-run is not installed (apt-get install xvfb xauth)")
CLOSED = "--display: the window closes at the end of the run"
HOLD = "close the window (or press Esc) to exit"

# Each example at a toy size: the README's command is the first.
RUNS = {
    "cube": ["--iterations", "12", "--resolution", "32"],
    "triangle": ["--resolution", "32"],
    "earth": ["--iterations", "3", "--resolution", "32", "--texture-size", "32", "--batch", "1"],
    "envphong": ["--iterations", "3", "--resolution", "32", "--env-size", "8", "--batch", "1"],
    "pose": ["--iterations", "3", "--resolution", "32", "--restarts", "2"],
    "render": ["--mesh", "cube", "--views", "2", "--batch", "2", "--resolution", "32"],
    "ddp_fit": ["--iterations", "12", "--resolution", "32", "--views", "2"],
}


def _start(name, args, outdir):
    env = {k: v for k, v in os.environ.items()
           if k not in ("DISPLAY", "WAYLAND_DISPLAY", "RANK", "WORLD_SIZE", "LOCAL_RANK")}
    cmd = [XVFB_RUN, "-a", sys.executable, os.path.join(EXAMPLES, f"{name}.py"), "--device",
           "cpu", "--outdir", str(outdir), "--display", *args]
    # A session of its own, so that the whole group (xvfb-run, Xvfb, python) can be ended.
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)


def _end(proc):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        return proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.communicate()


@pytest.mark.parametrize("name", list(RUNS))
def test_display_run_ends_by_itself(name, tmp_path):
    proc = _start(name, RUNS[name], tmp_path)
    try:
        out, err = proc.communicate(timeout=240)
    finally:
        _end(proc)
    assert proc.returncode == 0, err[-3000:]
    assert CLOSED in out, f"no window was shown:\n{out}\n{err[-3000:]}"
    assert HOLD not in out
    assert any(f.endswith(".png") for f in os.listdir(tmp_path))


def test_hold_keeps_the_window_open_until_it_is_closed(tmp_path):
    proc = _start("triangle", ["--resolution", "32", "--hold"], tmp_path)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "triangle.png").exists() and proc.poll() is None:
            assert time.monotonic() < deadline, "triangle.py wrote no image within 120 s"
            time.sleep(0.2)
        time.sleep(3)  # the window waits for the user: the program must still be running
        assert proc.poll() is None, "triangle.py --hold ended without the window being closed"
    finally:
        out, err = _end(proc)
    assert HOLD in out, f"{out}\n{err[-3000:]}"
