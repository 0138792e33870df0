"""Scale past 32-bit offsets (issue 18, item 3), on the GPU: 10M triangles at 8 x 1024^2, one
16384^2 image, a ``rast`` (and a colour, and a ``texture`` output) of more than 2^31 floats, a
texture gradient into a texture of more than 2^31 elements, and torch's out-of-memory error where
memory runs out. nvdiffrast crashes or errors on these (its issues #197, #210, #232).

Each check is one of two kinds, so that no full-size reference has to run:

* **analytic**: the scenes are regular grids of triangles in clip space with ``w = 1``, so the
  triangle that holds a pixel centre is known, and interpolating the vertices' own ``(x, y, z)``
  at the stored barycentrics must give back the pixel centre and its depth (within 1e-6);
* **big equals small**: every op here is per pixel (antialias: per pixel pair), so the last item
  of a big batch, or a band of rows of a big image, must equal the same op on that item or band
  alone, where no offset comes near 2^31.

The sizes need up to about 50 GB of GPU memory; a test skips on a device with less free.
"""
import pytest
import torch

import diffrast as dr
from diffrast import dispatch
from helpers.contexts import KINDS, context, tensor_device

GIB = 1 << 30
OVER = 2 ** 31  # the bound that 32-bit offsets cannot pass


def need_memory(gib):
    """Skip unless the current CUDA device has ``gib`` GiB free."""
    free, _ = torch.cuda.mem_get_info()
    if free < gib * GIB:
        pytest.skip(f"needs {gib} GiB of free GPU memory, {free / GIB:.0f} GiB free")


@pytest.fixture(autouse=True)
def release_memory():
    yield
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def grid_mesh(nx, ny=None, batch=None, shift=0.0, device="cuda"):
    """A regular grid of ``nx x ny`` cells over clip space ``[-1, 1]^2``, two triangles a cell,
    ``w = 1`` and a smooth depth in (-0.5, 0.5).

    Returns ``(pos, tri)`` on ``device``: ``pos [V, 4]`` float32, or ``[batch, V, 4]`` with item ``b``
    moved right by ``b * shift`` (so that items differ), and ``tri [2 * nx * ny, 3]`` int32 with
    cell ``(i, j)`` holding triangles ``2 (j nx + i)`` and ``2 (j nx + i) + 1``.
    """
    ny = nx if ny is None else ny
    xs = torch.linspace(-1, 1, nx + 1, device=device)
    ys = torch.linspace(-1, 1, ny + 1, device=device)
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    z = 0.25 * torch.sin(3 * x) * torch.cos(2 * y)
    pos = torch.stack([x, y, z, torch.ones_like(x)], -1).reshape(-1, 4)
    j, i = torch.meshgrid(torch.arange(ny, device=device), torch.arange(nx, device=device),
                          indexing="ij")
    v00 = (j * (nx + 1) + i).reshape(-1)
    v10, v01, v11 = v00 + 1, v00 + nx + 1, v00 + nx + 2
    tri = torch.stack([torch.stack([v00, v10, v11], -1), torch.stack([v00, v11, v01], -1)], 1)
    tri = tri.reshape(-1, 3).to(torch.int32)
    if batch is not None:
        offsets = torch.arange(batch, device=device, dtype=torch.float32) * shift
        pos = pos.expand(batch, -1, -1).clone()
        pos[..., 0] += offsets[:, None]
    return pos, tri


def check_grid_rows(rast, pos, tri, rows, width, height):
    """Hold rows ``rows`` (a range) of one image's ``rast [H, W, 4]`` to the analytic answer for
    a ``w = 1`` scene: every pixel centre inside the mesh is covered, and the covering triangle's
    vertices interpolated at the stored barycentrics give the centre's ``(x, y)`` and the stored
    ``z/w`` (float64, within 1e-6). ``pos [V, 4]``. A wrong offset anywhere breaks one of these:
    another triangle's barycentrics interpolate to another point."""
    band = rast[rows.start:rows.stop].double()
    rows_f = torch.arange(rows.start, rows.stop, device=rast.device, dtype=torch.float64)
    y = (2 * rows_f + 1) / height - 1
    x = (2 * torch.arange(width, device=rast.device, dtype=torch.float64) + 1) / width - 1
    lo, hi = pos[:, :2].double().min(0).values, pos[:, :2].double().max(0).values
    inside = ((x[None, :] > lo[0]) & (x[None, :] < hi[0]) & (y[:, None] > lo[1]) &
              (y[:, None] < hi[1]))
    tid = band[..., 3].long()
    assert torch.equal(tid > 0, inside), "coverage differs from the mesh's extent"
    u, v = band[..., 0], band[..., 1]
    corners = pos.double()[tri.long()[(tid - 1).clamp(min=0)]]  # [h, W, 3, 4]
    weights = torch.stack([u, v, 1 - u - v], -1)[..., None]
    point = (weights * corners).sum(-2)
    # which triangle owns a centre on an edge is OpenGL's decision, made on vertices snapped to
    # 1/256 pixel: a centre may lie that far outside its triangle (the barycentrics are exact)
    assert (weights[inside] > -1e-2).all(), "a pixel centre lies outside its triangle"
    err_xy = (point[..., 0] - x[None, :]).abs().maximum((point[..., 1] - y[:, None]).abs())
    assert err_xy[inside].max() < 1e-6
    assert (point[..., 2] - band[..., 2]).abs()[inside].max() < 1e-6


