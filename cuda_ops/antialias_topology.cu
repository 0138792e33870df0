// antialias topology: the edge tables that antialias_forward.cu reads (nbr and the CSR
// edge_ptr / inc_tri / inc_opp, see its header) plus tri_edge, built from tri alone
// (diffrast/cuda_backend_antialias.py, construct_tables), in four launches with every buffer
// sized from T, no host synchronization and no sort. Incidence ("slot") i = 3 t + k is edge k
// of triangle t, from tri[t][k] to tri[t][k + 1 mod 3], opposite vertex tri[t][k + 2 mod 3];
// n = 3T.
//
//   topology_insert  one thread per slot: the undirected edge's 64-bit key into an open-addressing
//                    hash table (linear probing, atomicCAS), and per table entry the smallest
//                    slot on the edge (its "owner", atomicMax of n - i) and the incidence count
//                    (atomicAdd; both once per warp and entry). Records each slot's entry.
//   topology_scan    single-pass scan (decoupled look-back, one warp per tile of kScanTile slots,
//                    tiles in the order of a ticket counter) over the slots of the value
//                    (owner ? (1 edge, count incidences) : 0): an owner's exclusive prefix is its
//                    edge's id and CSR offset, so edges are numbered in the order of their first
//                    slot. The second slot of a two-incidence edge tells its owner who it is.
//                    A tile waits only on tiles of smaller tickets, which have started, so it
//                    never waits on a warp that is not resident, whatever the block scheduling.
//   topology_place   one thread per slot: tri_edge, nbr, the padding of edge_ptr, and the
//                    incidence of every edge of one or two incidences (owner first). For an edge
//                    of three or more, each group of 32 aligned slots (a warp) appends one entry
//                    (group index, number of its slots on the edge) to the edge's list.
//   topology_rank    one thread per slot of an edge of three or more incidences: its position in
//                    the edge's CSR segment = the slots of the edge in earlier groups (a sum over
//                    the edge's list) + its rank among the edge's slots of its own warp.
//                    (Linear in n, except for an edge on very many warps: each of its m warps
//                    sums its list of m entries, cooperatively when m > 32. A million copies of
//                    one triangle, m = 94k: about 9e9 list reads.)
//
// Determinism: the hash table's layout depends on the order of the insertions, and the lists'
// order on the order of the appends; nothing written to an output does. Owners and counts are
// commutative atomics, ids and offsets come from the scan in slot order, and an incidence's
// position is its rank by slot among its edge's incidences (a sum over the list, whatever its
// order). The tables equal the reference's (edges sorted by key, incidences by slot) up to the
// numbering of the edges.
//
// Buffers (torch tensors made by the caller): table, int64 [2 * capacity + num_tiles + 1], zeroed:
// per entry e, table[2e] = key ^ kKeyFlip (0: empty) and table[2e + 1] as two ints (n - owner,
// count), then the scan's tile status words and its ticket counter. scratch, int64 [3n], not
// initialized: own [n] int64 (at an owner slot: offset << 32 | edge id), then int32 arrays entry
// [n] (table entry of each slot), other [n] (at the owner of a two-incidence edge: its second
// slot), fill [n] (per edge id: the length of its list) and list [n] (the lists, in the edges'
// CSR ranges).
#include "common.cuh"

