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

// The kernel of one (2D / cube, filter) pair (entry points texture_fwd_*, generated from
// cuda_ops/kernels.py).
template <bool CUBE, int FILTER>
__device__ __forceinline__ void texture_fwd_impl(const TextureForwardParams& kp)
{
    const long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= kp.num_pixels)
        return;
    const int C = kp.channels;
    const int boundary = kp.boundary;
    float* __restrict__ o = kp.out + p * C;
    const Tex t = make_tex(kp.tex, kp.mip, kp.tex_batch, CUBE, kp.height, kp.width, C,
                           kp.num_levels);
    const long long tb = kp.tex_batched ? p / kp.pixels_per_image : 0;
    const Sample S = locate<CUBE, FILTER>(t, p, kp.uv, kp.uv_da, kp.bias, kp.has_da, kp.has_bias);
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
