// texture: texture sampling of 2D textures and cube maps, all filter and boundary modes, with
// mipmaps; forward and backward, float32. Mip pyramid construction is in texture_mip.cu.
//
// The math is diffrast/reference/texture.py's (and reference/cube.py's), rule for rule:
//
// * 2D: the continuous texel coordinate is x = c W - 1/2 (bilinear) or x = c W (nearest), with
//   c = u - floor(u) in 'wrap' mode; in 'clamp' and 'zero' modes x is clamped to [-1, W] (its
//   gradient passes for x in [-1, W], as torch.clamp's does). Integer taps wrap (remainder) or
//   clamp to the texture; in 'zero' mode taps outside read 0 and receive no gradient. A sample
//   whose x or y is not finite is NaN, with no gradient (except the NaN that the reference sends
//   into the level of detail in linear-mipmap-linear mode, reproduced here).
// * Cube maps: the face of the major axis (ties: x before y before z), face coordinates
//   s = (sc / ma + 1) / 2, t = (tc / ma + 1) / 2 (OpenGL's table, see fold_tap); bilinear taps that
//   fall off a face are folded onto the neighbouring face by exact integer arithmetic; a tap past a
//   cube corner reads the average of the other three taps (its weight goes to them, a third
//   each). Zero-length or non-finite directions give 0 and no gradient; NaN directions give NaN.
// * Level of detail: lod = log2 of the major axis of the texel-space footprint ellipse,
//   0.5 log2((A + B) / 2 + sqrt(((A - B) / 2)^2 + C^2)) with A, B, C from the Jacobian; plus
//   mip_level_bias; clamped to [0, levels] (gradient inside, inclusive). linear-mipmap-linear
//   blends levels floor(l) and floor(l) + 1 by the fraction; linear-mipmap-nearest takes level
//   floor(l) (nvdiffrast's rule, not OpenGL's nearest level) with no gradient to the level.
//
// Every operation that feeds a discrete decision (texel coordinates, the level of detail, the
// level choice) is an explicitly rounded intrinsic, in the reference's order, so that the same
// taps and levels are chosen as by the reference on the same device.
//
// Layouts. Texture images: [images, h, w, C] with images = Bt for 2D textures, 6 Bt for cube maps
// (image = 6 b + face); `tex` holds level 0, `mip` the levels 1..num_levels concatenated in
// order, each [images, h_k, w_k, C] with h_k = max(h_{k-1} / 2, 1). Texture batch index of pixel p
// is p / pixels_per_image when tex_batched, else 0. uv [N, 2] (2D) or [N, 3] (cube), uv_da [N, 4]
// or [N, 6], mip_level_bias [N], out / grad_out [N, C].
//
// Gradients to the texture (all levels) go to one flat buffer `grad_tex`: level 0's texels, then
// the mip levels' in the same layout as `mip`; a texel's "key" is its index in that buffer
// divided by C. Each pixel contributes weight * grad_out[c] to channel c of each tap's texel
// (zero contributions are skipped). Before the atomics, every tap checks whether all 32 lanes of
// the warp hit the same texel (typical of background pixels, whose uv are all 0, and of strong
// magnification); if so the warp's contributions are summed with shuffles and one lane does one
// atomic, which removes the worst contention. The backward kernels run in one of three modes:
//   kFast (default): float atomicAdd into grad_tex. The order of the additions varies from run
//     to run, so the last bits of the result may too.
//   deterministic (no float atomics), two passes and a conversion, all order-independent:
//     kDetScan: per texel channel, the largest |contribution| (atomicMax on its bits, which order
//       like the values for non-negative floats) and flags for NaN / +inf / -inf contributions
//       (atomicOr).
//     kDetSum: each finite contribution v becomes the 64-bit integer round(v 2^e), with e chosen
//       per texel channel from its largest contribution and a bound on the number of
//       contributions (fixed_exponent) so that no partial sum can reach 2^62; the integers are
//       added with 64-bit integer atomics (and warp shuffles), which are exact, so the sum is the
//       same whatever the order.
//     texture_grad_finish: grad = sum 2^-e as float (NaN or +-inf where a contribution was
//       non-finite, as float additions would give).
//   The result is the exact sum of the contributions, each rounded to a unit of 2^-e (about
//   2^-37 of the texel channel's largest contribution for 2^25 contributions, e.g. 4 x 1024^2
//   pixels with 8 taps): as accurate as float atomics or better, and bit-identical from run to
//   run (same inputs, GPU and software).
//
// Gradients to uv, uv_da and mip_level_bias are per pixel (written by the pixel's thread, no
// accumulation). All offsets are 64-bit. One thread per output pixel, channels looped inside.

