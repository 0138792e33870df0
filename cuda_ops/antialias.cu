// antialias: analytic silhouette antialiasing, forward and backward, float32.
//
// The math is diffrast/reference/antialias.py's (its module docstring lists every rule), step for
// step and in the same order of floating-point operations, so that every decision (which pairs,
// which edge, which side) and the forward output come out exactly as the reference computes them
// on the CPU: each add, subtract, multiply and divide of the forward pass is an explicitly rounded
// intrinsic (never contracted into an FMA), and the cross products use one fused multiply-add
// each, in the pattern that torch's CPU cross kernel compiles to:
// (a x b).x = fma(a.y, b.z, -(a.z * b.y)), and cyclically. (tests/test_cuda_antialias.py checks
// this bit for bit by running these kernels on the CPU.) The gradient only needs float32 accuracy
// and uses plain expressions.
//
// Layout: B images of H x W pixels, N = B * H * W, pixel p = (b * H + y) * W + x (rows bottom-up).
// rast [N, 4] (u, v, z/w, id + 1), color / out / grad_color [N, C], pos [rows, 4] (rows = B * V in
// instance mode, V in range mode; `pos_batched` tells), tri [T, 3].
//
// Topology (built by the topology_* kernels at the end of this file, or by torch ops; see
// diffrast/cuda_backend_antialias.py and TopologyHash):
//   nbr [T, 3] int32: for edge k of triangle t, the vertex opposite that edge in the one other
//     triangle on the same undirected edge (manifold edge); -1 when no other triangle can
//     continue the surface (a boundary edge, or the only other incidence is t itself); and
//     -2 - e for an edge e with three or more incidences, whose incidences are then read from
//     the CSR table: edge_ptr [E + 1], inc_tri [3T], inc_opp [3T] (int64).
//
// Passes (one thread per pixel each):
//   antialias_fwd_pairs  evaluates the pixel's pair with its right neighbour and its pair with
//                        the neighbour above; writes pair_t [N, 2] (crossing parameter t of each
//                        pair) and pair_meta [N] (per pair one byte, see PairBits).
//   antialias_fwd_blend  gathers the (up to four) pairs that blend into the pixel, in the
//                        reference's order (left, right, below, above), and writes out. No atomics.
//   antialias_bwd        grad_color by the same gather; the position gradient of the pixel's own
//                        two pairs through t: atomicAdd into grad_pos by default, or, in
//                        deterministic mode, the pair's dL/dt into pair_grad and the vertex rows
//                        of its two edge ends into entry_rows, for antialias_bwd_pos_reduce.
//   antialias_bwd_pos_reduce (deterministic mode) one thread per vertex row sums the row's entries
//                        in the order of a stable sort by row (see the Python module), recomputing
//                        each entry's contribution; no float atomics, bit-identical run to run.
//
// Robustness: ids outside [1, T] and NaN/inf codes are empty; triangles with a vertex index
// outside [0, V) never blend; opposite vertices out of range never continue a surface; CSR
// offsets are clamped to the incidence table. Corrupt input can never cause an out-of-bounds
// access. w <= 0, NaN and zero-area triangles follow the reference: D == 0 or non-finite never
// crosses, and the backward pass only differentiates pairs whose denominator is non-zero.
#include "accumulate.cuh"
#include "triangle_id.cuh"

