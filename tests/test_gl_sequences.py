"""Scenes rendered after other calls on the same context must come out as on a fresh one.

Issue 19: the OpenGL path skipped the index upload when ``tri`` looked unchanged (same ``id``,
address and version counter), and a new index tensor that landed at a freed one's address drew
the old triangles: in about one process in four, the nearer of two overlapping triangles
vanished. These tests run mixed sequences of scenes (plain, range mode, depth peeling, large
then small, indices rewritten in place) many times in one process and in fresh processes, and
check every pixel whose answer is certain against an analytic float64 solve. They also audit the
GL state each draw leaves: no texture is sampled while it is attached to the framebuffer drawn.

Run as a script (``python tests/test_gl_sequences.py cpu 10``) it runs the sequence and prints
``ok`` or the failures: the fresh-process tests use that.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import diffrast as dr
from helpers.contexts import KINDS, tensor_device

GL_KINDS = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]
MARGIN = 1e-3  # pixels this close (in barycentric weight) to an edge are not checked


def make_context(kind):
    if kind == "cudarast":
        return dr.RasterizeCudaContext()
    return dr.RasterizeGLContext(device=kind)


def expected(pos, tri, height, width):
    """Analytic float64 answer for one image: ``(ids, u, v, certain)``, each ``[H, W]``.

    ``pos`` is ``[V, 4]`` clip space (numpy), ``tri`` a list of index triples; ``ids`` holds
    ``triangle_id + 1`` of the nearest covering triangle (0: none), ``certain`` marks pixels at
    least ``MARGIN`` from every edge and with no two covering triangles at equal depth."""
    ys, xs = np.mgrid[0:height, 0:width]
    q = np.stack([(xs + 0.5) * 2 / width - 1, (ys + 0.5) * 2 / height - 1, np.ones(xs.shape)], -1)
    ids = np.zeros((height, width))
    u = np.zeros((height, width))
    v = np.zeros((height, width))
    best = np.full((height, width), np.inf)
    certain = np.ones((height, width), bool)
    for t, corners in enumerate(tri):
        c = np.asarray(pos, np.float64)[list(corners)]
        m = np.stack([c[:, 0], c[:, 1], c[:, 3]])  # columns: (x, y, w) of each vertex
        b = np.linalg.solve(m[None, None], q[..., None])[..., 0]
        b = b / b.sum(-1, keepdims=True)
        lo = b.min(-1)
        zw = (b @ c[:, 2]) / (b @ c[:, 3])
        certain &= np.abs(lo) > MARGIN
        cover = (lo > 0) & (np.abs(zw) <= 1)
        certain &= ~(cover & (np.abs(zw - best) < 1e-6))
        win = cover & (zw < best)
        best = np.where(win, zw, best)
        ids = np.where(win, t + 1, ids)
        u = np.where(win, b[..., 0], u)
        v = np.where(win, b[..., 1], v)
    return ids, u, v, certain


def tri_quad():
    pos = [[-0.6, -0.6, 0, 1], [0.7, -0.6, 0, 1], [0.7, 0.5, 0, 1], [-0.6, 0.5, 0, 1]]
    return pos, [[0, 1, 2], [0, 2, 3]]


NEAR = [[-0.9, -0.9, -0.5, 1], [0.9, -0.9, -0.5, 1], [0, 0.9, -0.5, 1]]
FAR = [[-0.9, 0.9, 0.5, 1], [0.9, 0.9, 0.5, 1], [0, -0.9, 0.5, 1]]
# Instance and range-mode scenes: (name, pos [V, 4], tri, resolution, ranges or None).
SCENES = [
    ("flat", [[-0.8, -0.7, 0.1, 1.0], [0.9, -0.5, 0.3, 1.0], [-0.2, 0.8, -0.2, 1.0]],
     [[0, 1, 2]], (37, 53), None),
    ("perspective", [[-0.8, -0.7, 0.5, 1.0], [1.6, -1.0, 1.2, 2.0], [-0.14, 0.56, 0.1, 0.7]],
     [[0, 1, 2]], (37, 53), None),
    ("quad", *tri_quad(), (37, 53), None),
    ("far then near", FAR + NEAR, [[0, 1, 2], [3, 4, 5]], (37, 53), None),
    ("near then far", NEAR + FAR, [[0, 1, 2], [3, 4, 5]], (37, 53), None),
    ("large", FAR + NEAR, [[0, 1, 2], [3, 4, 5]], (190, 301), None),
    # a tall and a wide image: their union is more than twice either, so the targets are
    # remade at each one's size (and the peeling target made again after them)
    ("tall", FAR + NEAR, [[0, 1, 2], [3, 4, 5]], (301, 23), None),
    ("wide", NEAR + FAR, [[0, 1, 2], [3, 4, 5]], (17, 280), None),
    ("range mode", FAR + NEAR, [[0, 1, 2], [3, 4, 5]], (37, 53), [[0, 2], [1, 1], [0, 1]]),
]


def check_image(name, rast, pos, tri, height, width, first=0, count=None):
    """Failure messages for one ``rast`` image ``[H, W, 4]`` (numpy) of triangles
    ``[first, first + count)`` of ``tri``."""
    count = len(tri) - first if count is None else count
    ids, u, v, certain = expected(pos, tri[first:first + count], height, width)
    ids = np.where(ids > 0, ids + first, 0)
    got = rast[..., 3]
    bad = certain & (got != ids)
    out = []
    if bad.any():
        seen = sorted(set(got[bad].tolist()))
        out.append(f"{name}: {bad.sum()} of {certain.sum()} checked pixels hold the wrong id "
                   f"(seen there: {seen})")
    hit = certain & (ids > 0)
    err = max(np.abs(rast[..., 0] - u)[hit].max(initial=0),
              np.abs(rast[..., 1] - v)[hit].max(initial=0))
    if err > 2e-5:
        out.append(f"{name}: barycentric error {err:.2e}")
    return out


def render(glctx, device, pos, tri, resolution, ranges):
    # Fresh tensors each call, as user code makes them (and as the original failure needed).
    p = torch.tensor(pos, dtype=torch.float32, device=device)
    t = torch.tensor(tri, dtype=torch.int32, device=device)
    if ranges is None:
        p = p[None]
    kw = {} if ranges is None else {"ranges": torch.tensor(ranges, dtype=torch.int32)}
    rast, _ = dr.rasterize(glctx, p, t, resolution, **kw)
    return rast.cpu().numpy()


def check_scene(glctx, device, scene):
    name, pos, tri, (h, w), ranges = scene
    rast = render(glctx, device, pos, tri, (h, w), ranges)
    if ranges is None:
        return check_image(name, rast[0], pos, tri, h, w)
    out = []
    for i, (first, count) in enumerate(ranges):
        out += check_image(f"{name} item {i}", rast[i], pos, tri, h, w, first, count)
    return out


def check_peeling(glctx, device):
    """Three full-screen layers at z/w 0.3, -0.6, 0.0, peeled front to back."""
    depths = [0.3, -0.6, 0.0]
    pos = torch.tensor([[[-1, -1, z, 1], [3, -1, z, 1], [-1, 3, z, 1]] for z in depths],
                       dtype=torch.float32, device=device).reshape(1, 9, 4)
    tri = torch.arange(9, dtype=torch.int32, device=device).reshape(3, 3)
    with dr.DepthPeeler(glctx, pos, tri, (29, 31)) as peeler:
        got = [peeler.rasterize_next_layer()[0][0, ..., 3].unique().tolist() for _ in range(4)]
    return [] if got == [[2.0], [3.0], [1.0], [0.0]] else [f"peeling: layers hold ids {got}"]


def check_rewritten_indices(glctx, device):
    """Indices rewritten in place behind torch's back (no version bump): the second call must
    draw the new triangles."""
    pos, tri = FAR + NEAR, [[0, 1, 2], [0, 2, 3]]
    arr = np.array(tri, dtype=np.int32)
    t = torch.from_numpy(arr)
    p = torch.tensor([pos], dtype=torch.float32, device=device)
    dr.rasterize(glctx, p, t.to(device), (37, 53))
    arr[:] = [[0, 1, 2], [3, 4, 5]]
    rast, _ = dr.rasterize(glctx, p, t.to(device), (37, 53))
    return check_image("rewritten indices", rast[0].cpu().numpy(), pos, arr.tolist(), 37, 53)


def run_sequence(glctx, device, repeats, seed=0):
    """All scenes in a shuffled order, ``repeats`` times, with peeling and rewritten indices in
    between; returns the failure messages."""
    rng = np.random.default_rng(seed)
    steps = [lambda s=s: check_scene(glctx, device, s) for s in SCENES]
    steps += [lambda: check_peeling(glctx, device), lambda: check_rewritten_indices(glctx, device)]
    fails = []
    for _ in range(repeats):
        for i in rng.permutation(len(steps)):
            fails += steps[i]()
    return fails


@pytest.mark.parametrize("kind", KINDS)
def test_scene_sequences_in_one_process(kind):
    glctx = make_context(kind)
    assert run_sequence(glctx, tensor_device(kind), repeats=15) == []


@pytest.mark.parametrize("kind", KINDS)
def test_indices_rewritten_in_place_are_drawn(kind):
    glctx = make_context(kind)
    assert check_rewritten_indices(glctx, tensor_device(kind)) == []


@pytest.mark.parametrize("kind", KINDS)
def test_scene_sequences_in_fresh_processes(kind):
    env = dict(os.environ, PYOPENGL_PLATFORM=os.environ.get("PYOPENGL_PLATFORM", "egl"))
    procs = [subprocess.Popen([sys.executable, __file__, kind, "4", str(seed)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for seed in range(4)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0 and out.strip().endswith("ok"), out


@pytest.mark.parametrize("kind", GL_KINDS)
def test_render_targets_grow_to_the_union_only_up_to_twice_the_call(kind):
    """Alternating sizes share one allocation while their union stays within twice the texels
    of the call; past that (a tall image after a wide one) the targets are made at the call's
    size, and every image is right either way."""
    glctx = make_context(kind)
    device = tensor_device(kind)
    pos, tri = FAR + NEAR, [[0, 1, 2], [3, 4, 5]]
    sizes = []
    for h, w in [(40, 60), (60, 40), (60, 60), (16, 256), (256, 16), (8, 8), (256, 16)]:
        assert check_scene(glctx, device, (f"{h}x{w}", pos, tri, (h, w), None)) == []
        sizes.append(glctx._pipeline.size[:2])  # (width, height)
    assert sizes == [(60, 40), (60, 60), (60, 60), (256, 16), (16, 256), (16, 256), (16, 256)]


def test_render_targets_that_do_not_fit_are_torchs_out_of_memory_error(monkeypatch):
    """OpenGL drivers may put targets that do not fit into system memory or fail later without
    an error: on a CUDA device the free memory is checked first, after releasing torch's cache."""
    from diffrast.gl_backend import raster_pipeline
    calls = []
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (1 << 30, 80 << 30))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("empty_cache"))
    raster_pipeline.reserve_device_memory(torch.device("cuda:0"), 512 << 20, "targets")
    assert calls == []
    with pytest.raises(torch.cuda.OutOfMemoryError, match="targets need 2.00 GiB on cuda:0"):
        raster_pipeline.reserve_device_memory(torch.device("cuda:0"), 2 << 30, "targets")
    assert calls == ["empty_cache"]