namespace {

constexpr int kWrap = 0, kZero = 2;  // boundary modes ('clamp' is 1, 'cube' 3)
constexpr int kNearest = 0, kLinear = 1, kMipNearest = 2, kMipLinear = 3;
constexpr float kTiny = 1.17549435082228751e-38f;  // torch.finfo(torch.float32).tiny
constexpr float kLn2 = 0.693147180559945309f;

// ---- scalar helpers ----
//
// Math functions and bit casts go through the wrappers below: CUDA's under NVRTC/nvcc, compiler
// builtins when the file is compiled as host C++ by the CPU kernel emulator of the tests
// (tests/kernel_emulator.py), since NVRTC has no host headers to include.

#if defined(__CUDACC__)
__device__ __forceinline__ float floor_f(float x) { return floorf(x); }
__device__ __forceinline__ float ceil_f(float x) { return ceilf(x); }
__device__ __forceinline__ float sqrt_f(float x) { return sqrtf(x); }
__device__ __forceinline__ float log2_f(float x) { return log2f(x); }
__device__ __forceinline__ float bits_to_float(unsigned u) { return __uint_as_float(u); }
__device__ __forceinline__ double bits_to_double(long long u) { return __longlong_as_double(u); }
__device__ __forceinline__ long long round_to_ll(double x) { return __double2ll_rn(x); }
__device__ __forceinline__ void atomic_max_u32(unsigned* p, unsigned v) { atomicMax(p, v); }
__device__ __forceinline__ void atomic_or_i32(int* p, int v) { atomicOr(p, v); }
__device__ __forceinline__ void atomic_add_i64(long long* p, long long v)
{
    atomicAdd(reinterpret_cast<unsigned long long*>(p), (unsigned long long)v);
}
#else
inline float floor_f(float x) { return __builtin_floorf(x); }
inline float ceil_f(float x) { return __builtin_ceilf(x); }
inline float sqrt_f(float x) { return __builtin_sqrtf(x); }
inline float log2_f(float x) { return __builtin_log2f(x); }
inline float bits_to_float(unsigned u)
{
    float f;
    __builtin_memcpy(&f, &u, sizeof f);
    return f;
}
inline double bits_to_double(long long u)
{
    double d;
    __builtin_memcpy(&d, &u, sizeof d);
    return d;
}
inline long long round_to_ll(double x) { return __builtin_llrint(x); }
inline void atomic_max_u32(unsigned* p, unsigned v)
{
    unsigned old = __atomic_load_n(p, __ATOMIC_RELAXED);
    while (old < v && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_RELAXED,
                                                   __ATOMIC_RELAXED)) {
    }
}
inline void atomic_or_i32(int* p, int v) { __atomic_fetch_or(p, v, __ATOMIC_RELAXED); }
inline void atomic_add_i64(long long* p, long long v)
{
    __atomic_fetch_add(reinterpret_cast<unsigned long long*>(p), (unsigned long long)v,
                       __ATOMIC_RELAXED);
}
#endif

__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ float sub_rn(float a, float b) { return __fsub_rn(a, b); }
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }

__device__ __forceinline__ bool is_finite(float x)
{
    return (__float_as_uint(x) & 0x7f800000u) != 0x7f800000u;
}
__device__ __forceinline__ bool is_nan(float x)
{
    return (__float_as_uint(x) & 0x7fffffffu) > 0x7f800000u;
}
__device__ __forceinline__ float quiet_nan() { return bits_to_float(0x7fc00000u); }
__device__ __forceinline__ float neg_inf() { return bits_to_float(0xff800000u); }
__device__ __forceinline__ float abs_f(float x) { return bits_to_float(__float_as_uint(x) & 0x7fffffffu); }
__device__ __forceinline__ int imin(int a, int b) { return a < b ? a : b; }
__device__ __forceinline__ int imax(int a, int b) { return a > b ? a : b; }
__device__ __forceinline__ int iabs(int a) { return a < 0 ? -a : a; }
// torch.clamp: NaN stays NaN.
__device__ __forceinline__ float clamp_keep_nan(float x, float lo, float hi)
{
    return x < lo ? lo : (x > hi ? hi : x);
}

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

// ---- the sample's footprint (shared by forward and backward) ----

constexpr int kOk = 0;        // regular sample (a 2D sample may still turn out NaN in its taps)
constexpr int kNan = 1;       // output NaN, no gradient
constexpr int kZeroOut = 2;   // output 0, no gradient (cube map, invalid direction)

