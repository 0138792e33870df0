"""RasterizeCudaContext against the OpenGL path on the same GPU (and the analytic tests of
test_rasterize.py, which run on both contexts)."""
import math

import pytest
import torch

import diffrast as dr
from diffrast import geometry

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def contexts():
    return dr.RasterizeGLContext(device="cuda"), dr.RasterizeCudaContext()


def sphere_scene(rows, cols, batch, seed=0):
    pos, tri, _ = geometry.uv_sphere(rows, cols)
    gen = torch.Generator().manual_seed(seed)
    proj = geometry.perspective(45.0) @ geometry.translate(0, 0, -3.0)
    mvp = torch.stack([proj @ geometry.rotate_y(2 * math.pi * torch.rand(1, generator=gen).item())
                       @ geometry.rotate_x(0.3) for _ in range(batch)])
    return geometry.transform(pos, mvp).contiguous().cuda(), tri.cuda()


def random_mesh(seed, batch=3, verts=300, tris=400):
    gen = torch.Generator().manual_seed(seed)
    w = torch.rand(batch, verts, 1, generator=gen) * 2 + 0.2
    xyz = (torch.rand(batch, verts, 3, generator=gen) * 2.4 - 1.2) * w
    pos = torch.cat([xyz, w], -1)
    tri = torch.randint(0, verts, (tris, 3), generator=gen, dtype=torch.int32)
    return pos.cuda(), tri.cuda()


def agreement(a, b):
    """Fraction of pixels with the same triangle id, and the largest (u, v, z/w, db) difference
    on those pixels."""
    (ra, da), (rb, db) = a, b
    same = ra[..., 3] == rb[..., 3]
    covered = same & (ra[..., 3] > 0)
    diff = max((ra[..., :3] - rb[..., :3])[covered].abs().max().item() if covered.any() else 0.0,
               ((da - db)[covered].abs() / (da[covered].abs() + 1)).max().item() if covered.any() else 0.0)
    return same.float().mean().item(), diff


@pytest.mark.parametrize("scene", ["random", "small_1x512", "mid_4x1024", "big_8x1024_1M"])
def test_cuda_rasterizer_agrees_with_opengl(contexts, scene):
    gl, cu = contexts
    if scene == "random":
        pos, tri = random_mesh(1)
        res = (301, 517)
    else:
        rows, cols, batch, size = {"small_1x512": (16, 32, 1, 512), "mid_4x1024": (128, 256, 4, 1024),
                                   "big_8x1024_1M": (500, 1000, 8, 1024)}[scene]
        pos, tri = sphere_scene(rows, cols, batch)
        res = (size, size)
    frac, diff = agreement(dr.rasterize(gl, pos, tri, res), dr.rasterize(cu, pos, tri, res))
    print(f"{scene}: {100 * frac:.4f}% of pixels agree, max difference {diff:.2e}")
    assert frac >= 0.9995
    assert diff == 0  # one resolve pass (rasterize_resolve.cuh) for both contexts


def test_cuda_rasterizer_range_mode_and_large_odd_resolutions(contexts):
    gl, cu = contexts
    pos, tri = random_mesh(2, batch=1, verts=200, tris=300)
    ranges = torch.tensor([[0, 100], [50, 250], [0, 0]], dtype=torch.int32)
    res = (2001, 3001)
    frac, diff = agreement(dr.rasterize(gl, pos[0], tri, res, ranges=ranges),
                           dr.rasterize(cu, pos[0], tri, res, ranges=ranges))
    assert frac >= 0.9995 and diff < 1e-5


def test_huge_subpixel_and_degenerate_triangles(contexts):
    gl, cu = contexts
    pos = torch.tensor([[-1e4, -1e4, 0.1, 1], [1e4, -1e4, 0.1, 1], [0, 1e4, 0.1, 1],      # huge
                        [0.001, 0.001, 0, 1], [0.004, 0.001, 0, 1], [0.001, 0.004, 0, 1],  # sub-pixel
                        [0.1, 0.1, 0, 1], [0.2, 0.2, 0, 1], [0.3, 0.3, 0, 1],              # zero area
                        [-0.5, -0.5, 0.0, 1.0], [0.5, -0.5, 0.0, 1.0], [0.0, 0.6, -1.5, -0.5]],  # w < 0
                       device="cuda")
    tri = torch.arange(12, dtype=torch.int32, device="cuda").reshape(4, 3)
    for rng in ([[0, 1]], [[1, 2]], [[3, 1]]):
        ranges = torch.tensor(rng, dtype=torch.int32)
        a = dr.rasterize(gl, pos, tri, (64, 96), ranges=ranges)
        b = dr.rasterize(cu, pos, tri, (64, 96), ranges=ranges)
        frac, diff = agreement(a, b)
        assert frac >= 0.999 and diff < 1e-5, (rng, frac, diff)
    rast, _ = dr.rasterize(cu, pos, tri, (64, 96), ranges=torch.tensor([[0, 1]], dtype=torch.int32))
    assert (rast[..., 3] == 1).all()  # the huge triangle covers everything


