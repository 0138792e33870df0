"""diffrast.custom_ops: the Autograd kernel of ops with a registered backward runs the
implementation directly on plain tensors where nothing is recorded, and leaves everything else
(fake tensors while tracing, calls that record a gradient) to the dispatcher and torch's own
kernel."""
import itertools

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from diffrast import custom_ops

_names = itertools.count()


def scaled_op():
    """A fresh op ``3 * x`` (backward ``3 * g``) whose implementation and fake record the types
    of the tensors they get."""
    seen = {"impl": [], "fake": []}

    def impl(x: torch.Tensor) -> torch.Tensor:
        seen["impl"].append(type(x))
        return x * 3

    op = custom_ops.custom_op(f"test_scaled_{next(_names)}")(impl)

    @op.register_fake
    def _(x):
        seen["fake"].append(type(x))
        return torch.empty_like(x)

    def setup(ctx, inputs, output):
        pass

    op.register_autograd(lambda ctx, g: 3 * g, setup_context=setup)
    return op, seen


def test_plain_tensors_without_grad_reach_the_implementation():
    op, seen = scaled_op()
    x = torch.arange(4.0)
    with torch.no_grad():
        assert torch.equal(op(x), 3 * x)
    assert torch.equal(op(x), 3 * x)  # (grad on, nothing requires it)
    assert seen["impl"] == [torch.Tensor, torch.Tensor]
    assert not op(x).requires_grad


def test_recorded_calls_differentiate():
    op, _ = scaled_op()
    x = torch.arange(4.0, requires_grad=True)
    y = op(x)
    assert y.requires_grad
    (y * torch.arange(4.0)).sum().backward()
    assert torch.equal(x.grad, 3 * torch.arange(4.0))
    with torch.no_grad():
        assert not op(x).requires_grad


def test_fake_tensors_reach_the_fake_implementation():
    op, seen = scaled_op()
    with FakeTensorMode() as mode:
        x = mode.from_tensor(torch.zeros(4))
        with torch.no_grad():
            out = op(x)
    assert out.shape == (4,)
    assert seen["impl"] == []
    assert seen["fake"]


@pytest.mark.parametrize("grad", [False, True])
def test_compiled_calls(grad):
    """Compiled for inference (traced with fake tensors under no_grad) and for training: the
    traced graph calls the fake, the compiled one the implementation on plain tensors."""
    torch._dynamo.reset()
    op, seen = scaled_op()

    def fn(x):
        return (op(x) + 1).sum()

    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    x = torch.arange(4.0, requires_grad=grad)
    with torch.set_grad_enabled(grad):
        out = compiled(x)
    assert torch.equal(out.detach(), fn(x).detach())
    assert seen["fake"]
    assert seen["impl"] and set(seen["impl"]) == {torch.Tensor}
    if grad:
        out.backward()
        assert torch.equal(x.grad, torch.full((4,), 3.0))
    torch._dynamo.reset()
