// texture forward: sampling of 2D textures and cube maps, all filter and boundary modes, with
// mipmaps, float32. The backward pass is in texture_backward.cu, mip pyramid construction in
// texture_mip_forward.cu. Where a sample reads is in texture_address.cuh (levels, taps, 2D
// boundary modes, cube faces and seams), its level of detail and levels in texture_lod.cuh,
// both put together per sample in texture_sample.cuh.
//
// Layouts (see texture_address.cuh for the texture's): texture batch index of pixel p is
// p / pixels_per_image when tex_batched, else 0. uv [N, 2] (2D) or [N, 3] (cube), uv_da [N, 4]
// or [N, 6], mip_level_bias [N], out [N, C]. One thread per output pixel, channels looped inside.
#include "texture_sample.cuh"

namespace {

using namespace diffrast;

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

}  // namespace

// ---- kernels ----

// Kernel arguments. `config` packs the small settings: bits 0-1 boundary mode (0 wrap, 1 clamp,
// 2 zero, 3 cube), 2 texture batched (tex_batch > 1 with one texture per image), 3 uv_da given,
// 4 mip_level_bias given (the backward kernels' config adds bits 5-11, see texture_backward.cu).
#define TEXTURE_FWD_ARGS                                                                      \
    const float* __restrict__ tex, const float* __restrict__ mip, const float* __restrict__ uv, \
        const float* __restrict__ uv_da, const float* __restrict__ bias, float* __restrict__ out, \
        int num_pixels, int pixels_per_image, int tex_batch, int height, int width,              \
        int channels, int num_levels, int config
#define TEXTURE_FWD_PASS                                                                      \
    tex, mip, uv, uv_da, bias, out, num_pixels, pixels_per_image, (config >> 2) & 1, tex_batch,  \
        height, width, channels, num_levels, config & 3, (config >> 3) & 1, (config >> 4) & 1

// One kernel per (2D / cube, filter) pair.

extern "C" __global__ void texture_fwd_2d_nearest(TEXTURE_FWD_ARGS)
{
    texture_fwd_impl<false, kNearest>(TEXTURE_FWD_PASS);
}

extern "C" __global__ void texture_fwd_2d_linear(TEXTURE_FWD_ARGS)
{
    texture_fwd_impl<false, kLinear>(TEXTURE_FWD_PASS);
}

extern "C" __global__ void texture_fwd_2d_mipnearest(TEXTURE_FWD_ARGS)
{
    texture_fwd_impl<false, kMipNearest>(TEXTURE_FWD_PASS);
}

extern "C" __global__ void texture_fwd_2d_miplinear(TEXTURE_FWD_ARGS)
{
    texture_fwd_impl<false, kMipLinear>(TEXTURE_FWD_PASS);
}

extern "C" __global__ void texture_fwd_cube_nearest(TEXTURE_FWD_ARGS)
{
    texture_fwd_impl<true, kNearest>(TEXTURE_FWD_PASS);
}

extern "C" __global__ void texture_fwd_cube_linear(TEXTURE_FWD_ARGS)
{
    texture_fwd_impl<true, kLinear>(TEXTURE_FWD_PASS);
}

extern "C" __global__ void texture_fwd_cube_mipnearest(TEXTURE_FWD_ARGS)
{
    texture_fwd_impl<true, kMipNearest>(TEXTURE_FWD_PASS);
}

extern "C" __global__ void texture_fwd_cube_miplinear(TEXTURE_FWD_ARGS)
{
    texture_fwd_impl<true, kMipLinear>(TEXTURE_FWD_PASS);
}
