// antialias forward: analytic silhouette antialiasing, float32 (the backward pass is in
// antialias_backward.cu; the rules, rounding and layouts shared by both in antialias_pairs.cuh).
//
// Topology (built by the kernels of antialias_topology.cu, or by torch ops; see
// diffrast/cuda_backend_antialias.py and TopologyHash):
//   nbr [T, 3] int32: for edge k of triangle t, the vertex opposite that edge in the one other
//     triangle on the same undirected edge (manifold edge); -1 when no other triangle can
//     continue the surface (a boundary edge, or the only other incidence is t itself); and
//     -2 - e for an edge e with three or more incidences, whose incidences are then read from
//     the CSR table: edge_ptr [E + 1], inc_tri [3T], inc_opp [3T] (int32).
//
// One kernel, antialias_fwd, a block per tile of pixels and a thread per pixel: the block lists
// the pixel pairs of its tile that need evaluating (each pixel's pair with its right neighbour
// and its pair with the neighbour above, and the pairs across the tile's lower and left sides),
// its threads share the list out and evaluate one pair each into shared memory, and each thread
// then gathers the (up to four) pairs that blend into its pixel, in the reference's order (left,
// right, below, above), writes the output and, for the backward pass, pair_t [N, 2] (crossing
// parameter t of each pair, 0 where it does not blend) and pair_meta [N] (per pair one byte, see
// PairBits). No atomics.
//
// Robustness: ids outside [1, T] and NaN/inf codes are empty; triangles with a vertex index
// outside [0, V) never blend; opposite vertices out of range never continue a surface; CSR
// offsets are clamped to the incidence table. Corrupt input can never cause an out-of-bounds
// access. w <= 0, NaN and zero-area triangles follow the reference: D == 0 or non-finite never
// crosses.
#include "common.cuh"
#include "triangle_id.cuh"
#include "antialias_pairs.cuh"
#include "pixel_tile.cuh"

