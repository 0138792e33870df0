// antialias topology: the edge tables that antialias_forward.cu reads (nbr and the CSR
// edge_ptr / inc_tri / inc_opp, see its header) plus tri_edge, built from tri alone
// (diffrast/cuda_backend_antialias.py, construct_tables), in four launches with every buffer
// sized from T, no host synchronization and no sort. Incidence ("slot") i = 3 t + k is edge k
// of triangle t, from tri[t][k] to tri[t][k + 1 mod 3], opposite vertex tri[t][k + 2 mod 3];
// n = 3T. Every table is int32 (n < 2^31).
//
//   topology_insert  one thread per slot: the slot's undirected edge into an open-addressing hash
//                    table (linear probing, atomicCAS). An entry stores no key: it holds the
//                    smallest slot on its edge (its "owner", atomicMax of n - i) and the incidence
//                    count (atomicAdd; both once per warp and entry), and a probe compares its
//                    edge with the vertices of the entry's slot in tri. Records each slot's entry
//                    in tri_edge (as -1 - entry).
//   topology_scan    single-pass scan (decoupled look-back, one warp per tile of kScanTile slots,
//                    tiles in the order of a ticket counter) over the slots of the value
//                    (owner ? (1 edge, count incidences) : 0): an owner's exclusive prefix is its
//                    edge's id and CSR offset, so edges are numbered in the order of their first
//                    slot. An owner writes its tri_edge (the id) and its edge's edge_ptr; the
//                    last tile writes edge_ptr[E] = n.
//                    A tile waits only on tiles of smaller tickets, which have started, so it
//                    never waits on a warp that is not resident, whatever the block scheduling.
//   topology_place   one thread per slot: tri_edge of the other slots (the id of their entry's
//                    owner), the padding of edge_ptr, and the incidences and nbr of every edge of
//                    one incidence (by its owner) or two (both by the second slot). For an edge
//                    of three or more, each group of 32 aligned slots (a warp) appends one entry
//                    (group index, number of its slots on the edge) to the edge's list.
//   topology_rank    one thread per slot of an edge of three or more incidences: its position in
//                    the edge's CSR segment = the slots of the edge in earlier groups (a sum over
//                    the edge's list) + its rank among the edge's slots of its own warp.
//                    (Linear in n, except for an edge on very many warps: each of its m warps
//                    sums its list of m entries, cooperatively when the edge has more than 32
//                    incidences. A million copies of one triangle, m = 94k: about 9e9 list
//                    reads.)
//
// Determinism: the hash table's layout depends on the order of the insertions, and the lists'
// order on the order of the appends; nothing written to an output does. Owners and counts are
// commutative atomics, ids and offsets come from the scan in slot order, and an incidence's
// position is its rank by slot among its edge's incidences (a sum over the list, whatever its
// order). The tables equal the reference's (edges sorted by key, incidences by slot) up to the
// numbering of the edges.
//
// Buffers (torch tensors made by the caller): table, int64 [capacity + num_tiles + 1], zeroed:
// per entry e, table[e] as two ints (n - owner, count; 0: empty; after topology_place, for an
// edge of three or more incidences, count + the length of its list), then the scan's tile
// status words and its ticket counter. list, int32 [n], not initialized: the lists, in the
// edges' CSR ranges. The outputs double as scratch: tri_edge holds -1 - (entry of the slot)
// from topology_insert until topology_scan (owners) or topology_place (the others) writes the
// edge id, and nbr at the owner of an edge of three or more its entry, from topology_scan until
// topology_place writes the final value. No word is written by one thread and read or written
// by another within a launch, except through atomics and the scan's status words.
#include "common.cuh"