namespace {

using namespace diffrast;

// XORed into the stored keys so that an empty entry is 0: the key of an impossible edge
// (max = INT_MIN, min = -1 > max).
constexpr unsigned long long kKeyFlip = 0x80000000ffffffffull;
constexpr int kScanRows = 8;                  // slots per lane of a scan tile
constexpr int kScanTile = 32 * kScanRows;     // slots per scan tile (one warp)
constexpr unsigned long long kEdgeOne = 1ull << 31;  // one edge in a scan value (counts below)
constexpr unsigned long long kCountMask = kEdgeOne - 1;
constexpr unsigned long long kStatusAggregate = 1ull << 62;  // the tile's own sum is published
constexpr unsigned long long kStatusPrefix = 2ull << 62;     // its inclusive prefix is published
constexpr unsigned long long kStatusValue = (1ull << 62) - 1;

struct TopoScratch {
    long long* own;
    int* entry;
    int* other;
    int* fill;
    unsigned* list;
};

__device__ __forceinline__ TopoScratch topo_scratch(long long* base, int n)
{
    TopoScratch s;
    s.own = base;
    s.entry = reinterpret_cast<int*>(base + n);
    s.other = s.entry + n;
    s.fill = s.other + n;
    s.list = reinterpret_cast<unsigned*>(s.fill + n);
    return s;
}

__device__ __forceinline__ int slot_vertex(const int* __restrict__ tri, long long i, int step)
{
    const long long t = i / 3;
    const int k = (int)(i - 3 * t) + step;
    return tri[3 * t + (k >= 3 ? k - 3 : k)];
}

// The stored key of slot i's undirected edge (never 0).
__device__ __forceinline__ unsigned long long slot_key(const int* __restrict__ tri, long long i)
{
    const int a = slot_vertex(tri, i, 0), b = slot_vertex(tri, i, 1);
    const int lo = a < b ? a : b, hi = a < b ? b : a;
    return (((unsigned long long)(unsigned)hi << 32) | (unsigned)lo) ^ kKeyFlip;
}

// Home entry of a key in [0, capacity): a 64-bit mix (splitmix64's finalizer), scaled.
__device__ __forceinline__ long long home_entry(unsigned long long x, int capacity)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return (long long)(((x >> 32) * (unsigned long long)capacity) >> 32);
}

// (owner, count) of table entry e.
__device__ __forceinline__ void entry_info(const long long* table, int e, int n, int& owner,
                                           int& count)
{
    const int* agg = reinterpret_cast<const int*>(table + 2LL * e + 1);
    owner = n - agg[0];
    count = agg[1];
}

__device__ __forceinline__ unsigned long long load_status(const unsigned long long* status,
                                                          long long tile)
{
    return *reinterpret_cast<const volatile unsigned long long*>(status + tile);
}

__device__ __forceinline__ void store_status(unsigned long long* status, long long tile,
                                             unsigned long long word)
{
    __threadfence();
    *reinterpret_cast<volatile unsigned long long*>(status + tile) = word;
}

}  // namespace

__device__ __forceinline__ void topology_insert_impl(const AntialiasTopologyParams& kp)
{
    const int* __restrict__ tri = kp.tri;
    long long* table = kp.table;
    long long* scratch = kp.scratch;
    const int num_slots = kp.num_slots, capacity = kp.capacity;
    // No early return: the whole warp takes part in __match_any_sync.
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const int lane = lane_id();
    long long e = -1;
    if (i < num_slots) {
        const unsigned long long key = slot_key(tri, i);
        unsigned long long* keys = reinterpret_cast<unsigned long long*>(table);
        e = home_entry(key, capacity);
        for (;;) {  // capacity > n >= the number of distinct keys: there is always a free entry
            // A key, once stored, never changes: a stale 0 only costs an atomicCAS.
            unsigned long long prev = keys[2 * e];
            if (prev == 0ull)
                prev = atomicCAS(keys + 2 * e, 0ull, key);
            if (prev == 0ull || prev == key)
                break;
            e = e + 1 == capacity ? 0 : e + 1;
        }
        topo_scratch(scratch, num_slots).entry[i] = (int)e;
    }
    // One update per entry and warp (a shared edge's slots are often in one warp; a mesh padded
    // with copies of one triangle has every slot of the warp on one entry): its lowest lane, the
    // smallest slot, adds the warp's count.
    const unsigned group = __match_any_sync(kFullWarp, e);
    if (e >= 0 && lane == __ffs(group) - 1) {
        int* agg = reinterpret_cast<int*>(table + 2 * e + 1);
        atomicMax(agg, num_slots - (int)i);
        atomicAdd(agg + 1, __popc(group));
    }
}

