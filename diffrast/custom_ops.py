"""What diffrast's ops share as ``torch.library`` custom ops (namespace ``diffrast``).

Under ``torch.compile`` every public op dispatches to a custom op (``diffrast::<op>``) with a fake
implementation, so Dynamo sees one opaque node with known output shapes and no graph break, and
AOTAutograd sees its backward as another custom op (``diffrast::<op>_backward``) registered with
``torch.library.register_autograd``. In eager mode the public functions call their backends
directly (a custom op's dispatch costs host time that matters for small images); both paths run
the same backends, so compiled and eager results are identical.

The ops are defined with ``torch.library.Library.define`` / ``impl`` (:func:`custom_op`), not
``torch.library.custom_op``: the latter's per-call safety checks cost ~7 µs per call here and up
to ~200 µs on the H200's host with torch 2.11 (its aliasing check), more than the kernels of a
small image. ``register_fake`` is torch.library's own; ``register_autograd`` installs torch's
autograd kernel behind one of ours that calls the implementation directly where nothing is
recorded, as in every call of a compiled graph's forward (:func:`_autograd_kernel`).

Contexts stay ordinary Python objects: a custom op receives a context as an integer handle from
:func:`context_handle` and looks it up with :func:`context_from_handle`.
"""
from __future__ import annotations

import contextlib
import itertools
import threading
import weakref

import torch

NAMESPACE = "diffrast"


_LIB = torch.library.Library(NAMESPACE, "DEF")


class CustomOp:
    """An op ``diffrast::<name>`` defined from a Python function with type hints (the schema is
    inferred as ``torch.library.custom_op`` would; outputs must not alias inputs) and
    implemented by it for every device. Calling it calls the op through the dispatcher;
    ``_opoverload`` is what ``torch.library.opcheck`` takes."""

    def __init__(self, name: str, fn, tags=()):
        _LIB.define(name + torch.library.infer_schema(fn, mutates_args=()), tags=tags)
        _LIB.impl(name, fn, "CompositeExplicitAutograd")
        self.name = name
        self.qualname = op_name(name)
        self._opoverload = getattr(getattr(torch.ops, NAMESPACE), name).default
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def __call__(self, *args):
        return self._opoverload(*args)

    def register_fake(self, fn):
        """Register ``fn`` as the fake (meta) implementation: output shapes from input shapes."""
        torch.library.register_fake(self.qualname, fn, lib=_LIB)
        return fn

    def register_autograd(self, backward, setup_context):
        """As ``torch.library.register_autograd``, with a shorter path where no gradient is
        recorded (:func:`_autograd_kernel`)."""
        try:
            from torch._library import autograd as library_autograd
            recording = library_autograd.make_autograd_impl(
                self._opoverload, library_autograd.Info(backward, setup_context))
        except (ImportError, AttributeError, TypeError):  # (a torch without these internals)
            torch.library.register_autograd(self.qualname, backward, setup_context=setup_context,
                                            lib=_LIB)
            return
        _LIB.impl(self.name, _autograd_kernel(self._opoverload, self.__wrapped__, recording),
                  "Autograd", with_keyset=True)


_AFTER_AUTOGRAD = torch._C._after_autograd_keyset
# What remains of a plain CPU or CUDA tensor's dispatch keys below autograd (compared as sets:
# reading a set's highest key costs more than the rest of the kernel)
_PLAIN_CPU = torch._C.DispatchKeySet(torch._C.DispatchKey.CPU)
_PLAIN_CUDA = torch._C.DispatchKeySet(torch._C.DispatchKey.CUDA)


def _autograd_kernel(op, fn, recording):
    """The Autograd kernel of custom op ``op`` implemented by ``fn``: ``recording`` (the kernel
    ``torch.library.register_autograd`` installs) where a gradient is recorded; otherwise, as in
    the forward pass of a compiled graph (AOTAutograd runs it without grad), ``fn`` itself on
    plain CPU or CUDA tensors, and the dispatcher's next kernel for anything else (fake or
    functional tensors while tracing). torch's kernel takes three Python hops where none is
    recorded (~18 µs a call here against ~4 µs): four such ops per compiled training step."""

    def kernel(keyset, *args):
        if torch.is_grad_enabled() and torch._C._any_requires_grad(*args):
            return recording(keyset, *args)
        below = keyset & _AFTER_AUTOGRAD
        if below == _PLAIN_CUDA or below == _PLAIN_CPU:
            return fn(*args)  # (records nothing: no input requires grad, or grad is off)
        with torch._C._AutoDispatchBelowAutograd():
            return op.redispatch(below, *args)

    return kernel


