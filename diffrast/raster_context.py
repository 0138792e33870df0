"""``RasterContext``: what a rasterizer context offers the ops, whichever way it rasterizes.

:class:`~diffrast.RasterizeGLContext` (OpenGL) and :class:`~diffrast.RasterizeCudaContext` (CUDA
kernels) both subclass it, and :func:`diffrast.rasterize` and :class:`diffrast.DepthPeeler` use
a context only through it: its device and limits, two checks, and :meth:`RasterContext.render`,
which renders a batch of images into given buffers. Everything else an op does (checking its
inputs, allocating the outputs, the backward pass, ``torch.compile``'s custom ops) is the same
for every context.
"""
from __future__ import annotations

import abc
from typing import Optional, Tuple

import torch

from . import custom_ops

# Appended to device-mismatch errors: the usual way to get there.
ONE_CONTEXT_PER_DEVICE = (". A context serves one device: torch.nn.DataParallel, which runs "
                          "replicas of a module on several GPUs in threads of one process, is "
                          "not supported; use DistributedDataParallel with one context per "
                          "process")


def resolve_device(device, kinds=("cpu", "cuda")) -> torch.device:
    """The ``torch.device`` a context renders on, from its ``device`` argument (a
    ``torch.device``, a string, a CUDA ordinal or ``None``: the current CUDA device if there is
    one and ``kinds`` allows it, else the CPU), checked against the device types in ``kinds``."""
    what = " or ".join(k.upper() for k in kinds)
    if device is None:
        if "cuda" in kinds and torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")
    if isinstance(device, bool) or not isinstance(device, (int, str, torch.device)):
        raise TypeError(f"device must be a torch.device, a string or a CUDA ordinal, "
                        f"got {type(device).__name__}")
    try:
        dev = torch.device("cuda", device) if isinstance(device, int) else torch.device(device)
    except RuntimeError as exc:  # an unknown device string, a negative ordinal
        raise ValueError(f"device must be a {what} device, got {device!r}") from exc
    if dev.type not in kinds:
        raise ValueError(f"device must be a {what} device, got {device!r}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device must be 'cpu' (Mesa's software OpenGL) on a machine without "
                             f"CUDA, got {device!r}")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        elif dev.index >= torch.cuda.device_count():
            raise ValueError(f"device must be one of the {torch.cuda.device_count()} CUDA devices, "
                             f"got {device!r}")
    return dev


class RasterContext(abc.ABC):
    """Base class of rasterizer contexts: the interface :func:`~diffrast.rasterize` and
    :class:`~diffrast.DepthPeeler` render through.

    A subclass sets :attr:`device` and :attr:`output_db`, calls ``super().__init__()``, and
    implements :attr:`max_resolution`, :attr:`max_layers` and :meth:`render`; it may override
    :meth:`check_usable` and :meth:`check_device`. The ops check their inputs, allocate the
    outputs and compute the gradients themselves, so a context only fills ``rast`` (and
    ``rast_db``): the per-pixel ``(u, v, z/w, triangle_id + 1)`` described in
    :func:`~diffrast.rasterize`.

    Attributes:
        device (torch.device): The device the context renders on.
        output_db (bool): Whether the context outputs image-space derivatives of barycentrics
            (``rast_db``).
        active_peeler: The :class:`~diffrast.DepthPeeler` active on the context, or ``None``.
        capturable (bool): Whether :meth:`render` may run while a CUDA graph is being captured
            (a class attribute, ``False`` unless a subclass says otherwise). Under
            ``torch.compile`` the op of a context that is not capturable is tagged
            ``cudagraph_unsafe``, so ``mode="reduce-overhead"`` leaves it out of its graphs.
    """

    device: torch.device
    output_db: bool
    capturable: bool = False

    def __init__(self):
        self.active_peeler = None
        custom_ops.context_handle(self)  # how custom ops name it under torch.compile

    @property
    @abc.abstractmethod
    def max_resolution(self) -> Tuple[int, int]:
        """The largest ``(height, width)`` the context renders."""

    @property
    @abc.abstractmethod
    def max_layers(self) -> int:
        """The most images a :class:`~diffrast.DepthPeeler` peels in one batch.
        (:func:`~diffrast.rasterize` takes batches of any size.)"""

    def check_usable(self) -> None:
        """Check that the context can render.

        Raises:
            RuntimeError: The context cannot render any more (for example, it was released).
        """

    def check_device(self, pos: torch.Tensor) -> None:
        """Check that the context renders vertex positions on the device of ``pos``, a float32
        tensor on the CPU or a CUDA device (``tri`` is on the same device). The outputs are
        allocated there. By default only ``pos`` on :attr:`device` is accepted.

        Raises:
            ValueError: ``pos`` is on another device; the message names both.
        """
        if pos.device != self.device:
            raise ValueError(f"pos must be on {self.device}, the device of the "
                             f"{type(self).__name__}, got {pos.device}{ONE_CONTEXT_PER_DEVICE}")

    @abc.abstractmethod
    def render(self, pos: torch.Tensor, tri: torch.Tensor, resolution: Tuple[int, int],
               ranges: Optional[torch.Tensor], layer_index: int, peel: bool, rast: torch.Tensor,
               rast_db: Optional[torch.Tensor]) -> None:
        """Render a batch of images into ``rast`` (and ``rast_db``).

        The inputs have been checked (:func:`~diffrast.rasterize` describes them) and are
        contiguous, on a device :meth:`check_device` accepted.

        Args:
            pos: Vertex positions in clip space, float32 ``[minibatch_size, num_vertices, 4]``
                (instance mode) or ``[num_vertices, 4]`` (range mode).
            tri: Triangle vertex indices, int32 ``[num_triangles, 3]``.
            resolution: ``(height, width)`` of the images, within :attr:`max_resolution`.
            ranges: Range mode: int32 tensor ``[minibatch_size, 2]`` of
                ``(first triangle, triangle count)`` per image, on the CPU or on the device of
                ``pos`` (values checked, except where a check would synchronize: under
                ``torch.compile`` and CUDA graph capture; clamp them to ``tri`` to be safe);
                instance mode: ``None``.
            layer_index: Depth peeling: the index of the layer, from 0; otherwise 0.
            peel: Whether this is a :class:`~diffrast.DepthPeeler` layer. From
                ``layer_index`` 1 on, each pixel keeps the nearest surface behind the one of
                the previous layer, which the context remembers from its previous call.
            rast: Output, float32 ``[minibatch_size, height, width, 4]`` on the device of
                ``pos``, to be filled entirely; ``minibatch_size`` may be 0.
            rast_db: Output like ``rast`` for ``(du/dX, du/dY, dv/dX, dv/dY)``, or ``None``
                when the context has no :attr:`output_db`.
        """