namespace {

using namespace diffrast;

// The clip-space corners of triangle t of image b; false (nothing loaded) when one of its vertex
// indices is out of range.
__device__ __forceinline__ bool load_corners(const Scene& s, int b, int t, float4 v[3])
{
    int vi[3];
    if (!triangle_vertices(s.tri, t, s.num_vertices, vi))
        return false;
    for (int i = 0; i < 3; ++i)
        v[i] = load4(s.pos, vertex_row(s, b, vi[i]));
    return true;
}

// Whether the vertex `v` (opposite the edge in another triangle) lies strictly on the other side
// of the edge line L than triangle T (of determinant D): then the surface continues across.
__device__ __forceinline__ bool continues_across(const Scene& s, int b, long long v, const Vec3& L,
                                                 float D, float cx, float cy)
{
    if (v < 0 || v >= s.num_vertices)
        return false;
    const Vec3 pe = pixel_space(s, load4(s.pos, vertex_row(s, b, (int)v)), cx, cy);
    return mul_rn(dot3(L, pe), D) < 0.0f;
}

struct Topology {
    const int* __restrict__ nbr;
    const int* __restrict__ edge_ptr;
    const int* __restrict__ inc_tri;
    const int* __restrict__ inc_opp;
    int num_edges;
};

// Step 5 of the reference: edge k of triangle t is a silhouette unless another triangle on the
// same undirected edge has its opposite vertex strictly on the other side of the edge line.
__device__ bool is_silhouette(const Scene& s, const Topology& topo, int b, int t, int k,
                              const Vec3& L, float D, float cx, float cy)
{
    const int n = topo.nbr[3LL * t + k];
    if (n == -1)
        return true;
    if (n >= 0)
        return !continues_across(s, b, n, L, D, cx, cy);
    const long long e = -2LL - n;  // three or more incidences: the CSR table
    if (e >= topo.num_edges)
        return true;
    const long long num_inc = 3LL * s.num_triangles;
    long long j0 = topo.edge_ptr[e], j1 = topo.edge_ptr[e + 1];
    j0 = j0 < 0 ? 0 : (j0 > num_inc ? num_inc : j0);
    j1 = j1 < j0 ? j0 : (j1 > num_inc ? num_inc : j1);
    for (long long j = j0; j < j1; ++j)
        if (topo.inc_tri[j] != t && continues_across(s, b, topo.inc_opp[j], L, D, cx, cy))
            return false;
    return true;
}

// The front triangle of the pair of pixels F, S = F + (sx, sy), given their rast texels: the
// triangle of the pixel with the smaller z/w (empty pixels infinitely far, ties and NaN to F),
// and whether that pixel A is S. -1 where the pair cannot blend: the same id on both pixels, or
// an empty front pixel.
__device__ __forceinline__ int pair_front(float4 rf, float4 rs, int num_triangles, bool& a_second)
{
    const int id_f = decode_triangle(rf.w, num_triangles);
    const int id_s = decode_triangle(rs.w, num_triangles);
    const float inf = __int_as_float(0x7f800000);
    const float z_f = id_f < 0 ? inf : rf.z;
    const float z_s = id_s < 0 ? inf : rs.z;
    a_second = z_s < z_f;
    return id_f == id_s ? -1 : (a_second ? id_s : id_f);
}

// Evaluates the pair of pixel F = (fx, fy) and its neighbour S = F + (sx, sy) (one of them 1) in
// image b, whose front triangle t >= 0 lies on S when a_second, else on F (pair_front). Returns
// the pair's PairBits byte (0: no blend) and its t.
__device__ int eval_pair(const Scene& s, const Topology& topo, int b, int fx, int fy, int sx,
                         int sy, int t, bool a_second, float& t_out)
{
    float4 corner[3];
    if (!load_corners(s, b, t, corner))
        return 0;
    const float inf = __int_as_float(0x7f800000);
    const int ax = a_second ? fx + sx : fx;
    const int ay = a_second ? fy + sy : fy;
    const float dx = (float)(a_second ? -sx : sx);
    const float dy = (float)(a_second ? -sy : sy);
    const float cx = add_rn((float)ax, 0.5f);
    const float cy = add_rn((float)ay, 0.5f);

    Vec3 P[3], L[3];
    for (int i = 0; i < 3; ++i)
        P[i] = pixel_space(s, corner[i], cx, cy);
    for (int i = 0; i < 3; ++i)
        L[i] = cross_line(P[i], P[i == 2 ? 0 : i + 1]);
    const float D = dot3(L[0], P[2]);
    if (!(D != 0.0f) || !is_finite(D))
        return 0;
    const float sgn = D > 0.0f ? 1.0f : -1.0f;

    // First exit from T along A -> B: the crossing edge with the smallest t (lowest k on ties).
    // (The edge's line is kept by value, not indexed by k: an array indexed at run time would
    // live in local memory.)
    float t_min = inf;
    int k = 0;
    Vec3 Lk = L[0];
#pragma unroll
    for (int i = 0; i < 3; ++i) {
        float ti;
        if (edge_crossing(L[i], dx, dy, sgn, ti)) {
            if (ti < t_min) {
                t_min = ti;
                k = i;
                Lk = L[i];
            }
        }
    }
    if (!is_finite(t_min))
        return 0;
    // Orientation: horizontal pairs take steep edges, vertical pairs shallow ones.
    const bool steep = fabsf(Lk.x) >= fabsf(Lk.y);
    if (steep != (sy == 0))
        return 0;
    if (!is_silhouette(s, topo, b, t, k, Lk, D, cx, cy))
        return 0;
    t_out = t_min;
    const bool to_a = t_min < 0.5f;
    const bool target_second = to_a ? a_second : !a_second;
    return kPairValid | (a_second ? kPairASecond : 0) | (target_second ? kPairTargetSecond : 0) |
           (k << kPairEdgeShift);
}

}  // namespace

// Work items of a block: the pairs of its tile's pixels with the right neighbour (slot 2i for
// thread i) and with the neighbour above (2i + 1), those across the tile's lower side (kBelow + lx)
// and across its left side (kLeft + ly).
constexpr int kOwnSlots = 2 * kTileWidth * kTileHeight;
constexpr int kBelow = kOwnSlots;
constexpr int kLeft = kBelow + kTileWidth;
constexpr int kSlots = kLeft + kTileHeight;
constexpr int kWarps = kTileWidth * kTileHeight / 32;