struct Sample {
    int status;
    float u, v;       // 2D coordinates
    CubeCoord cc;     // cube coordinates
    float lod;        // level of detail before clamping (mip modes)
    LevelPick pick;   // mip modes
};

template <bool CUBE, int FILTER>
__device__ __forceinline__ Sample locate(const Tex& t, long long p, const float* __restrict__ uv,
                                         const float* __restrict__ uv_da,
                                         const float* __restrict__ bias, int has_da, int has_bias)
{
    Sample S;
    S.status = kOk;
    S.lod = 0.0f;
    S.pick.l0 = S.pick.l1 = 0;
    S.pick.f = 0.0f;
    if (CUBE) {
        S.u = S.v = 0.0f;
        S.cc = cube_coord(uv[p * 3], uv[p * 3 + 1], uv[p * 3 + 2]);
        if (S.cc.nan_in) {
            S.status = kNan;
            return S;
        }
        if (!S.cc.valid) {
            S.status = kZeroOut;
            return S;
        }
    } else {
        S.u = uv[p * 2];
        S.v = uv[p * 2 + 1];
    }
    if (FILTER == kMipNearest || FILTER == kMipLinear) {
        float lod = 0.0f;
        if (has_da) {
            if (CUBE)
                lod = lod_cube(uv_da + p * 6, S.cc, t.w);
            else
                lod = lod_2d(uv_da + p * 4, t.h, t.w);
        }
        if (has_bias)
            lod = add_rn(lod, bias[p]);
        S.lod = lod;
        if (!pick_levels(lod, t.top, FILTER, S.pick)) {
            S.status = kNan;
            return S;
        }
    }
    return S;
}

__device__ __forceinline__ Tex make_tex(const float* tex, const float* mip, int tex_batch, bool cube,
                                        int h, int w, int C, int top)
{
    Tex t;
    t.base = tex;
    t.mip = mip;
    t.images = cube ? 6 * tex_batch : tex_batch;
    t.h = h;
    t.w = w;
    t.C = C;
    t.top = top;
    return t;
}

// Taps of the sample on level L. False if a 2D sample is NaN (non-finite coordinate).
template <bool CUBE>
__device__ __forceinline__ bool sample_taps(const Level& L, long long tb, const Sample& S,
                                            int boundary, Taps& T, bool& pass_u, bool& pass_v)
{
    if (CUBE) {
        pass_u = pass_v = true;
        taps_cube(L, tb, S.cc, T);
        return true;
    }
    return taps_2d(L, tb, S.u, S.v, boundary, T, pass_u, pass_v);
}

// ---- forward ----

template <bool CUBE, int FILTER>
__device__ __forceinline__ void texture_fwd_impl(
    const float* __restrict__ tex, const float* __restrict__ mip, const float* __restrict__ uv,
    const float* __restrict__ uv_da, const float* __restrict__ bias, float* __restrict__ out,
    int num_pixels, int pixels_per_image, int tex_batched, int tex_batch, int height, int width,
    int channels, int num_levels, int boundary, int has_da, int has_bias)
{
    const long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= num_pixels)
        return;
    const int C = channels;
    float* __restrict__ o = out + p * C;
    const Tex t = make_tex(tex, mip, tex_batch, CUBE, height, width, C, num_levels);
    const long long tb = tex_batched ? p / pixels_per_image : 0;
    const Sample S = locate<CUBE, FILTER>(t, p, uv, uv_da, bias, has_da, has_bias);
    if (S.status != kOk) {
        const float fill = S.status == kZeroOut ? 0.0f : quiet_nan();
        for (int c = 0; c < C; ++c)
            o[c] = fill;
        return;
    }
    if (FILTER == kNearest) {
        const Level L = level_at(t, 0);
        long long texel;
        if (CUBE) {
            texel = tap_nearest_cube(L, tb, S.cc);
        } else if (!tap_nearest_2d(L, tb, S.u, S.v, boundary, texel)) {
            for (int c = 0; c < C; ++c)
                o[c] = quiet_nan();
            return;
        }
        for (int c = 0; c < C; ++c)
            o[c] = texel >= 0 ? L.data[texel * C + c] : 0.0f;
        return;
    }
    const bool two = FILTER == kMipLinear && S.pick.l1 != S.pick.l0;
    const Level L0 = level_at(t, S.pick.l0);
    Taps T0, T1;
    bool pu, pv;
    bool ok = sample_taps<CUBE>(L0, tb, S, boundary, T0, pu, pv);
    Level L1 = L0;
    if (two) {
        L1 = next_level(t, L0, S.pick.l0);  // l1 = l0 + 1
        ok = sample_taps<CUBE>(L1, tb, S, boundary, T1, pu, pv) && ok;
    }
    if (!ok) {
        for (int c = 0; c < C; ++c)
            o[c] = quiet_nan();
        return;
    }
    const float w0 = 1.0f - S.pick.f, w1 = S.pick.f;
    for (int c = 0; c < C; ++c) {
        float v[4];
        tap_values(L0.data, T0, C, c, v);
        float r = bilerp(T0, v);
        if (two) {
            tap_values(L1.data, T1, C, c, v);
            r = add_rn(mul_rn(r, w0), mul_rn(bilerp(T1, v), w1));
        }
        o[c] = r;
    }
}