__device__ __forceinline__ void topology_scan_impl(const AntialiasTopologyParams& kp)
{
    long long* table = kp.table;
    long long* scratch = kp.scratch;
    long long* __restrict__ edge_ptr = kp.edge_ptr;
    const int num_slots = kp.num_slots, capacity = kp.capacity, num_tiles = kp.num_tiles;
    const int lane = lane_id();
    unsigned long long* status = reinterpret_cast<unsigned long long*>(table + 2LL * capacity);
    unsigned long long* ticket = status + num_tiles;
    // Tiles in the order the warps start (so a tile's predecessors are running or done).
    long long tile = 0;
    if (lane == 0)
        tile = (long long)atomicAdd(ticket, 1ull);
    tile = __shfl_sync(kFullWarp, tile, 0);
    if (tile >= num_tiles)
        return;
    const TopoScratch sc = topo_scratch(scratch, num_slots);

    int owner[kScanRows], count[kScanRows];
    unsigned long long excl[kScanRows];
    unsigned long long carry = 0;
    for (int r = 0; r < kScanRows; ++r) {
        const long long i = tile * kScanTile + r * 32 + lane;
        owner[r] = -1;
        count[r] = 0;
        if (i < num_slots)
            entry_info(table, sc.entry[i], num_slots, owner[r], count[r]);
        const unsigned long long v = owner[r] == i ? kEdgeOne + (unsigned)count[r] : 0ull;
        unsigned long long x = v;
        for (int d = 1; d < 32; d <<= 1) {
            const unsigned long long y = __shfl_up_sync(kFullWarp, x, d);
            if (lane >= d)
                x += y;
        }
        excl[r] = carry + x - v;
        carry += __shfl_sync(kFullWarp, x, 31);
    }

    // Decoupled look-back: sum the predecessors' published values back to the first inclusive
    // prefix, 32 tiles at a time.
    unsigned long long prefix = 0;
    if (tile == 0) {
        if (lane == 0)
            store_status(status, 0, kStatusPrefix | carry);
    } else {
        if (lane == 0)
            store_status(status, tile, kStatusAggregate | carry);
        long long pred = tile - 1;
        for (;;) {
            const long long p = pred - lane;
            const unsigned long long w = p >= 0 ? load_status(status, p) : kStatusPrefix;
            if (__any_sync(kFullWarp, (w >> 62) == 0))
                continue;  // a predecessor has not published yet
            const unsigned done = __ballot_sync(kFullWarp, (w >> 62) == 2);
            const int last = done ? __ffs(done) - 1 : 31;
            prefix += warp_sum_fixed_order(lane <= last ? (w & kStatusValue) : 0ull);
            if (done)
                break;
            pred -= 32;
        }
        if (lane == 0)
            store_status(status, tile, kStatusPrefix | (prefix + carry));
    }

    for (int r = 0; r < kScanRows; ++r) {
        const long long i = tile * kScanTile + r * 32 + lane;
        if (i >= num_slots)
            continue;
        if (owner[r] == i) {
            const unsigned long long x = prefix + excl[r];
            const int id = (int)(x >> 31);
            const int ptr = (int)(x & kCountMask);
            sc.own[i] = ((long long)ptr << 32) | id;
            edge_ptr[id] = ptr;
            if (count[r] >= 3)
                sc.fill[id] = 0;
        } else if (count[r] == 2) {
            sc.other[owner[r]] = (int)i;
        }
    }
}