namespace {

using namespace diffrast;

// ---- exactly rounded arithmetic (never contracted) ----

__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ float sub_rn(float a, float b) { return __fsub_rn(a, b); }
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ float div_rn(float a, float b) { return __fdiv_rn(a, b); }
__device__ __forceinline__ float fma_rn(float a, float b, float c) { return __fmaf_rn(a, b, c); }

__device__ __forceinline__ bool finite_f(float a)
{
    return (__float_as_uint(a) & 0x7f800000u) != 0x7f800000u;
}

__device__ __forceinline__ float4 load4(const float* __restrict__ base, long long index)
{
    return reinterpret_cast<const float4*>(base)[index];
}

struct Vec3 {
    float x, y, z;
};

// Homogeneous 2D line through a and b (torch CPU's cross product pattern, see the header).
__device__ __forceinline__ Vec3 cross_line(const Vec3& a, const Vec3& b)
{
    Vec3 r;
    r.x = fma_rn(a.y, b.z, -mul_rn(a.z, b.y));
    r.y = fma_rn(a.z, b.x, -mul_rn(a.x, b.z));
    r.z = fma_rn(a.x, b.y, -mul_rn(a.y, b.x));
    return r;
}

// (l * p).sum(): the products rounded, then summed left to right.
__device__ __forceinline__ float dot3(const Vec3& l, const Vec3& p)
{
    return add_rn(add_rn(mul_rn(l.x, p.x), mul_rn(l.y, p.y)), mul_rn(l.z, p.z));
}

// Plain (contractible) products for the gradient, which only needs float32 accuracy.
__device__ __forceinline__ Vec3 cross_plain(const Vec3& a, const Vec3& b)
{
    Vec3 r;
    r.x = a.y * b.z - a.z * b.y;
    r.y = a.z * b.x - a.x * b.z;
    r.z = a.x * b.y - a.y * b.x;
    return r;
}

// Per pair, one byte of pair_meta: the pair blends; its front pixel A is the second pixel
// (right / upper) of the pair; the blend target is the second pixel; k = the crossing edge.
enum PairBits : int {
    kPairValid = 1,
    kPairASecond = 2,
    kPairTargetSecond = 4,
    kPairEdgeShift = 3,  // two bits
};

struct Scene {
    const float* __restrict__ pos;
    const int* __restrict__ tri;
    int width, height, num_vertices, num_triangles, pos_batched;
    float half_w, half_h;  // 0.5 * W, 0.5 * H
};

__device__ __forceinline__ long long vertex_row(const Scene& s, int b, int v)
{
    return (s.pos_batched ? (long long)b * s.num_vertices : 0LL) + v;
}

// The reference's _pixel_space: clip (x, y, z, w) -> ((x + w) W/2 - cx w, (y + w) H/2 - cy w, w).
__device__ __forceinline__ Vec3 pixel_space(const Scene& s, float4 v, float cx, float cy)
{
    Vec3 r;
    r.x = sub_rn(mul_rn(add_rn(v.x, v.w), s.half_w), mul_rn(cx, v.w));
    r.y = sub_rn(mul_rn(add_rn(v.y, v.w), s.half_h), mul_rn(cy, v.w));
    r.z = v.w;
    return r;
}

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
    const long long* __restrict__ edge_ptr;
    const long long* __restrict__ inc_tri;
    const long long* __restrict__ inc_opp;
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
    if (!(D != 0.0f) || !finite_f(D))
        return 0;
    const float sgn = D > 0.0f ? 1.0f : -1.0f;

    // First exit from T along A -> B: the crossing edge with the smallest t (lowest k on ties).
    float t_min = inf;
    int k = 0;
    for (int i = 0; i < 3; ++i) {
        const float den = add_rn(mul_rn(L[i].x, dx), mul_rn(L[i].y, dy));
        const float e_a = mul_rn(sgn, L[i].z);
        const float e_b = mul_rn(sgn, add_rn(den, L[i].z));
        if (e_a >= 0.0f && e_b < 0.0f) {
            const float ti = div_rn(-L[i].z, den == 0.0f ? 1.0f : den);
            if (ti < t_min) {
                t_min = ti;
                k = i;
            }
        }
    }
    if (!finite_f(t_min))
        return 0;
    // Orientation: horizontal pairs take steep edges, vertical pairs shallow ones.
    const bool steep = fabsf(L[k].x) >= fabsf(L[k].y);
    if (steep != (sy == 0))
        return 0;
    if (!is_silhouette(s, topo, b, t, k, L[k], D, cx, cy))
        return 0;
    t_out = t_min;
    const bool to_a = t_min < 0.5f;
    const bool target_second = to_a ? a_second : !a_second;
    return kPairValid | (a_second ? kPairASecond : 0) | (target_second ? kPairTargetSecond : 0) |
           (k << kPairEdgeShift);
}