def _gl_draw_state(glctx):
    """``(textures attached to the framebuffer, textures bound to the sampler units, whether
    the program in use is the peeling variant)`` as the last draw left them."""
    from OpenGL import GL
    with glctx.current() as pipe:
        GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, pipe.fbo)
        attached = set()
        for point in (GL.GL_COLOR_ATTACHMENT0, GL.GL_COLOR_ATTACHMENT1, GL.GL_DEPTH_ATTACHMENT):
            name = GL.glGetFramebufferAttachmentParameteriv(
                GL.GL_FRAMEBUFFER, point, GL.GL_FRAMEBUFFER_ATTACHMENT_OBJECT_NAME)
            if int(name):
                attached.add(int(name))
        sampled = set()
        for unit in (0, 1):
            GL.glActiveTexture(GL.GL_TEXTURE0 + unit)
            name = int(GL.glGetIntegerv(GL.GL_TEXTURE_BINDING_2D_ARRAY))
            if name:
                sampled.add(name)
        GL.glActiveTexture(GL.GL_TEXTURE0)
        current = int(GL.glGetIntegerv(GL.GL_CURRENT_PROGRAM))
        peel = int(pipe.peel_program is not None and current == pipe.peel_program.name)
    return attached, sampled, peel


@pytest.mark.parametrize("kind", GL_KINDS)
def test_no_draw_samples_a_texture_it_renders_to(kind):
    glctx = make_context(kind)
    device = tensor_device(kind)
    check_scene(glctx, device, SCENES[3])
    attached, sampled, peel = _gl_draw_state(glctx)
    assert peel == 0 and sampled == set() and len(attached) == 2  # ids, depth
    pos = torch.tensor([FAR + NEAR], dtype=torch.float32, device=device)
    tri = torch.tensor([[0, 1, 2], [3, 4, 5]], dtype=torch.int32, device=device)
    with dr.DepthPeeler(glctx, pos, tri, (37, 53)) as peeler:
        for layer in range(3):
            peeler.rasterize_next_layer()
            attached, sampled, peel = _gl_draw_state(glctx)
            assert peel == (layer > 0)
            assert len(sampled) == (2 if layer > 0 else 0)  # the previous depth and z/w
            assert not attached & sampled, f"layer {layer} samples a texture it renders to"
    # State left by peeling does not reach a plain call.
    assert check_scene(glctx, device, SCENES[3]) == []
    attached, sampled, peel = _gl_draw_state(glctx)
    assert peel == 0 and sampled == set()