def custom_op(name: str, tags=()):
    """Decorator: define the :class:`CustomOp` ``diffrast::<name>`` from the decorated
    function, with the ``torch.Tag`` s ``tags``."""
    return lambda fn: CustomOp(name, fn, tags)


# Ops that must not be captured in a CUDA graph (OpenGL work): inductor's
# mode="reduce-overhead" then leaves their graph (or its part) uncaptured. (torch >= 2.8)
CUDAGRAPH_UNSAFE = tuple(t for t in (getattr(torch.Tag, "cudagraph_unsafe", None),) if t)


def compiling() -> bool:
    """Whether the caller is being traced by ``torch.compile`` (Dynamo) or ``torch.export``."""
    return torch.compiler.is_compiling()


def op_name(name: str) -> str:
    """The qualified name ``diffrast::<name>`` of a custom op."""
    return f"{NAMESPACE}::{name}"


_handles: "weakref.WeakValueDictionary[int, object]" = weakref.WeakValueDictionary()
_handle_counter = itertools.count(1)
_handle_lock = threading.Lock()


def context_handle(ctx) -> int:
    """A process-unique integer naming ``ctx`` (a rasterizer context) inside custom ops; the same
    context always gets the same handle."""
    handle = getattr(ctx, "_library_handle", None)
    if handle is None:
        with _handle_lock:
            handle = getattr(ctx, "_library_handle", None)
            if handle is None:
                handle = next(_handle_counter)
                _handles[handle] = ctx
                ctx._library_handle = handle
    return handle


def context_from_handle(handle: int):
    """The context :func:`context_handle` gave ``handle`` to."""
    ctx = _handles.get(int(handle))
    if ctx is None:
        raise RuntimeError(f"diffrast: the rasterizer context of handle {handle} no longer exists")
    return ctx


@contextlib.contextmanager
def autograd_enabled():
    """Record autograd inside a custom op's implementation: torch runs those with the autograd
    dispatch keys excluded (so ``torch.enable_grad()`` alone records nothing); this lifts the
    exclusion and enables grad for the block, for backends that differentiate torch code."""
    include = torch._C._dispatch_tls_local_include_set()
    exclude = torch._C._dispatch_tls_local_exclude_set()
    lifted = exclude.remove(torch._C.DispatchKey.AutogradFunctionality)
    with torch._C._ForceDispatchKeyGuard(include, lifted), torch.enable_grad():
        yield


def vjp(fn, inputs, grads, needs):
    """Gradients of ``fn(*inputs)`` (a differentiable function returning a tensor or a tuple of
    tensors) with respect to the inputs flagged in ``needs``, given output gradients ``grads``
    (``None`` entries: no gradient). Runs ``fn`` again with autograd on: the backward of ops
    whose backend is differentiable torch code (the references) rather than a pair of kernels.

    Returns a list like ``inputs``: a fresh tensor per needed input, ``None`` elsewhere."""
    with autograd_enabled():
        leaves = [x.detach().requires_grad_(bool(n)) if isinstance(x, torch.Tensor) and n else x
                  for x, n in zip(inputs, needs)]
        outs = fn(*leaves)
        outs = outs if isinstance(outs, (tuple, list)) else (outs,)
        pairs = [(o, g) for o, g in zip(outs, grads)
                 if g is not None and isinstance(o, torch.Tensor) and o.requires_grad]
        wanted = [x for x, n in zip(leaves, needs) if isinstance(x, torch.Tensor) and n]
        if pairs and wanted:
            got = torch.autograd.grad([o for o, _ in pairs], wanted, [g for _, g in pairs],
                                      allow_unused=True)
        else:
            got = [None] * len(wanted)
    it = iter(got)
    result = []
    for x, n in zip(inputs, needs):
        if isinstance(x, torch.Tensor) and n:
            g = next(it)
            result.append(torch.zeros_like(x) if g is None else g)
        else:
            result.append(None)
    return result
