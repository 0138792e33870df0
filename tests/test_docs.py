"""The API reference (Sphinx, ``docs/``) builds from the docstrings without a warning and covers
every public name."""
import os
import subprocess
import sys

import pytest

import diffrast as dr

DOCS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs")


def test_api_reference_builds_without_warnings_and_covers_the_api(tmp_path):
    pytest.importorskip("sphinx")
    run = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b",
                          "html", DOCS, str(tmp_path)], capture_output=True, text=True,
                         env=dict(os.environ, PYOPENGL_PLATFORM="egl"), timeout=300)
    assert run.returncode == 0 and not run.stderr.strip(), run.stdout + run.stderr
    api = (tmp_path / "api.html").read_text(encoding="utf-8")
    missing = [name for name in dr.__all__
               if f'id="diffrast.{name}"' not in api and f'id="module-diffrast.{name}"' not in api]
    assert not missing, f"not in the API reference: {missing}"
