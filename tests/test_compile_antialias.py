"""antialias and antialias_construct_topology_hash under ``torch.compile(fullgraph=True)``: the
same results and gradients as eager calls, ``opcheck`` on their custom ops, and the topology
construction without host synchronization (diffrast.cuda_backend_antialias.construct_tables)
against the reference: its torch ops (CPU) tensor for tensor, its kernels (emulated and on the
GPU) up to the numbering of the edges, run-to-run identical whatever the order of their atomics.

Devices: ``cpu`` (the reference), ``emulated`` (the CUDA kernels compiled as C++ and run on the
CPU by tests/helpers/kernel_emulator.py, so the kernel branch of the custom ops runs in CI) and ``cuda``
(marked ``gpu``).
"""
import importlib

import pytest
import torch

import diffrast as dr
from diffrast import cuda_backend_antialias as cb
from diffrast import dispatch
from diffrast.reference import antialias as ref

from helpers import antialias_scenes as scenes
from helpers import kernel_emulator

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
    if request.param == "emulated":  # the kernels (topology included) on the CPU
        return kernel_emulator.kernel_device("emulated", request)
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
    assert got.num_edges == want.num_edges
    if not dispatch.uses_kernels(tri.device):  # torch ops: the reference's numbering
        scenes.assert_topology_equal(got, want)
        assert torch.equal(got.neighbor.cpu(), cb.neighbor_table(want))
    else:  # the kernels: the same tables up to the numbering of the edges
        assert_kernel_tables(tri, cb.topology_tables(got))
        assert torch.equal(got.edge_ptr.cpu(), got.edge_ptr_padded.cpu()[:want.num_edges + 1])


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
    assert edge_ptr.shape == (3 * T + 1,) and edge_ptr.dtype == torch.int32
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


# The kernels (cuda_ops/antialias_topology.cu, emulated on the CPU): the same tables up to the numbering
# of the edges (by first incidence instead of by vertex key).

def _heavy_meshes():
    """Meshes with many incidences per edge and spread over many warps of 32 incidences (the
    kernels' lists of earlier groups, long ones summed by the whole warp)."""
    g = torch.Generator().manual_seed(1)
    sphere = scenes.sphere(rows=10, cols=16)[3]
    flipped = sphere[:, [0, 2, 1]]
    pad = torch.zeros(1500, 3, dtype=torch.int32)  # padding triangles: one edge, 4500 slots
    double = torch.cat([sphere, flipped])
    return {
        "double_sided": double,                                 # every edge four times
        "padded": torch.cat([sphere[:100], pad, sphere[100:]]),
        # one padding triangle after each: short and long lists in every warp
        "interleaved": torch.stack([double, torch.zeros_like(double)], 1).reshape(-1, 3),
        "few_vertices": torch.randint(0, 6, (3000, 3), generator=g, dtype=torch.int32),
        "soup": torch.randint(0, 4000, (5000, 3), generator=g, dtype=torch.int32),
        "negative": torch.tensor([[-1, -1, -1], [-2**31, -1, 0], [-1, -2**31, 5]],
                                 dtype=torch.int32),  # unvalidated input (under compile)
    }


HEAVY = _heavy_meshes()


def assert_kernel_tables(tri, tables, brute_force=True):
    """``tables`` (built by the kernels) are the torch ops' tables for ``tri`` with the edges
    renumbered by first incidence: the same edges, each with the same incidences in the same
    order, the same padding and the same neighbour table."""
    tri = tri.cpu()
    tables = tuple(t.cpu() for t in tables)
    tri_edge, edge_ptr, inc_tri, inc_opp, neighbor = tables
    T = tri.shape[0]
    n = 3 * T
    for t, dtype, shape in zip(tables, [torch.int32] * 5,
                               [(T, 3), (n + 1,), (n,), (n,), (T, 3)]):
        assert t.dtype == dtype and tuple(t.shape) == shape
    want = cb._construct_tables_torch(tri) if T else cb.construct_tables(tri)
    renumbered = cb.renumbered_like_reference(tri, tables)
    for name, a, b in zip(("tri_edge", "edge_ptr", "inc_tri", "inc_opp", "neighbor"),
                          renumbered, want):
        assert a.dtype == b.dtype and torch.equal(a, b), name
    if not T:
        return
    # numbered by first incidence: edge e's first slot comes before edge e + 1's
    flat = tri_edge.reshape(-1).long()
    E = int(flat.max()) + 1
    first = torch.full((E,), n, dtype=torch.int64).scatter_reduce(0, flat, torch.arange(n),
                                                                  "amin")
    assert int(first[0]) == 0 and bool((first[1:] > first[:-1]).all())
    assert bool((edge_ptr[E:] == n).all())
    if brute_force:
        assert torch.equal(neighbor, _brute_force_neighbors(tri, tri_edge))


