"""antialias and antialias_construct_topology_hash under ``torch.compile(fullgraph=True)``: the
same results and gradients as eager calls, ``opcheck`` on their custom ops, and the topology
construction without host synchronization (diffrast.cuda_backend_antialias.construct_tables)
against the reference.

Devices: ``cpu`` (the reference), ``emulated`` (the CUDA kernels compiled as C++ and run on the
CPU by tests/kernel_emulator.py, so the kernel branch of the custom ops runs in CI) and ``cuda``
(marked ``gpu``).
"""
import importlib

import pytest
import torch

import diffrast as dr
from diffrast import cuda_backend_antialias as cb
from diffrast.reference import antialias as ref

import antialias_scenes as scenes
import kernel_emulator

aa_module = importlib.import_module("diffrast.antialias")

DEVICES = ["cpu", "emulated", pytest.param("cuda", marks=pytest.mark.gpu)]
BOOST = 2.5


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.fixture(params=DEVICES)
def device(request, monkeypatch, deterministic):
    """Where the ops run: the CPU reference, the emulated kernels (CPU tensors) or the GPU.
    Deterministic mode: the kernels' position gradient without float atomics, so that two runs
    (eager and compiled) can be compared bit for bit."""
    deterministic(True)
    if request.param == "emulated":
        kernel_emulator.kernel_device("emulated", monkeypatch)
        monkeypatch.setattr(aa_module, "_backend_for",
                            lambda device: (cb.construct_topology, cb.antialias))
        return torch.device("cpu")
    return torch.device(request.param)


def scene(name, device):
    """``(color, rast, pos, tri)`` on ``device``: ``sphere`` (instance mode ``[B, V, 4]``, shared
    edges and a seam), ``range`` (random soup, range mode ``[V, 4]``, B = 2), ``fin`` (a grid
    with an edge of three triangles and a duplicated-vertex cell)."""
    if name == "sphere":
        s = scenes.sphere(rows=6, cols=8, res=(16, 20))
    elif name == "range":
        s = scenes.soup(3, n=10, res=(14, 18), batch=2, range_mode=True)
    else:
        s = scenes.grid_with_fin(res=(16, 16))
    return tuple(t.to(device) for t in s)


def antialias_fn(topology_mode):
    """``fn(color, rast, pos, tri, prebuilt)`` calling ``dr.antialias``: without a hash, with the
    hash ``prebuilt`` (built outside), or with a hash built inside ``fn``."""
    def fn(color, rast, pos, tri, prebuilt):
        if topology_mode == "none":
            topo = None
        elif topology_mode == "prebuilt":
            topo = prebuilt
        else:
            topo = dr.antialias_construct_topology_hash(tri)
        return dr.antialias(color, rast, pos, tri, topology_hash=topo, pos_gradient_boost=BOOST)
    return fn


def run(fn, color, rast, pos, tri, prebuilt=None):
    """``(out, grad_color, grad_pos)`` of ``fn`` for a fixed random output gradient."""
    c = color.detach().clone().requires_grad_(True)
    p = pos.detach().clone().requires_grad_(True)
    out = fn(c, rast, p, tri, prebuilt)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(7)).to(out.device)
    (out * g).sum().backward()
    return out.detach(), c.grad, p.grad


def assert_identical(eager, compiled):
    for name, a, b in zip(("out", "grad_color", "grad_pos"), eager, compiled):
        assert (a is None) == (b is None), name
        if a is not None:
            assert a.dtype == b.dtype and torch.equal(a, b), name


# --------------------------------------------------------------------------------------------
# Compiled against eager

@pytest.mark.parametrize("name,topology_mode", [
    ("sphere", "none"), ("sphere", "prebuilt"), ("range", "inside"), ("fin", "prebuilt"),
])
def test_compiled_equals_eager(device, name, topology_mode):
    color, rast, pos, tri = scene(name, device)
    prebuilt = dr.antialias_construct_topology_hash(tri)
    fn = antialias_fn(topology_mode)
    eager = run(fn, color, rast, pos, tri, prebuilt)
    assert float(eager[2].abs().sum()) > 0  # silhouettes move vertices
    compiled = run(torch.compile(fn, fullgraph=True, backend="aot_eager"), color, rast, pos,
                   tri, prebuilt)
    assert_identical(eager, compiled)


def test_compiled_without_triangles_or_pixels(device):
    """``antialias`` copies ``color`` (``pos`` gets no gradient) when there is no triangle or no
    pixel, compiled as eager."""
    color, rast, pos, tri = scene("sphere", device)
    fn = antialias_fn("none")
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager", dynamic=False)
    for args in ((color, rast, pos, tri[:0]), (color[:, :0], rast[:, :0], pos, tri)):
        assert_identical(run(fn, *args), run(compiled, *args))


