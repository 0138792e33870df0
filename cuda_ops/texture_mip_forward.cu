// texture_mip forward: mip pyramid construction, float32 (layout and filter in texture_mip.cuh;
// the backward pass is in texture_mip_backward.cu).
//
//   mip_down        builds `depth` (1 to 4) consecutive levels from level k in one launch. depth 1:
//                   one thread per texel of level k+1. depth 2 to 4 (the host asks for them only
//                   when level k+1, for depth 3 also level k+2, for depth 4 also level k+3, has
//                   even sides, so that each further step is the plain 2x2 mean and 2x2 groups
//                   never straddle a level's edge): each lane computes a 2x2 block of level k+1
//                   and its mean, a texel of level k+2; a warp holds an 8 x 4 patch of level k+2
//                   (lane = 8 row + column), and levels k+3 and k+4 are means of 2x2 lanes and of
//                   2x2 of those, combined with warp shuffles (no shared memory, no barrier).
#include "texture_mip.cuh"

namespace {

using namespace diffrast;

// The downsampling filter along one axis for output texel j of an input side n.
struct AxisDown {
    int kind;     // 0: copy (n == 1), 1: mean of 2 (n even), 2: weighted sum of 4 (n odd)
    int idx[4];   // input texels
    float w[4];   // weights (kind 2)
};

__device__ __forceinline__ AxisDown axis_down(int j, int n)
{
    AxisDown A;
    A.idx[0] = A.idx[1] = A.idx[2] = A.idx[3] = 0;
    A.w[0] = A.w[1] = A.w[2] = A.w[3] = 0.0f;
    if (n == 1) {
        A.kind = 0;
        return A;
    }
    if ((n & 1) == 0) {
        A.kind = 1;
        A.idx[0] = 2 * j;
        A.idx[1] = 2 * j + 1;
        return A;
    }
    A.kind = 2;
    const long long m = n >> 1;
    const long long lo = (long long)j * n, hi = lo + n;  // footprint, in units of 1/m texel
    const long long first = lo / m;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
        const long long i = first + k;
        const long long overlap = lmax(lmin(hi, (i + 1) * m) - lmax(lo, i * m), 0);
        A.w[k] = (float)overlap / (float)n;
        A.idx[k] = (int)lmin(i, (long long)n - 1);
    }
    return A;
}

__device__ __forceinline__ int axis_taps(const AxisDown& A) { return A.kind == 0 ? 1 : (A.kind == 1 ? 2 : 4); }

__device__ __forceinline__ float axis_reduce(const AxisDown& A, const float v[4])
{
    if (A.kind == 0)
        return v[0];
    if (A.kind == 1)
        return __fmul_rn(__fadd_rn(v[0], v[1]), 0.5f);
    float s = __fmul_rn(v[0], A.w[0]);
    s = __fadd_rn(s, __fmul_rn(v[1], A.w[1]));
    s = __fadd_rn(s, __fmul_rn(v[2], A.w[2]));
    s = __fadd_rn(s, __fmul_rn(v[3], A.w[3]));
    return s;
}