@pytest.fixture
def emulated(request):
    """The topology kernels run on the CPU by the emulator."""
    kernel_emulator.kernel_device("emulated", request)


@pytest.mark.parametrize("mesh", sorted(MESHES) + sorted(HEAVY))
def test_kernel_tables_equal_reference(emulated, mesh):
    tri = MESHES.get(mesh, HEAVY.get(mesh))
    tables = cb.construct_tables(tri)
    assert_kernel_tables(tri, tables, brute_force=tri.shape[0] <= 100)
    if mesh not in HEAVY:  # the reference's own tables, renumbered
        want = ref.construct_topology(tri)
        tri_edge, edge_ptr, inc_tri, inc_opp, _ = cb.renumbered_like_reference(tri, tables)
        scenes.assert_topology_equal(
            ref.TopologyHash(tri.shape[0], tri_edge, edge_ptr[:want.num_edges + 1], inc_tri,
                             inc_opp), want)
    topo = cb.construct_topology(tri)
    assert topo.num_edges == int(tables[0].max()) + 1 if tri.shape[0] else topo.num_edges == 0
    assert torch.equal(cb.neighbor_table(cb.reference_topology(topo)), topo.neighbor)


@pytest.mark.parametrize("mesh", ["non_manifold", "tetrahedron", "double_sided", "padded",
                                  "interleaved", "few_vertices", "soup"])
def test_kernel_tables_do_not_depend_on_the_order_of_the_atomics(emulated, monkeypatch, mesh):
    """The kernels run in the reverse order (blocks, warps and lanes; so the hash table's layout
    and the order of the lists differ) give the same tables."""
    tri = MESHES.get(mesh, HEAVY.get(mesh))
    buffers = []
    make = cb._topology_buffers

    def recording(T, device):
        out = make(T, device)
        buffers.append(out)
        return out

    monkeypatch.setattr(cb, "_topology_buffers", recording)
    want = cb.construct_tables(tri)
    monkeypatch.setattr(kernel_emulator, "reversed_kernels",
                        frozenset({"topology_insert", "topology_scan", "topology_place",
                                   "topology_rank"}))
    got = cb.construct_tables(tri)
    for a, b in zip(want, got):
        assert torch.equal(a, b)
    if mesh == "soup":  # colliding keys: the entries they took differ
        tables = [buf[0][:buf[2]] for buf in buffers]
        assert not torch.equal(*tables)


