// Texture addressing: where a texture sample reads. The texture's levels in their buffers
// (Tex, Level), the four bilinear taps of a sample and their weights (Taps), the 2D boundary
// modes and cube map faces with their seams. Shared by cuda_ops/texture_forward.cu and
// cuda_ops/texture_backward.cu. The math is diffrast/reference/texture.py's (and
// reference/cube.py's), rule for rule:
//
// * 2D: the continuous texel coordinate is x = c W - 1/2 (bilinear) or x = c W (nearest), with
//   c = u - floor(u) in 'wrap' mode; in 'clamp' and 'zero' modes x is clamped to [-1, W] (its
//   gradient passes for x in [-1, W], as torch.clamp's does). Integer taps wrap (remainder) or
//   clamp to the texture; in 'zero' mode taps outside read 0 and receive no gradient. A sample
//   whose x or y is not finite is NaN, with no gradient (except the NaN that the reference sends
//   into the level of detail in linear-mipmap-linear mode, reproduced by the backward kernels).
// * Cube maps: the face of the major axis (ties: x before y before z), face coordinates
//   s = (sc / ma + 1) / 2, t = (tc / ma + 1) / 2 (OpenGL's table, see fold_tap); bilinear taps that
//   fall off a face are folded onto the neighbouring face by exact integer arithmetic; a tap past a
//   cube corner reads the average of the other three taps (its weight goes to them, a third
//   each). Zero-length or non-finite directions give 0 and no gradient; NaN directions give NaN.
//
// Every operation that feeds a discrete decision (texel coordinates, and in texture_lod.cuh the
// level of detail and the level choice) is an explicitly rounded intrinsic, in the reference's
// order, so that the same taps and levels are chosen as by the reference on the same device.
//
// Layouts. Texture images: [images, h, w, C] with images = Bt for 2D textures, 6 Bt for cube maps
// (image = 6 b + face); `tex` holds level 0, `mip` the levels 1..num_levels concatenated in
// order, each [images, h_k, w_k, C] with h_k = max(h_{k-1} / 2, 1). A texel's "key" is its index
// in the flat gradient buffer of all levels (level 0's texels, then the mip levels' in the same
// layout as `mip`) divided by C. All offsets are 64-bit.
#pragma once

#include "common.cuh"

