// rasterize backward: gradient to the clip-space positions from the gradients of the
// barycentrics (u, v) and, optionally, of their screen-space derivatives rast_db, float32 (the
// forward rasterizers: rasterize_forward.cu, and the OpenGL path).
//
// The forward values are those of diffrast/reference/rasterize.py (and of resolve_pixel in
// rasterize_resolve.cuh, which both rasterizers' resolve passes run).
// For a covered pixel (x, y) of image b with triangle corners c_i = (x_i, y_i, w_i), i = 0, 1, 2,
// taken from pos[b] (instance mode) or pos (range mode), and q = (qx, qy, 1) the pixel centre in
// NDC, qx = (x + 0.5) * sx - 1 with sx = 2 / width (likewise qy, sy = 2 / height):
//
//   n0 = c1 x c2,  n1 = c2 x c0,  n2 = c0 x c1,  ns = n0 + n1 + n2
//   e0 = n0 . q,   e1 = n1 . q,   s = ns . q,    r = 1 / s
//   u = e0 r,      v = e1 r
//   du/dX = sx r Px,  du/dY = sy r Py,  dv/dX = sx r Qx,  dv/dY = sy r Qy
//   with P = n0 - u ns, Q = n1 - v ns (x and y components)
//
// (the quotient rule: du/dqx = (n0.x s - e0 ns.x) / s^2 = r (n0.x - u ns.x), and so on).
//
// Backward (reverse mode, by hand), with loss gradients gu, gv and (a, b, c, d) for
// (du/dX, du/dY, dv/dX, dv/dY), and A = a sx, B = b sy, C = c sx, D = d sy:
//
//   through P, Q:    dL/dP = r (A, B),  dL/dQ = r (C, D)
//                    dL/dr  = A Px + B Py + C Qx + D Qy
//                    dL/du' = gu - r (A ns.x + B ns.y),  dL/dv' = gv - r (C ns.x + D ns.y)
//                    dL/dns += -r (u A + v C,  u B + v D,  0)
//   through u, v:    dL/de0 = r dL/du',  dL/de1 = r dL/dv',  dL/dr += dL/du' e0 + dL/dv' e1
//   through r:       dL/ds  = -r^2 dL/dr
//   through the dot products: dL/dn0 = (r A, r B, 0) + dL/de0 q, dL/dn1 = (r C, r D, 0) + dL/de1 q,
//                    dL/dns += dL/ds q
//   G0 = dL/dn0 + dL/dns, G1 = dL/dn1 + dL/dns, G2 = dL/dns (totals on the three cross products)
//   through n = a x b (dL/da = b x G, dL/db = G x a):
//                    dL/dc0 = c1 x G2 - c2 x G1
//                    dL/dc1 = c2 x G0 - c0 x G2
//                    dL/dc2 = c0 x G1 - c1 x G0
//
// and grad pos[vertex of corner i] += (dL/dc_i.x, dL/dc_i.y, 0, dL/dc_i.w): z carries no gradient,
// unless the depth channel z/w does (rasterize(..., grad_depth=True), has_depth): with
// b = (u, v, 1 - u - v), Z = b . (z0, z1, z2), W = b . (w0, w1, w2), zw = Z / W and its loss
// gradient gz,
//
//   dL/dz_i  = gz b_i / W,   dL/dw_i += -gz zw b_i / W                      (directly)
//   dL/du   += gz (z0 - z2 - zw (w0 - w2)) / W,   dL/dv += gz (z1 - z2 - zw (w1 - w2)) / W
//
// the last two joining gu and gv above before the backward through u and v.
//
// Empty pixels (id + 1 outside [1, T], NaN/inf codes) and triangles with a vertex index outside
// [0, V) contribute nothing; nothing is read through such indices. A pixel whose corner gradients
// are not all finite (a triangle so close to degenerate there that s rounds to zero or the
// derivatives overflow float32) contributes nothing either, as in the reference.
#include "common.cuh"
#include "accumulate.cuh"
#include "triangle_id.cuh"