__device__ __forceinline__ void topology_place_impl(const AntialiasTopologyParams& kp)
{
    const int* __restrict__ tri = kp.tri;
    const long long* table = kp.table;
    long long* scratch = kp.scratch;
    long long* __restrict__ tri_edge = kp.tri_edge;
    long long* __restrict__ edge_ptr = kp.edge_ptr;
    long long* __restrict__ inc_tri = kp.inc_tri;
    long long* __restrict__ inc_opp = kp.inc_opp;
    int* __restrict__ nbr = kp.nbr;
    const int num_slots = kp.num_slots, capacity = kp.capacity, num_tiles = kp.num_tiles;
    // No early return: the whole warp takes part in __match_any_sync.
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const int lane = lane_id();
    const TopoScratch sc = topo_scratch(scratch, num_slots);
    int heavy_id = -1, ptr = 0;
    if (i < num_slots) {
        const unsigned long long* status =
            reinterpret_cast<const unsigned long long*>(table + 2LL * capacity);
        const long long num_edges = (long long)((status[num_tiles - 1] & kStatusValue) >> 31);
        int owner, count;
        entry_info(table, sc.entry[i], num_slots, owner, count);
        const long long own = sc.own[owner];
        const int id = (int)(own & 0xffffffffLL);
        ptr = (int)(own >> 32);
        tri_edge[i] = id;
        if (i + 1 >= num_edges)
            edge_ptr[i + 1] = num_slots;  // the padding: empty edges
        const long long t = i / 3;
        if (count <= 2) {
            // One incidence: nothing across. Two: the other one, unless it is in this triangle.
            const long long other = count == 1 ? i : (owner == i ? sc.other[owner] : owner);
            const long long pos = ptr + (owner == i ? 0 : 1);
            inc_tri[pos] = t;
            inc_opp[pos] = slot_vertex(tri, i, 2);
            nbr[i] = other / 3 != t ? slot_vertex(tri, other, 2) : -1;
        } else {
            nbr[i] = -2 - id;
            heavy_id = id;
        }
    }
    const unsigned group = __match_any_sync(kFullWarp, heavy_id);
    if (heavy_id >= 0 && lane == __ffs(group) - 1) {
        const int j = atomicAdd(sc.fill + heavy_id, 1);
        sc.list[ptr + j] = ((unsigned)(i >> 5) << 6) | (unsigned)__popc(group);
    }
}

__device__ __forceinline__ void topology_rank_impl(const AntialiasTopologyParams& kp)
{
    const int* __restrict__ tri = kp.tri;
    long long* scratch = kp.scratch;
    const long long* __restrict__ tri_edge = kp.tri_edge;
    const long long* __restrict__ edge_ptr = kp.edge_ptr;
    long long* __restrict__ inc_tri = kp.inc_tri;
    long long* __restrict__ inc_opp = kp.inc_opp;
    const int num_slots = kp.num_slots;
    // No early return: the whole warp takes part in the collectives.
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const int lane = lane_id();
    const unsigned group_index = (unsigned)(i >> 5);  // the same for the whole warp
    const TopoScratch sc = topo_scratch(scratch, num_slots);
    int id = -1, ptr = 0;
    if (i < num_slots) {
        const int e = (int)tri_edge[i];
        ptr = (int)edge_ptr[e];
        if (edge_ptr[e + 1] - ptr >= 3)
            id = e;
    }
    const unsigned group = __match_any_sync(kFullWarp, id);
    const int leader = __ffs(group) - 1;
    const bool lead = id >= 0 && lane == leader;
    const int len = lead ? sc.fill[id] : 0;
    // The edge's slots in earlier groups: its leader sums the list, alone when it is short, with
    // the whole warp otherwise.
    int base = 0;
    if (len <= 32) {
        for (int j = 0; j < len; ++j) {
            const unsigned entry = sc.list[ptr + j];
            if ((entry >> 6) < group_index)
                base += (int)(entry & 63u);
        }
    }
    for (unsigned todo = __ballot_sync(kFullWarp, len > 32); todo; todo &= todo - 1) {
        const int l = __ffs(todo) - 1;
        const int l_ptr = __shfl_sync(kFullWarp, ptr, l);
        const int l_len = __shfl_sync(kFullWarp, len, l);
        int part = 0;
        for (int j = lane; j < l_len; j += 32) {
            const unsigned entry = sc.list[l_ptr + j];
            if ((entry >> 6) < group_index)
                part += (int)(entry & 63u);
        }
        part = warp_sum_fixed_order(part);
        if (lane == l)
            base = part;
    }
    base = __shfl_sync(kFullWarp, base, leader);
    if (id >= 0) {
        const long long pos = ptr + base + __popc(group & ((1u << lane) - 1u));
        inc_tri[pos] = i / 3;
        inc_opp[pos] = slot_vertex(tri, i, 2);
    }
}
