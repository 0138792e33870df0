"""Every documented error of every public function names the argument, says what was expected
and what came (diffrast/checks.py). Pins the key words of the cases that the op test files do
not already pin (tests/test_rasterize.py::test_bad_inputs_raise_clear_errors,
tests/test_interpolate.py::test_bad_input_raises, tests/test_texture.py::test_bad_input and
test_construct_mip_bad_input, tests/test_antialias.py::test_bad_inputs_raise and
test_topology_hash_bad_inputs); tests/test_fuzz.py checks that every kind of bad input raises
ValueError or TypeError at all.
"""
import threading

import numpy as np
import pytest
import torch

import diffrast as dr
from diffrast.reference.antialias import TopologyHash

META = torch.device("meta")
TRI = torch.tensor([[0, 1, 2]], dtype=torch.int32)
POS = torch.tensor([[[-0.8, -0.8, 0.0, 1.0], [0.8, -0.8, 0.0, 1.0], [0.0, 0.8, 0.0, 1.0]]])
_ctx = {}


def glctx():
    if "cpu" not in _ctx:
        _ctx["cpu"] = dr.RasterizeGLContext(device="cpu")
    return _ctx["cpu"]


def raises(exc, match, fn, *args, **kwargs):
    with pytest.raises(exc, match=match) as info:
        fn(*args, **kwargs)
    return str(info.value)


# ----------------------------------------------------------------------------------------------
# rasterize / DepthPeeler

def _raster_cases():
    pos2 = POS[0]
    return [
        (dict(tri=TRI.to(META)), ValueError, r"tri must be on the same device as pos \(cpu\), got meta"),
        (dict(pos=POS.to(META), tri=TRI.to(META)), ValueError, "pos must be on a CPU or CUDA device, got device meta"),
        (dict(pos=POS.half()), TypeError, "pos must have dtype float32, got float16"),
        (dict(pos=POS.tolist()), TypeError, "pos must be a torch.Tensor, got list"),
        (dict(tri=None), TypeError, "tri must be a torch.Tensor, got NoneType"),
        (dict(tri=TRI.reshape(-1)), ValueError, r"tri must be 2-D, got shape \(3,\)"),
        (dict(tri=torch.tensor([[0, 1, 2**31 - 1]], dtype=torch.int32)), ValueError,
         r"tri indices must lie in \[0, 3\) \(the number of vertices\), got values in \[0, 2147483647\]"),
        (dict(resolution=(True, 4)), TypeError, r"resolution must be a \(height, width\) pair of ints, got \(True, 4\)"),
        (dict(resolution=(4.0, 4)), TypeError, r"resolution must be a \(height, width\) pair of ints, got \(4.0, 4\)"),
        (dict(resolution=(4, 4, 4)), TypeError, r"resolution must be a \(height, width\) pair of ints"),
        (dict(resolution=(-2, 4)), ValueError, r"resolution must be within \[1, \d+\] x \[1, \d+\] \(the GL limits\), got -2 x 4"),
        (dict(ranges=torch.tensor([[0, 1]], dtype=torch.int32)), ValueError,
         r"ranges must be None in instance mode .* got ranges of shape \(1, 2\)"),
        (dict(pos=pos2), ValueError, r"range mode \(pos \[V, 4\]\) needs ranges, an int32 tensor \[B, 2\] .* got ranges=None"),
        (dict(pos=pos2, ranges=[[0, 1]]), TypeError, "ranges must be a torch.Tensor, got list"),
        (dict(pos=pos2, ranges=torch.tensor([0, 1], dtype=torch.int32)), ValueError, r"ranges must be 2-D, got shape \(2,\)"),
        (dict(pos=pos2, ranges=torch.tensor([[0, 1, 1]], dtype=torch.int32)), ValueError,
         r"ranges must have last dimension 2, got shape \(1, 3\)"),
        (dict(pos=pos2, ranges=torch.tensor([[0, 1]], dtype=torch.int32, device=META)), ValueError,
         r"ranges must be on the CPU or on the device of pos \(cpu\), got meta"),
        (dict(pos=pos2, ranges=torch.tensor([[0, 1], [0, -1]], dtype=torch.int32)), ValueError,
         r"ranges must hold non-negative \(first triangle, count\) pairs, got \(0, -1\) in row 1"),
        (dict(pos=pos2, ranges=torch.tensor([[0, 1], [1, 1]], dtype=torch.int32)), ValueError,
         r"ranges run past the end of tri: range 1 \(1, 1\) ends at triangle 2, but tri has 1 triangles"),
        (dict(pos=pos2, ranges=torch.tensor([[2**31 - 1, 2**31 - 1]], dtype=torch.int32)), ValueError,
         "ranges run past the end of tri"),
    ]


