"""diffrast: differentiable rasterization primitives for PyTorch with nvdiffrast's API.

``import diffrast as dr`` runs programs written for ``nvdiffrast.torch``.
"""
__version__ = "0.1.0"
__all__ = ["RasterizeGLContext", "RasterizeCudaContext", "DepthPeeler", "rasterize", "interpolate",
           "texture", "texture_construct_mip", "antialias", "antialias_construct_topology_hash",
           "set_deterministic", "is_deterministic", "get_log_level", "set_log_level", "triangle_id"]

from . import triangle_id
from .context import RasterizeGLContext
from .cuda_context import RasterizeCudaContext
from .rasterize import DepthPeeler, rasterize
from .interpolate import interpolate
from .antialias import antialias, antialias_construct_topology_hash
from .texture import texture, texture_construct_mip
from .determinism import is_deterministic, set_deterministic
from .log import get_log_level, set_log_level