// ---- backward ----

constexpr unsigned kFullWarp = 0xffffffffu;
constexpr int kFast = 0, kDetScan = 1, kDetSum = 2;  // backward modes (see the file header)

__device__ __forceinline__ int lane_id() { return (int)(threadIdx.x & 31u); }

// Whether every lane of the warp holds the same key. All lanes must call it.
__device__ __forceinline__ bool warp_uniform(long long key)
{
    const long long next = __shfl_down_sync(kFullWarp, key, 1);  // lane 31 reads itself
    return !__any_sync(kFullWarp, next != key);
}

// Warp reductions; the result is in lane 0. All lanes must call them.
__device__ __forceinline__ float warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_down_sync(kFullWarp, v, o);
    return v;
}
__device__ __forceinline__ unsigned warp_max(unsigned v)
{
    for (int o = 16; o > 0; o >>= 1) {
        const unsigned w = __shfl_down_sync(kFullWarp, v, o);
        v = w > v ? w : v;
    }
    return v;
}
__device__ __forceinline__ long long warp_sum(long long v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_down_sync(kFullWarp, v, o);
    return v;
}

// Fixed point for the deterministic mode: a texel channel whose contributions have magnitudes
// below 2^E (E from the largest one's exponent) and number fewer than 2^count_log2 is summed
// in units of 2^-e, e = 62 - E - count_log2, so that every partial sum stays below 2^62 in
// magnitude: exact integer additions, in any order.
__device__ __forceinline__ int fixed_exponent(unsigned max_bits, int count_log2)
{
    const int biased = (int)(max_bits >> 23);
    const int E = biased == 0 ? -126 : biased - 126;  // |v| < 2^E
    return 62 - E - count_log2;
}
__device__ __forceinline__ double pow2(int e)  // 2^e, |e| < 1023
{
    return bits_to_double((long long)(e + 1023) << 52);
}
__device__ __forceinline__ long long to_fixed(float v, int e) { return round_to_ll((double)v * pow2(e)); }

struct GradSink {
    int mode;
    float* grad;        // kFast: the flat texture gradient
    unsigned* max_bits; // deterministic: per texel channel, the largest |contribution| (bits)
    int* flags;         // deterministic: per texel channel, non-finite contributions (1 NaN,
                        // 2 +inf, 4 -inf)
    long long* acc;     // kDetSum: per texel channel, fixed-point sums
    int count_log2;     // deterministic: 2^count_log2 exceeds the number of contributions
};

// Adds contribution v to channel c of texel `key` (nothing for key < 0, where v must be 0). With
// `uniform` (every lane of the warp holds the same key), one lane adds the warp's combined
// contribution; all lanes must then call this together.
__device__ __forceinline__ void emit(const GradSink& s, long long key, int C, int c, float v,
                                     bool uniform)
{
    const long long i = key * C + c;
    const bool lead = lane_id() == 0;
    if (s.mode == kFast) {
        if (uniform) {
            v = warp_sum(v);
            if (lead && key >= 0 && v != 0.0f)
                atomicAdd(s.grad + i, v);
        } else if (key >= 0 && v != 0.0f) {
            atomicAdd(s.grad + i, v);
        }
    } else if (s.mode == kDetScan) {
        unsigned m = __float_as_uint(v) & 0x7fffffffu;
        if (!is_finite(v)) {
            m = 0x7f800000u;
            if (key >= 0)
                atomic_or_i32(s.flags + i, is_nan(v) ? 1 : (v > 0.0f ? 2 : 4));
        }
        if (uniform) {
            m = warp_max(m);
            if (lead && key >= 0 && m != 0u)
                atomic_max_u32(s.max_bits + i, m);
        } else if (key >= 0 && m != 0u) {
            atomic_max_u32(s.max_bits + i, m);
        }
    } else if (s.mode == kDetSum) {
        long long q = 0;
        if (key >= 0 && v != 0.0f && is_finite(v)) {
            const unsigned m = s.max_bits[i];
            if (m < 0x7f800000u)
                q = to_fixed(v, fixed_exponent(m, s.count_log2));
        }
        if (uniform) {
            q = warp_sum(q);
            if (lead && q != 0)
                atomic_add_i64(s.acc + i, q);
        } else if (q != 0) {
            atomic_add_i64(s.acc + i, q);
        }
    }
}

