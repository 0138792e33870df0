"""Rasterizer contexts for the tests, one per kind and options, shared by the test modules.

Kinds: OpenGL on the CPU (Mesa, ``"cpu"``), OpenGL on a GPU with CUDA tensors (``"cuda"``) and
the CUDA rasterizer (``"cudarast"``, ``RasterizeCudaContext``), which must give the same results.
"""
import pytest

import diffrast as dr

KINDS = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu),
         pytest.param("cudarast", marks=pytest.mark.gpu)]
_contexts = {}


def tensor_device(kind):
    """The device of the tensors a context of ``kind`` takes."""
    return "cpu" if kind == "cpu" else "cuda"


def context(kind, **kw):
    """The shared context of ``kind`` created with options ``kw`` (made on first use)."""
    key = (kind, tuple(sorted(kw.items())))
    if key not in _contexts:
        if kind == "cudarast":
            _contexts[key] = dr.RasterizeCudaContext(**kw)
        else:
            _contexts[key] = dr.RasterizeGLContext(device=kind, **kw)
    return _contexts[key]
