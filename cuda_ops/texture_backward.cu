// texture backward: gradients of texture sampling (texture_forward.cu) to the texture (all
// levels), uv, uv_da and mip_level_bias, float32. Where a sample reads is in
// texture_address.cuh, its level of detail in texture_lod.cuh (with the backward of each step),
// how texture gradients are summed (float atomics, or the deterministic fixed-point passes) in
// texture_accumulate.cuh.
//
// Gradients to the texture go to one flat buffer `grad_tex`: level 0's texels, then the mip
// levels' in the same layout as `mip` (see texture_address.cuh). Gradients to uv, uv_da and
// mip_level_bias are per pixel (written by the pixel's thread, no accumulation). grad_out [N, C]
// is read through a pixel and a channel stride. One thread per output pixel, channels looped
// inside.
#include "texture_sample.cuh"
#include "texture_accumulate.cuh"

namespace {

using namespace diffrast;

// The kernel of one (2D / cube, filter) pair (entry points texture_bwd_*, generated from
// cuda_ops/kernels.py); kp.mode is the pass (kFast, kDetScan, kDetSum).
template <bool CUBE, int FILTER>
__device__ __forceinline__ void texture_bwd_impl(const TextureBackwardParams& kp)
{
    constexpr int kLevels = FILTER == kMipLinear ? 2 : 1;
    constexpr int kTaps = FILTER == kNearest ? 1 : 4;
    // No early return: every lane of the warp takes part in the warp-level combination of
    // texture gradients (lanes past the end contribute nothing).
    const long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const bool lane_ok = p < kp.num_pixels;
    const int C = kp.channels;
    const int boundary = kp.boundary, mode = kp.mode;
    const bool want_tex0 = kp.want_tex0, want_mip = kp.want_mip, want_uv = kp.want_uv;
    const bool want_da = kp.want_da, want_bias = kp.want_bias, has_da = kp.has_da;
    const Tex t = make_tex(kp.tex, kp.mip, kp.tex_batch, CUBE, kp.height, kp.width, C,
                           kp.num_levels);
    const long long tb = lane_ok && kp.tex_batched ? p / kp.pixels_per_image : 0;
    Sample S;
    if (lane_ok) {
        S = locate<CUBE, FILTER>(t, p, kp.uv, kp.uv_da, kp.bias, has_da, kp.has_bias);
    } else {
        S.status = kNan;
        S.u = S.v = S.lod = 0.0f;
        S.cc = cube_coord(1.0f, 0.0f, 0.0f);
        S.pick.l0 = S.pick.l1 = 0;
        S.pick.f = 0.0f;
    }
    // The loss gradient of the pixel, read in place through its pixel and channel strides
    // (contiguous: C, 1; the expanded gradient of a sum: 0, 0).
    const float* __restrict__ g = kp.grad_out + (lane_ok ? p : 0) * kp.g_sp;
    GradSink sink;
    sink.mode = mode;
    sink.grad = kp.grad_tex;
    sink.stage_keys = kp.stage_keys;
    sink.stage_vals = kp.stage_vals;
    sink.max_bits = kp.max_bits;
    sink.flags = kp.flags;
    sink.acc = kp.acc;
    sink.count_log2 = kp.count_log2;

    // The sample's levels (up to two) and their weights; nl = number of levels that receive
    // gradients. A 2D sample at a non-finite coordinate (at every level alike) has none, and
    // sends the reference's NaN into the level of detail (mip-linear).
    const long long stage0 = (p >> 5) * (kLevels * kTaps);  // this warp's first stage slot
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
#pragma unroll
        for (int k = 0; k < kTaps; ++k) {
            tw[k] = want_t ? tap_grad_weight(T, k, lam[li]) : 0.0f;
            key[k] = tw[k] != 0.0f ? L.key0 + T.texel[k] : -1;
        }
        if (!want_texgrad && !want_geo)
            continue;
        float dfx = 0.0f, dfy = 0.0f, dwl = 0.0f;
        const float gx = 1.0f - T.fx, gy = 1.0f - T.fy;
        // Channel c's share of the gradients of the sample's position and level weight.
        auto add_geometry = [&](int c, float gc) {
            float v[4];
            tap_values(L.data, T, C, c, v);
            dfx += gc * (gy * (v[1] - v[0]) + T.fy * (v[3] - v[2]));
            dfy += gc * (gx * (v[2] - v[0]) + T.fx * (v[3] - v[1]));
            dwl += gc * bilerp(T, v);
        };
        if (mode == kFast && C <= kVectorChannels) {
            // Up to four channels, held in registers: a run of lanes on one texel adds its sums
            // of all channels with one vector atomic (atomic_add_channels) rather than one
            // atomic per channel. The same additions as the loop below, in the same order.
            float gcs[kVectorChannels];
#pragma unroll
            for (int c = 0; c < kVectorChannels; ++c) {
                gcs[c] = c < C && lane_ok ? g[c * kp.g_sc] : 0.0f;
                if (c < C && want_geo && active)
                    add_geometry(c, gcs[c]);
            }
            if (want_texgrad) {
#pragma unroll
                for (int k = 0; k < kTaps; ++k) {
                    const long long slot = stage0 + li * kTaps + k;
                    if (warp_uniform(key[k])) {  // (then every lane takes this branch)
#pragma unroll
                        for (int c = 0; c < kVectorChannels; ++c)
                            if (c < C)
                                emit(sink, key[k], C, c, key[k] >= 0 ? tw[k] * gcs[c] : 0.0f,
                                     true, slot, lane_run());
                        continue;
                    }
                    if (lane_id() == 0)
                        sink.stage_keys[slot] = -1;  // (every slot is written, see emit)
                    const WarpRun run = warp_run(key[k]);
                    float sums[kVectorChannels];
#pragma unroll
                    for (int c = 0; c < kVectorChannels; ++c)
                        sums[c] = c < C ? run_sum(key[k] >= 0 ? tw[k] * gcs[c] : 0.0f, run)
                                        : 0.0f;
                    if (key[k] >= 0 && run.head)
                        atomic_add_channels(sink.grad, key[k], C, sums);
                }
            }
        } else {
            bool uni[kTaps];
            WarpRun run[kTaps];
#pragma unroll
            for (int k = 0; k < kTaps; ++k) {
                uni[k] = want_texgrad ? warp_uniform(key[k]) : false;
                run[k] = want_texgrad && mode == kFast && !uni[k] ? warp_run(key[k]) : lane_run();
            }
            for (int c = 0; c < C; ++c) {
                const float gc = lane_ok ? g[c * kp.g_sc] : 0.0f;
                if (want_geo && active)
                    add_geometry(c, gc);
                if (want_texgrad) {
#pragma unroll
                    for (int k = 0; k < kTaps; ++k)
                        emit(sink, key[k], C, c, key[k] >= 0 ? tw[k] * gc : 0.0f, uni[k],
                             stage0 + li * kTaps + k, run[k]);
                }
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
    if (want_bias && kp.has_bias)
        kp.grad_bias[p] = gl;
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
            lod_cube_backward(kp.uv_da + p * 6, S.cc, t.w, gl, gda, g_sc, g_tc, g_ma);
        if (want_uv) {
            // sc = d.S, tc = d.T, ma = d.N, masked to valid directions.
            const int f = S.cc.face;
#pragma unroll
            for (int i = 0; i < 3; ++i) {
                const float gi = (g_sc * axis_comp(s_axis(f), s_sign(f), i) +
                                  g_tc * axis_comp(t_axis(f), t_sign(f), i)) +
                                 g_ma * axis_comp(n_axis(f), n_sign(f), i);
                kp.grad_uv[p * 3 + i] = S.cc.valid ? gi : 0.0f;
            }
        }
        if (want_da && has_da) {
            for (int i = 0; i < 6; ++i)
                kp.grad_uv_da[p * 6 + i] = gda[i];
        }
    } else {
        if (want_uv) {
            kp.grad_uv[p * 2] = g_s;
            kp.grad_uv[p * 2 + 1] = g_t;
        }
        if (want_da && has_da) {
            if (lod_chain)
                lod_2d_backward(kp.uv_da + p * 4, t.h, t.w, gl, gda);
            for (int i = 0; i < 4; ++i)
                kp.grad_uv_da[p * 4 + i] = gda[i];
        }
    }
}

// Fast mode, after texture_bwd_*: the staged warp-uniform taps, a warp per slot and run of
// kStageRun staged warps (stage_reduce of texture_accumulate.cuh).
__device__ __forceinline__ void texture_grad_stage_reduce_impl(const TextureBackwardParams& kp)
{
    const long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const long long runs = (kp.stage_warps + kStageRun - 1) / kStageRun;
    if (t < runs * kp.stage_slots * kStageRun)  // (whole warps: the bound is a multiple of 32)
        stage_reduce(kp.stage_keys, kp.stage_vals, kp.grad_tex, kp.stage_warps, kp.stage_slots,
                     kp.channels, t);
}

// Deterministic mode, last pass: one thread per texel channel of the flat gradient turns the
// fixed-point sum into a float (NaN / +-inf where a contribution was non-finite, as float
// additions would give).
__device__ __forceinline__ void texture_grad_finish_impl(const TextureBackwardParams& kp)
{
    const long long* __restrict__ acc = kp.acc;
    const unsigned* __restrict__ max_bits = kp.max_bits;
    const int* __restrict__ flags = kp.flags;
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= kp.num_texels * kp.channels)
        return;
    const unsigned m = max_bits[i];
    float r = 0.0f;
    if (m >= 0x7f800000u) {
        const int f = flags[i];
        r = ((f & 1) || (f & 6) == 6) ? quiet_nan() : ((f & 2) ? bits_to_float(0x7f800000u) : neg_inf());
    } else if (m != 0u) {
        r = (float)((double)acc[i] * pow2(-fixed_exponent(m, kp.count_log2)));
    }
    kp.grad_tex[i] = r;
}

}  // namespace
