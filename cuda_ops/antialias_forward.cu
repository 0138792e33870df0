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
// One kernel, antialias_fwd, a block per tile of pixels and a thread per pixel: each thread
// evaluates its pixel's pair with the right neighbour and its pair with the neighbour above into
// shared memory (the tile's first two warps also the pairs of the row below and the column left
// of the tile), and, for the backward pass, into pair_t [N, 2] (crossing parameter t of each
// pair, 0 where it does not blend) and pair_meta [N] (per pair one byte, see PairBits); after
// a barrier it gathers the (up to four) pairs that blend into its pixel, in the reference's order
// (left, right, below, above), and writes the output. No atomics.
//
// Robustness: ids outside [1, T] and NaN/inf codes are empty; triangles with a vertex index
// outside [0, V) never blend; opposite vertices out of range never continue a surface; CSR
// offsets are clamped to the incidence table. Corrupt input can never cause an out-of-bounds
// access. w <= 0, NaN and zero-area triangles follow the reference: D == 0 or non-finite never
// crosses.
#include "common.cuh"
#include "triangle_id.cuh"
#include "antialias_pairs.cuh"

namespace {

using namespace diffrast;

// The clip-space corners of one triangle of image b, loaded once per thread and reused by the
// thread's second pair when it has the same front triangle.
struct TriCache {
    int tri;   // triangle index loaded, or -1
    bool ok;   // its vertex indices are all in range
    int vi[3];
    float4 v[3];
};

__device__ __forceinline__ bool load_triangle(const Scene& s, int b, int t, TriCache& c)
{
    if (c.tri == t)
        return c.ok;
    c.tri = t;
    c.ok = triangle_vertices(s.tri, t, s.num_vertices, c.vi);
    if (c.ok)
        for (int i = 0; i < 3; ++i)
            c.v[i] = load4(s.pos, vertex_row(s, b, c.vi[i]));
    return c.ok;
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

// Evaluates the pair of pixel F = (fx, fy) and its neighbour S = F + (sx, sy) (one of them 1) in
// image b, given their rast texels. Returns the pair's PairBits byte (0: no blend) and its t.
__device__ int eval_pair(const Scene& s, const Topology& topo, int b, int fx, int fy, int sx,
                         int sy, float4 rf, float4 rs, TriCache& cache, float& t_out)
{
    const int id_f = decode_triangle(rf.w, s.num_triangles);
    const int id_s = decode_triangle(rs.w, s.num_triangles);
    if (id_f == id_s)
        return 0;
    // Front pixel: smaller z/w, empty pixels infinitely far, ties and NaN to the first pixel.
    const float inf = __int_as_float(0x7f800000);
    const float z_f = id_f < 0 ? inf : rf.z;
    const float z_s = id_s < 0 ? inf : rs.z;
    const bool a_second = z_s < z_f;
    const int t = a_second ? id_s : id_f;
    if (t < 0)
        return 0;
    if (!load_triangle(s, b, t, cache))
        return 0;
    const int ax = a_second ? fx + sx : fx;
    const int ay = a_second ? fy + sy : fy;
    const float dx = (float)(a_second ? -sx : sx);
    const float dy = (float)(a_second ? -sy : sy);
    const float cx = add_rn((float)ax, 0.5f);
    const float cy = add_rn((float)ay, 0.5f);

    Vec3 P[3], L[3];
    for (int i = 0; i < 3; ++i)
        P[i] = pixel_space(s, cache.v[i], cx, cy);
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

// The pairs that the thread's pixel (fx, fy), rast texel r0, forms with its right neighbour and
// with the neighbour above: their PairBits bytes (right in bits 0-7, above in bits 8-15) and
// crossing parameters (t_h, t_v: read only where the byte is valid).
__device__ __forceinline__ int pixel_own_pairs(const Scene& s, const Topology& topo,
                                               const float* __restrict__ rast, int b, long long p,
                                               int fx, int fy, float4 r0, float& t_h, float& t_v)
{
    TriCache cache;
    cache.tri = -1;
    cache.ok = false;
    int meta = 0;
    if (fx + 1 < s.width)
        meta = eval_pair(s, topo, b, fx, fy, 1, 0, r0, load4(rast, p + 1), cache, t_h);
    if (fy + 1 < s.height)
        meta |= eval_pair(s, topo, b, fx, fy, 0, 1, r0, load4(rast, p + s.width), cache, t_v) << 8;
    return meta;
}

// antialias_fwd: one block per tile of kTileWidth x kTileHeight pixels of one image, a thread
// per pixel (a warp per row). Each thread evaluates its pixel's pairs with the right neighbour
// and the neighbour above into shared memory (and into pair_t / pair_meta for the backward when
// pair_meta is not null); warp 0 also evaluates the vertical pairs of the row below the tile,
// warp 1 the horizontal pairs of the column left of it. After a barrier each thread gathers the
// (up to four) pairs that blend into its pixel, in the reference's order, and writes its output.
__device__ __forceinline__ void antialias_fwd_impl(const AntialiasForwardParams& kp)
{
    __shared__ float2 tile_t[kTileHeight][kTileWidth];  // (t right, t above) of each pixel
    __shared__ int tile_m[kTileHeight][kTileWidth];     // its pair_meta
    __shared__ float left_t[kTileHeight];               // the column left of the tile: t right
    __shared__ int left_m[kTileHeight];                 // and its PairBits byte
    __shared__ float below_t[kTileWidth];               // the row below the tile: t above
    __shared__ int below_m[kTileWidth];                 // and its PairBits byte

    const int width = kp.width, height = kp.height;
    const float* __restrict__ rast = kp.rast;
    const int tiles_x = (width + kTileWidth - 1) / kTileWidth;
    const int tiles_per_image = tiles_x * ((height + kTileHeight - 1) / kTileHeight);
    const int tile = (int)blockIdx.x;
    const int b = tile / tiles_per_image;
    const int tile_y = (tile - b * tiles_per_image) / tiles_x;
    const int x0 = (tile - b * tiles_per_image - tile_y * tiles_x) * kTileWidth;
    const int y0 = tile_y * kTileHeight;
    const int lx = (int)threadIdx.x % kTileWidth, ly = (int)threadIdx.x / kTileWidth;
    const int x = x0 + lx, y = y0 + ly;
    const bool inside = x < width && y < height;
    const long long image_row = (long long)b * height;  // the image's first row of rast
    const long long p = (image_row + y) * width + x;
    const Scene s = make_scene(kp.pos, kp.tri, width, height, kp.num_vertices, kp.num_triangles,
                               kp.pos_batched);
    Topology topo;
    topo.nbr = kp.nbr;
    topo.edge_ptr = kp.edge_ptr;
    topo.inc_tri = kp.inc_tri;
    topo.inc_opp = kp.inc_opp;
    topo.num_edges = kp.num_edges;

    float t_h = 0.0f, t_v = 0.0f;
    int meta = 0;
    if (inside) {
        meta = pixel_own_pairs(s, topo, rast, b, p, x, y, load4(rast, p), t_h, t_v);
        if (kp.pair_meta != nullptr) {  // the records of the backward pass
            kp.pair_meta[p] = meta;
            reinterpret_cast<float2*>(kp.pair_t)[p] = make_float2(t_h, t_v);  // (0: no blend)
        }
    }
    tile_t[ly][lx] = make_float2(t_h, t_v);
    tile_m[ly][lx] = meta;
    if (ly == 0) {  // the pair of (x, y0 - 1) with (x, y0)
        float t = 0.0f;
        int m = 0;
        if (y0 > 0 && x < width) {
            TriCache cache;
            cache.tri = -1;
            cache.ok = false;
            m = eval_pair(s, topo, b, x, y0 - 1, 0, 1, load4(rast, p - width), load4(rast, p),
                          cache, t);
        }
        below_t[lx] = t;
        below_m[lx] = m;
    } else if (ly == 1 && lx < kTileHeight) {  // the pair of (x0 - 1, y0 + lx) with (x0, y0 + lx)
        float t = 0.0f;
        int m = 0;
        const int hy = y0 + lx;
        if (x0 > 0 && hy < height) {
            const long long q = (image_row + hy) * width + x0 - 1;
            TriCache cache;
            cache.tri = -1;
            cache.ok = false;
            m = eval_pair(s, topo, b, x0 - 1, hy, 1, 0, load4(rast, q), load4(rast, q + 1), cache,
                          t);
        }
        left_t[lx] = t;
        left_m[lx] = m;
    }
    __syncthreads();
    if (!inside)
        return;

    // The pairs that blend into the pixel, in the reference's order: left, right, below, above.
    const int m_left = lx > 0 ? tile_m[ly][lx - 1] & 0xff : left_m[ly];
    const float t_left = lx > 0 ? tile_t[ly][lx - 1].x : left_t[ly];
    const int m_below = ly > 0 ? (tile_m[ly - 1][lx] >> 8) & 0xff : below_m[lx];
    const float t_below = ly > 0 ? tile_t[ly - 1][lx].y : below_t[lx];
    PairView pv[4];
    pv[0] = pair_view(m_left, t_left, false, p - 1);
    pv[1] = pair_view(meta & 0xff, t_h, true, p + 1);
    pv[2] = pair_view(m_below, t_below, false, p - width);
    pv[3] = pair_view((meta >> 8) & 0xff, t_v, true, p + width);

    const float* __restrict__ color = kp.color;
    const long long C = kp.channels;
    const float* c_self = color + p * C;
    float* o = kp.out + p * C;
    for (long long c = 0; c < C; ++c) {
        const float own = c_self[c];
        float acc = own;
        for (int i = 0; i < 4; ++i)
            if (pv[i].valid && pv[i].target)
                acc = add_rn(acc, mul_rn(pv[i].w, sub_rn(color[pv[i].other * C + c], own)));
        o[c] = acc;
    }
}