def backward_from_last_item(out):
    """Backpropagate from a random gradient on the last item of ``out`` (a batch of more than
    2^31 elements) only; returns that item's output and the gradient."""
    assert out.numel() > OVER
    last = out[-1].clone()
    grad = torch.zeros_like(out)
    grad[-1] = torch.randn_like(out[-1])
    out.backward(grad)
    return last, grad


CONTEXTS = ["cuda", "gl"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("size, cells", [((64, 96), (7, 5)), ((33, 50), (60, 44))])
def test_grid_scene_is_exact_at_small_size(kind, size, cells):
    """The analytic check of the scale tests, at a size every context runs (CPU in CI): the
    check itself is sound, and the contexts pass it at small sizes with cells larger and
    smaller than a pixel."""
    pos, tri = grid_mesh(*cells, batch=2, shift=0.05, device=tensor_device(kind))
    rast, _ = dr.rasterize(context(kind), pos, tri, size)
    for b in range(2):
        check_grid_rows(rast[b], pos[b], tri, range(0, size[0]), size[1], size[0])
    broken = rast[1].clone()
    broken[5, 7, 0] += 1e-3
    with pytest.raises(AssertionError):
        check_grid_rows(broken, pos[1], tri, range(0, size[0]), size[1], size[0])


def make_context(kind):
    return dr.RasterizeCudaContext() if kind == "cuda" else dr.RasterizeGLContext(device="cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("kind", CONTEXTS)
def test_ten_million_triangles_at_8x1024(kind):
    """The scale row of issue 16: 10M triangles at 8 x 1024^2, rasterize, interpolate with
    derivatives, antialias with and without a topology hash, forward and backward."""
    need_memory(24)
    n = 2237  # 2 n^2 = 10,009,538 triangles, smaller than a pixel
    pos, tri = grid_mesh(n, batch=8, shift=1e-4)
    assert tri.shape[0] > 10_000_000
    ctx = make_context(kind)
    pos.requires_grad_()
    rast, rast_db = dr.rasterize(ctx, pos, tri, (1024, 1024))
    for b in (0, 7):
        check_grid_rows(rast[b], pos[b].detach(), tri, range(0, 1024), 1024, 1024)
    attr = pos[..., :3].detach().contiguous().requires_grad_()
    out, out_da = dr.interpolate(attr, rast, tri, rast_db=rast_db, diff_attrs="all")
    topology = dr.antialias_construct_topology_hash(tri)
    aa = dr.antialias(out, rast, pos, tri, topology_hash=topology)
    aa_without = dr.antialias(out, rast, pos, tri)
    assert torch.equal(aa, aa_without)
    (aa.sum() + out_da.square().sum()).backward()
    assert torch.isfinite(pos.grad).all() and torch.isfinite(attr.grad).all()
    # the last item again on its own: the same values, the same gradients
    alone_pos = pos[7:].detach().clone().requires_grad_()
    alone_attr = attr[7:].detach().clone().requires_grad_()
    r1, db1 = dr.rasterize(ctx, alone_pos, tri, (1024, 1024))
    assert torch.equal(r1[0], rast[7]) and torch.equal(db1[0], rast_db[7])
    o1, o1_da = dr.interpolate(alone_attr, r1, tri, rast_db=db1, diff_attrs="all")
    a1 = dr.antialias(o1, r1, alone_pos, tri, topology_hash=topology)
    assert torch.equal(o1[0], out[7]) and torch.equal(o1_da[0], out_da[7])
    assert torch.equal(a1[0], aa[7])
    (a1.sum() + o1_da.square().sum()).backward()
    torch.testing.assert_close(alone_attr.grad[0], attr.grad[7], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(alone_pos.grad[0], pos.grad[7], rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize("kind", CONTEXTS)
def test_one_16384_image(kind):
    """One 16384^2 image: rasterized right to its last row; interpolating 9 attributes gives an
    output of more than 2^31 floats, equal row band by row band to the same op on that band."""
    need_memory(40)
    ctx = make_context(kind)
    if min(ctx.max_resolution) < 16384:
        pytest.skip(f"the context's largest image is {ctx.max_resolution}")
    pos, tri = grid_mesh(60, 44)
    rast, _ = dr.rasterize(ctx, pos[None], tri, (16384, 16384), grad_db=False)
    for rows in (range(0, 64), range(8000, 8064), range(16320, 16384)):
        check_grid_rows(rast[0], pos, tri, rows, 16384, 16384)
    attr = torch.randn(pos.shape[0], 9, device="cuda").requires_grad_()
    out, _ = dr.interpolate(attr, rast, tri)
    assert out.numel() > OVER
    grad = torch.zeros_like(out)
    grad[:, -32:] = torch.randn(1, 32, 16384, 9, device="cuda")
    out.backward(grad)
    band = rast[:, -32:].contiguous()
    band_attr = attr.detach().clone().requires_grad_()
    band_out, _ = dr.interpolate(band_attr, band, tri)
    assert torch.equal(band_out, out[:, -32:])
    band_out.backward(grad[:, -32:].contiguous())
    torch.testing.assert_close(band_attr.grad, attr.grad, rtol=1e-5, atol=1e-4)


@pytest.mark.gpu
def test_gl_targets_made_while_torchs_cache_holds_the_memory():
    """OpenGL's render targets are allocated outside torch: with torch's cache holding all but
    about 0.2 GiB of the free memory (in blocks the outputs fit in, so torch needs no more), the
    GL context has the cache released before it allocates its targets (0.375 GiB, and the
    driver's margin), and renders right; with the memory really in use, torch's out-of-memory
    error, and the context works afterwards. (An earlier run of the suite crashed in the interop
    copy after earlier tests.)"""
    need_memory(24)
    pos, tri = grid_mesh(30, 22, batch=4, shift=0.01)
    ctx = make_context("gl")
    if ctx.max_layers < 4 or min(ctx.max_resolution) < 8192:
        pytest.skip("the GL context's limits are below 4 x 8192^2")
    free, _ = torch.cuda.mem_get_info()
    half = GIB // 2  # the size of each output (rast, rast_db: 2 x 4096^2 x 16 bytes)
    keep = free - GIB // 5
    blocks = [torch.empty(half, dtype=torch.uint8, device="cuda") for _ in range(keep // half)]
    blocks.append(torch.empty(keep % half, dtype=torch.uint8, device="cuda"))  # the ids fit here
    del blocks  # cached by torch, not free for OpenGL
    cached = torch.cuda.memory_reserved()
    rast, _ = dr.rasterize(ctx, pos[:2], tri, (4096, 4096), grad_db=False)
    assert torch.cuda.memory_reserved() < cached  # the cache was released for the targets
    for b in (0, 1):
        check_grid_rows(rast[b], pos[b], tri, range(4032, 4096), 4096, 4096)
    del rast
    ctx.release()
    torch.cuda.empty_cache()
    ctx = make_context("gl")
    dr.rasterize(ctx, pos[:1], tri, (64, 64))  # (the driver's own first allocations)
    free, _ = torch.cuda.mem_get_info()
    # rast and rast_db (2 GiB) and the ids (0.25 GiB) fit, the targets (0.75 GiB) do not
    held = torch.empty(free - 5 * GIB // 2, dtype=torch.uint8, device="cuda")
    with pytest.raises(torch.cuda.OutOfMemoryError, match="OpenGL render targets"):
        dr.rasterize(ctx, pos[3:], tri, (8192, 8192), grad_db=False)
    del held
    rast, _ = dr.rasterize(ctx, pos[3:].contiguous(), tri, (8192, 8192), grad_db=False)
    check_grid_rows(rast[0], pos[3], tri, range(8128, 8192), 8192, 8192)


@pytest.fixture(scope="module")
def nine_8k_images():
    """9 images of 8192^2 in instance mode: a ``rast`` of 2.4G floats (more than 2^31); the CUDA
    context's render, and the scene."""
    free, _ = torch.cuda.mem_get_info()
    if free < 60 * GIB:
        pytest.skip(f"needs 60 GiB of free GPU memory, {free / GIB:.0f} GiB free")
    pos, tri = grid_mesh(30, 22, batch=9, shift=0.01)
    ctx = dr.RasterizeCudaContext()
    rast, _ = dr.rasterize(ctx, pos, tri, (8192, 8192), grad_db=False)
    assert rast.numel() > OVER
    yield ctx, pos, tri, rast
    del rast
    torch.cuda.empty_cache()


@pytest.mark.gpu
@pytest.mark.parametrize("kind", CONTEXTS)
def test_rast_of_more_than_2_31_floats(nine_8k_images, kind):
    ctx, pos, tri, rast = nine_8k_images
    if kind == "gl":
        ctx = make_context("gl")
        if ctx.max_layers < 9 or min(ctx.max_resolution) < 8192:
            pytest.skip("the GL context's limits are below 9 x 8192^2")
        got, _ = dr.rasterize(ctx, pos, tri, (8192, 8192), grad_db=False)
        for b in (0, 8):
            assert torch.equal(got[b, ..., 3], rast[b, ..., 3])
            torch.testing.assert_close(got[b], rast[b], rtol=0, atol=1e-6)
        del got
    for b in (0, 4, 8):
        check_grid_rows(rast[b], pos[b], tri, range(8128, 8192), 8192, 8192)
    alone, _ = dr.rasterize(ctx, pos[8:].contiguous(), tri, (8192, 8192), grad_db=False)
    if kind == "cuda":
        assert torch.equal(alone[0], rast[8])


@pytest.mark.gpu
def test_interpolate_and_rasterize_backward_past_2_31(nine_8k_images, deterministic):
    """Interpolate 4 attributes into 2.4G floats and back, with a gradient on the last item
    only: the last item's output and gradients equal the same op on it alone, bit for bit in
    deterministic mode (float32 atomics would sum its 67M pixels in another order)."""
    need_memory(60)  # the deterministic sums sort 3 entries a pixel
    deterministic(True)  # gradients summed in one order, so comparable bit for bit
    _, pos, tri, rast = nine_8k_images
    attr = torch.randn(9, pos.shape[1], 4, device="cuda").requires_grad_()
    out, _ = dr.interpolate(attr, rast, tri)
    last, grad = backward_from_last_item(out)
    del out
    alone_attr = attr[8:].detach().clone().requires_grad_()
    alone, _ = dr.interpolate(alone_attr, rast[8:], tri)
    assert torch.equal(alone[0], last)
    alone.backward(grad[8:])
    del grad, alone, last
    assert (attr.grad[:8] == 0).all()
    assert torch.equal(alone_attr.grad[0], attr.grad[8])
    # the rasterizer's backward through the whole batch: the last item's position gradient
    # equals that of the item alone (with float32 atomics: the deterministic sums of 604M pixels
    # would sort more than 100 GB; the loss covers the item's last 512 rows)
    deterministic(False)
    ctx = dr.RasterizeCudaContext()
    p = pos.clone().requires_grad_()
    r, _ = dr.rasterize(ctx, p, tri, (8192, 8192), grad_db=False)
    g = torch.zeros_like(r)
    g[8, -512:, :, :2] = torch.randn(512, 8192, 2, device="cuda")
    r.backward(g)
    del r
    q = pos[8:].clone().requires_grad_()
    r1, _ = dr.rasterize(ctx, q, tri, (8192, 8192), grad_db=False)
    r1.backward(g[8:])
    assert (p.grad[:8] == 0).all() and p.grad[8].abs().amax() > 0
    torch.testing.assert_close(q.grad[0], p.grad[8], rtol=1e-4,
                               atol=1e-5 * p.grad[8].abs().amax().item())


@pytest.mark.gpu
def test_texture_output_past_2_31(nine_8k_images):
    """A ``texture`` call whose output has 2.4G floats (its ``uv`` 1.2G)."""
    _, _, _, rast = nine_8k_images
    uv = rast[..., :2].contiguous().requires_grad_()
    tex = torch.rand(1, 256, 256, 4, device="cuda").requires_grad_()
    out = dr.texture(tex, uv, filter_mode="linear")
    last, grad = backward_from_last_item(out)
    del out
    alone_uv = uv[8:].detach().clone().requires_grad_()
    alone_tex = tex.detach().clone().requires_grad_()
    alone = dr.texture(alone_tex, alone_uv, filter_mode="linear")
    assert torch.equal(alone[0], last)
    alone.backward(grad[8:])
    assert (uv.grad[:8] == 0).all()
    assert torch.equal(alone_uv.grad[0], uv.grad[8])
    torch.testing.assert_close(alone_tex.grad, tex.grad, rtol=1e-4, atol=1e-2)


@pytest.mark.gpu
def test_antialias_past_2_31(nine_8k_images):
    """Antialias a colour of 2.4G floats (more than 2^31), forward and backward, gradient on the
    last item only."""
    _, pos, tri, rast = nine_8k_images
    # Any 4-channel colour of order 1 will do: rast with its ids (up to 1320) scaled down. (With
    # the raw ids, each edge pixel adds ~4e6 to a vertex's gradient at 8192^2 and the float32
    # atomic sums, in another order alone and in the batch, differ by ~5 on sums of ~2e4.)
    color = rast.clone()
    color[..., 3] *= 1e-3
    color.requires_grad_()
    p = pos.clone().requires_grad_()
    out = dr.antialias(color, rast, p, tri)
    last, grad = backward_from_last_item(out)
    del out
    alone_color = color[8:].detach().clone().requires_grad_()
    alone_pos = pos[8:].clone().requires_grad_()
    alone = dr.antialias(alone_color, rast[8:], alone_pos, tri)
    assert torch.equal(alone[0], last)
    alone.backward(grad[8:])
    assert (color.grad[:8] == 0).all() and (p.grad[:8] == 0).all()
    assert torch.equal(alone_color.grad[0], color.grad[8])
    torch.testing.assert_close(alone_pos.grad[0], p.grad[8], rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize("filter_mode", ["linear", "linear-mipmap-linear"])
def test_texture_gradient_into_a_texture_past_2_31(filter_mode):
    """A 24576^2 RGBA texture (2.4G floats) sampled near its far corner, where texel offsets pass
    2^31 (from row 21846 on; every mip level's offset in one stack passes it too): the kernels
    against the reference on the same tensors, output and texture gradient."""
    need_memory(60)
    size = 24576
    tex = torch.full((1, size, size, 4), 0.5, device="cuda")
    tex[:, 21000:] = torch.rand(1, size - 21000, size, 4, device="cuda")
    assert tex.numel() > OVER
    g = torch.Generator(device="cuda").manual_seed(0)
    uv = 0.9 + 0.1 * torch.rand(1, 128, 128, 2, device="cuda", generator=g)
    kwargs = dict(filter_mode=filter_mode, boundary_mode="clamp")
    if filter_mode != "linear":  # footprints of up to 4 texels: levels 0 to 2
        kwargs["uv_da"] = 1.6e-4 * torch.rand(1, 128, 128, 4, device="cuda", generator=g)
    grad_out = torch.randn(1, 128, 128, 4, device="cuda", generator=g)
    tex.requires_grad_()
    out_k = dr.texture(tex, uv, **kwargs)
    out_k.backward(grad_out)
    grad_k, tex.grad = tex.grad, None
    with dispatch.force(dispatch.REFERENCE):
        out_r = dr.texture(tex, uv, **kwargs)
        out_r.backward(grad_out)
    torch.testing.assert_close(out_k, out_r, rtol=1e-5, atol=1e-5)
    # the samples reach rows 0.9 size - 4 > 22000 only
    assert torch.count_nonzero(grad_k[:, :21000]) == 0
    torch.testing.assert_close(grad_k[:, 21000:], tex.grad[:, 21000:], rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
def test_out_of_memory_is_torchs_error():
    """Far past the device's memory: torch's out-of-memory error, before any kernel runs, and the
    context still works afterwards."""
    ctx = dr.RasterizeCudaContext()
    pos, tri = grid_mesh(4, batch=64)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        dr.rasterize(ctx, pos, tri, (32768, 32768))
    torch.cuda.empty_cache()
    rast, _ = dr.rasterize(ctx, pos[:1].contiguous(), tri, (64, 64))
    check_grid_rows(rast[0], pos[0], tri, range(0, 64), 64, 64)
    attr = torch.ones(1, 1, 1 << 20, device="cuda").expand(1, pos.shape[1], 1 << 20)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        dr.interpolate(attr, torch.zeros(64, 1024, 1024, 4, device="cuda"), tri)


def test_deterministic_sums_past_torch_sort_limit_are_a_clear_error():
    """Deterministic gradients sort 3 (antialias: 4) entries a pixel with ``torch.sort``, which
    on CUDA takes at most 2^31 - 1 elements: past it, a ``ValueError`` that says what to do,
    before any kernel runs (non-deterministic mode has no such limit)."""
    from diffrast import cuda_backend
    cuda_backend.check_entries(2**31 - 1, "interpolate")
    with pytest.raises(ValueError, match="torch.sort's limit .* non-deterministic mode"):
        cuda_backend.check_entries(3 * 716_000_000, "interpolate")