// antialias_fwd: one block per tile of kTileWidth x kTileHeight pixels of one image, a thread
// per pixel (a warp per row), in three steps separated by barriers:
// 1. each thread loads its pixel's rast texel and those of its right and upper neighbours and
//    finds which of its two pairs need evaluating (pair_front: different ids, a front triangle);
//    warp 0 does the same for the pairs across the tile's lower side, warp 1 (eight lanes) for
//    those across its left side. The pairs to evaluate are listed in shared memory, warp by warp
//    (a ballot and a prefix of the warps' counts): only about one pair in eight needs it, and
//    most warps hold a few, so
// 2. the block's threads share out the list, one pair each (eval_pair), rather than each warp
//    paying the evaluation's chain of dependent loads for a few lanes; results (PairBits byte,
//    crossing t) go to shared memory by slot;
// 3. each thread gathers the (up to four) pairs that blend into its pixel, in the reference's
//    order, writes its output, and (when pair_meta is not null) the records of the backward.
__device__ __forceinline__ void antialias_fwd_impl(const AntialiasForwardParams& kp)
{
    __shared__ int item[kSlots];       // the pairs to evaluate: slot | a_second << 10
    __shared__ int item_tri[kSlots];   // and their front triangles
    __shared__ int res_m[kSlots];      // per slot: the pair's PairBits byte (0: no blend)
    __shared__ float res_t[kSlots];    // and its crossing parameter (0 where it does not blend)
    __shared__ int warp_count[kWarps];

    const int width = kp.width, height = kp.height, T = kp.num_triangles;
    const float* __restrict__ rast = kp.rast;
    const TilePixel tp = tile_pixel(width, height);
    const int b = tp.b, x0 = tp.x0, y0 = tp.y0, lx = tp.lx, ly = tp.ly, x = tp.x, y = tp.y;
    const bool inside = tp.inside;
    const int i = (int)threadIdx.x;
    const int warp = i / 32, lane = i % 32;
    const long long image_row = (long long)b * height;  // the image's first row of rast
    const long long p = tp.p;

    // 1. Which pairs need evaluating.
    int t_h = -1, t_v = -1, t_halo = -1;  // front triangles (-1: nothing to evaluate)
    bool a_h = false, a_v = false, a_halo = false;
    float4 r0 = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (inside) {
        r0 = load4(rast, p);
        if (x + 1 < width)
            t_h = pair_front(r0, load4(rast, p + 1), T, a_h);
        if (y + 1 < height)
            t_v = pair_front(r0, load4(rast, p + width), T, a_v);
    }
    res_m[2 * i] = 0;
    res_m[2 * i + 1] = 0;
    res_t[2 * i] = 0.0f;
    res_t[2 * i + 1] = 0.0f;
    int halo_slot = -1;
    if (warp == 0) {  // the pair of (x, y0 - 1) with (x, y0)
        halo_slot = kBelow + lane;
        if (y0 > 0 && x < width)
            t_halo = pair_front(load4(rast, p - width), r0, T, a_halo);
    } else if (warp == 1 && lane < kTileHeight) {  // the pair of (x0 - 1, y0 + lane) with (x0, ...)
        halo_slot = kLeft + lane;
        const int hy = y0 + lane;
        if (x0 > 0 && hy < height) {
            const long long q = (image_row + hy) * width + x0 - 1;
            t_halo = pair_front(load4(rast, q), load4(rast, q + 1), T, a_halo);
        }
    }
    if (halo_slot >= 0) {
        res_m[halo_slot] = 0;
        res_t[halo_slot] = 0.0f;
    }
    const unsigned below_lane = (1u << lane) - 1u;
    const unsigned want_h = __ballot_sync(0xffffffffu, t_h >= 0);
    const unsigned want_v = __ballot_sync(0xffffffffu, t_v >= 0);
    const unsigned want_halo = __ballot_sync(0xffffffffu, t_halo >= 0);
    if (lane == 0)
        warp_count[warp] = __popc(want_h) + __popc(want_v) + __popc(want_halo);
    __syncthreads();
    int base = 0, total = 0;
    for (int w = 0; w < kWarps; ++w) {
        base += w < warp ? warp_count[w] : 0;
        total += warp_count[w];
    }
    if (t_h >= 0) {
        const int k = base + __popc(want_h & below_lane);
        item[k] = (2 * i) | (a_h ? 1 << 10 : 0);
        item_tri[k] = t_h;
    }
    base += __popc(want_h);
    if (t_v >= 0) {
        const int k = base + __popc(want_v & below_lane);
        item[k] = (2 * i + 1) | (a_v ? 1 << 10 : 0);
        item_tri[k] = t_v;
    }
    base += __popc(want_v);
    if (t_halo >= 0) {
        const int k = base + __popc(want_halo & below_lane);
        item[k] = halo_slot | (a_halo ? 1 << 10 : 0);
        item_tri[k] = t_halo;
    }
    __syncthreads();

    // 2. The block's pairs to evaluate, shared out over its threads.
    const Scene s = make_scene(kp.pos, kp.tri, width, height, kp.num_vertices, T, kp.pos_batched);
    Topology topo;
    topo.nbr = kp.nbr;
    topo.edge_ptr = kp.edge_ptr;
    topo.inc_tri = kp.inc_tri;
    topo.inc_opp = kp.inc_opp;
    topo.num_edges = kp.num_edges;
    for (int k = i; k < total; k += kTileWidth * kTileHeight) {
        const int slot = item[k] & 0x3ff;
        const bool a_second = (item[k] >> 10) != 0;
        int fx, fy, sx = 0, sy = 0;
        if (slot < kOwnSlots) {  // pixel slot / 2 of the tile, with its right / upper neighbour
            fx = x0 + (slot >> 1) % kTileWidth;
            fy = y0 + (slot >> 1) / kTileWidth;
            sx = 1 - (slot & 1);
            sy = slot & 1;
        } else if (slot < kLeft) {  // below the tile
            fx = x0 + slot - kBelow;
            fy = y0 - 1;
            sy = 1;
        } else {  // left of the tile
            fx = x0 - 1;
            fy = y0 + slot - kLeft;
            sx = 1;
        }
        float t = 0.0f;
        const int m = eval_pair(s, topo, b, fx, fy, sx, sy, item_tri[k], a_second, t);
        res_m[slot] = m;
        res_t[slot] = m ? t : 0.0f;
    }
    __syncthreads();
    if (!inside)
        return;

    // 3. The pairs that blend into the pixel, in the reference's order: left, right, below, above.
    const int left = lx > 0 ? 2 * (i - 1) : kLeft + ly;
    const int below = ly > 0 ? 2 * (i - kTileWidth) + 1 : kBelow + lx;
    const int m_right = res_m[2 * i], m_above = res_m[2 * i + 1];
    const float t_right = res_t[2 * i], t_above = res_t[2 * i + 1];
    if (kp.pair_meta != nullptr) {  // the records of the backward pass
        kp.pair_meta[p] = m_right | m_above << 8;
        reinterpret_cast<float2*>(kp.pair_t)[p] = make_float2(t_right, t_above);
    }
    PairView pv[4];
    pv[0] = pair_view(res_m[left], res_t[left], false, p - 1);
    pv[1] = pair_view(m_right, t_right, true, p + 1);
    pv[2] = pair_view(res_m[below], res_t[below], false, p - width);
    pv[3] = pair_view(m_above, t_above, true, p + width);

    const float* __restrict__ color = kp.color;
    const long long C = kp.channels;
    const float* c_self = color + p * C;
    float* o = kp.out + p * C;
    for (long long c = 0; c < C; ++c) {
        const float own = c_self[c];
        float acc = own;
        for (int j = 0; j < 4; ++j)
            if (pv[j].valid && pv[j].target)
                acc = add_rn(acc, mul_rn(pv[j].w, sub_rn(color[pv[j].other * C + c], own)));
        o[c] = acc;
    }
}