namespace {

using namespace diffrast;

__device__ __forceinline__ float3 f3(float x, float y, float z) { return make_float3(x, y, z); }
__device__ __forceinline__ bool finite3(float3 a)
{
    return is_finite(a.x) && is_finite(a.y) && is_finite(a.z);
}
__device__ __forceinline__ float3 operator+(float3 a, float3 b) { return f3(a.x + b.x, a.y + b.y, a.z + b.z); }
__device__ __forceinline__ float3 operator-(float3 a, float3 b) { return f3(a.x - b.x, a.y - b.y, a.z - b.z); }
__device__ __forceinline__ float3 operator*(float k, float3 a) { return f3(k * a.x, k * a.y, k * a.z); }
__device__ __forceinline__ float dot(float3 a, float3 b) { return a.x * b.x + a.y * b.y + a.z * b.z; }
__device__ __forceinline__ float3 cross(float3 a, float3 b)
{
    return f3(a.y * b.z - a.z * b.y, a.z * b.x - a.x * b.z, a.x * b.y - a.y * b.x);
}

// Pixel centre in NDC, rounded step by step exactly as the reference computes it.
__device__ __forceinline__ float ndc(int coord, float scale)
{
    return __fsub_rn(__fmul_rn(__fadd_rn((float)coord, 0.5f), scale), 1.0f);
}

// The gradient of gu * u + gv * v + gdb . (du/dX, du/dY, dv/dX, dv/dY) + gz * z/w with respect
// to the corners' (x, y, w) (grad) and z (grad_z, when has_depth), following the header's
// formulas; all zeros where any of it is not finite.
__device__ __forceinline__ void barycentric_grad(const float3 c[3], const float z[3], float qx,
                                                 float qy, float sx, float sy, float gu, float gv,
                                                 float4 gdb, int has_depth, float gz,
                                                 float3 grad[3], float grad_z[3])
{
    const float3 n0 = cross(c[1], c[2]);
    const float3 n1 = cross(c[2], c[0]);
    const float3 n2 = cross(c[0], c[1]);
    const float3 ns = n0 + n1 + n2;
    const float3 q = f3(qx, qy, 1.0f);
    const float e0 = dot(n0, q), e1 = dot(n1, q), s = dot(ns, q);
    const float r = 1.0f / s;
    const float u = e0 * r, v = e1 * r;

    float gw_direct[3] = {0.0f, 0.0f, 0.0f};
    grad_z[0] = grad_z[1] = grad_z[2] = 0.0f;
    if (has_depth) {
        const float b[3] = {u, v, 1.0f - u - v};
        const float Z = b[0] * z[0] + b[1] * z[1] + b[2] * z[2];
        const float W = b[0] * c[0].z + b[1] * c[1].z + b[2] * c[2].z;
        const float iw = 1.0f / W, zw = Z * iw;
        for (int i = 0; i < 3; ++i) {
            grad_z[i] = gz * b[i] * iw;
            gw_direct[i] = -gz * zw * b[i] * iw;
        }
        gu += gz * (z[0] - z[2] - zw * (c[0].z - c[2].z)) * iw;
        gv += gz * (z[1] - z[2] - zw * (c[1].z - c[2].z)) * iw;
    }

    const float A = gdb.x * sx, B = gdb.y * sy, C = gdb.z * sx, D = gdb.w * sy;
    const float Px = n0.x - u * ns.x, Py = n0.y - u * ns.y;
    const float Qx = n1.x - v * ns.x, Qy = n1.y - v * ns.y;

    const float g_u = gu - r * (A * ns.x + B * ns.y);
    const float g_v = gv - r * (C * ns.x + D * ns.y);
    const float g_r = A * Px + B * Py + C * Qx + D * Qy + g_u * e0 + g_v * e1;
    const float g_e0 = g_u * r, g_e1 = g_v * r;
    const float g_s = -g_r * r * r;

    const float3 g_ns = f3(-(u * A + v * C) * r, -(u * B + v * D) * r, 0.0f) + g_s * q;
    const float3 G0 = f3(A * r, B * r, 0.0f) + g_e0 * q + g_ns;
    const float3 G1 = f3(C * r, D * r, 0.0f) + g_e1 * q + g_ns;
    const float3 G2 = g_ns;

    grad[0] = cross(c[1], G2) - cross(c[2], G1) + f3(0.0f, 0.0f, gw_direct[0]);
    grad[1] = cross(c[2], G0) - cross(c[0], G2) + f3(0.0f, 0.0f, gw_direct[1]);
    grad[2] = cross(c[0], G1) - cross(c[1], G0) + f3(0.0f, 0.0f, gw_direct[2]);
    if (!(finite3(grad[0]) && finite3(grad[1]) && finite3(grad[2]) &&
          finite3(f3(grad_z[0], grad_z[1], grad_z[2])))) {
        grad[0] = grad[1] = grad[2] = f3(0.0f, 0.0f, 0.0f);  // the pixel contributes nothing
        grad_z[0] = grad_z[1] = grad_z[2] = 0.0f;
    }
}

// A loss gradient with respect to a [B, H, W, 4] output, read in place through the element
// strides that autograd hands over (a sum's gradient is one value expanded, all strides 0); a
// dense one (contiguous and 16-byte aligned) as float4. 64-bit strides: the image stride
// H * W * 4 passes 2^31 at 32768 x 32768.
struct GradImage {
    const float* __restrict__ base;
    long long sb, sy, sx, sc;
};

__device__ __forceinline__ float4 grad_at(const GradImage& g, long long p, int b, int y, int x,
                                          int width, int height)
{
    if (g.sc == 1 && g.sx == 4 && g.sy == 4LL * width && g.sb == 4LL * width * height &&
        (reinterpret_cast<unsigned long long>(g.base) & 15) == 0)
        return load4(g.base, p);
    const float* q = g.base + b * g.sb + y * g.sy + x * g.sx;
    return make_float4(q[0], q[g.sc], q[2 * g.sc], q[3 * g.sc]);
}

// The corner gradients of pixel p (already known to be covered by pt).
__device__ __forceinline__ void pixel_grad(
    long long p, const PixelTriangle& pt, const float* __restrict__ pos, const GradImage& grad_rast,
    const GradImage& grad_db, int width, int height, int has_db, int has_depth, float sx, float sy,
    float3 grad[3], float grad_z[3])
{
    const long long per_image = (long long)width * height;
    const int b = (int)(p / per_image);
    const long long in_image = p - b * per_image;
    const int y = (int)(in_image / width), x = (int)(in_image - (long long)y * width);
    float3 c[3];
    float z[3];
    for (int k = 0; k < 3; ++k) {
        const float4 pk = load4(pos, pt.row[k]);
        c[k] = f3(pk.x, pk.y, pk.w);
        z[k] = pk.z;
    }
    const float4 gr = grad_at(grad_rast, p, b, y, x, width, height);
    const float4 gdb = has_db ? grad_at(grad_db, p, b, y, x, width, height)
                               : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    barycentric_grad(c, z, ndc(x, sx), ndc(y, sy), sx, sy, gr.x, gr.y, gdb, has_depth, gr.z, grad,
                     grad_z);
}

// The GradImages of the parameters (pointer, strides of image, row, pixel, channel).
__device__ __forceinline__ GradImage grad_rast_image(const RasterizeBackwardParams& kp)
{
    return GradImage{kp.grad_rast, kp.grad_rast_sb, kp.grad_rast_sy, kp.grad_rast_sx,
                     kp.grad_rast_sc};
}
__device__ __forceinline__ GradImage grad_db_image(const RasterizeBackwardParams& kp)
{
    return GradImage{kp.grad_db, kp.grad_db_sb, kp.grad_db_sy, kp.grad_db_sx, kp.grad_db_sc};
}

}  // namespace