template <bool CUBE, int FILTER>
__device__ __forceinline__ void texture_bwd_impl(
    const float* __restrict__ tex, const float* __restrict__ mip, const float* __restrict__ uv,
    const float* __restrict__ uv_da, const float* __restrict__ bias,
    const float* __restrict__ grad_out, long long g_sp, long long g_sc,
    float* __restrict__ grad_tex, float* __restrict__ grad_uv,
    float* __restrict__ grad_uv_da, float* __restrict__ grad_bias, unsigned* max_bits,
    int* flags, long long* acc, int num_pixels, int pixels_per_image, int tex_batched,
    int tex_batch, int height, int width, int channels, int num_levels, int boundary, int has_da,
    int has_bias, int want_tex0, int want_mip, int want_uv, int want_da, int want_bias, int mode,
    int count_log2)
{
    constexpr int kLevels = FILTER == kMipLinear ? 2 : 1;
    constexpr int kTaps = FILTER == kNearest ? 1 : 4;
    // No early return: every lane of the warp takes part in the warp-level combination of
    // texture gradients (lanes past the end contribute nothing).
    const long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const bool lane_ok = p < num_pixels;
    const int C = channels;
    const Tex t = make_tex(tex, mip, tex_batch, CUBE, height, width, C, num_levels);
    const long long tb = lane_ok && tex_batched ? p / pixels_per_image : 0;
    Sample S;
    if (lane_ok) {
        S = locate<CUBE, FILTER>(t, p, uv, uv_da, bias, has_da, has_bias);
    } else {
        S.status = kNan;
        S.u = S.v = S.lod = 0.0f;
        S.cc = cube_coord(1.0f, 0.0f, 0.0f);
        S.pick.l0 = S.pick.l1 = 0;
        S.pick.f = 0.0f;
    }
    // The loss gradient of the pixel, read in place through its pixel and channel strides
    // (contiguous: C, 1; the expanded gradient of a sum: 0, 0).
    const float* __restrict__ g = grad_out + (lane_ok ? p : 0) * g_sp;
    GradSink sink;
    sink.mode = mode;
    sink.grad = grad_tex;
    sink.max_bits = max_bits;
    sink.flags = flags;
    sink.acc = acc;
    sink.count_log2 = count_log2;

    // The sample's levels (up to two) and their weights; nl = number of levels that receive
    // gradients. A 2D sample at a non-finite coordinate (at every level alike) has none, and
    // sends the reference's NaN into the level of detail (mip-linear).
    int nl = 0;
    int level_index[kLevels];
    float lam[kLevels];
    bool bad = false;
#pragma unroll
    for (int li = 0; li < kLevels; ++li) {
        level_index[li] = 0;
        lam[li] = 0.0f;
    }
    if (S.status == kOk) {
        if (!CUBE) {
            bool pu, pv;
            bad = !is_finite(coord_2d(S.u, t.w, boundary, 0.5f, pu)) ||
                  !is_finite(coord_2d(S.v, t.h, boundary, 0.5f, pv));
        }
        if (!bad) {
            level_index[0] = FILTER == kNearest ? 0 : S.pick.l0;
            const bool two = FILTER == kMipLinear && S.pick.l1 != S.pick.l0;
            lam[0] = two ? 1.0f - S.pick.f : 1.0f;
            nl = 1;
            if (kLevels == 2 && two) {
                level_index[kLevels - 1] = S.pick.l1;
                lam[kLevels - 1] = S.pick.f;
                nl = 2;
            }
        }
    }

    const bool want_texgrad = want_tex0 || want_mip;
    const bool want_geo = mode != kDetScan && FILTER != kNearest &&
                          (want_uv || ((want_da || want_bias) && FILTER == kMipLinear));
    float g_s = 0.0f, g_t = 0.0f;  // d loss / d (u, v) (2D) or d (s, t) (cube)
    float dw[kLevels];             // d loss / d (level weight)
    Level L = level_at(t, level_index[0]);
#pragma unroll
    for (int li = 0; li < kLevels; ++li) {
        dw[li] = 0.0f;
        const bool active = li < nl;
        if (li > 0 && active)
            L = next_level(t, L, level_index[0]);  // level_index[1] = level_index[0] + 1
        Taps T;
        T.corner = -1;
        T.fx = T.fy = 0.0f;
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            T.texel[k] = -1;
            T.w[k] = 0.0f;
        }
        bool pass_u = true, pass_v = true;
        if (active) {
            if (FILTER == kNearest) {
                long long texel = -1;
                if (CUBE)
                    texel = tap_nearest_cube(L, tb, S.cc);
                else
                    tap_nearest_2d(L, tb, S.u, S.v, boundary, texel);
                T.texel[0] = texel;
                T.w[0] = 1.0f;
            } else {
                sample_taps<CUBE>(L, tb, S, boundary, T, pass_u, pass_v);
            }
        }
        const bool want_t = active && (level_index[li] == 0 ? want_tex0 != 0 : want_mip != 0);
        float tw[kTaps];
        long long key[kTaps];
        bool uni[kTaps];
#pragma unroll
        for (int k = 0; k < kTaps; ++k) {
            tw[k] = want_t ? tap_grad_weight(T, k, lam[li]) : 0.0f;
            key[k] = tw[k] != 0.0f ? L.key0 + T.texel[k] : -1;
            uni[k] = want_texgrad ? warp_uniform(key[k]) : false;
        }
        if (!want_texgrad && !want_geo)
            continue;
        float dfx = 0.0f, dfy = 0.0f, dwl = 0.0f;
        const float gx = 1.0f - T.fx, gy = 1.0f - T.fy;
        for (int c = 0; c < C; ++c) {
            const float gc = lane_ok ? g[c * g_sc] : 0.0f;
            if (want_geo && active) {
                float v[4];
                tap_values(L.data, T, C, c, v);
                dfx += gc * (gy * (v[1] - v[0]) + T.fy * (v[3] - v[2]));
                dfy += gc * (gx * (v[2] - v[0]) + T.fx * (v[3] - v[1]));
                dwl += gc * bilerp(T, v);
            }
            if (want_texgrad) {
#pragma unroll
                for (int k = 0; k < kTaps; ++k)
                    emit(sink, key[k], C, c, key[k] >= 0 ? tw[k] * gc : 0.0f, uni[k]);
            }
        }
        if (want_geo && active) {
            dw[li] = dwl;
            const float sw = lam[li] * (float)L.w, sh = lam[li] * (float)L.h;
            if (CUBE) {
                g_s += sw * dfx;
                g_t += sw * dfy;
            } else {
                g_s += pass_u ? sw * dfx : 0.0f;
                g_t += pass_v ? sh * dfy : 0.0f;
            }
        }
    }
    float gl_raw = 0.0f;  // d loss / d level (mip-linear)
    if (FILTER == kMipLinear)
        gl_raw = bad ? quiet_nan() : (nl == 2 ? dw[kLevels - 1] - dw[0] : 0.0f);
    if (!lane_ok || mode == kDetScan)
        return;

    // Level of detail gradient (mip-linear): through the clamp to [0, levels]; 0 for samples
    // that are masked out (NaN level, invalid cube direction).
    const bool sampled = S.status == kOk;
    float gl = 0.0f;
    if (FILTER == kMipLinear && sampled && S.lod >= 0.0f && S.lod <= (float)t.top)
        gl = gl_raw;
    if (want_bias && has_bias)
        grad_bias[p] = gl;
    // The level of detail's inputs receive gl times their partial derivatives even where gl is
    // 0, as in the reference (non-finite uv_da then gives NaN gradients, like autograd's).
    const bool lod_chain = FILTER == kMipLinear && has_da && (want_da || (CUBE && want_uv));

    float gda[6] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    if (CUBE) {
        const float ma = S.cc.ma;
        float g_sc = 0.0f, g_tc = 0.0f, g_ma = 0.0f;
        if (sampled) {
            // s = (sc / ma + 1) / 2, t = (tc / ma + 1) / 2
            const float hs = 0.5f * g_s, ht = 0.5f * g_t;
            g_sc = hs / ma;
            g_tc = ht / ma;
            g_ma = -hs * (S.cc.sc / ma / ma) - ht * (S.cc.tc / ma / ma);
        }
        if (lod_chain)
            lod_cube_backward(uv_da + p * 6, S.cc, t.w, gl, gda, g_sc, g_tc, g_ma);
        if (want_uv) {
            // sc = d.S, tc = d.T, ma = d.N, masked to valid directions.
            const int f = S.cc.face;
#pragma unroll
            for (int i = 0; i < 3; ++i) {
                const float gi = (g_sc * axis_comp(s_axis(f), s_sign(f), i) +
                                  g_tc * axis_comp(t_axis(f), t_sign(f), i)) +
                                 g_ma * axis_comp(n_axis(f), n_sign(f), i);
                grad_uv[p * 3 + i] = S.cc.valid ? gi : 0.0f;
            }
        }
        if (want_da && has_da) {
            for (int i = 0; i < 6; ++i)
                grad_uv_da[p * 6 + i] = gda[i];
        }
    } else {
        if (want_uv) {
            grad_uv[p * 2] = g_s;
            grad_uv[p * 2 + 1] = g_t;
        }
        if (want_da && has_da) {
            if (lod_chain)
                lod_2d_backward(uv_da + p * 4, t.h, t.w, gl, gda);
            for (int i = 0; i < 4; ++i)
                grad_uv_da[p * 4 + i] = gda[i];
        }
    }
}

}  // namespace