namespace diffrast {

// Boundary modes: kWrap, kClamp, kZero, kCube (Boundary in cuda_ops/params.py).
constexpr float kTiny = 1.17549435082228751e-38f;  // torch.finfo(torch.float32).tiny

// ---- texture description ----

struct Tex {
    const float* base;  // level 0: [images, h, w, C]
    const float* mip;   // levels 1..top concatenated
    int images;         // Bt (2D) or 6 Bt (cube)
    int h, w, C;
    int top;            // number of mip levels below the base
};

struct Level {
    const float* data;  // [images, h, w, C]
    long long key0;     // texel index of the level's first texel in grad_tex
    int h, w;
};

__device__ __forceinline__ Level level_at(const Tex& t, int k)
{
    Level L;
    L.h = t.h;
    L.w = t.w;
    if (k == 0) {
        L.data = t.base;
        L.key0 = 0;
        return L;
    }
    long long off = 0;  // texels of levels 1..k-1
    int h = t.h, w = t.w;
    for (int j = 1; j <= k; ++j) {
        if (j > 1)
            off += (long long)t.images * h * w;
        h = imax(h >> 1, 1);
        w = imax(w >> 1, 1);
    }
    L.h = h;
    L.w = w;
    L.data = t.mip + off * t.C;
    L.key0 = (long long)t.images * t.h * t.w + off;
    return L;
}

// Level k+1 from level k (as level_at(t, k + 1), without the loop over the levels above).
__device__ __forceinline__ Level next_level(const Tex& t, const Level& L, int k)
{
    const long long base = (long long)t.images * t.h * t.w;
    const long long off = k == 0 ? 0 : L.key0 - base + (long long)t.images * L.h * L.w;
    Level N;
    N.h = imax(L.h >> 1, 1);
    N.w = imax(L.w >> 1, 1);
    N.data = t.mip + off * t.C;
    N.key0 = base + off;
    return N;
}

// ---- bilinear taps ----

// Taps in the reference's order (0, 0), (1, 0), (0, 1), (1, 1) (x first).
struct Taps {
    long long texel[4];  // texel index within the level, -1: reads zero (outside in 'zero' mode,
                         // or the tap past a cube corner)
    float w[4];          // bilinear weights (1-fx)(1-fy), fx(1-fy), (1-fx)fy, fx fy
    float fx, fy;
    int corner;          // index of the tap past a cube corner, or -1
};

__device__ __forceinline__ void set_weights(Taps& T)
{
    const float gx = 1.0f - T.fx, gy = 1.0f - T.fy;
    T.w[0] = gx * gy;
    T.w[1] = T.fx * gy;
    T.w[2] = gx * T.fy;
    T.w[3] = T.fx * T.fy;
}

// Tap values of channel c (a cube corner tap reads the average of the other three).
__device__ __forceinline__ void tap_values(const float* __restrict__ data, const Taps& T, int C,
                                           int c, float v[4])
{
#pragma unroll
    for (int k = 0; k < 4; ++k)
        v[k] = T.texel[k] >= 0 ? data[T.texel[k] * C + c] : 0.0f;
#pragma unroll
    for (int k = 0; k < 4; ++k)
        if (T.corner == k)
            v[k] = (((v[0] + v[1]) + v[2]) + v[3]) / 3.0f;
}

__device__ __forceinline__ float bilerp(const Taps& T, const float v[4])
{
    return v[0] * T.w[0] + v[1] * T.w[1] + v[2] * T.w[2] + v[3] * T.w[3];
}

// Total weight of tap k for the texture gradient: its own weight plus a third of the corner
// tap's (0 for the corner tap itself), times the level weight.
__device__ __forceinline__ float tap_grad_weight(const Taps& T, int k, float level_weight)
{
    if (T.texel[k] < 0)
        return 0.0f;
    float w = T.w[k];
    if (T.corner >= 0) {
        float wc = 0.0f;
#pragma unroll
        for (int j = 0; j < 4; ++j)
            if (T.corner == j)
                wc = T.w[j];
        w = w + wc / 3.0f;
    }
    return w * level_weight;
}

// ---- 2D addressing ----

// The continuous texel coordinate of normalized coordinate c on a side of n texels; `pass` is
// whether the gradient passes the clamp.
__device__ __forceinline__ float coord_2d(float c, int n, int boundary, float offset, bool& pass)
{
    if (boundary == kWrap)
        c = sub_rn(c, floor_f(c));
    const float x = sub_rn(mul_rn(c, (float)n), offset);
    if (boundary == kWrap) {
        pass = true;
        return x;
    }
    pass = x >= -1.0f && x <= (float)n;
    return clamp_keep_nan(x, -1.0f, (float)n);
}

__device__ __forceinline__ int index_2d(int i, int n, int boundary, bool& inside)
{
    inside = true;
    if (boundary == kWrap) {
        // i mod n. A wrapped coordinate's taps lie in [-1, n] (coord_2d takes the fraction
        // first), so the remainder, an integer division of ~20 instructions, is skipped there.
        if (i >= 0 && i < n)
            return i;
        if (i < 0 && i >= -n)
            return i + n;
        if (i >= n && i - n < n)
            return i - n;
        const int r = i % n;
        return r < 0 ? r + n : r;
    }
    if (boundary == kZero)
        inside = i >= 0 && i < n;
    return imin(imax(i, 0), n - 1);
}

// Bilinear taps of (u, v) on level L of texture image `img`. False if the sample is NaN.
__device__ __forceinline__ bool taps_2d(const Level& L, long long img, float u, float v,
                                        int boundary, Taps& T, bool& pass_u, bool& pass_v)
{
    const float x = coord_2d(u, L.w, boundary, 0.5f, pass_u);
    const float y = coord_2d(v, L.h, boundary, 0.5f, pass_v);
    if (!is_finite(x) || !is_finite(y))
        return false;
    const float x0f = floor_f(x), y0f = floor_f(y);
    T.fx = sub_rn(x, x0f);
    T.fy = sub_rn(y, y0f);
    const int x0 = (int)x0f, y0 = (int)y0f;
    bool in_x0, in_x1, in_y0, in_y1;
    const int ix0 = index_2d(x0, L.w, boundary, in_x0);
    const int ix1 = index_2d(x0 + 1, L.w, boundary, in_x1);
    const int iy0 = index_2d(y0, L.h, boundary, in_y0);
    const int iy1 = index_2d(y0 + 1, L.h, boundary, in_y1);
    const long long row0 = (img * L.h + iy0) * L.w;
    const long long row1 = (img * L.h + iy1) * L.w;
    T.texel[0] = in_y0 && in_x0 ? row0 + ix0 : -1;
    T.texel[1] = in_y0 && in_x1 ? row0 + ix1 : -1;
    T.texel[2] = in_y1 && in_x0 ? row1 + ix0 : -1;
    T.texel[3] = in_y1 && in_x1 ? row1 + ix1 : -1;
    T.corner = -1;
    set_weights(T);
    return true;
}

// The texel holding (u, v) (nearest); -1 outside in 'zero' mode. False if the sample is NaN.
__device__ __forceinline__ bool tap_nearest_2d(const Level& L, long long img, float u, float v,
                                               int boundary, long long& texel)
{
    bool pu, pv, in_x, in_y;
    const float x = coord_2d(u, L.w, boundary, 0.0f, pu);
    const float y = coord_2d(v, L.h, boundary, 0.0f, pv);
    if (!is_finite(x) || !is_finite(y))
        return false;
    const int ix = index_2d((int)floor_f(x), L.w, boundary, in_x);
    const int iy = index_2d((int)floor_f(y), L.h, boundary, in_y);
    texel = in_x && in_y ? (img * L.h + iy) * L.w + ix : -1;
    return true;
}

// ---- cube map addressing ----
//
// Face f in OpenGL's order +x, -x, +y, -y, +z, -z has outward normal N, and axes S, T with
// sc = r.S, tc = r.T, ma = r.N (diffrast/reference/cube.py):
//   f   N        S        T
//   0   +x       -z       -y
//   1   -x       +z       -y
//   2   +y       +x       +z
//   3   -y       +x       -z
//   4   +z       +x       -y
//   5   -z       -x       -y
// Each is one signed unit axis: (axis index 0/1/2 for x/y/z, sign).

__device__ __forceinline__ int n_axis(int f) { return f >> 1; }
__device__ __forceinline__ int n_sign(int f) { return (f & 1) ? -1 : 1; }
__device__ __forceinline__ int s_axis(int f) { return f < 2 ? 2 : 0; }
__device__ __forceinline__ int s_sign(int f) { return (f == 0 || f == 5) ? -1 : 1; }
__device__ __forceinline__ int t_axis(int f) { return (f == 2 || f == 3) ? 2 : 1; }
__device__ __forceinline__ int t_sign(int f) { return f == 2 ? 1 : -1; }

__device__ __forceinline__ float comp3(float x, float y, float z, int axis)
{
    return axis == 0 ? x : (axis == 1 ? y : z);
}
__device__ __forceinline__ int comp3i(int x, int y, int z, int axis)
{
    return axis == 0 ? x : (axis == 1 ? y : z);
}
__device__ __forceinline__ void add3i(int& x, int& y, int& z, int axis, int v)
{
    if (axis == 0)
        x += v;
    else if (axis == 1)
        y += v;
    else
        z += v;
}

// |a| for the face selection: NaN counts as 0 and +-inf as the largest float (torch.nan_to_num).
__device__ __forceinline__ float select_abs(float a)
{
    if (is_nan(a))
        return 0.0f;
    const float m = abs_f(a);
    return is_finite(m) ? m : 3.40282347e+38f;
}

struct CubeCoord {
    int face;
    float s, t;        // face coordinates in [0, 1]
    float ma, sc, tc;  // major axis length (1 when invalid) and minor coordinates (0 when invalid)
    bool valid;        // false for zero-length or non-finite directions
    bool nan_in;       // a direction component is NaN
};

// Subnormal direction components count as 0 (diffrast/reference/cube.py): CuPy compiles the
// kernels with -ftz=true, under which arithmetic and comparisons already read subnormal operands
// as 0 (a subnormal major axis failed `ma > 0`); flushing them here, with a comparison that
// gives the same answer with or without flush-to-zero, makes the rule explicit and the same in
// every build (the CPU emulator, nvcc without -ftz). NaN and inf are kept.
__device__ __forceinline__ float flush_subnormal(float a)
{
    return abs_f(a) < kTiny ? 0.0f : a;
}

__device__ __forceinline__ CubeCoord cube_coord(float x, float y, float z)
{
    CubeCoord c;
    x = flush_subnormal(x);
    y = flush_subnormal(y);
    z = flush_subnormal(z);
    c.nan_in = is_nan(x) || is_nan(y) || is_nan(z);
    const float ax = select_abs(x), ay = select_abs(y), az = select_abs(z);
    const int axis = (ax >= ay && ax >= az) ? 0 : (ay >= az ? 1 : 2);
    const float comp = comp3(x, y, z, axis);
    const int f = 2 * axis + (comp < 0.0f ? 1 : 0);
    c.face = f;
    const float ma = (f & 1) ? -comp : comp;
    float sc = comp3(x, y, z, s_axis(f));
    float tc = comp3(x, y, z, t_axis(f));
    sc = s_sign(f) < 0 ? -sc : sc;
    tc = t_sign(f) < 0 ? -tc : tc;
    c.valid = ma > 0.0f && is_finite(ma) && is_finite(sc) && is_finite(tc);
    c.ma = c.valid ? ma : 1.0f;
    c.sc = c.valid ? sc : 0.0f;
    c.tc = c.valid ? tc : 0.0f;
    c.s = mul_rn(0.5f, add_rn(c.sc / c.ma, 1.0f));
    c.t = mul_rn(0.5f, add_rn(c.tc / c.ma, 1.0f));
    return c;
}

// Texel (face g, column ox, row oy) holding tap (ix, iy) of face `face` (size n), taps in
// [-1, n]. A tap one texel past an edge moves to the neighbouring face: the doubled integer
// position of the texel centre, q = ma N + cs S + ct T with cs = 2 ix + 1 - n, ct = 2 iy + 1 - n,
// is folded over the edge (the off-face coordinate becomes +-n, ma becomes 2n - |off-face
// coordinate| = n - 1), and face selection on q gives the neighbour face and texel, exactly.
// `corner`: the tap is past two edges (no texel; the caller averages the other taps).
__device__ __forceinline__ void fold_tap(int face, int ix, int iy, int n, int& g, int& ox, int& oy,
                                         bool& corner)
{
    ix = imin(imax(ix, -1), n);
    iy = imin(imax(iy, -1), n);
    int cs = 2 * ix + 1 - n, ct = 2 * iy + 1 - n;
    const bool off_x = iabs(cs) > n, off_y = iabs(ct) > n;
    corner = off_x && off_y;
    if (corner || (!off_x && !off_y)) {
        g = face;
        ox = imin(imax(ix, 0), n - 1);
        oy = imin(imax(iy, 0), n - 1);
        return;
    }
    int ma = n;
    if (off_x) {
        ma = 2 * n - iabs(cs);
        cs = cs > 0 ? n : -n;
    } else {
        ma = 2 * n - iabs(ct);
        ct = ct > 0 ? n : -n;
    }
    int qx = 0, qy = 0, qz = 0;
    add3i(qx, qy, qz, n_axis(face), n_sign(face) * ma);
    add3i(qx, qy, qz, s_axis(face), s_sign(face) * cs);
    add3i(qx, qy, qz, t_axis(face), t_sign(face) * ct);
    const int ax = iabs(qx), ay = iabs(qy), az = iabs(qz);
    const int axis = (ax >= ay && ax >= az) ? 0 : (ay >= az ? 1 : 2);
    g = 2 * axis + (comp3i(qx, qy, qz, axis) < 0 ? 1 : 0);
    const int cs2 = s_sign(g) * comp3i(qx, qy, qz, s_axis(g));
    const int ct2 = t_sign(g) * comp3i(qx, qy, qz, t_axis(g));
    ox = imin(imax((cs2 + n - 1) >> 1, 0), n - 1);  // floor division by 2
    oy = imin(imax((ct2 + n - 1) >> 1, 0), n - 1);
}

// Bilinear taps of face coordinates (s, t) on level L (face size L.w) of texture batch tb.
__device__ __forceinline__ void taps_cube(const Level& L, long long tb, const CubeCoord& cc, Taps& T)
{
    const int n = L.w;
    const float x = sub_rn(mul_rn(cc.s, (float)n), 0.5f);
    const float y = sub_rn(mul_rn(cc.t, (float)n), 0.5f);
    const float x0f = clamp_keep_nan(floor_f(x), -1.0f, (float)(n - 1));
    const float y0f = clamp_keep_nan(floor_f(y), -1.0f, (float)(n - 1));
    T.fx = sub_rn(x, x0f);
    T.fy = sub_rn(y, y0f);
    const int x0 = (int)x0f, y0 = (int)y0f;
    T.corner = -1;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
        int g, ix, iy;
        bool corner;
        fold_tap(cc.face, x0 + (k & 1), y0 + (k >> 1), n, g, ix, iy, corner);
        if (corner) {
            T.corner = k;
            T.texel[k] = -1;
        } else {
            T.texel[k] = ((tb * 6 + g) * n + iy) * (long long)n + ix;
        }
    }
    set_weights(T);
}

__device__ __forceinline__ long long tap_nearest_cube(const Level& L, long long tb, const CubeCoord& cc)
{
    const int n = L.w;
    const int ix = imin(imax((int)floor_f(mul_rn(cc.s, (float)n)), 0), n - 1);
    const int iy = imin(imax((int)floor_f(mul_rn(cc.t, (float)n)), 0), n - 1);
    return ((tb * 6 + cc.face) * n + iy) * (long long)n + ix;
}

}  // namespace diffrast