// rasterize_grad, one thread per pixel. Fast mode: adds each covered pixel's corner gradients into grad_pos
// (zeroed by the caller, viewed as [rows, 4]) with warp-aggregated atomics. Deterministic mode:
// only records the pos row of each (pixel, corner) entry in entry_rows[3p + c] (0x7fffffff for
// empty pixels) for rasterize_grad_reduce.
__device__ __forceinline__ void rasterize_grad_impl(const RasterizeBackwardParams& kp)
{
    const int width = kp.width, height = kp.height;
    const bool has_depth = kp.has_depth;
    // 64-bit pixel index: B * H * W, and 4 * p in the float4 loads, may pass 2^31.
    const long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const bool in_range = p < kp.num_pixels;
    const int image = in_range ? (int)(p / ((long long)width * height)) : 0;
    PixelTriangle pt;
    pt.tri = -1;
    pt.row[0] = pt.row[1] = pt.row[2] = 0;
    bool covered = false;
    if (in_range)
        covered = pixel_triangle(load4(kp.rast, p).w, image, kp.tri, kp.num_triangles,
                                 kp.num_vertices, kp.instance_mode, pt);

    if (kp.deterministic) {
        if (in_range)
            for (int c = 0; c < 3; ++c)
                kp.entry_rows[3LL * p + c] = covered ? (int)pt.row[c] : 0x7fffffff;
        return;  // uniform across the launch
    }

    // No early return before the shuffles, except for whole warps without a covered pixel.
    if (!__any_sync(kFullWarp, covered))
        return;
    float3 grad[3];
    float grad_z[3] = {0.0f, 0.0f, 0.0f};
    for (int c = 0; c < 3; ++c)
        grad[c] = f3(0.0f, 0.0f, 0.0f);
    if (covered)
        pixel_grad(p, pt, kp.pos, grad_rast_image(kp), grad_db_image(kp), width, height,
                   kp.has_db, has_depth, kp.sx, kp.sy, grad, grad_z);

    const long long key = covered
        ? (kp.instance_mode ? (long long)image * kp.num_triangles + pt.tri : (long long)pt.tri)
        : -1LL;
    const WarpRun run = warp_run(key);
    for (int c = 0; c < 3; ++c) {
        const float gx = run_sum(grad[c].x, run), gy = run_sum(grad[c].y, run);
        const float gw = run_sum(grad[c].z, run);  // (grad holds x, y, w)
        const float gz = has_depth ? run_sum(grad_z[c], run) : 0.0f;  // (uniform condition)
        if (covered && run.head) {
            atomic_add_xyw(kp.grad_pos + 4 * pt.row[c], gx, gy, gw);
            if (has_depth)
                atomicAdd(kp.grad_pos + 4 * pt.row[c] + 2, gz);
        }
    }
}

