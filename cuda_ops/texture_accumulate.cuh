// Accumulation of texture gradients: per-pixel contributions added into the flat gradient of
// all texture levels (see texture_address.cuh for its layout and texel keys), for
// cuda_ops/texture_backward.cu.
//
// Each pixel contributes weight * grad_out[c] to channel c of each tap's texel (zero
// contributions are skipped). Before the atomics, every tap checks whether all 32 lanes of the
// warp hit the same texel (typical of background pixels, whose uv are all 0, and of strong
// magnification); if so the warp's contributions are summed with shuffles. The backward kernels
// run in one of three modes:
//   kFast (default): float atomicAdd into grad_tex. The order of the additions varies from run
//     to run, so the last bits of the result may too. A warp-uniform tap is not added at once:
//     lane 0 stages the warp's sum in the tap's slot of stage_keys / stage_vals (every slot is
//     written: key -1 where the tap is not uniform), and texture_grad_stage_reduce then adds
//     runs of consecutive warps with the same key with one atomic each. Thousands of warps of
//     background pixels that all sample one texel would otherwise serialize on its atomics
//     (measured on an H100, 4 x 1024^2 pixels all at uv = 0: 1.3 ms for the texture backward).
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
#pragma once

#include "accumulate.cuh"
#include "common.cuh"

namespace diffrast {

// The modes above: kFast, kDetScan, kDetSum (TextureGradMode in cuda_ops/params.py).

// Whether every lane of the warp holds the same key. All lanes must call it.
__device__ __forceinline__ bool warp_uniform(long long key)
{
    const long long next = __shfl_down_sync(kFullWarp, key, 1);  // lane 31 reads itself
    return !__any_sync(kFullWarp, next != key);
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
    long long* stage_keys;  // kFast: per warp and tap slot, the key of a warp-uniform tap
    float* stage_vals;      // kFast: its summed contribution per channel
    unsigned* max_bits; // deterministic: per texel channel, the largest |contribution| (bits)
    int* flags;         // deterministic: per texel channel, non-finite contributions (1 NaN,
                        // 2 +inf, 4 -inf)
    long long* acc;     // kDetSum: per texel channel, fixed-point sums
    int count_log2;     // deterministic: 2^count_log2 exceeds the number of contributions
};

// Adds contribution v to channel c of texel `key` (nothing for key < 0, where v must be 0). With
// `uniform` (every lane of the warp holds the same key), the warp's combined contribution is
// added once (kFast: staged in stage slot `slot` of the warp); all lanes must then call this
// together. Otherwise, in kFast, `run` (warp_run of the keys, accumulate.cuh; lane_run() in the
// other modes) groups consecutive lanes on one texel, whose sum its first lane adds: the edge of
// a background, where the lanes past a surface all hit one texel, and magnification.
__device__ __forceinline__ void emit(const GradSink& s, long long key, int C, int c, float v,
                                     bool uniform, long long slot, const WarpRun& run)
{
    const long long i = key * C + c;
    const bool lead = lane_id() == 0;
    if (s.mode == kFast) {
        if (lead && c == 0)
            s.stage_keys[slot] = uniform ? key : -1;
        if (uniform) {
            v = warp_sum_to_lane0(v);
            if (lead)
                s.stage_vals[slot * C + c] = v;
        } else {
            v = run_sum(v, run);
            if (key >= 0 && run.head && v != 0.0f)
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
            m = warp_max_to_lane0(m);
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
            q = warp_sum_to_lane0(q);
            if (lead && q != 0)
                atomic_add_i64(s.acc + i, q);
        } else if (q != 0) {
            atomic_add_i64(s.acc + i, q);
        }
    }
}

// texture_grad_stage_reduce: a warp per stage slot k and run of kStageRun (32) consecutive
// staged warps, lane i taking warp i of the run: each stretch of lanes with equal keys adds its
// sum of each channel with one atomic (warp_run / run_sum). A thread per slot and channel that
// walked the run's warps one after another was bound by the latency of its loop (41 us at
// mid_4x1024 on an H100, a few thousand such threads in flight).
constexpr int kStageRun = 32;

// Thread t of the launch (runs * slots * 32 threads, runs = ceil(warps / kStageRun)).
__device__ __forceinline__ void stage_reduce(const long long* __restrict__ keys,
                                             const float* __restrict__ vals, float* grad,
                                             long long warps, int slots, int C, long long t)
{
    const long long item = t / kStageRun;  // (run, slot), the same in every lane of the warp
    const long long run = item / slots;
    const int k = (int)(item - run * slots);
    const long long w = run * kStageRun + lane_id();
    const long long slot = w * slots + k;
    const long long key = w < warps ? keys[slot] : -1;
    const WarpRun r = warp_run(key);
    for (int c = 0; c < C; ++c) {
        const float sum = run_sum(key >= 0 ? vals[slot * C + c] : 0.0f, r);
        if (key >= 0 && r.head && sum != 0.0f)
            atomicAdd(grad + key * C + c, sum);
    }
}

}  // namespace diffrast
