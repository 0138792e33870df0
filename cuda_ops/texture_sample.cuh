// The footprint of one texture sample, shared by the forward and backward kernels
// (cuda_ops/texture_forward.cu, cuda_ops/texture_backward.cu): its coordinates, level of detail
// and levels (locate), and its taps on one level (sample_taps).
#pragma once

#include "texture_lod.cuh"

namespace diffrast {

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

}  // namespace diffrast
