"""diffrast: differentiable rasterization primitives for PyTorch with nvdiffrast's API.

``import diffrast as dr`` runs programs written for ``nvdiffrast.torch``.
"""
from . import triangle_id
