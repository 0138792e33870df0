"""The example programs run end to end on the CPU and do what they claim."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))


def test_cube_fitting_recovers_the_shape(tmp_path):
    import cube
    # 80 steps at 48x48 take seconds; the vertex error must fall at least 10-fold (it starts at
    # ~0.21 — a fifth of the half-size 0.5 — and a solve that only fits colours stays there).
    img0, img1, vtx0, vtx1 = cube.main(["--iterations", "80", "--resolution", "48", "--device", "cpu",
                                        "--outdir", str(tmp_path)])
    assert img1 < img0 / 10
    assert vtx1 < vtx0 / 10
    for name in ("target.png", "initial.png", "final.png"):
        with open(tmp_path / name, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
