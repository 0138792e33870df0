// texture_mip backward: the gradient of the base texture from those of the mip levels, float32
// (layout and filter in texture_mip.cuh; the construction is in texture_mip_forward.cu).
//
//   mip_up          one step of the backward pass, as a gather (no atomics): for each texel i of
//                   level k, out[i] = raw[i] + sum over the (at most 2 x 2) texels j of level k+1
//                   whose footprint covers i of w(j, i) * total[j], where total is level k+1's
//                   full gradient (its own plus everything from above).
//   mip_up_chain    several steps at once, when every step from level j up to level j+s halves
//                   even sides: then texel i has exactly one parent per level (i >> t) with
//                   weight 1/4 per level, and
//                   out[i] = raw_j[i] + (raw_{j+1} + (raw_{j+2} + ... + total_{j+s} / 4 ...) / 4) / 4
//                   in that nesting (the reference's: total_t = raw_t + total_{t+1} / 4, exact
//                   scalings by powers of two), one thread per texel of level j.
#include "texture_mip.cuh"

namespace {

using namespace diffrast;

// Parents of texel i of a level with side n in the next level (side max(n / 2, 1)), and their
// weights w(j, i) (the forward filter's weight of input i in output j).
struct AxisUp {
    int count;    // 1 or 2
    int idx[2];
    float w[2];
};

__device__ __forceinline__ AxisUp axis_up(int i, int n)
{
    AxisUp A;
    if (n == 1) {
        A.count = 1;
        A.idx[0] = A.idx[1] = 0;
        A.w[0] = 1.0f;
        A.w[1] = 0.0f;
        return A;
    }
    if ((n & 1) == 0) {
        A.count = 1;
        A.idx[0] = A.idx[1] = i >> 1;
        A.w[0] = 0.5f;
        A.w[1] = 0.0f;
        return A;
    }
    const long long m = n >> 1;
    const long long lo = (long long)i * m, hi = lo + m;  // input texel, in units of 1/m texel
    const long long j0 = lo / n, j1 = (hi - 1) / n;
    A.count = j1 > j0 ? 2 : 1;
#pragma unroll
    for (int k = 0; k < 2; ++k) {
        const long long j = j0 + k;
        const long long overlap = lmax(lmin(hi, (j + 1) * n) - lmax(lo, j * n), 0);
        A.idx[k] = (int)lmin(j, m - 1);
        A.w[k] = (float)overlap / (float)n;
    }
    return A;
}

}  // namespace

// mip_up, one backward step: the full gradient of level k (own gradient from `raw` for k >= 1, plus
// what reaches it from level k+1's full gradient, read from `raw` when level k+1 is the top,
// else from `totals`), written to `totals` (k >= 1) or `out` (k = 0: the base texture's share,
// added to what `out` holds with `add_to_out`: the base texture's own gradient).
__device__ __forceinline__ void mip_up_impl(const MipBackwardParams& kp)
{
    const float* __restrict__ raw = kp.raw;
    float* __restrict__ totals = kp.totals;
    float* __restrict__ out = kp.out;
    const int images = kp.images, H = kp.height, W = kp.width, C = kp.channels, k = kp.level;
    const bool top_is_raw = kp.top_is_raw;
    int h, w;
    long long off;
    level_geometry(H, W, images, C, k, h, w, off);
    const long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= (long long)images * h * w)
        return;
    const long long off1 = k == 0 ? 0 : off + level_floats(images, h, w, C);
    const float* __restrict__ total = (top_is_raw ? raw : totals) + off1;
    float* __restrict__ dst = k == 0 ? out : totals + off;
    const int x = (int)(t % w);
    const long long r = t / w;
    const int y = (int)(r % h);
    const long long img = r / h;
    const int h1 = imax(h >> 1, 1), w1 = imax(w >> 1, 1);
    const AxisUp X = axis_up(x, w), Y = axis_up(y, h);
    for (int c = 0; c < C; ++c) {
        // Height axis first, then width (the reverse of the forward pass).
        float acc = 0.0f;
        for (int kx = 0; kx < X.count; ++kx) {
            float col = 0.0f;
            for (int ky = 0; ky < Y.count; ++ky) {
                const float v = total[((img * h1 + Y.idx[ky]) * w1 + X.idx[kx]) * C + c];
                col = __fadd_rn(col, __fmul_rn(v, Y.w[ky]));
            }
            acc = __fadd_rn(acc, __fmul_rn(col, X.w[kx]));
        }
        dst[t * C + c] = k > 0 ? __fadd_rn(raw[off + t * C + c], acc)
                               : kp.add_to_out ? __fadd_rn(dst[t * C + c], acc) : acc;
    }
}

// mip_up_chain, `steps` backward steps at once, from the full gradient of level j+steps (in `raw` if it is the
// top level, else in `totals`) down to level j, every step a plain 2 x 2 mean (the sides of
// levels j .. j+steps-1 are even); written as in mip_up.
__device__ __forceinline__ void mip_up_chain_impl(const MipBackwardParams& kp)
{
    const float* __restrict__ raw = kp.raw;
    float* __restrict__ totals = kp.totals;
    float* __restrict__ out = kp.out;
    const int images = kp.images, H = kp.height, W = kp.width, C = kp.channels, j = kp.level;
    const int steps = kp.steps;
    const bool top_is_raw = kp.top_is_raw;
    int h, w;
    long long off;
    level_geometry(H, W, images, C, j, h, w, off);
    const long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= (long long)images * h * w)
        return;
    const int x = (int)(t % w);
    const long long r = t / w;
    const int y = (int)(r % h);
    const long long img = r / h;
    // Offsets of levels j+1 .. j+steps (each halves both even sides of the one before).
    const long long off_next = j == 0 ? 0 : off + level_floats(images, h, w, C);
    long long off_top = off_next;
    for (int s = 1; s < steps; ++s)
        off_top += level_floats(images, h >> s, w >> s, C);
    const float* __restrict__ top = (top_is_raw ? raw : totals) + off_top;
    float* __restrict__ dst = j == 0 ? out : totals + off;
    const int hs = h >> steps, ws = w >> steps;
    const long long top_index = (img * hs + (y >> steps)) * ws + (x >> steps);
    for (int c = 0; c < C; ++c) {
        float acc = top[top_index * C + c];
        long long lo = off_top;
        for (int s = steps - 1; s >= 1; --s) {
            lo -= level_floats(images, h >> s, w >> s, C);  // offset of level j+s
            const int hl = h >> s, wl = w >> s;
            const long long idx = (img * hl + (y >> s)) * wl + (x >> s);
            acc = __fadd_rn(raw[lo + idx * C + c], __fmul_rn(acc, 0.25f));
        }
        acc = __fmul_rn(acc, 0.25f);
        dst[t * C + c] = j > 0 ? __fadd_rn(raw[off + t * C + c], acc)
                               : kp.add_to_out ? __fadd_rn(dst[t * C + c], acc) : acc;
    }
}