@pytest.mark.parametrize("fn", ["rasterize", "DepthPeeler"])
def test_rasterize_and_depth_peeler_errors(fn):
    for override, exc, match in _raster_cases():
        args = dict(glctx=glctx(), pos=POS, tri=TRI, resolution=(4, 4), ranges=None)
        args.update(override)
        call = dr.rasterize if fn == "rasterize" else dr.DepthPeeler
        raises(exc, match, call, **args)


def test_resolution_accepts_numpy_and_tensor_integers():
    want, _ = dr.rasterize(glctx(), POS, TRI, (5, 6))
    for res in [(np.int64(5), np.int32(6)), [5, 6], (torch.tensor(5), torch.tensor([6]))]:
        got, _ = dr.rasterize(glctx(), POS, TRI, res)
        assert torch.equal(got, want)


def test_depth_peeler_batch_limit_is_checked_up_front():
    ctx = glctx()
    pos = POS.expand(ctx.max_layers + 1, -1, -1)
    raises(ValueError, rf"DepthPeeler supports at most {ctx.max_layers} images per batch .* "
                       rf"minibatch size of pos must be at most {ctx.max_layers}, got {ctx.max_layers + 1}",
           dr.DepthPeeler, ctx, pos, TRI, (2, 2))


def test_released_context_error_says_what_to_do():
    ctx = dr.RasterizeGLContext(device="cpu")
    ctx.release()
    raises(RuntimeError, "glctx has been released .* create a new context", dr.rasterize, ctx, POS, TRI, (4, 4))


def test_manual_mode_on_another_thread_names_data_parallel():
    """GL contexts are bound to threads: a manual-mode context used from another thread (as
    torch.nn.DataParallel's replica threads would) is an error that says what to use instead."""
    ctx = dr.RasterizeGLContext(mode="manual", device="cpu")
    ctx.set_context()
    try:
        errors = []

        def work():
            try:
                dr.rasterize(ctx, POS, TRI, (4, 4))
            except Exception as exc:  # reported below
                errors.append(exc)

        t = threading.Thread(target=work)
        t.start()
        t.join()
        assert len(errors) == 1 and isinstance(errors[0], RuntimeError)
        msg = str(errors[0])
        assert "not current on this thread" in msg and "set_context()" in msg
        assert "torch.nn.DataParallel" in msg and "DistributedDataParallel" in msg
    finally:
        ctx.release_context()
        ctx.release()


@pytest.mark.gpu
def test_cuda_tensors_with_a_context_of_another_device_name_data_parallel():
    pos, tri = POS.cuda(), TRI.cuda()
    msg = raises(ValueError, r"pos is on cuda:\d but glctx renders on cpu; create the RasterizeGLContext "
                             r"with device='cuda:\d'", dr.rasterize, glctx(), pos, tri, (4, 4))
    assert "torch.nn.DataParallel" in msg and "DistributedDataParallel" in msg
    cuda_ctx = dr.RasterizeCudaContext()
    msg = raises(ValueError, r"pos must be on cuda:\d, the device of the RasterizeCudaContext, got cpu",
                 dr.rasterize, cuda_ctx, POS, TRI, (4, 4))
    assert "DistributedDataParallel" in msg


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["gl", "cudarast"])
def test_data_parallel_replicas_raise_a_clear_error(kind):
    """torch.nn.DataParallel runs a replica per GPU on threads of one process: the context of
    GPU 0 refuses the tensors of GPU 1 with an error that points to DistributedDataParallel."""
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs")
    ctx = dr.RasterizeGLContext(device="cuda:0") if kind == "gl" else dr.RasterizeCudaContext(0)

    class Render(torch.nn.Module):
        def forward(self, pos):
            return dr.rasterize(ctx, pos, TRI.to(pos.device), (8, 8))[0]

    model = torch.nn.DataParallel(Render(), device_ids=[0, 1])
    with pytest.raises(ValueError, match="(?s)cuda:1.*DataParallel.*DistributedDataParallel"):
        model(POS.expand(2, -1, -1).contiguous().cuda())


