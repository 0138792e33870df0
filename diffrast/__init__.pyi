# Type stub of diffrast's public API (PEP 561; the package ships ``py.typed``). Type checkers read
# this file instead of ``__init__.py``; ``tests/test_package.py`` checks that every signature here
# matches the code (names, order, kinds and defaults of the parameters). The docstrings are in the
# code: ``help(dr.rasterize)``.
from typing import Optional, Sequence, Tuple, Union

import torch

from . import triangle_id as triangle_id
from .raster_context import RasterContext
from .reference.antialias import TopologyHash
from .texture import TextureMipStack

__version__: str
__all__ = ["RasterizeGLContext", "RasterizeCudaContext", "DepthPeeler", "rasterize", "interpolate",
           "texture", "texture_construct_mip", "antialias", "antialias_construct_topology_hash",
           "set_deterministic", "is_deterministic", "get_log_level", "set_log_level", "triangle_id"]

_Device = Union[torch.device, str, int, None]


class RasterizeGLContext(RasterContext):
    output_db: bool
    mode: str
    device: torch.device

    def __init__(self, output_db: bool = True, mode: str = "automatic",
                 device: _Device = None) -> None: ...
    def set_context(self) -> None: ...
    def release_context(self) -> None: ...
    def release(self) -> None: ...
    @property
    def max_layers(self) -> int: ...
    @property
    def max_resolution(self) -> Tuple[int, int]: ...
    def check_usable(self) -> None: ...
    def check_device(self, pos: torch.Tensor) -> None: ...
    def render(self, pos: torch.Tensor, tri: torch.Tensor, resolution: Tuple[int, int],
               ranges: Optional[torch.Tensor], layer_index: int, peel: bool, rast: torch.Tensor,
               rast_db: Optional[torch.Tensor]) -> None: ...


class RasterizeCudaContext(RasterContext):
    output_db: bool
    device: torch.device
    max_layers: int
    max_resolution: Tuple[int, int]

    def __init__(self, device: _Device = None, output_db: bool = True) -> None: ...
    def render(self, pos: torch.Tensor, tri: torch.Tensor, resolution: Tuple[int, int],
               ranges: Optional[torch.Tensor], layer_index: int, peel: bool, rast: torch.Tensor,
               rast_db: Optional[torch.Tensor]) -> None: ...


# Any rasterizer context: the two above, or a user's subclass of RasterContext.
_Context = RasterContext


class DepthPeeler:
    def __init__(self, glctx: _Context, pos: torch.Tensor, tri: torch.Tensor,
                 resolution: Sequence[int], ranges: Optional[torch.Tensor] = None,
                 grad_db: bool = True, grad_depth: bool = False) -> None: ...
    def __enter__(self) -> "DepthPeeler": ...
    def __exit__(self, *exc: object) -> None: ...
    def rasterize_next_layer(self) -> Tuple[torch.Tensor, torch.Tensor]: ...


def rasterize(glctx: _Context, pos: torch.Tensor, tri: torch.Tensor, resolution: Sequence[int],
              ranges: Optional[torch.Tensor] = None, grad_db: bool = True,
              grad_depth: bool = False) -> Tuple[torch.Tensor, torch.Tensor]: ...


def interpolate(attr: torch.Tensor, rast: torch.Tensor, tri: torch.Tensor,
                rast_db: Optional[torch.Tensor] = None,
                diff_attrs: Union[str, Sequence[int], torch.Tensor, None] = None
                ) -> Tuple[torch.Tensor, torch.Tensor]: ...


def texture(tex: torch.Tensor, uv: torch.Tensor, uv_da: Optional[torch.Tensor] = None,
            mip_level_bias: Optional[torch.Tensor] = None,
            mip: Union[TextureMipStack, Sequence[torch.Tensor], None] = None,
            filter_mode: str = "auto", boundary_mode: str = "wrap",
            max_mip_level: Optional[int] = None) -> torch.Tensor: ...


def texture_construct_mip(tex: torch.Tensor, max_mip_level: Optional[int] = None,
                          cube_mode: bool = False) -> TextureMipStack: ...


def antialias(color: torch.Tensor, rast: torch.Tensor, pos: torch.Tensor, tri: torch.Tensor,
              topology_hash: Optional[TopologyHash] = None,
              pos_gradient_boost: float = 1.0) -> torch.Tensor: ...


def antialias_construct_topology_hash(tri: torch.Tensor) -> TopologyHash: ...


def set_deterministic(enabled: bool) -> None: ...


def is_deterministic() -> bool: ...


def get_log_level() -> int: ...


def set_log_level(level: int) -> None: ...