// The reference's blend weight for crossing parameter t.
__device__ __forceinline__ float blend_weight(float t)
{
    return t < 0.5f ? sub_rn(0.5f, t) : sub_rn(t, 0.5f);
}

// One of the (up to four) pairs a pixel belongs to, seen from that pixel.
struct PairView {
    bool valid;
    bool target;     // the pixel is the blend target (else it is the source)
    long long other; // the other pixel of the pair
    float w;         // blend weight
};

// The pixel's four pairs in the reference's accumulation order: left, right, below, above.
__device__ __forceinline__ void pixel_pairs(const float* __restrict__ pair_t,
                                            const int* __restrict__ pair_meta, long long p, int x,
                                            int y, int width, PairView pv[4])
{
    const int m_self = pair_meta[p];
    const int m[4] = {x > 0 ? pair_meta[p - 1] & 0xff : 0, m_self & 0xff,
                      y > 0 ? (pair_meta[p - width] >> 8) & 0xff : 0, (m_self >> 8) & 0xff};
    const long long other[4] = {p - 1, p + 1, p - width, p + width};
    const bool self_first[4] = {false, true, false, true};  // the pixel is the pair's first pixel
    for (int i = 0; i < 4; ++i) {
        pv[i].valid = (m[i] & kPairValid) != 0;
        pv[i].other = other[i];
        pv[i].target = false;
        pv[i].w = 0.0f;
        if (!pv[i].valid)
            continue;
        const bool target_second = (m[i] & kPairTargetSecond) != 0;
        pv[i].target = self_first[i] ? !target_second : target_second;
        const float t = i == 0 ? pair_t[2 * (p - 1)]
                      : i == 1 ? pair_t[2 * p]
                      : i == 2 ? pair_t[2 * (p - width) + 1]
                               : pair_t[2 * p + 1];
        pv[i].w = blend_weight(t);
    }
}

// Geometry of the position gradient of one blending pair (the pair of pixel p along `vertical`):
// with G = dLoss/dt, the gradients of the clip-space (x, y, w) of the crossing edge's two ends.
// False if the pair cannot be differentiated (corrupt input, zero denominator).
struct EdgeGrad {
    long long row[2];
    float gx[2], gy[2], gw[2];
};

__device__ bool pair_pos_grad(const Scene& s, const float* __restrict__ rast, long long p, int b,
                              int x, int y, bool vertical, int meta, float G, EdgeGrad& out)
{
    const bool a_second = (meta & kPairASecond) != 0;
    const int k = (meta >> kPairEdgeShift) & 3;
    const int sx = vertical ? 0 : 1, sy = vertical ? 1 : 0;
    const long long pa = a_second ? p + (vertical ? s.width : 1) : p;
    const int t = decode_triangle(load4(rast, pa).w, s.num_triangles);
    int vi[3];
    if (t < 0 || k > 2 || !triangle_vertices(s.tri, t, s.num_vertices, vi))
        return false;
    const int ax = a_second ? x + sx : x, ay = a_second ? y + sy : y;
    const float dx = (float)(a_second ? -sx : sx), dy = (float)(a_second ? -sy : sy);
    const float cx = (float)ax + 0.5f, cy = (float)ay + 0.5f;
    const int va = vi[k], vb = vi[k == 2 ? 0 : k + 1];
    out.row[0] = vertex_row(s, b, va);
    out.row[1] = vertex_row(s, b, vb);
    const Vec3 Pa = pixel_space(s, load4(s.pos, out.row[0]), cx, cy);
    const Vec3 Pb = pixel_space(s, load4(s.pos, out.row[1]), cx, cy);
    const Vec3 L = cross_line(Pa, Pb);
    const float den = add_rn(mul_rn(L.x, dx), mul_rn(L.y, dy));
    if (!(den != 0.0f) || !finite_f(den))
        return false;
    // t = -L.z / den: dt/dL = (L.z dx / den^2, L.z dy / den^2, -1 / den).
    const float q = 1.0f / den;
    const float gq = G * q;
    const float gl = gq * L.z * q;
    const Vec3 gL = {gl * dx, gl * dy, -gq};
    // L = Pa x Pb: dL.gL/dPa = Pb x gL, dL.gL/dPb = gL x Pa.
    const Vec3 gP[2] = {cross_plain(Pb, gL), cross_plain(gL, Pa)};
    // P = ((x + w) W/2 - cx w, (y + w) H/2 - cy w, w).
    const float kx = s.half_w - cx, ky = s.half_h - cy;
    for (int e = 0; e < 2; ++e) {
        out.gx[e] = gP[e].x * s.half_w;
        out.gy[e] = gP[e].y * s.half_h;
        out.gw[e] = gP[e].x * kx + gP[e].y * ky + gP[e].z;
    }
    return true;
}