# ----------------------------------------------------------------------------------------------
# Contexts and determinism

@pytest.mark.parametrize("device,exc,match", [
    ("foo", ValueError, "device must be a CPU or CUDA device, got 'foo'"),
    ("meta", ValueError, "device must be a CPU or CUDA device, got 'meta'"),
    (-1, ValueError, "device must be a CPU or CUDA device, got -1"),
    (1.5, TypeError, "device must be a torch.device, a string or a CUDA ordinal, got float"),
    (True, TypeError, "device must be a torch.device, a string or a CUDA ordinal, got bool"),
])
def test_gl_context_device_errors(device, exc, match):
    raises(exc, match, dr.RasterizeGLContext, device=device)


def test_gl_context_mode_error():
    raises(ValueError, "mode must be one of 'automatic', 'manual', got None", dr.RasterizeGLContext, mode=None)
    ctx = glctx()
    raises(RuntimeError, "set_context\\(\\) can only be called in manual mode", ctx.set_context)
    raises(RuntimeError, "release_context\\(\\) can only be called in manual mode", ctx.release_context)


def test_cuda_device_without_cuda():
    if torch.cuda.is_available():
        raises(ValueError, r"device must be one of the \d+ CUDA devices, got 'cuda:99'",
               dr.RasterizeGLContext, device="cuda:99")
        return
    raises(ValueError, r"device must be 'cpu' \(Mesa's software OpenGL\) on a machine without CUDA, got 'cuda'",
           dr.RasterizeGLContext, device="cuda")
    raises(RuntimeError, "RasterizeCudaContext needs a CUDA device; use RasterizeGLContext",
           dr.RasterizeCudaContext)


@pytest.mark.gpu
@pytest.mark.parametrize("device,exc,match", [
    ("cpu", ValueError, "device must be a CUDA device, got 'cpu'"),
    ("foo", ValueError, "device must be a CUDA device, got 'foo'"),
    ("cuda:99", ValueError, r"device must be one of the \d+ CUDA devices, got 'cuda:99'"),
    (torch.device("cpu"), ValueError, r"device must be a CUDA device, got device\(type='cpu'\)"),
    (2.0, TypeError, "device must be a torch.device, a string or a CUDA ordinal, got float"),
])
def test_cuda_context_device_errors(device, exc, match):
    raises(exc, match, dr.RasterizeCudaContext, device=device)


def test_set_deterministic_error():
    raises(TypeError, "enabled must be a bool, got str", dr.set_deterministic, "yes")
    raises(TypeError, "enabled must be a bool, got int", dr.set_deterministic, 1)


# ----------------------------------------------------------------------------------------------
# interpolate

def test_interpolate_device_errors():
    attr = torch.rand(3, 2)
    rast = torch.zeros(1, 2, 2, 4)
    db = torch.zeros(1, 2, 2, 4)
    raises(ValueError, r"rast must be on the same device as attr \(cpu\), got meta",
           dr.interpolate, attr, rast.to(META), TRI)
    raises(ValueError, r"rast_db must be on the same device as attr \(cpu\), got meta",
           dr.interpolate, attr, rast, TRI, db.to(META), diff_attrs="all")
    raises(ValueError, "attr must be on a CPU or CUDA device, got device meta",
           dr.interpolate, attr.to(META), rast.to(META), TRI.to(META))
    raises(TypeError, "diff_attrs must hold integer attribute indices, got NoneType None",
           dr.interpolate, attr, rast, TRI, db, diff_attrs=[None])


# ----------------------------------------------------------------------------------------------
# texture / texture_construct_mip

