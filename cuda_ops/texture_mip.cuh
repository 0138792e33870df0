// The mip pyramid's layout and filter, shared by its construction (texture_mip_forward.cu) and
// its backward pass (texture_mip_backward.cu), float32.
//
// The filter is diffrast/reference/mipmap.py's: each level halves the sides of the previous one
// (n -> max(n / 2, 1)); along one axis, output texel j of m takes the area-weighted average of the
// input texels under its footprint [j n/m, (j+1) n/m):
//   n == 1:     the texel itself;
//   n = 2m:     (x[2j] + x[2j+1]) / 2;
//   n = 2m + 1: sum over the (at most 4) input texels i from floor(j n / m) of
//               x[i] * |[i, i+1) ∩ [j n/m, (j+1) n/m)| / (n/m), an overlap computed exactly in
//               units of 1/m texel;
// the 2D filter applies the width axis, then the height axis, with the reference's rounding
// (each axis' sum in the reference's order, explicitly rounded, no FMA contraction). Cube maps
// are filtered face by face: an "image" below is one face of one texture (images = 6 Bt).
//
// Layout: a level is [images, h, w, C]; the levels 1..L are stored one after the other in one
// flat buffer (the kernels compute each level's size and offset from the base size). Every output
// texel is written by exactly one thread with a fixed order of operations, so the results are
// deterministic. All offsets are 64-bit.
#pragma once

#include "common.cuh"

namespace diffrast {

// Size (h, w) of level k of an H x W texture and the offset (floats) of level k >= 1 in the flat
// buffer of levels 1.. (for k = 0: H x W and 0).
__device__ __forceinline__ void level_geometry(int H, int W, int images, int C, int k, int& h,
                                               int& w, long long& off)
{
    h = H;
    w = W;
    off = 0;
    for (int j = 1; j <= k; ++j) {
        if (j > 1)
            off += (long long)images * h * w * C;
        h = imax(h >> 1, 1);
        w = imax(w >> 1, 1);
    }
}

__device__ __forceinline__ long long level_floats(int images, int h, int w, int C)
{
    return (long long)images * h * w * C;
}

}  // namespace diffrast