def test_closed_mesh_has_no_gaps_and_shared_edges_are_covered_once(contexts):
    _, cu = contexts
    pos, tri = sphere_scene(24, 48, 2, seed=3)
    rast, _ = dr.rasterize(cu, pos, tri, (257, 255))
    # The sphere's silhouette is convex: inside its projected disc no pixel may be empty.
    ids = rast[..., 3] > 0
    rows_any = ids.any(-1)
    for b in range(2):
        for y in torch.nonzero(rows_any[b]).flatten().tolist():
            xs = torch.nonzero(ids[b, y]).flatten()
            assert ids[b, y, xs.min():xs.max() + 1].all()
    # A quad split along its diagonal, whose pixel centres lie exactly on the shared edge.
    quad = torch.tensor([[-1, -1, 0, 1], [1, -1, 0, 1], [1, 1, 0, 1], [-1, 1, 0, 1]], dtype=torch.float32, device="cuda")
    qtri = torch.tensor([[0, 1, 2], [0, 2, 3]], dtype=torch.int32, device="cuda")
    r, _ = dr.rasterize(cu, quad, qtri, (32, 32), ranges=torch.tensor([[0, 1], [1, 1]], dtype=torch.int32))
    assert ((r[0, ..., 3] > 0).int() + (r[1, ..., 3] > 0).int() == 1).all()


def test_depth_peeling_on_the_cuda_context(contexts):
    gl, cu = contexts
    pos, tri = sphere_scene(16, 32, 2, seed=4)
    layers = {}
    for name, ctx in (("gl", gl), ("cu", cu)):
        with dr.DepthPeeler(ctx, pos, tri, (128, 128)) as peeler:
            layers[name] = [peeler.rasterize_next_layer() for _ in range(3)]
    for a, b in zip(layers["gl"], layers["cu"]):
        frac, diff = agreement(a, b)
        assert frac >= 0.999 and diff < 1e-5
    assert (layers["cu"][2][0][..., 3] == 0).all()  # a sphere has two layers


def test_downstream_ops_and_training_step_match_between_contexts(contexts):
    gl, cu = contexts
    pos, tri = sphere_scene(32, 64, 2, seed=5)
    _, _, uv = geometry.uv_sphere(32, 64)
    uv = uv.cuda()
    tex = torch.rand(1, 64, 64, 3, device="cuda")
    grads = {}
    for name, ctx in (("gl", gl), ("cu", cu)):
        p = pos.clone().requires_grad_(True)
        t = tex.clone().requires_grad_(True)
        rast, db = dr.rasterize(ctx, p, tri, (128, 128))
        tc, td = dr.interpolate(uv, rast, tri, rast_db=db, diff_attrs="all")
        c = dr.texture(t, tc, td, filter_mode="linear-mipmap-linear")
        c = dr.antialias(torch.where(rast[..., 3:] > 0, c, torch.zeros_like(c)), rast, p, tri)
        (c ** 2).mean().backward()
        grads[name] = (rast, c.detach(), p.grad, t.grad)
    same = grads["gl"][0][..., 3] == grads["cu"][0][..., 3]
    assert same.float().mean() >= 0.9995
    if bool(same.all()):
        for a, b in zip(grads["gl"][1:], grads["cu"][1:]):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)


def test_cuda_rasterizer_makes_no_host_copies(contexts):
    _, cu = contexts
    pos, tri = sphere_scene(16, 32, 2)
    dr.rasterize(cu, pos, tri, (64, 64))
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                            torch.profiler.ProfilerActivity.CUDA]) as prof:
        dr.rasterize(cu, pos, tri, (64, 64))
        torch.cuda.synchronize()
    names = [e.name for e in prof.events()]
    assert not any("DtoH" in n or "DeviceToHost" in n or "Device -> Pageable" in n for n in names)


