"""diffrast.dispatch: the one place that chooses each op's backend, and its switch for tests."""
import pytest
import torch

import diffrast as dr
from diffrast import cuda_backend, cuda_backend_antialias, cuda_backend_texture, dispatch
from diffrast.cuda_ops import loader
from diffrast.reference import antialias as ref_antialias
from diffrast.reference import interpolate as ref_interpolate
from diffrast.reference import rasterize as ref_rasterize

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
OPS = ("rasterize_backward", "interpolate", "texture", "antialias", "antialias_topology")
KERNELS = {"rasterize_backward": cuda_backend.rasterize_grad,
           "interpolate": cuda_backend.interpolate,
           "texture": cuda_backend_texture.Backend,
           "antialias": cuda_backend_antialias.antialias,
           "antialias_topology": cuda_backend_antialias.construct_topology}


def test_every_op_registers_both_backends():
    for op in OPS:
        reference = dispatch.backend(op, CPU)
        assert reference is not KERNELS[op]
        with dispatch.force(dispatch.KERNELS):
            assert dispatch.backend(op, CPU) is KERNELS[op]
    assert dispatch.backend("interpolate", CPU) is ref_interpolate.interpolate
    assert dispatch.backend("rasterize_backward", CPU) is ref_rasterize.rasterize_grad


def test_the_rule():
    """float32 CUDA tensors run the kernels when they can be loaded; the rest the reference."""
    assert not dispatch.uses_kernels(CPU, torch.float32)
    assert not dispatch.uses_kernels(CPU, torch.float64)
    assert not dispatch.uses_kernels(CUDA, torch.float64)
    assert dispatch.uses_kernels(CUDA, torch.float32) == loader.available()
    assert (dispatch.backend("texture", CUDA) is cuda_backend_texture.Backend) == \
        loader.available()


def test_force_nests_and_restores():
    launch = loader.launch
    marker = object()
    with dispatch.force(dispatch.KERNELS, launch=marker):
        assert dispatch.uses_kernels(CPU) and loader.launch is marker
        assert not dispatch.uses_kernels(CPU, torch.float64)  # other dtypes: the reference
        with dispatch.force(dispatch.REFERENCE):
            assert not dispatch.uses_kernels(CUDA)
            assert loader.launch is marker
        assert dispatch.uses_kernels(CPU)
    assert not dispatch.uses_kernels(CPU) and loader.launch is launch
    with pytest.raises(RuntimeError):
        with dispatch.force(dispatch.REFERENCE):
            raise RuntimeError("restored on errors too")
    assert dispatch.uses_kernels(CUDA) == loader.available()


def test_force_rejects_bad_kinds():
    with pytest.raises(ValueError, match="kind must be"):
        with dispatch.force("cuda"):
            pass
    with pytest.raises(ValueError, match="launch function"):
        with dispatch.force(dispatch.REFERENCE, launch=print):
            pass


def test_public_ops_go_through_dispatch():
    """Forcing the kernels on the CPU reaches the kernel launcher from every public op (here a
    launcher that records the kernels and fails, so nothing runs)."""
    launched = []

    def record(module, kernel, *args, **kwargs):
        launched.append(module)
        raise _Launched

    class _Launched(Exception):
        pass

    rast = torch.zeros(1, 4, 4, 4)
    rast[..., 3] = 1
    pos = torch.tensor([[[-1.0, -1, 0, 1], [1, -1, 0, 1], [-1, 1, 0, 1]]])
    tri = torch.tensor([[0, 1, 2]], dtype=torch.int32)
    calls = {
        "interpolate": lambda: dr.interpolate(torch.rand(3, 2), rast, tri),
        "texture": lambda: dr.texture(torch.rand(1, 4, 4, 3), torch.rand(1, 4, 4, 2),
                                      filter_mode="linear"),
        "antialias_topology": lambda: dr.antialias_construct_topology_hash(tri),
    }
    with dispatch.force(dispatch.KERNELS, launch=record):
        for name, call in calls.items():
            with pytest.raises(_Launched):
                call()
    assert launched == ["interpolate_forward", "texture_forward", "antialias_topology"]
    # and outside the switch the reference runs on the CPU, launching nothing
    with dispatch.force(dispatch.REFERENCE):
        for call in calls.values():
            call()
    assert len(launched) == 3
    assert isinstance(dr.antialias_construct_topology_hash(tri), ref_antialias.TopologyHash)


@pytest.mark.parametrize("filter_mode", ["nearest", "linear", "linear-mipmap-linear"])
def test_texture_reaches_its_kernel_in_five_hops(filter_mode):
    """From ``dr.texture`` to the kernel launch, at most four diffrast functions are on the stack
    (the public function, the backend's entry point, its autograd ``forward``, the launch
    helper); the fifth hop is ``loader.launch``, which starts the kernel."""
    import os
    import traceback
    ours_dirs = (os.path.dirname(dr.__file__) + os.sep,)
    stacks = []

    class _Launched(Exception):
        pass

    def record(module, kernel, *args, **kwargs):
        stacks.append(traceback.extract_stack()[:-1])
        raise _Launched

    mip = None
    if filter_mode.startswith("linear-mipmap"):
        mip = dr.texture_construct_mip(torch.rand(1, 8, 8, 3))  # (the reference's levels)
    with dispatch.force(dispatch.KERNELS, launch=record), pytest.raises(_Launched):
        dr.texture(torch.rand(1, 8, 8, 3), torch.rand(1, 4, 4, 2), torch.rand(1, 4, 4, 4),
                   mip=mip, filter_mode=filter_mode)
    (stack,) = stacks
    public = os.path.join("diffrast", "texture.py")
    first = max(i for i, f in enumerate(stack)
                if f.name == "texture" and f.filename.endswith(public))
    ours = [f for f in stack[first:] if f.filename.startswith(ours_dirs)]
    assert len(ours) <= 4, [(os.path.basename(f.filename), f.name) for f in ours]
