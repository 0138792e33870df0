"""Property-based fuzz of every public function (strategies and properties: fuzz_strategies.py).

On the CPU (CI) each property runs ``DIFFRAST_FUZZ_EXAMPLES`` examples (default 40) drawn
reproducibly (hypothesis' ``derandomize``; set ``DIFFRAST_FUZZ_PROFILE=diffrast-fuzz-random`` to
explore). The tests marked ``gpu`` run the same properties on CUDA tensors, with
``RasterizeGLContext(device='cuda')`` and with ``RasterizeCudaContext``, and also compare every
result with the CPU path (Mesa and the PyTorch reference) on the same inputs. In CI the
``emulated`` tests make the same comparisons for the CUDA kernels of interpolate, texture,
antialias and the rasterize backward, run on the CPU by the tests' kernel emulators.
``benchmarks/fuzz_long.py`` (``python -m benchmarks.fuzz_long``) runs the same properties for many more examples.
"""
import pytest
import torch
from hypothesis import given

from helpers import fuzz_strategies as fs


@pytest.fixture(scope="module")
def cpu_env():
    env = fs.Env("cpu")
    yield env
    env.release()


@pytest.fixture(scope="module", params=["gl", "cudarast"])
def cuda_env(request):
    """A CUDA environment per rasterizer: RasterizeGLContext(device='cuda') and
    RasterizeCudaContext (only the properties that rasterize use the context)."""
    env = fs.Env("cuda", request.param)
    yield env
    env.release()


@pytest.fixture(scope="module")
def cuda_env_gl():
    env = fs.Env("cuda", "gl")
    yield env
    env.release()


def _run(name, env, case):
    fs.PROPERTIES[name][1](env, case)


# ----------------------------------------------------------------------------------------------
# CPU (CI)

@fs.FUZZ_SETTINGS
@given(case=fs.PROPERTIES["rasterize"][0])
def test_rasterize(cpu_env, case):
    _run("rasterize", cpu_env, case)


@fs.FUZZ_SETTINGS
@given(case=fs.PROPERTIES["depth_peeler"][0])
def test_depth_peeler(cpu_env, case):
    _run("depth_peeler", cpu_env, case)


@fs.FUZZ_SETTINGS
@given(case=fs.PROPERTIES["interpolate"][0])
def test_interpolate(cpu_env, case):
    _run("interpolate", cpu_env, case)


@fs.FUZZ_SETTINGS
@given(case=fs.PROPERTIES["texture"][0])
def test_texture(cpu_env, case):
    _run("texture", cpu_env, case)


@fs.FUZZ_SETTINGS
@given(case=fs.PROPERTIES["texture_construct_mip"][0])
def test_texture_construct_mip(cpu_env, case):
    _run("texture_construct_mip", cpu_env, case)


@fs.FUZZ_SETTINGS
@given(case=fs.PROPERTIES["antialias"][0])
def test_antialias(cpu_env, case):
    _run("antialias", cpu_env, case)


@fs.FUZZ_SETTINGS
@given(case=fs.PROPERTIES["antialias_construct_topology_hash"][0])
def test_antialias_construct_topology_hash(cpu_env, case):
    _run("antialias_construct_topology_hash", cpu_env, case)


@fs.FUZZ_SETTINGS
@given(case=fs.PROPERTIES["pipeline"][0])
def test_pipeline(cpu_env, case):
    _run("pipeline", cpu_env, case)


@fs.FUZZ_SETTINGS
@given(case=fs.PROPERTIES["invalid"][0])
def test_invalid_inputs_raise(cpu_env, case):
    _run("invalid", cpu_env, case)


@pytest.mark.parametrize("fn,corruption", fs.INVALID_CASES, ids=[f"{f}-{c}" for f, c in fs.INVALID_CASES])
def test_every_invalid_input_raises(cpu_env, fn, corruption):
    """Every kind of invalid input, once each (the hypothesis test above combines them)."""
    fs.prop_invalid(cpu_env, (fn, (corruption,), 0))


def test_strategies_reach_the_interesting_cases(cpu_env):
    """The mesh strategy does produce covered pixels, empty batches, range mode and non-finite
    triangles (so the properties above are not vacuous)."""
    from hypothesis import HealthCheck, Phase, settings
    seen = dict(covered=0, empty_batch=0, range=0, nonfinite=0, total=0)

    @settings(max_examples=60, deadline=None, database=None, derandomize=True,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=fs.mesh_cases())
    def collect(case):
        pos, tri, ranges = case.build()
        rast, _, _, _ = fs.run_rasterize(cpu_env, case)
        seen["total"] += 1
        seen["covered"] += bool((rast[..., 3] > 0).any())
        seen["empty_batch"] += rast.shape[0] == 0
        seen["range"] += ranges is not None
        seen["nonfinite"] += bool((~torch.isfinite(pos)).any())

    collect()
    assert seen["covered"] >= 15 and seen["empty_batch"] >= 2 and seen["range"] >= 10 \
        and seen["nonfinite"] >= 10, seen


