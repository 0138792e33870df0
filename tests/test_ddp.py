"""examples/ddp_fit.py under DistributedDataParallel (gloo, two CPU processes) equals one process."""
import os
import socket
import subprocess
import sys

import torch

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "examples", "ddp_fit.py")
ARGS = ["--device", "cpu", "--iterations", "6", "--resolution", "32", "--views", "4"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_match_one_process(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    single, multi = tmp_path / "single.pt", tmp_path / "multi.pt"
    run = subprocess.run([sys.executable, EXAMPLE, *ARGS, "--result", str(single),
                          "--outdir", str(tmp_path / "single")],
                         check=True, env=env, timeout=300, capture_output=True, text=True)
    assert "it/s]" in run.stderr or "s/it]" in run.stderr, "no progress bar: " + run.stderr
    for name in ("target.png", "initial.png", "final.png"):
        with open(tmp_path / "single" / name, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", name
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                    "--master-port", str(free_port()), EXAMPLE, *ARGS, "--backend", "gloo",
                    "--result", str(multi), "--outdir", str(tmp_path / "multi")],
                   check=True, env=env, timeout=300)
    init = tmp_path / "init.pt"
    subprocess.run([sys.executable, EXAMPLE, *ARGS[:2], "--iterations", "0", "--result", str(init),
                    "--outdir", str(tmp_path / "init")], check=True, env=env, timeout=300)
    a, b, c = torch.load(single), torch.load(multi), torch.load(init)
    assert (a["pos"] - c["pos"]).abs().max() > 1e-2, "the fit must move the vertices"
    assert torch.allclose(a["pos"], b["pos"], atol=1e-5) and torch.allclose(a["col"], b["col"], atol=1e-5)