__device__ __forceinline__ Scene make_scene(const float* pos, const int* tri, int width,
                                            int height, int num_vertices, int num_triangles,
                                            int pos_batched)
{
    Scene s;
    s.pos = pos;
    s.tri = tri;
    s.width = width;
    s.height = height;
    s.num_vertices = num_vertices;
    s.num_triangles = num_triangles;
    s.pos_batched = pos_batched;
    s.half_w = 0.5f * (float)width;
    s.half_h = 0.5f * (float)height;
    return s;
}

}  // namespace

// Pass 1: the pixel's pairs with its right neighbour and with the neighbour above.
extern "C" __global__ void antialias_fwd_pairs(
    const float* __restrict__ rast, const float* __restrict__ pos, const int* __restrict__ tri,
    const int* __restrict__ nbr, const long long* __restrict__ edge_ptr,
    const long long* __restrict__ inc_tri, const long long* __restrict__ inc_opp,
    float* __restrict__ pair_t, int* __restrict__ pair_meta,
    int num_pixels, int width, int height, int num_vertices, int num_triangles, int num_edges,
    int pos_batched)
{
    const int p = blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= num_pixels)
        return;
    const int hw = width * height;
    const int b = p / hw;
    const int rem = p - b * hw;
    const int y = rem / width;
    const int x = rem - y * width;
    const Scene s = make_scene(pos, tri, width, height, num_vertices, num_triangles, pos_batched);
    Topology topo;
    topo.nbr = nbr;
    topo.edge_ptr = edge_ptr;
    topo.inc_tri = inc_tri;
    topo.inc_opp = inc_opp;
    topo.num_edges = num_edges;

    const float4 r0 = load4(rast, p);
    TriCache cache;
    cache.tri = -1;
    cache.ok = false;
    float t_h = 0.0f, t_v = 0.0f;
    int meta = 0;
    if (x + 1 < width)
        meta = eval_pair(s, topo, b, x, y, 1, 0, r0, load4(rast, p + 1), cache, t_h);
    if (y + 1 < height)
        meta |= eval_pair(s, topo, b, x, y, 0, 1, r0, load4(rast, p + width), cache, t_v) << 8;
    reinterpret_cast<float2*>(pair_t)[p] = make_float2(t_h, t_v);
    pair_meta[p] = meta;
}

// Pass 2: out = color plus the deltas of the pairs that blend into the pixel.
extern "C" __global__ void antialias_fwd_blend(
    const float* __restrict__ color, const float* __restrict__ pair_t,
    const int* __restrict__ pair_meta, float* __restrict__ out,
    int num_pixels, int width, int height, int channels)
{
    const int p = blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= num_pixels)
        return;
    const int hw = width * height;
    const int rem = p - (p / hw) * hw;
    const int y = rem / width;
    const int x = rem - y * width;
    PairView pv[4];
    pixel_pairs(pair_t, pair_meta, p, x, y, width, pv);
    const long long C = channels;
    const float* c_self = color + p * C;
    float* o = out + p * C;
    for (int c = 0; c < channels; ++c) {
        const float own = c_self[c];
        float acc = own;
        for (int i = 0; i < 4; ++i)
            if (pv[i].valid && pv[i].target)
                acc = add_rn(acc, mul_rn(pv[i].w, sub_rn(color[pv[i].other * C + c], own)));
        o[c] = acc;
    }
}