# ----------------------------------------------------------------------------------------------
# The CUDA kernels on the CPU (emulated), against the reference: the same comparisons as on a GPU

@pytest.fixture
def emulated_env():
    from helpers import kernel_emulator
    if kernel_emulator.compiler() is None:
        pytest.skip("no C++ compiler for the kernel emulator")
    env = fs.Env("emulated")
    yield env
    env.release()   # restores the dispatch and loader.launch


@pytest.mark.parametrize("name", ["rasterize", "interpolate", "texture", "texture_construct_mip",
                                  "antialias"])
def test_kernels_emulated(emulated_env, name):
    strategy, prop = fs.PROPERTIES[name]

    @fs.FUZZ_SETTINGS
    @given(case=strategy)
    def check(case):
        prop(emulated_env, case)

    check()


# ----------------------------------------------------------------------------------------------
# CUDA: the same properties, plus equality with the CPU path

@pytest.mark.gpu
@fs.FUZZ_SETTINGS
@given(case=fs.PROPERTIES["rasterize"][0])
def test_rasterize_cuda(cuda_env, case):
    _run("rasterize", cuda_env, case)


@pytest.mark.gpu
@fs.FUZZ_SETTINGS
@given(case=fs.PROPERTIES["depth_peeler"][0])
def test_depth_peeler_cuda(cuda_env, case):
    _run("depth_peeler", cuda_env, case)


@pytest.mark.gpu
@fs.FUZZ_SETTINGS
@given(case=fs.PROPERTIES["interpolate"][0])
def test_interpolate_cuda(cuda_env_gl, case):
    _run("interpolate", cuda_env_gl, case)


@pytest.mark.gpu
@fs.FUZZ_SETTINGS
@given(case=fs.PROPERTIES["texture"][0])
def test_texture_cuda(cuda_env_gl, case):
    _run("texture", cuda_env_gl, case)


@pytest.mark.gpu
@fs.FUZZ_SETTINGS
@given(case=fs.PROPERTIES["texture_construct_mip"][0])
def test_texture_construct_mip_cuda(cuda_env_gl, case):
    _run("texture_construct_mip", cuda_env_gl, case)


@pytest.mark.gpu
@fs.FUZZ_SETTINGS
@given(case=fs.PROPERTIES["antialias"][0])
def test_antialias_cuda(cuda_env_gl, case):
    _run("antialias", cuda_env_gl, case)


@pytest.mark.gpu
@fs.FUZZ_SETTINGS
@given(case=fs.PROPERTIES["antialias_construct_topology_hash"][0])
def test_antialias_construct_topology_hash_cuda(cuda_env_gl, case):
    _run("antialias_construct_topology_hash", cuda_env_gl, case)


@pytest.mark.gpu
@fs.FUZZ_SETTINGS
@given(case=fs.PROPERTIES["pipeline"][0])
def test_pipeline_cuda(cuda_env, case):
    _run("pipeline", cuda_env, case)


@pytest.mark.gpu
@fs.FUZZ_SETTINGS
@given(case=fs.PROPERTIES["invalid"][0])
def test_invalid_inputs_raise_cuda(cuda_env, case):
    _run("invalid", cuda_env, case)


@pytest.mark.gpu
@pytest.mark.parametrize("fn,corruption", fs.INVALID_CASES, ids=[f"{f}-{c}" for f, c in fs.INVALID_CASES])
def test_every_invalid_input_raises_cuda(cuda_env, fn, corruption):
    fs.prop_invalid(cuda_env, (fn, (corruption,), 0))


# ----------------------------------------------------------------------------------------------
# Regressions: inputs the fuzz found

# Exactly collinear corners (exact binary fractions) that GL still covers at one pixel once it has
# snapped them to its sub-pixel grid: the barycentrics there divide by s == 0. The fragment must
# be dropped, not written as inf/NaN.
COLLINEAR = [(-1.34326171875, -0.9736328125), (-0.328125, -0.296875), (-0.97412109375, -0.7275390625)]
COLLINEAR_RES = (31, 19)


def _collinear_pos(device):
    return torch.tensor([[[x, y, 0.0, 1.0] for x, y in COLLINEAR]], device=device)


def _check_collinear(ctx, device):
    import diffrast as dr
    tri = torch.tensor([[0, 1, 2]], dtype=torch.int32, device=device)
    pos = _collinear_pos(device).requires_grad_(True)
    rast, db = dr.rasterize(ctx, pos, tri, COLLINEAR_RES)
    (rast.sum() + db.sum()).backward()
    assert torch.isfinite(rast).all() and torch.isfinite(db).all()
    assert torch.isfinite(pos.grad).all()
    return rast


def test_exactly_collinear_triangle_is_not_drawn(cpu_env):
    rast = _check_collinear(cpu_env.context(), "cpu")
    if "llvmpipe" in cpu_env.context().renderer:
        assert not rast[..., 3].any()   # Mesa covers one pixel: that fragment is dropped


