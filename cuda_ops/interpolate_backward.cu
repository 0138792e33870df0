// interpolate backward: gradients of interpolate_forward.cu's outputs to the attributes, the
// barycentrics and their derivatives, float32.
//
// The math is diffrast/reference/interpolate.py's. Per pixel p with (u, v, z/w, id + 1) =
// rast[p], (dudX, dudY, dvdX, dvdY) = rast_db[p], corner attribute rows a0, a1, a2 and
// w = 1-u-v (see interpolate_forward.cu), g = grad_out[p] and
// (gx_k, gy_k) = grad_out_da[p, 2k : 2k + 2]:
//
//   grad_rast[p]    = (sum_i g_i (a0 - a2)_i, sum_i g_i (a1 - a2)_i, 0, 0)
//   grad_rast_db[p] = (sum_k gx_k (a0-a2)_jk, sum_k gy_k (a0-a2)_jk,
//                      sum_k gx_k (a1-a2)_jk, sum_k gy_k (a1-a2)_jk)
//   grad a0[i] += u g_i + e0_i,  grad a1[i] += v g_i + e1_i,  grad a2[i] += w g_i - e0_i - e1_i
//   where e0_i = sum_{k: sel[k] = i} (dudX gx_k + dudY gy_k), e1_i likewise with dvdX, dvdY.
//
// Empty pixels (id + 1 outside [1, T], NaN/inf codes) and triangles with a vertex index outside
// [0, V) pass on no gradient; nothing is read through such indices.
//
// `diff_table` (int32, on the device) describes the selected attributes: sel[0..K) (the diff_attrs
// list, duplicates allowed), then the inverse map as CSR: inv_ptr[0..A], inv_k[0..K) such that
// inv_k[inv_ptr[i] .. inv_ptr[i + 1]) are the k with sel[k] = i, in increasing order.
//
// Layout: as interpolate_forward.cu's; grad_rast / grad_rast_db [N, 4]. One thread per pixel.
// The loss gradients grad_out and grad_out_da are read in place through a pixel stride and a
// channel stride each (element p, c at p * sp + c * sc): a contiguous gradient has (A, 1), the
// expanded gradient of a sum (0, 0); the caller copies any other layout.
#include "common.cuh"
#include "accumulate.cuh"
#include "triangle_id.cuh"

namespace {

using namespace diffrast;

// e0_i and e1_i of the header: the gradient reaching (a0 - a2)[i] and (a1 - a2)[i] through
// out_da at one pixel.
__device__ __forceinline__ void diff_terms(int i, float4 db, const float* __restrict__ gda,
                                           long long gda_sc, const int* __restrict__ inv_ptr,
                                           const int* __restrict__ inv_k, float& e0, float& e1)
{
    e0 = 0.0f;
    e1 = 0.0f;
    for (int j = inv_ptr[i]; j < inv_ptr[i + 1]; ++j) {
        const int k = inv_k[j];
        const float gx = gda[2 * k * gda_sc], gy = gda[(2 * k + 1) * gda_sc];
        e0 += db.x * gx + db.y * gy;
        e1 += db.z * gx + db.w * gy;
    }
}

}  // namespace