// ---- kernels ----

// Kernel arguments. `config` packs the small settings: bits 0-1 boundary mode (0 wrap, 1 clamp,
// 2 zero, 3 cube), 2 texture batched (tex_batch > 1 with one texture per image), 3 uv_da given,
// 4 mip_level_bias given; backward only: 5 want the gradient of level 0, 6 of the mip levels,
// 7 of uv, 8 of uv_da, 9 of mip_level_bias, 10-11 the mode (kFast, kDetScan, kDetSum).
#define TEXTURE_FWD_ARGS                                                                      \
    const float* __restrict__ tex, const float* __restrict__ mip, const float* __restrict__ uv, \
        const float* __restrict__ uv_da, const float* __restrict__ bias, float* __restrict__ out, \
        int num_pixels, int pixels_per_image, int tex_batch, int height, int width,              \
        int channels, int num_levels, int config
#define TEXTURE_FWD_PASS                                                                      \
    tex, mip, uv, uv_da, bias, out, num_pixels, pixels_per_image, (config >> 2) & 1, tex_batch,  \
        height, width, channels, num_levels, config & 3, (config >> 3) & 1, (config >> 4) & 1
#define TEXTURE_BWD_ARGS                                                                      \
    const float* __restrict__ tex, const float* __restrict__ mip, const float* __restrict__ uv, \
        const float* __restrict__ uv_da, const float* __restrict__ bias,                        \
        const float* __restrict__ grad_out, long long g_sp, long long g_sc,                     \
        float* __restrict__ grad_tex, float* __restrict__ grad_uv,                              \
        float* __restrict__ grad_uv_da, float* __restrict__ grad_bias, unsigned* max_bits,      \
        int* flags, long long* acc,                                                             \
        int num_pixels, int pixels_per_image, int tex_batch, int height, int width,              \
        int channels, int num_levels, int config, int count_log2