@pytest.mark.gpu
def test_exactly_collinear_triangle_is_not_drawn_cuda(cuda_env):
    _check_collinear(cuda_env.context(), "cuda")


@pytest.fixture(params=[pytest.param("cuda", marks=pytest.mark.gpu), "emulated"])
def grad_kernels(request):
    from helpers import kernel_emulator
    return kernel_emulator.kernel_device(request.param, request)


def test_degenerate_pixel_adds_nothing_to_the_gradient(grad_kernels):
    """A covered pixel of a triangle whose barycentrics divide by zero (here exactly collinear
    corners claimed by rast) contributes nothing to the rasterize backward, in the kernel as in
    the reference, instead of NaN for its three vertices; other pixels are unaffected."""
    from diffrast import cuda_backend, triangle_id
    from diffrast.reference import rasterize as ref
    dev = grad_kernels
    pos = torch.tensor([[[0.0, 0.0, 0.1, 1.0], [0.5, 0.5, 0.1, 1.0], [1.0, 1.0, 0.1, 1.0],
                         [-0.9, -0.9, 0.2, 1.0], [0.3, -0.8, 0.2, 1.2], [-0.7, 0.6, 0.2, 0.9]]])
    tri = torch.tensor([[0, 1, 2], [3, 4, 5]], dtype=torch.int32)
    H, W = 8, 8
    rast = torch.zeros(1, H, W, 4)
    rast[0, 5, 5, 3] = 1.0                      # the collinear triangle, claimed at one pixel
    rast[0, 1:4, 1:4, 3] = 2.0                  # the good triangle
    uv, db = ref.pixel_barycentrics(pos.double(), tri, rast)
    good = rast[..., 3] == 2.0
    rast[..., :2] = torch.where(good[..., None], uv.float(), rast[..., :2])
    assert triangle_id.decode(rast[..., 3]).max() == 2
    g = torch.Generator().manual_seed(0)
    grad_rast, grad_db = torch.randn(1, H, W, 4, generator=g), torch.randn(1, H, W, 4, generator=g)
    want = ref.rasterize_grad(pos, tri, rast, grad_rast, grad_db)
    assert torch.isfinite(want).all() and not want[0, :3].any() and want[0, 3:].abs().sum() > 0
    got = cuda_backend.rasterize_grad(pos.to(dev), tri.to(dev), rast.to(dev), grad_rast.to(dev),
                                      grad_db.to(dev)).cpu()
    assert torch.isfinite(got).all() and not got[0, :3].any()
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
def test_depth_peeling_of_coplanar_duplicates_matches_gl(cuda_env):
    """Two triangles at exactly the same depth (the same corners, another index order): GL's
    peeling drops fragments not strictly behind the previous layer, so the duplicate never shows;
    both CUDA contexts must peel the same layers as Mesa."""
    import diffrast as dr
    pos = torch.tensor([[[-0.8, -0.8, 0.1, 1.0], [0.8, -0.8, 0.1, 1.0], [0.0, 0.8, 0.1, 1.0]]])
    tri = torch.tensor([[0, 1, 2], [1, 2, 0], [0, 1, 2]], dtype=torch.int32)

    def peel(ctx, device):
        with dr.DepthPeeler(ctx, pos.to(device), tri.to(device), (8, 8)) as peeler:
            return [peeler.rasterize_next_layer() for _ in range(3)]

    want = peel(cuda_env.cpu_context(), "cpu")
    got = peel(cuda_env.context(), "cuda")
    for k, ((r, d), (wr, wd)) in enumerate(zip(got, want)):
        assert torch.equal(r[..., 3].cpu(), wr[..., 3]), f"layer {k}: other triangles than GL's"


def test_exact_arbiter_of_rasterizer_disagreements():
    """The GPU fuzz's example where RasterizeCudaContext and NVIDIA's OpenGL disagreed on 3
    pixels of a 46x46 image (triangles clipped near w = 0): float64 arithmetic shows the CUDA
    rasterizer right on each (twice the nearer surface by ~2e-5 in z/w, once a triangle GL drew a
    hair beyond the near plane), so they do not count against the flip budget; the reverse
    choices are not provably right."""
    case = fs.MeshCase(batch=3, num_triangles=200, topology="indexed",
                       kinds=("normal", "w_zero", "normal", "w_zero", "inf", "behind", "normal",
                              "normal", "behind", "normal", "far", "behind", "behind", "behind"),
                       resolution=(46, 46), range_mode=False, extra_vertices=0, output_db=True,
                       grad_db=False, seed=37929)
    pos, tri, _ = case.build()
    for (y, x), cuda, gl in (((21, 31), 139, 103), ((25, 1), 103, 139), ((45, 45), 62, 146)):
        assert fs._provably_right((pos, tri), 1, y, x, cuda, gl, 46, 46)
        assert not fs._provably_right((pos, tri), 1, y, x, gl, cuda, 46, 46)
    assert not fs._provably_right((pos, tri), 1, 21, 31, -1, 139, 46, 46)  # 139 does cover it