def test_texture_errors():
    tex = torch.rand(1, 4, 4, 3)
    uv = torch.rand(1, 2, 2, 2)
    da = torch.rand(1, 2, 2, 4)
    bias = torch.rand(1, 2, 2)
    raises(ValueError, r"uv_da must be on the same device as tex \(cpu\), got meta",
           dr.texture, tex, uv, da.to(META))
    raises(ValueError, r"mip_level_bias must be on the same device as tex \(cpu\), got meta",
           dr.texture, tex, uv, mip_level_bias=bias.to(META))
    raises(TypeError, "mip_level_bias must have dtype float32 or float64, got int32",
           dr.texture, tex, uv, mip_level_bias=bias.int())
    raises(TypeError, r"mip_level_bias must have the same dtype as tex \(float32\), got float64",
           dr.texture, tex, uv, mip_level_bias=bias.double())
    raises(ValueError, "tex must be on a CPU or CUDA device, got device meta",
           dr.texture, tex.to(META), uv.to(META))
    raises(TypeError, "max_mip_level must be None or a non-negative int, got str",
           dr.texture, tex, uv, max_mip_level="2")
    raises(ValueError, "filter_mode must be one of 'auto', 'nearest', 'linear', 'linear-mipmap-nearest', "
                       "'linear-mipmap-linear', got None", dr.texture, tex, uv, filter_mode=None)
    raises(ValueError, "boundary_mode must be one of 'wrap', 'clamp', 'zero', 'cube', got 'WRAP'",
           dr.texture, tex, uv, boundary_mode="WRAP")
    cube = torch.rand(1, 6, 4, 4, 3)
    raises(ValueError, r"mip must be a mipmap stack of a cube map like tex, got one of a 2D texture",
           dr.texture, cube, torch.rand(1, 2, 2, 3), mip_level_bias=bias,
           mip=dr.texture_construct_mip(tex), boundary_mode="cube")
    raises(ValueError, r"mip\[0\] \(mip level 1\) must have shape \(1, 6, 2, 2, 3\) for tex of shape "
                       r"\(1, 6, 4, 4, 3\), got shape \(1, 6, 2, 2, 1\)",
           dr.texture, cube, torch.rand(1, 2, 2, 3), mip_level_bias=bias,
           mip=[torch.rand(1, 6, 2, 2, 1)], boundary_mode="cube")


def test_texture_construct_mip_errors():
    raises(ValueError, "tex must be on a CPU or CUDA device, got device meta",
           dr.texture_construct_mip, torch.rand(1, 4, 4, 1, device=META))
    raises(ValueError, r"tex must have no empty dimension, got shape \(1, 4, 0, 1\)",
           dr.texture_construct_mip, torch.rand(1, 4, 0, 1))
    raises(ValueError, r"tex has shape \(1, 6, 4, 4, 1\), a cube map; pass cube_mode=True .* got cube_mode=False",
           dr.texture_construct_mip, torch.rand(1, 6, 4, 4, 1))
    raises(TypeError, "cube_mode must be a bool, got int", dr.texture_construct_mip, torch.rand(1, 4, 4, 1), cube_mode=1)
    raises(TypeError, "max_mip_level must be None or a non-negative int, got float",
           dr.texture_construct_mip, torch.rand(1, 4, 4, 1), max_mip_level=1.0)
    raises(TypeError, "tex must be a torch.Tensor, got ndarray", dr.texture_construct_mip, np.zeros((1, 4, 4, 1)))


# ----------------------------------------------------------------------------------------------
# antialias / antialias_construct_topology_hash