// rasterize_grad_reduce, deterministic accumulation of grad_pos: `order` lists the (pixel, corner) entries 3p + c
// sorted by pos row with a stable sort, `row_start[r] .. row_start[r + 1]` is row r's part.
// One warp per row: lane l takes the entries l, l + 32, ... of the row, recomputes each one's
// pixel gradient and adds the corner's share in that order; warp_sum_fixed_order combines the
// lanes. Every addition happens in a fixed order: bit-identical results run to run. grad_pos is
// fully written (z = 0 without has_depth, rows without entries 0).
__device__ __forceinline__ void rasterize_grad_reduce_impl(const RasterizeBackwardParams& kp)
{
    const long long row = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;  // per warp
    const int lane = lane_id();
    if (row >= kp.num_rows)
        return;  // uniform across the warp
    const long long per_image = (long long)kp.width * kp.height;
    float gx = 0.0f, gy = 0.0f, gz = 0.0f, gw = 0.0f;
    for (long long j = kp.row_start[row] + lane; j < kp.row_start[row + 1]; j += 32) {
        const long long entry = kp.order[j];
        const long long p = entry / 3;
        const int corner = (int)(entry - 3 * p);
        PixelTriangle pt;
        if (!pixel_triangle(load4(kp.rast, p).w, (int)(p / per_image), kp.tri, kp.num_triangles,
                            kp.num_vertices, kp.instance_mode, pt))
            continue;  // cannot happen: entries exist only for covered pixels
        float3 grad[3];
        float grad_z[3];
        pixel_grad(p, pt, kp.pos, grad_rast_image(kp), grad_db_image(kp), kp.width, kp.height,
                   kp.has_db, kp.has_depth, kp.sx, kp.sy, grad, grad_z);
        const float3 gc = corner == 0 ? grad[0] : corner == 1 ? grad[1] : grad[2];
        gx += gc.x;
        gy += gc.y;
        gz += corner == 0 ? grad_z[0] : corner == 1 ? grad_z[1] : grad_z[2];
        gw += gc.z;
    }
    gx = warp_sum_fixed_order(gx);
    gy = warp_sum_fixed_order(gy);
    gz = warp_sum_fixed_order(gz);
    gw = warp_sum_fixed_order(gw);
    if (lane == 0)
        reinterpret_cast<float4*>(kp.grad_pos)[row] = make_float4(gx, gy, gz, gw);
}
