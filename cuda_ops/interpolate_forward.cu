// interpolate forward: vertex attributes to image space, float32 (the backward pass is in
// interpolate_backward.cu).
//
// The math is diffrast/reference/interpolate.py's, term for term. Per pixel p with
// (u, v, z/w, id + 1) = rast[p] and (dudX, dudY, dvdX, dvdY) = rast_db[p], the triangle's corner
// attribute rows a0, a1, a2 (of image b in batched mode, of row block 0 otherwise) and w = 1-u-v:
//
//   out[p, i]         = u * a0[i] + v * a1[i] + w * a2[i]
//   out_da[p, 2k]     = dudX * (a0 - a2)[j] + dvdX * (a1 - a2)[j]     with j = sel[k]
//   out_da[p, 2k + 1] = dudY * (a0 - a2)[j] + dvdY * (a1 - a2)[j]
//
// Empty pixels (id + 1 outside [1, T], NaN/inf codes) and triangles with a vertex index outside
// [0, V) produce zeros; nothing is read through such indices.
//
// The forward pass uses explicitly rounded multiplies and adds (no FMA contraction), so that its
// results equal the reference's bit for bit on the same device.
//
// `diff_table` (int32, on the device) describes the selected attributes: sel[0..K) (the diff_attrs
// list, duplicates allowed), then the inverse map as CSR (used by the backward pass).
//
// Layout: attr [Ba * V, A] rows (Ba = B when `attr_batched`, else 1), rast / rast_db [N, 4] with
// N = B * H * W pixels, out [N, A], out_da [N, 2K]. One thread per pixel.
#include "common.cuh"
#include "triangle_id.cuh"

using namespace diffrast;

// The kernel interpolate_fwd (entry point generated from cuda_ops/kernels.py).
__device__ __forceinline__ void interpolate_fwd_impl(const InterpolateForwardParams& kp)
{
    // 64-bit pixel index: B * H * W, and 4 * p in the float4 loads, may pass 2^31.
    const long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= kp.num_pixels)
        return;
    const int A = kp.num_attrs, K = kp.num_diff;
    float* o = kp.out + p * A;
    float* od = kp.out_da + p * 2 * K;

    const float4 r = load4(kp.rast, p);
    PixelTriangle pt;
    if (!pixel_triangle(r.w, (int)(p / kp.pixels_per_image), kp.tri, kp.num_triangles,
                        kp.num_vertices, kp.attr_batched, pt)) {
        for (int i = 0; i < A; ++i)
            o[i] = 0.0f;
        for (int k = 0; k < 2 * K; ++k)
            od[k] = 0.0f;
        return;
    }
    const float* a0 = kp.attr + pt.row[0] * A;
    const float* a1 = kp.attr + pt.row[1] * A;
    const float* a2 = kp.attr + pt.row[2] * A;
    const float u = r.x, v = r.y;
    const float w = __fsub_rn(__fsub_rn(1.0f, u), v);
    for (int i = 0; i < A; ++i)
        o[i] = __fadd_rn(__fadd_rn(__fmul_rn(u, a0[i]), __fmul_rn(v, a1[i])), __fmul_rn(w, a2[i]));

    if (K > 0) {
        const float4 db = load4(kp.rast_db, p);
        for (int k = 0; k < K; ++k) {
            const int j = kp.diff_table[k];
            float dx = 0.0f, dy = 0.0f;
            if (j >= 0 && j < A) {
                const float d0 = __fsub_rn(a0[j], a2[j]);
                const float d1 = __fsub_rn(a1[j], a2[j]);
                dx = __fadd_rn(__fmul_rn(db.x, d0), __fmul_rn(db.z, d1));
                dy = __fadd_rn(__fmul_rn(db.y, d0), __fmul_rn(db.w, d1));
            }
            od[2 * k] = dx;
            od[2 * k + 1] = dy;
        }
    }
}