def test_antialias_errors():
    color = torch.rand(1, 4, 4, 3)
    rast = torch.zeros(1, 4, 4, 4)
    raises(ValueError, r"rast must be on the same device as color \(cpu\), got meta",
           dr.antialias, color, rast.to(META), POS, TRI)
    raises(ValueError, r"pos must be on the same device as color \(cpu\), got meta",
           dr.antialias, color, rast, POS.to(META), TRI)
    raises(ValueError, r"tri must be on the same device as color \(cpu\), got meta",
           dr.antialias, color, rast, POS, TRI.to(META))
    raises(ValueError, "color must be on a CPU or CUDA device, got device meta",
           dr.antialias, color.to(META), rast.to(META), POS.to(META), TRI.to(META))
    z = torch.zeros(3, dtype=torch.int64, device=META)
    topo = TopologyHash(1, z.reshape(1, 3), z[:2], z, z)
    raises(ValueError, r"topology_hash must be on the same device as color \(cpu\), got meta",
           dr.antialias, color, rast, POS, TRI, topology_hash=topo)
    raises(TypeError, "pos_gradient_boost must be a real number, got NoneType",
           dr.antialias, color, rast, POS, TRI, pos_gradient_boost=None)
    raises(ValueError, "pos_gradient_boost must be finite, got inf",
           dr.antialias, color, rast, POS, TRI, pos_gradient_boost=float("inf"))


def test_topology_hash_errors():
    raises(ValueError, "tri must be on a CPU or CUDA device, got device meta",
           dr.antialias_construct_topology_hash, TRI.to(META))
    raises(ValueError, r"tri must be 2-D, got shape \(3,\)", dr.antialias_construct_topology_hash, TRI.reshape(-1))
    raises(TypeError, "tri must be a torch.Tensor, got list", dr.antialias_construct_topology_hash, [[0, 1, 2]])
    raises(TypeError, "tri must have dtype int32, got float32", dr.antialias_construct_topology_hash, TRI.float())


# ----------------------------------------------------------------------------------------------
# viewer (no window needed: these are checked before glfw is touched)

def test_viewer_argument_errors():
    from diffrast.viewer import OrbitCamera, Viewer
    raises(ValueError, "near and far must satisfy 0 < near < far, got near=1.0, far=0.5", OrbitCamera, near=1.0, far=0.5)
    raises(ValueError, r"zoom_factor must be in \(0, 1\), got 1.5", OrbitCamera, zoom_factor=1.5)
    raises(ValueError, r"target must have 3 coordinates, got \(0, 0\)", OrbitCamera, target=(0, 0))
    raises(ValueError, "width must be a positive int or None, got 0", Viewer, width=0)
    raises(ValueError, "height must be a positive int or None, got 2.5", Viewer, height=2.5)


def test_triangle_range_check_runs_once_per_tensor_version(monkeypatch):
    """The index range check (a reduction over ``tri``) is cached per tensor object and version
    counter, on the CPU as on a GPU: a mesh reused call after call, by every op that takes it
    (checks against another vertex count and the topology hash's check included), is reduced
    once; rewriting it in place reduces it again."""
    from diffrast import checks
    reductions = []
    real = torch.aminmax
    monkeypatch.setattr(torch, "aminmax", lambda t: reductions.append(t) or real(t))
    tri = torch.tensor([[0, 1, 2]], dtype=torch.int32)
    attr = torch.rand(4, 2)
    for _ in range(3):
        dr.interpolate(attr, torch.zeros(1, 4, 4, 4), tri)
    assert len(reductions) == 1
    dr.interpolate(attr[:3], torch.zeros(1, 4, 4, 4), tri)  # another vertex count: cached
    dr.antialias_construct_topology_hash(tri)
    assert len(reductions) == 1
    tri[0, 2] = 3                                            # rewritten in place (version bump)
    with pytest.raises(ValueError, match=r"tri indices must lie in \[0, 3\)"):
        dr.interpolate(attr[:3], torch.zeros(1, 4, 4, 4), tri)
    assert len(reductions) == 2
    dr.interpolate(attr, torch.zeros(1, 4, 4, 4), tri)       # in range for 4 vertices
    dr.interpolate(attr, torch.zeros(1, 4, 4, 4), tri)
    assert len(reductions) == 2 and checks.check_triangles("tri", tri, 4) is tri
    tri[0, 0] = -1
    with pytest.raises(ValueError, match="tri indices must be non-negative, got a minimum of -1"):
        dr.antialias_construct_topology_hash(tri)
    with pytest.raises(ValueError, match="tri indices must be non-negative"):
        dr.antialias_construct_topology_hash(tri)
    assert len(reductions) == 3