// Channel c of texel (y, x) of the next level, from image `img` of the h0 x w0 source level.
__device__ __forceinline__ float down_texel(const float* __restrict__ src, long long img, int h0,
                                            int w0, int C, int c, const AxisDown& X,
                                            const AxisDown& Y)
{
    const int nx = axis_taps(X), ny = axis_taps(Y);
    float rows[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
    for (int ky = 0; ky < 4; ++ky) {
        if (ky < ny) {
            const long long row = (img * h0 + Y.idx[ky]) * (long long)w0;
            float v[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
            for (int kx = 0; kx < 4; ++kx)
                if (kx < nx)
                    v[kx] = src[(row + X.idx[kx]) * C + c];
            rows[ky] = axis_reduce(X, v);
        }
    }
    return axis_reduce(Y, rows);
}

// Channel c of the lane's 2 x 2 texels q of level k+1 (order (0,0), (1,0), (0,1), (1,1)):
// writes them, their mean (level k+2: width axis, then height axis, as the reference) and, with
// warp shuffles, the means of 2 x 2 lanes (level k+3) and of 2 x 2 of those (level k+4). Every
// lane of the warp calls it (the shuffles); `q` is not read where the lane is not valid.
__device__ __forceinline__ void store_patch_channel(
    float* __restrict__ d1, float* __restrict__ d2, float* __restrict__ d3,
    float* __restrict__ d4, long long img, int h1, int w1, int h2, int w2, int h3, int w3,
    int h4, int w4, int x, int y, bool valid, bool write3, bool write4, int depth, int C, int c,
    const float q[4])
{
    float v2 = 0.0f;
    if (valid) {
        const long long row0 = (img * h1 + 2 * y) * w1 + 2 * x, row1 = row0 + w1;
        d1[row0 * C + c] = q[0];
        d1[(row0 + 1) * C + c] = q[1];
        d1[row1 * C + c] = q[2];
        d1[(row1 + 1) * C + c] = q[3];
        v2 = __fmul_rn(__fadd_rn(__fmul_rn(__fadd_rn(q[0], q[1]), 0.5f),
                                 __fmul_rn(__fadd_rn(q[2], q[3]), 0.5f)), 0.5f);
        d2[((img * h2 + y) * w2 + x) * C + c] = v2;
    }
    if (depth >= 3) {
        const float a3 = __fmul_rn(__fadd_rn(v2, __shfl_down_sync(kFullWarp, v2, 1)), 0.5f);
        const float v3 = __fmul_rn(__fadd_rn(a3, __shfl_down_sync(kFullWarp, a3, 8)), 0.5f);
        if (write3)
            d3[((img * h3 + (y >> 1)) * w3 + (x >> 1)) * C + c] = v3;
        if (depth >= 4) {
            const float a4 = __fmul_rn(__fadd_rn(v3, __shfl_down_sync(kFullWarp, v3, 2)), 0.5f);
            const float v4 = __fmul_rn(__fadd_rn(a4, __shfl_down_sync(kFullWarp, a4, 16)), 0.5f);
            if (write4)
                d4[((img * h4 + (y >> 2)) * w4 + (x >> 2)) * C + c] = v4;
        }
    }
}

// The levels k+1 .. k+depth of one lane's patch (see mip_down_impl) where level k has even
// sides, CC <= 4 channels, rows of a multiple of 4 floats and a 16-byte aligned base: the lane's
// 4 x 4 texels of level k are read as 4 CC float4s (a row's 4 texels of CC channels are CC
// float4s), all channels at once, instead of 16 CC scalar loads spread channel by channel (whose
// sectors left L1 between channels: the first launch of a 2048^2 RGB pyramid ran at 61% of the
// memory bandwidth). The same operations in the same order as the scalar path.
template <int CC>
__device__ __forceinline__ void mip_down_patch_vec(
    const float* __restrict__ src, float* __restrict__ d1, float* __restrict__ d2,
    float* __restrict__ d3, float* __restrict__ d4, long long img, int h0, int w0, int h1,
    int w1, int h2, int w2, int h3, int w3, int h4, int w4, int x, int y, bool valid,
    bool write3, bool write4, int depth)
{
    const int xs = 2 * x, ys = 2 * y;  // the lane's first texel of level k+1
    float q[4][CC];  // its 2 x 2 texels of level k+1, (0,0), (1,0), (0,1), (1,1), per channel
    if (valid) {
#pragma unroll
        for (int qy = 0; qy < 2; ++qy) {
            float t[2][4 * CC];  // two rows of level k: texels 2 xs .. 2 xs + 3, channels inner
#pragma unroll
            for (int dy = 0; dy < 2; ++dy) {
                const long long base = ((img * h0 + 2 * ys + 2 * qy + dy) * w0 + 2 * xs) * CC;
#pragma unroll
                for (int j = 0; j < CC; ++j) {
                    const float4 f = load4(src + base, j);
                    t[dy][4 * j] = f.x;
                    t[dy][4 * j + 1] = f.y;
                    t[dy][4 * j + 2] = f.z;
                    t[dy][4 * j + 3] = f.w;
                }
            }
#pragma unroll
            for (int qx = 0; qx < 2; ++qx)
#pragma unroll
                for (int c = 0; c < CC; ++c) {
                    const int a = 2 * qx * CC + c, b = a + CC;
                    const float r0 = __fmul_rn(__fadd_rn(t[0][a], t[0][b]), 0.5f);
                    const float r1 = __fmul_rn(__fadd_rn(t[1][a], t[1][b]), 0.5f);
                    q[2 * qy + qx][c] = __fmul_rn(__fadd_rn(r0, r1), 0.5f);
                }
        }
    }
#pragma unroll
    for (int c = 0; c < CC; ++c) {
        const float qc[4] = {q[0][c], q[1][c], q[2][c], q[3][c]};
        store_patch_channel(d1, d2, d3, d4, img, h1, w1, h2, w2, h3, w3, h4, w4, x, y, valid,
                            write3, write4, depth, CC, c, qc);
    }
}

}  // namespace

// mip_down: levels k+1 .. k+depth from level k (`tex` for k = 0, else in `flat`), written to
// `flat`.
// depth 1: one thread per texel of level k+1. depth 2 to 4 (level k+1 has even sides; depth 3
// also level k+2, depth 4 also level k+3): each lane computes a 2 x 2 block of level k+1 and its
// mean, one texel of level k+2; a warp holds an 8 x 4 patch of level k+2 (lane = 8 row +
// column), and levels k+3 and k+4 are means of 2 x 2 lanes and of 2 x 2 of those, combined with
// warp shuffles.
__device__ __forceinline__ void mip_down_impl(const MipForwardParams& kp)
{
    const float* __restrict__ tex = kp.tex;
    float* __restrict__ flat = kp.flat;
    const int images = kp.images, H = kp.height, W = kp.width, C = kp.channels;
    const int k = kp.level, depth = kp.depth;
    int h0, w0;
    long long off0;
    level_geometry(H, W, images, C, k, h0, w0, off0);
    const float* __restrict__ src = k == 0 ? tex : flat + off0;
    float* __restrict__ d1 = flat + (k == 0 ? 0 : off0 + level_floats(images, h0, w0, C));
    const int h1 = imax(h0 >> 1, 1), w1 = imax(w0 >> 1, 1);
    const long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (depth <= 1) {
        if (t >= (long long)images * h1 * w1)
            return;
        const int x = (int)(t % w1);
        const long long r = t / w1;
        const int y = (int)(r % h1);
        const long long img = r / h1;
        const AxisDown X = axis_down(x, w0), Y = axis_down(y, h0);
        for (int c = 0; c < C; ++c)
            d1[t * C + c] = down_texel(src, img, h0, w0, C, c, X, Y);
        return;
    }
    const int h2 = h1 >> 1, w2 = w1 >> 1, h3 = h2 >> 1, w3 = w2 >> 1, h4 = h3 >> 1, w4 = w3 >> 1;
    float* __restrict__ d2 = d1 + level_floats(images, h1, w1, C);
    float* __restrict__ d3 = d2 + level_floats(images, h2, w2, C);
    float* __restrict__ d4 = d3 + level_floats(images, h3, w3, C);
    // Warp patches of 8 x 4 texels of level k+2. The early return is uniform per warp.
    const int pw = (w2 + 7) >> 3, ph = (h2 + 3) >> 2;
    const long long warp = t >> 5;
    if (warp >= (long long)images * ph * pw)
        return;
    const int lane = lane_id(), lx = lane & 7, ly = lane >> 3;
    const int px = (int)(warp % pw);
    const long long r = warp / pw;
    const int py = (int)(r % ph);
    const long long img = r / ph;
    const int x = px * 8 + lx, y = py * 4 + ly;  // texel of level k+2
    const bool valid = x < w2 && y < h2;
    const int xs = 2 * x, ys = 2 * y;  // its first texel of level k+1
    const bool even0 = (h0 & 1) == 0 && (w0 & 1) == 0;
    const bool write3 = valid && (lx & 1) == 0 && (ly & 1) == 0;
    const bool write4 = valid && (lx & 3) == 0 && ly == 0;
    // (uniform across the launch)
    if (even0 && C <= 4 && ((w0 * C) & 3) == 0 &&
        (reinterpret_cast<unsigned long long>(src) & 15ull) == 0) {
        switch (C) {
        case 1:
            mip_down_patch_vec<1>(src, d1, d2, d3, d4, img, h0, w0, h1, w1, h2, w2, h3, w3, h4,
                                  w4, x, y, valid, write3, write4, depth);
            return;
        case 2:
            mip_down_patch_vec<2>(src, d1, d2, d3, d4, img, h0, w0, h1, w1, h2, w2, h3, w3, h4,
                                  w4, x, y, valid, write3, write4, depth);
            return;
        case 3:
            mip_down_patch_vec<3>(src, d1, d2, d3, d4, img, h0, w0, h1, w1, h2, w2, h3, w3, h4,
                                  w4, x, y, valid, write3, write4, depth);
            return;
        default:
            mip_down_patch_vec<4>(src, d1, d2, d3, d4, img, h0, w0, h1, w1, h2, w2, h3, w3, h4,
                                  w4, x, y, valid, write3, write4, depth);
            return;
        }
    }
    for (int c = 0; c < C; ++c) {
        // The 2 x 2 texels of level k+1, in the order (0,0), (1,0), (0,1), (1,1).
        float q[4] = {0.0f, 0.0f, 0.0f, 0.0f};  // (unread where the lane is not valid)
        if (valid) {
            if (even0) {
                // Plain 2 x 2 means of level k (the general filter's even case, same rounding).
                const long long base = ((img * h0 + 2 * ys) * w0 + 2 * xs) * C + c;
                const long long row = (long long)w0 * C;
#pragma unroll
                for (int i = 0; i < 4; ++i) {
                    const long long o = base + (i >> 1) * 2 * row + (i & 1) * 2 * C;
                    const float r0 = __fmul_rn(__fadd_rn(src[o], src[o + C]), 0.5f);
                    const float r1 = __fmul_rn(__fadd_rn(src[o + row], src[o + row + C]), 0.5f);
                    q[i] = __fmul_rn(__fadd_rn(r0, r1), 0.5f);
                }
            } else {
#pragma unroll 1
                for (int i = 0; i < 4; ++i) {
                    const AxisDown X = axis_down(xs + (i & 1), w0), Y = axis_down(ys + (i >> 1), h0);
                    q[i] = down_texel(src, img, h0, w0, C, c, X, Y);
                }
            }
        }
        store_patch_channel(d1, d2, d3, d4, img, h1, w1, h2, w2, h3, w3, h4, w4, x, y, valid,
                            write3, write4, depth, C, c, q);
    }
}