#define TEXTURE_BWD_PASS                                                                      \
    tex, mip, uv, uv_da, bias, grad_out, g_sp, g_sc, grad_tex, grad_uv, grad_uv_da, grad_bias, \
        max_bits, flags, acc, num_pixels, pixels_per_image, (config >> 2) & 1, tex_batch, height, \
        width, channels, num_levels, config & 3, (config >> 3) & 1, (config >> 4) & 1,                  \
        (config >> 5) & 1, (config >> 6) & 1, (config >> 7) & 1, (config >> 8) & 1,             \
        (config >> 9) & 1, (config >> 10) & 3, count_log2

// One kernel per (2D / cube, filter) pair and direction. The backward kernels are limited to the
// registers that let three blocks of 256 threads share a multiprocessor (their latency-bound
// atomics need the occupancy); each is declared first without the bound, in the plain form that
// tools reading the source for kernel names expect.
#if !defined(__CUDACC__) && !defined(__launch_bounds__)
#define __launch_bounds__(...)
#endif
#define TEXTURE_BWD_BOUNDS __launch_bounds__(256, 3)

extern "C" __global__ void texture_fwd_2d_nearest(TEXTURE_FWD_ARGS)
{
    texture_fwd_impl<false, kNearest>(TEXTURE_FWD_PASS);
}

extern "C" __global__ void texture_bwd_2d_nearest(TEXTURE_BWD_ARGS);
extern "C" __global__ TEXTURE_BWD_BOUNDS void texture_bwd_2d_nearest(TEXTURE_BWD_ARGS)
{
    texture_bwd_impl<false, kNearest>(TEXTURE_BWD_PASS);
}

extern "C" __global__ void texture_fwd_2d_linear(TEXTURE_FWD_ARGS)
{
    texture_fwd_impl<false, kLinear>(TEXTURE_FWD_PASS);
}