namespace {

using namespace diffrast;

constexpr int kScanRows = 8;                  // slots per lane of a scan tile
constexpr int kScanTile = 32 * kScanRows;     // slots per scan tile (one warp)
constexpr unsigned long long kEdgeOne = 1ull << 31;  // one edge in a scan value (counts below)
constexpr unsigned long long kCountMask = kEdgeOne - 1;
constexpr unsigned long long kStatusAggregate = 1ull << 62;  // the tile's own sum is published
constexpr unsigned long long kStatusPrefix = 2ull << 62;     // its inclusive prefix is published
constexpr unsigned long long kStatusValue = (1ull << 62) - 1;

__device__ __forceinline__ int slot_vertex(const int* __restrict__ tri, long long i, int step)
{
    const long long t = i / 3;
    const int k = (int)(i - 3 * t) + step;
    return tri[3 * t + (k >= 3 ? k - 3 : k)];
}

// The undirected edge of slot i: its smaller and larger vertex index.
__device__ __forceinline__ void slot_edge(const int* __restrict__ tri, long long i, int& lo,
                                          int& hi)
{
    const int a = slot_vertex(tri, i, 0), b = slot_vertex(tri, i, 1);
    lo = a < b ? a : b;
    hi = a < b ? b : a;
}

// Home entry of an edge in [0, capacity): a 64-bit mix (splitmix64's finalizer) of its vertices,
// scaled.
__device__ __forceinline__ long long home_entry(int lo, int hi, int capacity)
{
    unsigned long long x = ((unsigned long long)(unsigned)hi << 32) | (unsigned)lo;
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return (long long)(((x >> 32) * (unsigned long long)capacity) >> 32);
}

// The two ints of table entry e: n - owner (0: empty) and the count.
__device__ __forceinline__ int* entry_words(long long* table, long long e)
{
    return reinterpret_cast<int*>(table + e);
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
    int* __restrict__ tri_edge = kp.tri_edge;
    const int num_slots = kp.num_slots, capacity = kp.capacity;
    // No early return: the whole warp takes part in __match_any_sync.
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const int lane = lane_id();
    long long e = -1;
    if (i < num_slots) {
        int lo, hi;
        slot_edge(tri, i, lo, hi);
        e = home_entry(lo, hi, capacity);
        const int mine = num_slots - (int)i;  // in [1, n]
        for (;;) {  // capacity > n >= the number of distinct edges: there is always a free entry
            // Once taken, an entry only ever holds slots of its edge: a stale 0 only costs an
            // atomicCAS, a stale slot names the same edge.
            int* words = entry_words(table, e);
            int prev = words[0];
            if (prev == 0)
                prev = atomicCAS(words, 0, mine);
            if (prev == 0)
                break;
            int lo2, hi2;
            slot_edge(tri, num_slots - prev, lo2, hi2);
            if (lo2 == lo && hi2 == hi)
                break;
            e = e + 1 == capacity ? 0 : e + 1;
        }
        tri_edge[i] = -1 - (int)e;
    }
    // One update per entry and warp (a shared edge's slots are often in one warp; a mesh padded
    // with copies of one triangle has every slot of the warp on one entry): its lowest lane, the
    // smallest slot, adds the warp's count.
    const unsigned group = __match_any_sync(kFullWarp, e);
    if (e >= 0 && lane == __ffs(group) - 1) {
        int* words = entry_words(table, e);
        atomicMax(words, num_slots - (int)i);
        atomicAdd(words + 1, __popc(group));
    }
}

__device__ __forceinline__ void topology_scan_impl(const AntialiasTopologyParams& kp)
{
    long long* table = kp.table;
    int* __restrict__ tri_edge = kp.tri_edge;
    int* __restrict__ edge_ptr = kp.edge_ptr;
    int* __restrict__ nbr = kp.nbr;
    const int num_slots = kp.num_slots, capacity = kp.capacity, num_tiles = kp.num_tiles;
    const int lane = lane_id();
    unsigned long long* status = reinterpret_cast<unsigned long long*>(table + capacity);
    unsigned long long* ticket = status + num_tiles;
    // Tiles in the order the warps start (so a tile's predecessors are running or done).
    long long tile = 0;
    if (lane == 0)
        tile = (long long)atomicAdd(ticket, 1ull);
    tile = __shfl_sync(kFullWarp, tile, 0);
    if (tile >= num_tiles)
        return;

    int count[kScanRows];  // the edge's count at an owner, 0 elsewhere
    unsigned long long excl[kScanRows];
    unsigned long long carry = 0;
    for (int r = 0; r < kScanRows; ++r) {
        const long long i = tile * kScanTile + r * 32 + lane;
        count[r] = 0;
        if (i < num_slots) {
            const int* words = entry_words(table, -1 - tri_edge[i]);
            if (num_slots - words[0] == i)
                count[r] = words[1];
        }
        const unsigned long long v = count[r] ? kEdgeOne + (unsigned)count[r] : 0ull;
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
    if (tile == num_tiles - 1 && lane == 0)
        edge_ptr[(int)((prefix + carry) >> 31)] = num_slots;  // the end of the last edge

    for (int r = 0; r < kScanRows; ++r) {
        const long long i = tile * kScanTile + r * 32 + lane;
        if (!count[r])
            continue;
        const unsigned long long x = prefix + excl[r];
        const int id = (int)(x >> 31);
        if (count[r] >= 3)
            nbr[i] = -1 - tri_edge[i];  // the owner's entry, for topology_place
        tri_edge[i] = id;
        edge_ptr[id] = (int)(x & kCountMask);
    }
}

__device__ __forceinline__ void topology_place_impl(const AntialiasTopologyParams& kp)
{
    const int* __restrict__ tri = kp.tri;
    long long* table = kp.table;
    unsigned* __restrict__ list = kp.list;
    int* __restrict__ tri_edge = kp.tri_edge;
    int* __restrict__ edge_ptr = kp.edge_ptr;
    int* __restrict__ inc_tri = kp.inc_tri;
    int* __restrict__ inc_opp = kp.inc_opp;
    int* __restrict__ nbr = kp.nbr;
    const int num_slots = kp.num_slots, capacity = kp.capacity, num_tiles = kp.num_tiles;
    // No early return: the whole warp takes part in __match_any_sync.
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const int lane = lane_id();
    int heavy_id = -1, heavy_entry = 0, ptr = 0, count = 0;
    if (i < num_slots) {
        const unsigned long long* status =
            reinterpret_cast<const unsigned long long*>(table + capacity);
        const long long num_edges = (long long)((status[num_tiles - 1] & kStatusValue) >> 31);
        // An owner's tri_edge is its edge id (from topology_scan); the others' is their entry.
        const int x = tri_edge[i];
        long long owner = i;
        int id = x, e = -1;
        if (x < 0) {
            e = -1 - x;
            owner = num_slots - entry_words(table, e)[0];
            id = tri_edge[owner];
            tri_edge[i] = id;
        }
        ptr = edge_ptr[id];
        count = edge_ptr[id + 1] - ptr;
        if (i + 1 > num_edges)
            edge_ptr[i + 1] = num_slots;  // the padding: empty edges
        const long long t = i / 3;
        if (count == 1) {  // the owner, alone: nothing across
            inc_tri[ptr] = (int)t;
            inc_opp[ptr] = slot_vertex(tri, i, 2);
            nbr[i] = -1;
        } else if (count == 2) {
            // Both incidences by the second; across unless both are in this triangle.
            if (owner != i) {
                const int t0 = (int)(owner / 3);
                const int opp0 = slot_vertex(tri, owner, 2), opp1 = slot_vertex(tri, i, 2);
                inc_tri[ptr] = t0;
                inc_opp[ptr] = opp0;
                inc_tri[ptr + 1] = (int)t;
                inc_opp[ptr + 1] = opp1;
                nbr[owner] = t0 != t ? opp1 : -1;
                nbr[i] = t0 != t ? opp0 : -1;
            }
        } else {
            heavy_entry = owner == i ? nbr[i] : e;  // the owner's from topology_scan
            nbr[i] = -2 - id;
            heavy_id = id;
        }
    }
    const unsigned group = __match_any_sync(kFullWarp, heavy_id);
    if (heavy_id >= 0 && lane == __ffs(group) - 1) {
        // The entry's count grows by one per list entry (it started at the edge's count).
        const int j = atomicAdd(entry_words(table, heavy_entry) + 1, 1) - count;
        list[ptr + j] = ((unsigned)(i >> 5) << 6) | (unsigned)__popc(group);
    }
}

__device__ __forceinline__ void topology_rank_impl(const AntialiasTopologyParams& kp)
{
    const int* __restrict__ tri = kp.tri;
    const unsigned* __restrict__ list = kp.list;
    const int* __restrict__ tri_edge = kp.tri_edge;
    const int* __restrict__ edge_ptr = kp.edge_ptr;
    int* __restrict__ inc_tri = kp.inc_tri;
    int* __restrict__ inc_opp = kp.inc_opp;
    const int num_slots = kp.num_slots;
    // No early return: the whole warp takes part in the collectives.
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const int lane = lane_id();
    const unsigned group_index = (unsigned)(i >> 5);  // the same for the whole warp
    int id = -1, ptr = 0, count = 0;
    if (i < num_slots) {
        const int e = tri_edge[i];
        ptr = edge_ptr[e];
        count = edge_ptr[e + 1] - ptr;
        if (count >= 3)
            id = e;
    }
    const unsigned group = __match_any_sync(kFullWarp, id);
    const int leader = __ffs(group) - 1;
    const bool lead = id >= 0 && lane == leader;
    // The edge's slots in earlier groups: its leader sums the list, alone when the edge has at
    // most 32 incidences, with the whole warp otherwise. The list's length is not stored: its
    // entries (each of one slot or more) are those up to where their counts add up to count.
    int base = 0;
    if (lead && count <= 32) {
        for (int j = 0, seen = 0; seen < count && j < count; ++j) {
            const unsigned entry = list[ptr + j];
            seen += (int)(entry & 63u);
            if ((entry >> 6) < group_index)
                base += (int)(entry & 63u);
        }
    }
    for (unsigned todo = __ballot_sync(kFullWarp, lead && count > 32); todo; todo &= todo - 1) {
        const int l = __ffs(todo) - 1;
        const int l_ptr = __shfl_sync(kFullWarp, ptr, l);
        const int l_count = __shfl_sync(kFullWarp, count, l);
        int part = 0;
        for (int j0 = 0, seen = 0; seen < l_count && j0 < l_count; j0 += 32) {  // (uniform)
            const int j = j0 + lane;
            const unsigned entry = j < l_count ? list[l_ptr + j] : 0u;
            const int c = (int)(entry & 63u);
            int x = c;  // inclusive prefix of c over the lanes
            for (int d = 1; d < 32; d <<= 1) {
                const int y = __shfl_up_sync(kFullWarp, x, d);
                if (lane >= d)
                    x += y;
            }
            // An entry of the list: the earlier ones add up to less than the edge's count (past
            // the list, not initialized, they add up to at least that).
            if (seen + x - c < l_count && (entry >> 6) < group_index)
                part += c;
            seen += __shfl_sync(kFullWarp, x, 31);
        }
        part = warp_sum_fixed_order(part);
        if (lane == l)
            base = part;
    }
    base = __shfl_sync(kFullWarp, base, leader);
    if (id >= 0) {
        const long long pos = ptr + base + __popc(group & ((1u << lane) - 1u));
        inc_tri[pos] = (int)(i / 3);
        inc_opp[pos] = slot_vertex(tri, i, 2);
    }
}