// Backward. grad_out is read through element strides (so that an expanded gradient, e.g. of a
// .sum(), needs no copy). grad_color: the transpose of the blend, gathered per pixel. Position
// gradient of the pixel's own pairs (right, above): atomicAdd into grad_pos (zeroed by the
// caller), or in deterministic mode pair_grad[2p + j] = dLoss/dt * boost and entry_rows[4p + 2j + e]
// = the vertex row of edge end e (0x7fffffff when the pair does not blend).
extern "C" __global__ void antialias_bwd(
    const float* __restrict__ color, const float* __restrict__ grad_out,
    const float* __restrict__ rast, const float* __restrict__ pos, const int* __restrict__ tri,
    const float* __restrict__ pair_t, const int* __restrict__ pair_meta,
    float* __restrict__ grad_color, float* __restrict__ grad_pos, float* __restrict__ pair_grad,
    int* __restrict__ entry_rows,
    int num_pixels, int width, int height, int channels, int num_vertices, int num_triangles,
    int pos_batched, int g_stride_b, int g_stride_y, int g_stride_x, int g_stride_c,
    int want_color, int want_pos, int deterministic, float boost)
{
    const int p = blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= num_pixels)
        return;
    const int hw = width * height;
    const int b = p / hw;
    const int rem = p - b * hw;
    const int y = rem / width;
    const int x = rem - y * width;
    PairView pv[4];
    pixel_pairs(pair_t, pair_meta, p, x, y, width, pv);
    const long long C = channels;
    const long long gsc = g_stride_c;
    // grad_out offsets of the pixel and of its left, right, lower and upper neighbours
    const long long g_self = (long long)b * g_stride_b + (long long)y * g_stride_y +
                             (long long)x * g_stride_x;
    const long long g_nb[4] = {g_self - g_stride_x, g_self + g_stride_x, g_self - g_stride_y,
                               g_self + g_stride_y};

    if (want_color) {
        for (int c = 0; c < channels; ++c) {
            const float g = grad_out[g_self + c * gsc];
            float acc = g;
            for (int i = 0; i < 4; ++i) {
                if (!pv[i].valid)
                    continue;
                // target: out[p] gets -w * color[p]; source: out[other] gets +w * color[p].
                acc += pv[i].target ? -pv[i].w * g : pv[i].w * grad_out[g_nb[i] + c * gsc];
            }
            grad_color[p * C + c] = acc;
        }
    }
    if (!want_pos)
        return;

    const Scene s = make_scene(pos, tri, width, height, num_vertices, num_triangles, pos_batched);
    const int m_self = pair_meta[p];
    for (int j = 0; j < 2; ++j) {
        const int meta = (m_self >> (8 * j)) & 0xff;
        bool done = false;
        if (meta & kPairValid) {
            // The pair's view from this pixel (its first pixel): index 1 (right) or 3 (above).
            const PairView& v = pv[j == 0 ? 1 : 3];
            const long long tgt = v.target ? p : v.other;
            const long long src = v.target ? v.other : p;
            const long long g_tgt = v.target ? g_self : g_nb[j == 0 ? 1 : 3];
            float dw = 0.0f;  // dLoss/dweight
            for (int c = 0; c < channels; ++c)
                dw += grad_out[g_tgt + c * gsc] * (color[src * C + c] - color[tgt * C + c]);
            // weight = 0.5 - t when the target is the front pixel A (t < 0.5), else t - 0.5.
            const bool a_second = (meta & kPairASecond) != 0;
            const bool target_is_a = (meta & kPairTargetSecond) ? a_second : !a_second;
            const float G = (target_is_a ? -dw : dw) * boost;
            if (deterministic) {
                EdgeGrad eg;
                if (G != 0.0f && pair_pos_grad(s, rast, p, b, x, y, j == 1, meta, G, eg)) {
                    pair_grad[2LL * p + j] = G;
                    entry_rows[4LL * p + 2 * j] = (int)eg.row[0];
                    entry_rows[4LL * p + 2 * j + 1] = (int)eg.row[1];
                    done = true;
                }
            } else if (G != 0.0f) {
                EdgeGrad eg;
                if (pair_pos_grad(s, rast, p, b, x, y, j == 1, meta, G, eg)) {
                    for (int e = 0; e < 2; ++e)
                        atomic_add_xyw(grad_pos + eg.row[e] * 4, eg.gx[e], eg.gy[e], eg.gw[e]);
                }
            }
        }
        if (deterministic && !done) {
            pair_grad[2LL * p + j] = 0.0f;
            entry_rows[4LL * p + 2 * j] = 0x7fffffff;
            entry_rows[4LL * p + 2 * j + 1] = 0x7fffffff;
        }
    }
}

