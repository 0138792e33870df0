// antialias backward: gradients of antialias_forward.cu's output to the colour and the
// clip-space positions, float32 (rules, rounding and layouts in antialias_pairs.cuh).
//
// Passes (one thread per pixel, or per vertex row):
//   antialias_bwd        grad_color by the forward blend's gather; the position gradient of the
//                        pixel's own two pairs through t: atomicAdd into grad_pos by default, or,
//                        in deterministic mode, the pair's dL/dt into pair_grad and the vertex
//                        rows of its two edge ends into entry_rows, for antialias_bwd_pos_reduce.
//   antialias_bwd_pos_reduce (deterministic mode) one thread per vertex row sums the row's entries
//                        in the order of a stable sort by row (see the Python module), recomputing
//                        each entry's contribution; no float atomics, bit-identical run to run.
//
// Robustness: as the forward pass's; in addition, only pairs whose denominator is non-zero are
// differentiated.
#include "common.cuh"
#include "accumulate.cuh"
#include "triangle_id.cuh"
#include "antialias_pairs.cuh"

namespace {

using namespace diffrast;

// Plain (contractible) products for the gradient, which only needs float32 accuracy.
__device__ __forceinline__ Vec3 cross_plain(const Vec3& a, const Vec3& b)
{
    Vec3 r;
    r.x = a.y * b.z - a.z * b.y;
    r.y = a.z * b.x - a.x * b.z;
    r.z = a.x * b.y - a.y * b.x;
    return r;
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
    // (selected, not indexed by k: an array indexed at run time would live in local memory)
    const int va = k == 0 ? vi[0] : (k == 1 ? vi[1] : vi[2]);
    const int vb = k == 0 ? vi[1] : (k == 1 ? vi[2] : vi[0]);
    out.row[0] = vertex_row(s, b, va);
    out.row[1] = vertex_row(s, b, vb);
    const Vec3 Pa = pixel_space(s, load4(s.pos, out.row[0]), cx, cy);
    const Vec3 Pb = pixel_space(s, load4(s.pos, out.row[1]), cx, cy);
    const Vec3 L = cross_line(Pa, Pb);
    const float den = add_rn(mul_rn(L.x, dx), mul_rn(L.y, dy));
    if (!(den != 0.0f) || !is_finite(den))
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

}  // namespace

// antialias_bwd, the backward pass. grad_out is read through element strides (so that an expanded gradient, e.g. of a
// .sum(), needs no copy). grad_color: the transpose of the blend, gathered per pixel. Position
// gradient of the pixel's own pairs (right, above): atomicAdd into grad_pos (zeroed by the
// caller), or in deterministic mode pair_grad[2p + j] = dLoss/dt * boost and entry_rows[4p + 2j + e]
// = the vertex row of edge end e (0x7fffffff when the pair does not blend).
__device__ __forceinline__ void antialias_bwd_impl(const AntialiasBackwardParams& kp)
{
    const float* __restrict__ color = kp.color;
    const float* __restrict__ grad_out = kp.grad_out;
    const int width = kp.width, height = kp.height, channels = kp.channels;
    const bool deterministic = kp.deterministic;
    const long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= kp.num_pixels)
        return;
    const long long hw = (long long)width * height;
    const int b = (int)(p / hw);
    const long long rem = p - b * hw;
    const int y = (int)(rem / width);
    const int x = (int)(rem - (long long)y * width);
    PairView pv[4];
    pixel_pairs(kp.pair_t, kp.pair_meta, p, x, y, width, pv);
    const long long C = channels;
    const long long gsc = kp.g_stride_c;
    // grad_out offsets of the pixel and of its left, right, lower and upper neighbours
    const long long g_self = (long long)b * kp.g_stride_b + (long long)y * kp.g_stride_y +
                             (long long)x * kp.g_stride_x;
    const long long g_nb[4] = {g_self - kp.g_stride_x, g_self + kp.g_stride_x,
                               g_self - kp.g_stride_y, g_self + kp.g_stride_y};