@pytest.mark.parametrize("prefix_at", [None, 5, 30])
def test_kernel_scan_looks_back_over_aggregates(emulated, prefix_at):
    """topology_scan's decoupled look-back when earlier tiles have only published their own sums
    (the emulator runs tiles one after another, so a tile otherwise always finds its predecessor
    done): the last tiles run alone after the others' status words are set by hand, all
    aggregates (back past tile 0) or one inclusive prefix among them (30 and 5: found in the
    first or the second window of 32). They get the prefixes of a normal run."""
    tri = HEAVY["soup"]
    T, n, cpu = tri.shape[0], 3 * tri.shape[0], torch.device("cpu")
    table, _, capacity, tiles = cb._topology_buffers(T, cpu)
    assert tiles > 40
    slot_entry = torch.empty(n, dtype=torch.int32)  # tri_edge: each slot's entry, then ids
    nbr = torch.empty(n, dtype=torch.int32)
    cb._launch("antialias_topology", "topology_insert", n, (tri, table, slot_entry, n, capacity),
               cpu)
    inserted, entries = table.clone(), slot_entry.clone()
    want_ptr = torch.empty(n + 1, dtype=torch.int32)
    cb._launch("antialias_topology", "topology_scan", 32 * tiles,
               (table, slot_entry, want_ptr, nbr, n, capacity, tiles), cpu)
    status = table[capacity:capacity + tiles].tolist()
    assert all(w >> 62 == -2 for w in status)  # flag 2 (the sign bit): inclusive prefixes
    value = [w & ((1 << 62) - 1) for w in status]
    aggregate = [v - (value[t - 1] if t else 0) for t, v in enumerate(value)]
    E = value[-1] >> 31
    assert int(want_ptr[E]) == n  # the last tile ends the last edge

    def word(flag, v):
        w = (flag << 62) | v
        return w - (1 << 64) if w >= 1 << 63 else w

    first = tiles - 3
    table, slot_entry = inserted.clone(), entries.clone()
    for t in range(first):
        table[capacity + t] = word(1, aggregate[t])
    if prefix_at is not None:
        table[capacity + prefix_at] = word(2, value[prefix_at])
    table[capacity + tiles] = first  # the ticket: the next warp takes tile `first`
    edge_ptr = torch.full((n + 1,), -1, dtype=torch.int32)
    cb._launch("antialias_topology", "topology_scan", 32 * 3,
               (table, slot_entry, edge_ptr, nbr, n, capacity, tiles), cpu)
    assert table[capacity + first:capacity + tiles].tolist() == status[first:]
    start = value[first - 1] >> 31  # the first edge id of tile `first`
    assert torch.equal(edge_ptr[start:E + 1], want_ptr[start:E + 1])
    assert bool((edge_ptr[:start] == -1).all())


def test_kernel_tables_in_antialias_and_compiled(emulated):
    """The public topology hash built by the kernels: the reference and the emulated antialias
    kernels read it to the same results as the reference's own hash (see also
    tests/test_cuda_antialias.py), compiled or not."""
    color, rast, pos, tri = scene("fin", "cpu")
    grad = torch.randn(color.shape, generator=torch.Generator().manual_seed(2))
    want = scenes.run(scenes.reference, color, rast, pos, tri, ref.construct_topology(tri), grad,
                      BOOST)
    topo = cb.construct_topology(tri)
    got = scenes.run(scenes.reference, color, rast, pos, tri, cb.reference_topology(topo), grad,
                     BOOST)
    assert_identical(want, got)
    compiled = torch.compile(dr.antialias_construct_topology_hash, fullgraph=True,
                             backend="aot_eager")(tri)
    for a, b in zip(cb.topology_tables(compiled), cb.topology_tables(topo)):
        assert torch.equal(a, b)


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
        for a, b in zip(cb.topology_tables(got[0]), cb.topology_tables(want[0])):
            assert torch.equal(a, b)  # the same tables run to run
        assert_kernel_tables(tri, cb.topology_tables(got[0]))
        assert torch.equal(got[1], want[1]) and torch.equal(got[2], want[2])
        torch.testing.assert_close(got[3], want[3])


@pytest.mark.gpu
def test_gpu_kernel_tables():
    """On CUDA the kernels build the CPU's tables up to the numbering of the edges, for a sphere
    of a million triangles and the meshes above, the same run to run, without synchronizing;
    and in a CUDA graph."""
    from diffrast import geometry
    meshes = dict(MESHES, **HEAVY)
    meshes["sphere_1m"] = geometry.uv_sphere(500, 1000)[1]
    for name, tri in meshes.items():
        tri_c = tri.cuda()
        first = cb.construct_tables(tri_c)  # compiles the kernels
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            runs = [cb.construct_tables(tri_c) for _ in range(3)]
            topo = cb.construct_topology(tri_c)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        for tables in runs + [cb.topology_tables(topo)]:
            for a, b in zip(tables, first):
                assert a.device.type == "cuda" and torch.equal(a, b), name
        assert_kernel_tables(tri, first, brute_force=tri.shape[0] <= 100)
    tri = meshes["double_sided"].cuda()
    want = cb.construct_tables(tri)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        got = cb.construct_tables(tri)
    graph.replay()
    torch.cuda.synchronize()
    for a, b in zip(got, want):
        assert torch.equal(a, b)