// Deterministic position gradient: `order` lists the entries 4p + 2j + e sorted by vertex row
// with a stable sort (so by pixel, pair and end within a row), row_start[r] .. row_start[r + 1]
// is row r's part. One thread per row recomputes each entry's contribution and adds them in that
// order. grad_pos is fully written (z and rows without entries get 0).
extern "C" __global__ void antialias_bwd_pos_reduce(
    const float* __restrict__ rast, const float* __restrict__ pos, const int* __restrict__ tri,
    const int* __restrict__ pair_meta, const float* __restrict__ pair_grad,
    const long long* __restrict__ order, const long long* __restrict__ row_start,
    float* __restrict__ grad_pos,
    int num_rows, int width, int height, int num_vertices, int num_triangles, int pos_batched)
{
    const int row = blockIdx.x * blockDim.x + threadIdx.x;
    if (row >= num_rows)
        return;
    const Scene s = make_scene(pos, tri, width, height, num_vertices, num_triangles, pos_batched);
    const int hw = width * height;
    float gx = 0.0f, gy = 0.0f, gw = 0.0f;
    for (long long i = row_start[row]; i < row_start[row + 1]; ++i) {
        const long long entry = order[i];
        const long long p = entry >> 2;
        const int j = (int)((entry >> 1) & 1);
        const int e = (int)(entry & 1);
        const int meta = (pair_meta[p] >> (8 * j)) & 0xff;
        const int b = (int)(p / hw);
        const int rem = (int)(p - (long long)b * hw);
        const int y = rem / width;
        const int x = rem - y * width;
        EdgeGrad eg;
        if (pair_pos_grad(s, rast, p, b, x, y, j == 1, meta, pair_grad[2 * p + j], eg)) {
            gx += e ? eg.gx[1] : eg.gx[0];
            gy += e ? eg.gy[1] : eg.gy[0];
            gw += e ? eg.gw[1] : eg.gw[0];
        }
    }
    reinterpret_cast<float4*>(grad_pos)[row] = make_float4(gx, gy, 0.0f, gw);
}

// ==============================================================================================
// Topology construction (diffrast/cuda_backend_antialias.py, construct_tables): the tables above
// (nbr and the CSR edge_ptr / inc_tri / inc_opp) plus tri_edge, from tri alone, in four launches
// with every buffer sized from T, no host synchronization and no sort. Incidence ("slot")
// i = 3 t + k is edge k of triangle t, from tri[t][k] to tri[t][k + 1 mod 3], opposite vertex
// tri[t][k + 2 mod 3]; n = 3T.
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

namespace {

constexpr unsigned kFullMask = 0xffffffffu;
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

template <class T>
__device__ __forceinline__ T warp_sum(T x)
{
    for (int d = 16; d > 0; d >>= 1)
        x += __shfl_xor_sync(kFullMask, x, d);
    return x;
}

}  // namespace

extern "C" __global__ void topology_insert(const int* __restrict__ tri, long long* table,
                                           long long* scratch, int num_slots, int capacity)
{
    // No early return: the whole warp takes part in __match_any_sync.
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const int lane = threadIdx.x & 31;
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
    const unsigned group = __match_any_sync(kFullMask, e);
    if (e >= 0 && lane == __ffs(group) - 1) {
        int* agg = reinterpret_cast<int*>(table + 2 * e + 1);
        atomicMax(agg, num_slots - (int)i);
        atomicAdd(agg + 1, __popc(group));
    }
}

