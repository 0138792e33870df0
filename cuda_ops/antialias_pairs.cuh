// The pieces of the antialias kernels shared by the forward pass (antialias_forward.cu) and the
// backward pass (antialias_backward.cu): the scene, pixel-space geometry, the encoding of a
// pixel pair's blend and the gather of the (up to four) pairs that blend into a pixel.
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
// instance mode, V in range mode; `pos_batched` tells), tri [T, 3]. Per pixel, pair_t [N, 2] holds
// the crossing parameter t of its pair with the right neighbour and of its pair with the
// neighbour above (as found, up to 1/16 outside [0, 1]; blend_weight clamps it), pair_meta [N]
// one PairBits byte per pair.
#pragma once

#include "common.cuh"
#include "triangle_id.cuh"

namespace diffrast {

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

// How far outside the segment between the two pixel centres (in pixels) an edge crossing still
// counts; it is then clamped to the segment (the reference's CROSSING_TOLERANCE).
constexpr float kCrossingTolerance = 0.0625f;

// Step 3 of the reference for one edge line L of a triangle of determinant sign `sgn`, along the
// unit step (dx, dy) from the front pixel A: whether the segment's line leaves the edge's inner
// side at a crossing parameter t within [-1/16, 1 + 1/16] (t returned). den is exact (dx, dy are
// 0 or +-1), so is sgn * den, and den != 0 wherever t is computed.
__device__ __forceinline__ bool edge_crossing(const Vec3& L, float dx, float dy, float sgn,
                                              float& t)
{
    const float den = add_rn(mul_rn(L.x, dx), mul_rn(L.y, dy));
    if (!(mul_rn(sgn, den) < 0.0f))
        return false;
    t = div_rn(-L.z, den);
    return t >= -kCrossingTolerance && t <= 1.0f + kCrossingTolerance;
}

// Whether crossing parameter t was clamped to the segment (then the blend passes no position
// gradient: the reference's clamp(t, 0, 1) has derivative 0 there).
__device__ __forceinline__ bool crossing_clamped(float t) { return t < 0.0f || t > 1.0f; }

// The reference's blend weight for crossing parameter t (clamped to [0, 1] first). The side is
// the same for t and its clamped value.
__device__ __forceinline__ float blend_weight(float t)
{
    const float tc = t < 0.0f ? 0.0f : (t > 1.0f ? 1.0f : t);
    return tc < 0.5f ? sub_rn(0.5f, tc) : sub_rn(tc, 0.5f);
}

// One of the (up to four) pairs a pixel belongs to, seen from that pixel.
struct PairView {
    bool valid;
    bool target;     // the pixel is the blend target (else it is the source)
    long long other; // the other pixel of the pair
    float w;         // blend weight
    bool clamped;    // the crossing was clamped to the segment: no position gradient
};

// A pair seen from one of its pixels: m its PairBits byte, t its crossing parameter (read only
// where the pair is valid), self_first whether the pixel is the pair's first (left / lower) one.
__device__ __forceinline__ PairView pair_view(int m, float t, bool self_first, long long other)
{
    PairView v;
    v.valid = (m & kPairValid) != 0;
    v.other = other;
    v.target = false;
    v.w = 0.0f;
    v.clamped = false;
    if (v.valid) {
        const bool target_second = (m & kPairTargetSecond) != 0;
        v.target = self_first ? !target_second : target_second;
        v.w = blend_weight(t);
        v.clamped = crossing_clamped(t);
    }
    return v;
}

// The pixel's four pairs in the reference's accumulation order: left, right, below, above.
__device__ __forceinline__ void pixel_pairs(const float* __restrict__ pair_t,
                                            const int* __restrict__ pair_meta, long long p, int x,
                                            int y, int width, PairView pv[4])
{
    const int m_self = pair_meta[p];
    const int m_left = x > 0 ? pair_meta[p - 1] & 0xff : 0;
    const int m_below = y > 0 ? (pair_meta[p - width] >> 8) & 0xff : 0;
    const int m_right = m_self & 0xff, m_above = (m_self >> 8) & 0xff;
    pv[0] = pair_view(m_left, m_left ? pair_t[2 * (p - 1)] : 0.0f, false, p - 1);
    pv[1] = pair_view(m_right, m_right ? pair_t[2 * p] : 0.0f, true, p + 1);
    pv[2] = pair_view(m_below, m_below ? pair_t[2 * (p - width) + 1] : 0.0f, false, p - width);
    pv[3] = pair_view(m_above, m_above ? pair_t[2 * p + 1] : 0.0f, true, p + width);
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

}  // namespace diffrast
