import os

import pytest
import torch

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")


@pytest.fixture
def deterministic():
    """Call with True/False to set diffrast's deterministic mode for the test; restored after."""
    import diffrast as dr
    saved = dr.is_deterministic()
    yield dr.set_deterministic
    dr.set_deterministic(saved)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
