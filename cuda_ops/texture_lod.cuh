// Texture level of detail and level selection (mipmapped filter modes), forward and backward.
// Shared by cuda_ops/texture_forward.cu and cuda_ops/texture_backward.cu. The rule is
// diffrast/reference/texture.py's:
//
// lod = log2 of the major axis of the texel-space footprint ellipse,
// 0.5 log2((A + B) / 2 + sqrt(((A - B) / 2)^2 + C^2)) with A, B, C from the Jacobian; plus
// mip_level_bias; clamped to [0, levels] (gradient inside, inclusive). linear-mipmap-linear
// blends levels floor(l) and floor(l) + 1 by the fraction; linear-mipmap-nearest takes level
// floor(l) (nvdiffrast's rule, not OpenGL's nearest level) with no gradient to the level.
//
// The forward functions round every operation explicitly (add_rn, mul_rn, ...), in the
// reference's order, so that the same levels are chosen as by the reference on the same device.
#pragma once

#include "texture_address.cuh"

namespace diffrast {

// Filter modes: kNearest, kLinear, kMipNearest, kMipLinear (Filter in cuda_ops/params.py).
constexpr float kLn2 = 0.693147180559945309f;

// ---- level of detail ----
//
// The backward functions below are the reverse mode of the forward ones step by step, in the
// form torch's autograd takes for the reference's operations (clamp and where pass a gradient or
// 0, sqrt's derivative is g / (2 sqrt), log2's g / (x ln 2), a quotient's denominator gets
// -g (a / b) / b, a dot product with a face axis sends g times each of its components), so
// that non-finite intermediate values give the same NaN (or finite) gradients as the reference.

// log2 of the major axis length of the footprint ellipse of the texel-space Jacobian
// [[sx, sy], [tx, ty]] (s along the width, X/Y the image axes); -inf for a vanishing footprint.
__device__ __forceinline__ float lod_jacobian(float sx, float sy, float tx, float ty)
{
    const float a = add_rn(mul_rn(sx, sx), mul_rn(tx, tx));
    const float b = add_rn(mul_rn(sy, sy), mul_rn(ty, ty));
    const float c = add_rn(mul_rn(sx, sy), mul_rn(tx, ty));
    const float half_sum = mul_rn(0.5f, add_rn(a, b));
    const float half_diff = mul_rn(0.5f, sub_rn(a, b));
    const float disc = add_rn(mul_rn(half_diff, half_diff), mul_rn(c, c));
    const float root = disc > kTiny ? sqrt_f(disc) : 0.0f;
    const float major = add_rn(half_sum, root);
    if (major <= kTiny)
        return neg_inf();
    return mul_rn(0.5f, log2_f(major < kTiny ? kTiny : major));  // NaN stays NaN
}

// Gradient of lod_jacobian's inputs for an upstream gradient g.
__device__ __forceinline__ void lod_jacobian_backward(float sx, float sy, float tx, float ty,
                                                      float g, float& gsx, float& gsy,
                                                      float& gtx, float& gty)
{
    const float a = sx * sx + tx * tx;
    const float b = sy * sy + ty * ty;
    const float c = sx * sy + tx * ty;
    const float half_sum = 0.5f * (a + b);
    const float half_diff = 0.5f * (a - b);
    const float disc = half_diff * half_diff + c * c;
    const float root = disc > kTiny ? sqrt_f(disc) : 0.0f;
    const float major = half_sum + root;
    const float major_c = major < kTiny ? kTiny : major;
    const float disc_c = disc < kTiny ? kTiny : disc;
    const float g_lod = major <= kTiny ? 0.0f : g;                // where(major <= tiny, -inf, .)
    const float g_log = 0.5f * g_lod;                             // 0.5 * log2(.)
    const float g_major_c = g_log / (major_c * kLn2);
    const float g_major = major >= kTiny ? g_major_c : 0.0f;      // clamp_min(tiny)
    const float g_sqrt = disc > kTiny ? g_major : 0.0f;           // where(disc > tiny, sqrt, 0)
    const float g_disc_c = g_sqrt / (2.0f * sqrt_f(disc_c));
    const float g_disc = disc >= kTiny ? g_disc_c : 0.0f;         // clamp_min(tiny)
    const float g_hd = g_disc * half_diff + g_disc * half_diff;
    const float g_c = g_disc * c + g_disc * c;
    const float g_diff = 0.5f * g_hd, g_sum = 0.5f * g_major;
    const float g_a = g_sum + g_diff, g_b = g_sum - g_diff;
    gsx = (g_a * sx + g_a * sx) + g_c * sy;
    gtx = (g_a * tx + g_a * tx) + g_c * ty;
    gsy = (g_b * sy + g_b * sy) + g_c * sx;
    gty = (g_b * ty + g_b * ty) + g_c * tx;
}

// The power of two that lod_2d divides uv_da by: 2^e with e = min(floor(log2 m), 126) for m the
// largest |uv_da| component when that exceeds 2^14 (and is finite), else e = 0. Squaring the
// Jacobian of so large a footprint would overflow float32 (and give NaN gradients); divided by
// a power of two (exact), its lod is the divided one's plus e.
__device__ __forceinline__ int lod_2d_exponent(const float* __restrict__ da)
{
    float m = 0.0f;
    for (int i = 0; i < 4; ++i) {
        const float a = abs_f(da[i]);
        m = a > m ? a : m;
    }
    if (!(m > 16384.0f && m <= 3.40282347e38f))
        return 0;
    const int e = (int)((__float_as_uint(m) >> 23) & 0xffu) - 127;
    return e < 126 ? e : 126;
}

// lod of a 2D sample from uv_da = (du/dX, du/dY, dv/dX, dv/dY); base level h x w.
__device__ __forceinline__ float lod_2d(const float* __restrict__ da, int h, int w)
{
    const float fw = (float)w, fh = (float)h;
    const int e = lod_2d_exponent(da);
    const float k = bits_to_float((unsigned)(127 - e) << 23);  // 2^-e
    const float lod = lod_jacobian(mul_rn(mul_rn(da[0], k), fw), mul_rn(mul_rn(da[1], k), fw),
                                   mul_rn(mul_rn(da[2], k), fh), mul_rn(mul_rn(da[3], k), fh));
    return add_rn(lod, (float)e);
}

// Adds the gradient of lod_2d to gda[0..3] for an upstream gradient g.
__device__ __forceinline__ void lod_2d_backward(const float* __restrict__ da, int h, int w, float g,
                                                float gda[6])
{
    const float fw = (float)w, fh = (float)h;
    const float k = bits_to_float((unsigned)(127 - lod_2d_exponent(da)) << 23);  // 2^-e
    float gsx, gsy, gtx, gty;
    lod_jacobian_backward(mul_rn(mul_rn(da[0], k), fw), mul_rn(mul_rn(da[1], k), fw),
                          mul_rn(mul_rn(da[2], k), fh), mul_rn(mul_rn(da[3], k), fh), g,
                          gsx, gsy, gtx, gty);
    gda[0] += gsx * fw * k;
    gda[1] += gsy * fw * k;
    gda[2] += gtx * fh * k;
    gda[3] += gty * fh * k;
}

// Component i of face f's axis N, S or T, as a float (0 off the axis).
__device__ __forceinline__ float axis_comp(int axis, int sign, int i)
{
    return axis == i ? (float)sign : 0.0f;
}

// Derivatives of the direction along one image axis, projected on the face: dsc = dd.S,
// dtc = dd.T, dma = dd.N.
struct FaceDeriv {
    float dsc, dtc, dma;
};

__device__ __forceinline__ FaceDeriv face_deriv(int f, float dx, float dy, float dz)
{
    FaceDeriv d;
    d.dma = comp3(dx, dy, dz, n_axis(f));
    d.dsc = comp3(dx, dy, dz, s_axis(f));
    d.dtc = comp3(dx, dy, dz, t_axis(f));
    if (n_sign(f) < 0)
        d.dma = -d.dma;
    if (s_sign(f) < 0)
        d.dsc = -d.dsc;
    if (t_sign(f) < 0)
        d.dtc = -d.dtc;
    return d;
}

// lod of a cube map sample from uv_da = (dx/dX, dx/dY, dy/dX, dy/dY, dz/dX, dz/dY); faces n x n.
// The face coordinates' derivatives times ma are (dsc - (sc / ma) dma) / 2 (and likewise for t);
// lod = lod_jacobian(n * those) - log2(ma).
__device__ __forceinline__ float lod_cube(const float* __restrict__ da, const CubeCoord& cc, int n)
{
    const FaceDeriv X = face_deriv(cc.face, da[0], da[2], da[4]);
    const FaceDeriv Y = face_deriv(cc.face, da[1], da[3], da[5]);
    const float rs = cc.sc / cc.ma, rt = cc.tc / cc.ma;
    const float sx = mul_rn(0.5f, sub_rn(X.dsc, mul_rn(rs, X.dma)));
    const float tx = mul_rn(0.5f, sub_rn(X.dtc, mul_rn(rt, X.dma)));
    const float sy = mul_rn(0.5f, sub_rn(Y.dsc, mul_rn(rs, Y.dma)));
    const float ty = mul_rn(0.5f, sub_rn(Y.dtc, mul_rn(rt, Y.dma)));
    const float fn = (float)n;
    const float j = lod_jacobian(mul_rn(sx, fn), mul_rn(sy, fn), mul_rn(tx, fn), mul_rn(ty, fn));
    return sub_rn(j, log2_f(cc.ma));
}

// Backward of lod_cube for an upstream gradient g: adds the gradients to uv_da (gda[6]) and to
// the face quantities sc, tc, ma (the caller maps those to the direction).
__device__ __forceinline__ void lod_cube_backward(const float* __restrict__ da, const CubeCoord& cc,
                                                  int n, float g, float gda[6], float& g_sc,
                                                  float& g_tc, float& g_ma)
{
    const int f = cc.face;
    const FaceDeriv X = face_deriv(f, da[0], da[2], da[4]);
    const FaceDeriv Y = face_deriv(f, da[1], da[3], da[5]);
    const float ma = cc.ma;
    const float rs = cc.sc / ma, rt = cc.tc / ma;
    const float sx = 0.5f * (X.dsc - rs * X.dma), tx = 0.5f * (X.dtc - rt * X.dma);
    const float sy = 0.5f * (Y.dsc - rs * Y.dma), ty = 0.5f * (Y.dtc - rt * Y.dma);
    const float fn = (float)n;
    float gA, gB, gC, gD;
    lod_jacobian_backward(sx * fn, sy * fn, tx * fn, ty * fn, g, gA, gB, gC, gD);
    // sx = 0.5 (dsc - rs dma) and the like; rs, rt are recomputed per image axis.
    const float ix_s = 0.5f * (gA * fn), ix_t = 0.5f * (gC * fn);
    const float iy_s = 0.5f * (gB * fn), iy_t = 0.5f * (gD * fn);
    const float gX_dma = -ix_s * rs + -ix_t * rt, gY_dma = -iy_s * rs + -iy_t * rt;
    const float g_rs_x = -ix_s * X.dma, g_rt_x = -ix_t * X.dma;
    const float g_rs_y = -iy_s * Y.dma, g_rt_y = -iy_t * Y.dma;
#pragma unroll
    for (int i = 0; i < 3; ++i) {
        const float N = axis_comp(n_axis(f), n_sign(f), i);
        const float S = axis_comp(s_axis(f), s_sign(f), i);
        const float T = axis_comp(t_axis(f), t_sign(f), i);
        gda[2 * i] += (gX_dma * N + ix_s * S) + ix_t * T;
        gda[2 * i + 1] += (gY_dma * N + iy_s * S) + iy_t * T;
    }
    g_sc += g_rs_x / ma + g_rs_y / ma;
    g_tc += g_rt_x / ma + g_rt_y / ma;
    g_ma += -g_rs_x * (rs / ma) - g_rs_y * (rs / ma) - g_rt_x * (rt / ma) - g_rt_y * (rt / ma);
    g_ma += -(g / ma) / kLn2;  // - log2(ma); ma * kLn2 would be subnormal (flushed) for ma ~ tiny
}

// The mip levels of a sample and their weights. False if the level is NaN.
struct LevelPick {
    int l0, l1;  // l1 == l0: one level with weight 1
    float f;     // weights 1 - f (l0) and f (l1)
};

__device__ __forceinline__ bool pick_levels(float lod, int top, int filter, LevelPick& P)
{
    const float level = clamp_keep_nan(lod, 0.0f, (float)top);
    if (is_nan(level))
        return false;
    if (filter == kMipNearest) {
        P.l0 = (int)floor_f(level);  // nvdiffrast's rule: round down, not to the nearest level
        P.l1 = P.l0;
        P.f = 0.0f;
    } else {
        const float l0f = floor_f(level);
        P.l0 = (int)l0f;
        P.l1 = imin(P.l0 + 1, top);
        P.f = sub_rn(level, l0f);
    }
    return true;
}

}  // namespace diffrast