extern "C" __global__ void texture_bwd_2d_linear(TEXTURE_BWD_ARGS);
extern "C" __global__ TEXTURE_BWD_BOUNDS void texture_bwd_2d_linear(TEXTURE_BWD_ARGS)
{
    texture_bwd_impl<false, kLinear>(TEXTURE_BWD_PASS);
}

extern "C" __global__ void texture_fwd_2d_mipnearest(TEXTURE_FWD_ARGS)
{
    texture_fwd_impl<false, kMipNearest>(TEXTURE_FWD_PASS);
}

extern "C" __global__ void texture_bwd_2d_mipnearest(TEXTURE_BWD_ARGS);
extern "C" __global__ TEXTURE_BWD_BOUNDS void texture_bwd_2d_mipnearest(TEXTURE_BWD_ARGS)
{
    texture_bwd_impl<false, kMipNearest>(TEXTURE_BWD_PASS);
}

extern "C" __global__ void texture_fwd_2d_miplinear(TEXTURE_FWD_ARGS)
{
    texture_fwd_impl<false, kMipLinear>(TEXTURE_FWD_PASS);
}

extern "C" __global__ void texture_bwd_2d_miplinear(TEXTURE_BWD_ARGS);
extern "C" __global__ TEXTURE_BWD_BOUNDS void texture_bwd_2d_miplinear(TEXTURE_BWD_ARGS)
{
    texture_bwd_impl<false, kMipLinear>(TEXTURE_BWD_PASS);
}

extern "C" __global__ void texture_fwd_cube_nearest(TEXTURE_FWD_ARGS)
{
    texture_fwd_impl<true, kNearest>(TEXTURE_FWD_PASS);
}

extern "C" __global__ void texture_bwd_cube_nearest(TEXTURE_BWD_ARGS);
extern "C" __global__ TEXTURE_BWD_BOUNDS void texture_bwd_cube_nearest(TEXTURE_BWD_ARGS)
{
    texture_bwd_impl<true, kNearest>(TEXTURE_BWD_PASS);
}

extern "C" __global__ void texture_fwd_cube_linear(TEXTURE_FWD_ARGS)
{
    texture_fwd_impl<true, kLinear>(TEXTURE_FWD_PASS);
}

extern "C" __global__ void texture_bwd_cube_linear(TEXTURE_BWD_ARGS);
extern "C" __global__ TEXTURE_BWD_BOUNDS void texture_bwd_cube_linear(TEXTURE_BWD_ARGS)
{
    texture_bwd_impl<true, kLinear>(TEXTURE_BWD_PASS);
}

extern "C" __global__ void texture_fwd_cube_mipnearest(TEXTURE_FWD_ARGS)
{
    texture_fwd_impl<true, kMipNearest>(TEXTURE_FWD_PASS);
}

extern "C" __global__ void texture_bwd_cube_mipnearest(TEXTURE_BWD_ARGS);
extern "C" __global__ TEXTURE_BWD_BOUNDS void texture_bwd_cube_mipnearest(TEXTURE_BWD_ARGS)
{
    texture_bwd_impl<true, kMipNearest>(TEXTURE_BWD_PASS);
}

extern "C" __global__ void texture_fwd_cube_miplinear(TEXTURE_FWD_ARGS)
{
    texture_fwd_impl<true, kMipLinear>(TEXTURE_FWD_PASS);
}

extern "C" __global__ void texture_bwd_cube_miplinear(TEXTURE_BWD_ARGS);
extern "C" __global__ TEXTURE_BWD_BOUNDS void texture_bwd_cube_miplinear(TEXTURE_BWD_ARGS)
{
    texture_bwd_impl<true, kMipLinear>(TEXTURE_BWD_PASS);
}

// Deterministic mode, last pass: one thread per texel channel of the flat gradient turns the
// fixed-point sum into a float (NaN / +-inf where a contribution was non-finite, as float
// additions would give).
extern "C" __global__ void texture_grad_finish(const long long* __restrict__ acc,
                                               const unsigned* __restrict__ max_bits,
                                               const int* __restrict__ flags,
                                               float* __restrict__ grad, int num_texels,
                                               int channels, int count_log2)
{
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)num_texels * channels)
        return;
    const unsigned m = max_bits[i];
    float r = 0.0f;
    if (m >= 0x7f800000u) {
        const int f = flags[i];
        r = ((f & 1) || (f & 6) == 6) ? quiet_nan() : ((f & 2) ? bits_to_float(0x7f800000u) : neg_inf());
    } else if (m != 0u) {
        r = (float)((double)acc[i] * pow2(-fixed_exponent(m, count_log2)));
    }
    grad[i] = r;
}