extern "C" __global__ void topology_scan(long long* table, long long* scratch,
                                         long long* __restrict__ edge_ptr, int num_slots,
                                         int capacity, int num_tiles)
{
    const int lane = threadIdx.x & 31;
    unsigned long long* status = reinterpret_cast<unsigned long long*>(table + 2LL * capacity);
    unsigned long long* ticket = status + num_tiles;
    // Tiles in the order the warps start (so a tile's predecessors are running or done).
    long long tile = 0;
    if (lane == 0)
        tile = (long long)atomicAdd(ticket, 1ull);
    tile = __shfl_sync(kFullMask, tile, 0);
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
            const unsigned long long y = __shfl_up_sync(kFullMask, x, d);
            if (lane >= d)
                x += y;
        }
        excl[r] = carry + x - v;
        carry += __shfl_sync(kFullMask, x, 31);
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
            if (__any_sync(kFullMask, (w >> 62) == 0))
                continue;  // a predecessor has not published yet
            const unsigned done = __ballot_sync(kFullMask, (w >> 62) == 2);
            const int last = done ? __ffs(done) - 1 : 31;
            prefix += warp_sum(lane <= last ? (w & kStatusValue) : 0ull);
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

extern "C" __global__ void topology_place(const int* __restrict__ tri, const long long* table,
                                          long long* scratch, long long* __restrict__ tri_edge,
                                          long long* __restrict__ edge_ptr,
                                          long long* __restrict__ inc_tri,
                                          long long* __restrict__ inc_opp,
                                          int* __restrict__ nbr, int num_slots, int capacity,
                                          int num_tiles)
{
    // No early return: the whole warp takes part in __match_any_sync.
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const int lane = threadIdx.x & 31;
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
    const unsigned group = __match_any_sync(kFullMask, heavy_id);
    if (heavy_id >= 0 && lane == __ffs(group) - 1) {
        const int j = atomicAdd(sc.fill + heavy_id, 1);
        sc.list[ptr + j] = ((unsigned)(i >> 5) << 6) | (unsigned)__popc(group);
    }
}

extern "C" __global__ void topology_rank(const int* __restrict__ tri, long long* scratch,
                                         const long long* __restrict__ tri_edge,
                                         const long long* __restrict__ edge_ptr,
                                         long long* __restrict__ inc_tri,
                                         long long* __restrict__ inc_opp, int num_slots)
{
    // No early return: the whole warp takes part in the collectives.
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const int lane = threadIdx.x & 31;
    const unsigned group_index = (unsigned)(i >> 5);  // the same for the whole warp
    const TopoScratch sc = topo_scratch(scratch, num_slots);
    int id = -1, ptr = 0;
    if (i < num_slots) {
        const int e = (int)tri_edge[i];
        ptr = (int)edge_ptr[e];
        if (edge_ptr[e + 1] - ptr >= 3)
            id = e;
    }
    const unsigned group = __match_any_sync(kFullMask, id);
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
    for (unsigned todo = __ballot_sync(kFullMask, len > 32); todo; todo &= todo - 1) {
        const int l = __ffs(todo) - 1;
        const int l_ptr = __shfl_sync(kFullMask, ptr, l);
        const int l_len = __shfl_sync(kFullMask, len, l);
        int part = 0;
        for (int j = lane; j < l_len; j += 32) {
            const unsigned entry = sc.list[l_ptr + j];
            if ((entry >> 6) < group_index)
                part += (int)(entry & 63u);
        }
        part = warp_sum(part);
        if (lane == l)
            base = part;
    }
    base = __shfl_sync(kFullMask, base, leader);
    if (id >= 0) {
        const long long pos = ptr + base + __popc(group & ((1u << lane) - 1u));
        inc_tri[pos] = i / 3;
        inc_opp[pos] = slot_vertex(tri, i, 2);
    }
}