def test_compiled_topology_hash(device):
    """``antialias_construct_topology_hash`` compiled alone returns a hash with the reference's
    tables (``edge_ptr`` trimmed from the padded one on access)."""
    _, _, _, tri = scene("fin", device)
    got = torch.compile(dr.antialias_construct_topology_hash, fullgraph=True,
                        backend="aot_eager")(tri)
    assert isinstance(got, cb.GpuTopologyHash) and got.device == tri.device
    want = ref.construct_topology(tri.cpu())
    scenes.assert_topology_equal(got, want)
    assert got.num_edges == want.num_edges
    assert torch.equal(got.neighbor.cpu(), cb.neighbor_table(want))


@pytest.mark.parametrize("kind", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_compiled_inductor(kind, deterministic):
    deterministic(True)
    color, rast, pos, tri = scene("range", torch.device(kind))

    def fn(color, rast, pos, tri, prebuilt):
        return dr.antialias(color, rast, pos, tri, topology_hash=prebuilt,
                            pos_gradient_boost=BOOST)

    prebuilt = dr.antialias_construct_topology_hash(tri)
    eager = run(fn, color, rast, pos, tri, prebuilt)
    compiled = run(torch.compile(fn, fullgraph=True), color, rast, pos, tri, prebuilt)
    for a, b in zip(eager, compiled):
        torch.testing.assert_close(b, a)


def test_eager_calls_no_custom_op(monkeypatch):
    """Eager mode keeps calling the backends directly."""
    def fail(*args, **kwargs):
        raise AssertionError("custom op called in eager mode")
    monkeypatch.setattr(aa_module, "_antialias_op", fail)
    monkeypatch.setattr(aa_module, "_construct_topology_op", fail)
    color, rast, pos, tri = scene("sphere", "cpu")
    dr.antialias(color, rast, pos, tri, dr.antialias_construct_topology_hash(tri))


# --------------------------------------------------------------------------------------------
# opcheck

def _op_args(device, name="sphere", topology="padded"):
    """Inputs of the antialias ops; ``topology``: the tables of a ``GpuTopologyHash`` (padded
    ``edge_ptr``, neighbour table) or of the public hash (on the CPU the reference's, no
    neighbour table)."""
    color, rast, pos, tri = scene(name, device)
    topo = (dr.antialias_construct_topology_hash(tri) if topology == "public"
            else cb.construct_topology(tri))
    return color, rast, pos, tri, cb.topology_tables(topo)


def test_opcheck_construct_topology(device):
    for tri in (scene("fin", device)[3], torch.zeros(0, 3, dtype=torch.int32, device=device)):
        torch.library.opcheck(aa_module._construct_topology_op._opoverload, (tri,))


@pytest.mark.parametrize("name,topology", [("sphere", "padded"), ("range", "public")])
def test_opcheck_antialias(device, name, topology):
    color, rast, pos, tri, tables = _op_args(device, name, topology)
    c, p = color.clone().requires_grad_(True), pos.clone().requires_grad_(True)
    torch.library.opcheck(aa_module._antialias_op._opoverload, (c, rast, p, tri, *tables, BOOST))
    torch.library.opcheck(aa_module._antialias_op._opoverload,
                          (color, rast, pos, tri, *tables, 1.0))


def test_opcheck_antialias_backward(device):
    color, rast, pos, tri, tables = _op_args(device)
    _, pair_t, pair_meta = aa_module._antialias_op(color, rast, pos, tri, *tables, BOOST)
    grad = torch.randn(color.shape, generator=torch.Generator().manual_seed(3)).to(device)
    for needs in ([True, True], [False, True], [True, False]):
        torch.library.opcheck(aa_module._antialias_backward_op._opoverload,
                              (color, rast, pos, tri, *tables, BOOST, pair_t, pair_meta, grad,
                               needs))


# --------------------------------------------------------------------------------------------
# Topology construction without host synchronization

def _meshes():
    g = torch.Generator().manual_seed(0)
    out = {}
    for seed in range(4):  # random meshes, few vertices: shared and repeated edges
        n = int(torch.randint(1, 50, (1,), generator=g))
        out[f"random{seed}"] = torch.randint(0, max(3, n // 2), (n, 3), generator=g)
    out["closed"] = scenes.sphere(rows=5, cols=7)[3]
    out["tetrahedron"] = torch.tensor([[0, 1, 2], [0, 3, 1], [1, 3, 2], [2, 3, 0]])
    # an edge {0, 1} of four triangles, one of them twice, and an edge twice in one triangle
    out["non_manifold"] = torch.tensor([[0, 1, 2], [1, 0, 3], [0, 1, 4], [4, 1, 0], [0, 1, 2],
                                        [5, 6, 5], [6, 5, 7]])
    out["degenerate"] = torch.tensor([[0, 0, 1], [1, 0, 0], [2, 2, 2], [0, 1, 2], [3, 3, 1]])
    out["large_indices"] = torch.tensor([[2**31 - 1, 0, 2**31 - 2], [0, 2**31 - 1, 5]])
    out["single"] = torch.tensor([[0, 1, 2]])
    out["empty"] = torch.zeros(0, 3)
    return {k: v.to(torch.int32) for k, v in out.items()}


MESHES = _meshes()


def _brute_force_neighbors(tri, tri_edge):
    t = tri.tolist()
    out = []
    for i, tv in enumerate(t):
        row = []
        for k in range(3):
            edge = sorted((tv[k], tv[(k + 1) % 3]))
            inc = [(j, u[(m + 2) % 3]) for j, u in enumerate(t) for m in range(3)
                   if sorted((u[m], u[(m + 1) % 3])) == edge]
            if len(inc) >= 3:
                row.append(-2 - int(tri_edge[i, k]))
            else:
                others = [o for j, o in inc if j != i]
                row.append(others[0] if others else -1)
        out.append(row)
    return torch.tensor(out, dtype=torch.int32).reshape(-1, 3)


@pytest.mark.parametrize("mesh", sorted(MESHES))
def test_sync_free_tables_equal_reference(mesh):
    tri = MESHES[mesh]
    T = tri.shape[0]
    tri_edge, edge_ptr, inc_tri, inc_opp, neighbor = cb.construct_tables(tri)
    want = ref.construct_topology(tri)
    E = want.num_edges
    assert edge_ptr.shape == (3 * T + 1,) and edge_ptr.dtype == torch.int64
    assert torch.equal(edge_ptr[:E + 1], want.edge_ptr)
    assert bool((edge_ptr[E:] == 3 * T).all())  # the padding: empty edges
    for name, got in (("tri_edge", tri_edge), ("inc_tri", inc_tri), ("inc_opp", inc_opp)):
        w = getattr(want, name)
        assert got.dtype == w.dtype and torch.equal(got, w), name
    assert neighbor.dtype == torch.int32 and neighbor.shape == (T, 3)
    assert torch.equal(neighbor, cb.neighbor_table(want))
    assert torch.equal(neighbor, _brute_force_neighbors(tri, tri_edge))
    # the hash object: the exact edge_ptr on access, and the reference reads the padded tables
    topo = cb.construct_topology(tri)
    scenes.assert_topology_equal(topo, want)
    assert topo.num_edges == E and torch.equal(topo.edge_ptr_padded, edge_ptr)
    assert torch.equal(cb.neighbor_table(cb.reference_topology(topo)), neighbor)


def test_padded_hash_gives_the_reference_result():
    """The reference fed the padded tables (float64 on CUDA, compiled on the CPU) gives the same
    output and gradients as with its own hash."""
    color, rast, pos, tri = scene("fin", "cpu")
    grad = torch.randn(color.shape, generator=torch.Generator().manual_seed(1))
    padded = cb.reference_topology(cb.construct_topology(tri))
    assert padded.edge_ptr.shape[0] == 3 * tri.shape[0] + 1
    want = scenes.run(scenes.reference, color, rast, pos, tri, ref.construct_topology(tri), grad,
                      BOOST)
    got = scenes.run(scenes.reference, color, rast, pos, tri, padded, grad, BOOST)
    assert_identical(want, got)


@pytest.mark.gpu
def test_gpu_construction_and_antialias_do_not_synchronize():
    """Topology construction, antialias and its backward on CUDA with no host synchronization
    (``set_sync_debug_mode("error")`` raises on any synchronizing torch call). A first call
    compiles the kernels and caches the (synchronizing) index checks of ``tri``."""
    for name in ("sphere", "fin"):
        color, rast, pos, tri = scene(name, torch.device("cuda"))
        tables_want = cb.construct_tables(tri.cpu())
        grad = torch.randn(color.shape, device="cuda")

        def step():
            topo = dr.antialias_construct_topology_hash(tri)
            c = color.clone().requires_grad_(True)
            p = pos.clone().requires_grad_(True)
            out = dr.antialias(c, rast, p, tri, topology_hash=topo, pos_gradient_boost=BOOST)
            out2 = dr.antialias(c, rast, p, tri, pos_gradient_boost=BOOST)
            ((out + out2) * grad).sum().backward()
            return topo, out, c.grad, p.grad

        want = step()
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            got = step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
        torch.cuda.synchronize()
        for a, b in zip(cb.topology_tables(got[0]), tables_want):
            assert torch.equal(a.cpu(), b)
        assert torch.equal(got[1], want[1]) and torch.equal(got[2], want[2])
        torch.testing.assert_close(got[3], want[3])