// interpolate_bwd, the backward pass. Writes grad_rast and grad_rast_db (when wanted) for every pixel; for grad_attr
// either adds each covered pixel's corner contributions with warp-aggregated atomics into the
// warp's copy of grad_attr (copy_mask; the copies must be zeroed by the caller, who sums them),
// or, in deterministic mode, only records the attribute row of each (pixel, corner) entry in
// entry_rows[3p + c] (0x7fffffff for empty pixels) for interpolate_bwd_reduce.
__device__ __forceinline__ void interpolate_bwd_impl(const InterpolateBackwardParams& kp)
{
    // 64-bit pixel index: B * H * W, and 4 * p in the float4 loads, may pass 2^31.
    const long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const bool in_range = p < kp.num_pixels;
    const int A = kp.num_attrs, K = kp.num_diff;
    const long long g_sc = kp.g_sc, gda_sc = kp.gda_sc;
    const int* sel = kp.diff_table;
    const int* inv_ptr = kp.diff_table + K;
    const int* inv_k = kp.diff_table + K + A + 1;

    // No early return: every lane of the warp takes part in the shuffles of the atomic path.
    const int image = in_range ? (int)(p / kp.pixels_per_image) : 0;
    float4 r = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    PixelTriangle pt;
    pt.tri = -1;
    pt.row[0] = pt.row[1] = pt.row[2] = 0;
    bool covered = false;
    if (in_range) {
        r = load4(kp.rast, p);
        covered = pixel_triangle(r.w, image, kp.tri, kp.num_triangles, kp.num_vertices,
                                 kp.attr_batched, pt);
    }
    const float4 db = (covered && K > 0) ? load4(kp.rast_db, p) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    const float u = covered ? r.x : 0.0f;
    const float v = covered ? r.y : 0.0f;
    const float w = 1.0f - u - v;
    const float* g = kp.grad_out + p * kp.g_sp;
    const float* gda = kp.grad_out_da + p * kp.gda_sp;
    const float* a0 = kp.attr + pt.row[0] * A;  // row 0 (never read) for an empty pixel
    const float* a1 = kp.attr + pt.row[1] * A;
    const float* a2 = kp.attr + pt.row[2] * A;

    // Gradients to rast (u, v) and rast_db: per pixel, plain stores.
    if (in_range && (kp.want_rast || kp.want_db)) {
        float gu = 0.0f, gv = 0.0f;
        float4 gdb = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (covered) {
            for (int i = 0; i < A; ++i) {
                const float gi = g[i * g_sc];
                gu += gi * (a0[i] - a2[i]);
                gv += gi * (a1[i] - a2[i]);
            }
            for (int k = 0; k < K; ++k) {
                const int j = sel[k];
                if (j < 0 || j >= A)
                    continue;
                const float d0 = a0[j] - a2[j], d1 = a1[j] - a2[j];
                const float gx = gda[2 * k * gda_sc], gy = gda[(2 * k + 1) * gda_sc];
                gdb.x += gx * d0;
                gdb.y += gy * d0;
                gdb.z += gx * d1;
                gdb.w += gy * d1;
            }
        }
        if (kp.want_rast)
            store4(kp.grad_rast, p, make_float4(gu, gv, 0.0f, 0.0f));
        if (kp.want_db)
            store4(kp.grad_rast_db, p, gdb);
    }

    if (!kp.want_attr)
        return;  // uniform across the launch
    if (kp.deterministic) {
        if (in_range)
            for (int c = 0; c < 3; ++c)
                kp.entry_rows[3LL * p + c] = covered ? (int)pt.row[c] : 0x7fffffff;
        return;  // uniform across the launch
    }

    // The copy of grad_attr that this warp's atomics go to: where many pixels share few vertex
    // rows, spreading the warps over copies (summed by the caller) divides the contention on
    // each row's address.
    const long long copy_row0 = (long long)((int)(p >> 5) & kp.copy_mask) * kp.num_rows;
    float* grad_attr = kp.grad_attr + copy_row0 * A;
    // Pixels of one run share the triangle (and image, when attr is batched), hence the rows.
    const long long key = covered
        ? (kp.attr_batched ? (long long)image * kp.num_triangles + pt.tri : (long long)pt.tri)
        : -1LL;
    if (!__any_sync(kFullWarp, covered))
        return;  // uniform across the warp
    const WarpRun run = warp_run(key);
    // Attribute i's contributions to the three corners' rows.
    auto corner_terms = [&](int i, float& c0, float& c1, float& c2) {
        c0 = c1 = c2 = 0.0f;
        if (covered) {
            const float gi = g[i * g_sc];
            float e0 = 0.0f, e1 = 0.0f;
            if (K > 0)
                diff_terms(i, db, gda, gda_sc, inv_ptr, inv_k, e0, e1);
            c0 = u * gi + e0;
            c1 = v * gi + e1;
            c2 = w * gi + (-e0 - e1);
        }
    };
    if (A <= kVectorChannels) {
        // Up to four attributes, held in registers: each corner's row gets the run's sums of all
        // attributes with one vector atomic (atomic_add_channels) rather than one per attribute.
        float s0[kVectorChannels], s1[kVectorChannels], s2[kVectorChannels];
#pragma unroll
        for (int i = 0; i < kVectorChannels; ++i) {
            float c0 = 0.0f, c1 = 0.0f, c2 = 0.0f;
            if (i < A)
                corner_terms(i, c0, c1, c2);
            s0[i] = i < A ? run_sum(c0, run) : 0.0f;
            s1[i] = i < A ? run_sum(c1, run) : 0.0f;
            s2[i] = i < A ? run_sum(c2, run) : 0.0f;
        }
        if (covered && run.head) {
            atomic_add_channels(kp.grad_attr, copy_row0 + pt.row[0], A, s0);
            atomic_add_channels(kp.grad_attr, copy_row0 + pt.row[1], A, s1);
            atomic_add_channels(kp.grad_attr, copy_row0 + pt.row[2], A, s2);
        }
        return;
    }
    for (int i = 0; i < A; ++i) {
        float c0, c1, c2;
        corner_terms(i, c0, c1, c2);
        run_atomic_add(grad_attr + pt.row[0] * A + i, c0, run, covered);
        run_atomic_add(grad_attr + pt.row[1] * A + i, c1, run, covered);
        run_atomic_add(grad_attr + pt.row[2] * A + i, c2, run, covered);
    }
}