    if (kp.want_color) {
        for (int c = 0; c < channels; ++c) {
            const float g = grad_out[g_self + c * gsc];
            float acc = g;
            for (int i = 0; i < 4; ++i) {
                if (!pv[i].valid)
                    continue;
                // target: out[p] gets -w * color[p]; source: out[other] gets +w * color[p].
                acc += pv[i].target ? -pv[i].w * g : pv[i].w * grad_out[g_nb[i] + c * gsc];
            }
            kp.grad_color[p * C + c] = acc;
        }
    }
    if (!kp.want_pos)
        return;

    const Scene s = make_scene(kp.pos, kp.tri, width, height, kp.num_vertices, kp.num_triangles,
                               kp.pos_batched);
    const int m_self = kp.pair_meta[p];
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
            const float G = v.clamped ? 0.0f : (target_is_a ? -dw : dw) * kp.boost;
            if (deterministic) {
                EdgeGrad eg;
                if (G != 0.0f && pair_pos_grad(s, kp.rast, p, b, x, y, j == 1, meta, G, eg)) {
                    kp.pair_grad[2LL * p + j] = G;
                    kp.entry_rows[4LL * p + 2 * j] = (int)eg.row[0];
                    kp.entry_rows[4LL * p + 2 * j + 1] = (int)eg.row[1];
                    done = true;
                }
            } else if (G != 0.0f) {
                EdgeGrad eg;
                if (pair_pos_grad(s, kp.rast, p, b, x, y, j == 1, meta, G, eg)) {
                    for (int e = 0; e < 2; ++e)
                        atomic_add_xyw(kp.grad_pos + eg.row[e] * 4, eg.gx[e], eg.gy[e], eg.gw[e]);
                }
            }
        }
        if (deterministic && !done) {
            kp.pair_grad[2LL * p + j] = 0.0f;
            kp.entry_rows[4LL * p + 2 * j] = 0x7fffffff;
            kp.entry_rows[4LL * p + 2 * j + 1] = 0x7fffffff;
        }
    }
}

// antialias_bwd_pos_reduce, the deterministic position gradient: `order` lists the entries 4p + 2j + e sorted by vertex row
// with a stable sort (so by pixel, pair and end within a row), row_start[r] .. row_start[r + 1]
// is row r's part. One thread per row recomputes each entry's contribution and adds them in that
// order. grad_pos is fully written (z and rows without entries get 0).
__device__ __forceinline__ void antialias_bwd_pos_reduce_impl(const AntialiasBackwardParams& kp)
{
    const int width = kp.width, height = kp.height;
    const long long row = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (row >= kp.num_rows)
        return;
    const Scene s = make_scene(kp.pos, kp.tri, width, height, kp.num_vertices, kp.num_triangles,
                               kp.pos_batched);
    const long long hw = (long long)width * height;
    float gx = 0.0f, gy = 0.0f, gw = 0.0f;
    for (long long i = kp.row_start[row]; i < kp.row_start[row + 1]; ++i) {
        const long long entry = kp.order[i];
        const long long p = entry >> 2;
        const int j = (int)((entry >> 1) & 1);
        const int e = (int)(entry & 1);
        const int meta = (kp.pair_meta[p] >> (8 * j)) & 0xff;
        const int b = (int)(p / hw);
        const long long rem = p - b * hw;
        const int y = (int)(rem / width);
        const int x = (int)(rem - (long long)y * width);
        EdgeGrad eg;
        if (pair_pos_grad(s, kp.rast, p, b, x, y, j == 1, meta, kp.pair_grad[2 * p + j], eg)) {
            gx += e ? eg.gx[1] : eg.gx[0];
            gy += e ? eg.gy[1] : eg.gy[0];
            gw += e ? eg.gw[1] : eg.gw[0];
        }
    }
    reinterpret_cast<float4*>(kp.grad_pos)[row] = make_float4(gx, gy, 0.0f, gw);
}