def test_scratch_is_reused_and_left_clean_between_calls(contexts):
    """The scratch buffers persist between calls: renders of different sizes, depth peelers
    (which keep each layer's keys for the next) and renders after them all equal a fresh
    context's."""
    _, cu = contexts
    pos, tri = sphere_scene(16, 32, 2, seed=6)
    fresh = dr.RasterizeCudaContext()
    first = dr.rasterize(fresh, pos, tri, (96, 80))
    for res in ((200, 300), (96, 80), (31, 17), (96, 80)):  # grow, shrink, other shapes
        out = dr.rasterize(cu, pos, tri, res)
        ref = dr.rasterize(dr.RasterizeCudaContext(), pos, tri, res)
        assert torch.equal(out[0], ref[0]) and torch.equal(out[1], ref[1])
    for _ in range(2):  # two peelers in a row, the second starting with the first's keys left
        with dr.DepthPeeler(cu, pos, tri, (96, 80)) as peeler:
            layers = [peeler.rasterize_next_layer()[0] for _ in range(3)]
        assert torch.equal(layers[0], first[0])
        assert (layers[1][..., 3] > 0).any() and (layers[2][..., 3] == 0).all()
    again = dr.rasterize(cu, pos, tri, (96, 80))
    assert torch.equal(again[0], first[0]) and torch.equal(again[1], first[1])


def test_results_do_not_depend_on_the_kernel_path_or_chunking(contexts, monkeypatch):
    """The same triangles give the same pixels whether the setup kernel's thread, its warp or
    the tiled kernel tests them (the choice depends on the number of work items) and whether the
    work items run in one launch or in chunks."""
    from diffrast import cuda_context
    _, cu = contexts
    pos, tri = sphere_scene(24, 48, 1, seed=7)
    single = dr.rasterize(cu, pos, tri, (160, 224))
    many = pos.expand(cu._few_items // tri.shape[0] + 1, -1, -1).contiguous()  # past _few_items
    batch = dr.rasterize(cu, many, tri, (160, 224))
    assert torch.equal(batch[0], single[0].expand_as(batch[0]))
    assert torch.equal(batch[1], single[1].expand_as(batch[1]))
    chunking = cuda_context._chunking
    monkeypatch.setattr(cuda_context, "_chunking", lambda n, w, h: (97, chunking(97, w, h)[1]))
    chunked = dr.rasterize(cu, pos, tri, (160, 224))
    assert torch.equal(chunked[0], single[0]) and torch.equal(chunked[1], single[1])


def test_large_triangles_in_many_images_give_the_same_pixels_on_either_setup_path(contexts,
                                                                                 monkeypatch):
    """Many images of a coarse mesh (large triangles): a warp sets up each triangle (pixels per
    work item >= 64); forced to a thread per triangle, which sends them to the tiled list, the
    pixels are the same."""
    from diffrast import cuda_context
    _, cu = contexts
    pos, tri = sphere_scene(6, 12, 1, seed=3)
    many = pos.expand(cu._few_items // tri.shape[0] + 1, -1, -1).contiguous()
    assert many.shape[0] * 160 * 224 >= cuda_context._LARGE_TRIANGLE_PIXELS * many.shape[0] * tri.shape[0]
    by_warp = dr.rasterize(cu, many, tri, (160, 224))
    monkeypatch.setattr(cuda_context, "_LARGE_TRIANGLE_PIXELS", 1 << 40)
    cu._plans = {}
    by_thread = dr.rasterize(cu, many, tri, (160, 224))
    cu._plans = {}
    assert (by_warp[0][..., 3] > 0).float().mean() > 0.2
    assert torch.equal(by_warp[0], by_thread[0]) and torch.equal(by_warp[1], by_thread[1])


def test_scratch_follows_a_change_of_stream(contexts):
    _, cu = contexts
    pos, tri = sphere_scene(32, 64, 3, seed=8)
    ref = dr.rasterize(cu, pos, tri, (256, 256))[0].clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    outs = []
    for i in range(6):  # alternate streams without synchronizing in between
        with torch.cuda.stream(side if i % 2 else torch.cuda.current_stream()):
            outs.append(dr.rasterize(cu, pos, tri, (256, 256))[0])
    torch.cuda.synchronize()
    for out in outs:
        assert torch.equal(out, ref)