// interpolate_bwd_reduce, deterministic accumulation of grad_attr. `order` lists the (pixel, corner) entries 3p + c
// sorted by attribute row with a stable sort (so by pixel, then corner, within a row), and
// `row_start[r] .. row_start[r + 1]` is row r's part of it. One warp per (row, attribute): lane l
// takes the entries l, l + 32, ... of the row, recomputes each one's contribution (the same
// expressions as interpolate_bwd) and adds them in that order; warp_sum_fixed_order combines the
// lanes. Every addition happens in a fixed order, so the result is bit-identical run to run.
// grad_attr is fully written (rows without entries get 0).
__device__ __forceinline__ void interpolate_bwd_reduce_impl(const InterpolateBackwardParams& kp)
{
    const long long item = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;  // per warp
    const int lane = lane_id();
    const int A = kp.num_attrs, K = kp.num_diff;
    if (A <= 0 || item >= (long long)kp.num_rows * A)
        return;  // uniform across the warp
    const long long row = item / A;
    const int i = (int)(item - row * A);
    const int* inv_ptr = kp.diff_table + K;
    const int* inv_k = kp.diff_table + K + A + 1;

    float sum = 0.0f;
    for (long long j = kp.row_start[row] + lane; j < kp.row_start[row + 1]; j += 32) {
        const long long entry = kp.order[j];
        const long long p = entry / 3;
        const int corner = (int)(entry - 3 * p);
        const float4 r = load4(kp.rast, p);
        const float gi = kp.grad_out[p * kp.g_sp + i * kp.g_sc];
        float e0 = 0.0f, e1 = 0.0f;
        if (K > 0)
            diff_terms(i, load4(kp.rast_db, p), kp.grad_out_da + p * kp.gda_sp, kp.gda_sc,
                       inv_ptr, inv_k, e0, e1);
        const float u = r.x, v = r.y, w = 1.0f - u - v;
        sum += corner == 0 ? u * gi + e0
             : corner == 1 ? v * gi + e1
                           : w * gi + (-e0 - e1);
    }
    sum = warp_sum_fixed_order(sum);
    if (lane == 0)
        kp.grad_attr[item] = sum;
}