@pytest.mark.parametrize("kind", GL_KINDS)
def test_peeling_tests_the_previous_layers_reported_depth(kind):
    """A peeled layer keeps a fragment only if it lies behind the previous layer in GL's depth
    buffer and in the z/w rasterize returned: with that z/w replaced by one beyond the far
    triangle (z/w = 0.5), the second layer is empty where both triangles overlap; left alone,
    it shows the far triangle there."""
    glctx = make_context(kind)
    device = tensor_device(kind)
    pos = torch.tensor([NEAR + FAR], dtype=torch.float32, device=device)
    tri = torch.tensor([[0, 1, 2], [3, 4, 5]], dtype=torch.int32, device=device)
    layers = []
    for moved in (False, True):
        with dr.DepthPeeler(glctx, pos, tri, (32, 32)) as peeler:
            first, _ = peeler.rasterize_next_layer()
            if moved:
                with glctx.current() as pipe:
                    pipe.store_peel_depth(torch.full((1, 32, 32), 0.75, device=device))
            layers.append((first, peeler.rasterize_next_layer()[0]))
    (first, second), (_, second_moved) = layers
    overlap = (first[..., 3] == 1) & (second[..., 3] == 2)
    assert overlap.sum() > 100
    assert torch.equal(second[..., 2][overlap], torch.full_like(second[..., 2][overlap], 0.5))
    assert not second_moved[..., 3].any()


if __name__ == "__main__":
    kind, repeats = sys.argv[1], int(sys.argv[2])
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    failures = run_sequence(make_context(kind), tensor_device(kind), repeats, seed)
    print("\n".join(failures) if failures else "ok")
