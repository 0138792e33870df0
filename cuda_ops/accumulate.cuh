// Accumulating per-pixel gradients into per-vertex rows.
//
// Fast mode: float atomicAdd, after a warp-level pre-reduction. Consecutive pixels of an image
// row are consecutive lanes of a warp, and neighbouring pixels usually lie on the same triangle,
// so their contributions go to the same vertex rows. warp_run() groups each maximal run of
// consecutive lanes that hold the same key (the triangle and, where it matters, the image);
// run_sum() adds a value over the run (a Kogge-Stone suffix scan bounded at the run's end) and
// the run's first lane issues one atomicAdd for the whole run. This cuts the number of atomics,
// and the contention on hot vertices, by the typical run length, at the price of a few shuffles.
// Lanes whose pixel contributes nothing use key -1 and take part in the shuffles with zeros;
// runs of key -1 are never summed.
//
// Requirements: every lane of the warp calls these functions (no early return before them, block
// size a multiple of 32), and keys are uniform within a run by construction.
//
// Deterministic mode uses no atomics: the kernels' *_reduce functions give each vertex row one
// warp, whose lanes take the row's entries (in a fixed, sorted order) round-robin and combine
// their partial sums with warp_sum_fixed_order() (common.cuh): the same additions in the same
// order on every run, hence bit-identical results.
#pragma once

#include "common.cuh"

namespace diffrast {

struct WarpRun {
    int lane;    // lane index in the warp
    int end;     // lane index of the last lane of this lane's run
    int reach;   // power of two >= the longest contributing run (uniform across the warp)
    bool head;   // first lane of its run: the one that writes the run's total
};

__device__ __forceinline__ WarpRun warp_run(long long key)
{
    WarpRun r;
    r.lane = lane_id();
    const long long next = __shfl_down_sync(kFullWarp, key, 1);
    const long long prev = __shfl_up_sync(kFullWarp, key, 1);
    const bool tail = r.lane == 31 || next != key;
    r.head = r.lane == 0 || prev != key;
    const unsigned tails = __ballot_sync(kFullWarp, tail);
    r.end = __ffs(tails & (kFullWarp << r.lane)) - 1;
    // Only the heads of contributing runs need their whole run summed; runs of key -1 don't.
    const int needed = (key >= 0 && r.head) ? r.end - r.lane + 1 : 1;
    r.reach = 1;
    while (r.reach < 32 && __any_sync(kFullWarp, needed > r.reach))
        r.reach <<= 1;
    return r;
}

// The run of a lane alone (no shuffles in run_sum): for callers that skip warp_run.
__device__ __forceinline__ WarpRun lane_run()
{
    WarpRun r;
    r.lane = r.end = lane_id();
    r.reach = 1;
    r.head = true;
    return r;
}

// Sum of v over the lanes from this one to the end of its run; the run total in its head lane.
__device__ __forceinline__ float run_sum(float v, const WarpRun& r)
{
    for (int s = 1; s < r.reach; s <<= 1) {
        const float o = __shfl_down_sync(kFullWarp, v, s);
        if (r.lane + s <= r.end)
            v += o;
    }
    return v;
}

// Adds the run total of v to *dst, once per run. `active` must be true exactly for the lanes
// whose key is not -1. Every lane of the warp must call this.
__device__ __forceinline__ void run_atomic_add(float* dst, float v, const WarpRun& r, bool active)
{
    v = run_sum(v, r);
    if (active && r.head)
        atomicAdd(dst, v);
}

// Vector float atomics (atomicAdd on a float2 or float4 in global memory, each component atomic
// on its own): sm_90 and later. The CPU emulator has them too (warp_emulator.h defines
// DIFFRAST_EMULATOR), so the tests run the path that H100-class GPUs take.
#if (defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900) || defined(DIFFRAST_EMULATOR)
#define DIFFRAST_VECTOR_ATOMICS 1
#else
#define DIFFRAST_VECTOR_ATOMICS 0
#endif

// Adds (gx, gy, gw) to the x, y and w of a clip-space position row (x, y, z, w), 16-byte
// aligned; z gets +0. With vector atomics one atomic instead of three: a third of the atomic
// traffic where every pixel has its own triangle.
__device__ __forceinline__ void atomic_add_xyw(float* row, float gx, float gy, float gw)
{
#if DIFFRAST_VECTOR_ATOMICS
    atomicAdd(reinterpret_cast<float4*>(row), make_float4(gx, gy, 0.0f, gw));
#else
    atomicAdd(row + 0, gx);
    atomicAdd(row + 1, gy);
    atomicAdd(row + 3, gw);
#endif
}

// The most channels that atomic_add_channels adds with vector atomics.
constexpr int kVectorChannels = 4;

// Adds v[0 .. C) (C <= kVectorChannels; v[c] = 0 for c >= C) to the C floats of texel `key` of
// a texel-major buffer (channel c of the texel at base[key * C + c]; base 16-byte aligned).
// With vector atomics: one float4 atomic for C = 4, one float2 for C = 2, and for C = 3 one
// float2 on the 8-byte aligned pair of channels (0 and 1 when key is even, 1 and 2 when odd)
// and one float. Otherwise (and for C = 1) a float atomic per channel, zero contributions
// skipped. The same float additions either way (zero contributions aside, which change nothing
// but the sign of a zero).
__device__ __forceinline__ void atomic_add_channels(float* base, long long key, int C,
                                                    const float (&v)[kVectorChannels])
{
    float* dst = base + key * C;
#if DIFFRAST_VECTOR_ATOMICS
    if (v[0] == 0.0f && v[1] == 0.0f && v[2] == 0.0f && v[3] == 0.0f)
        return;
    if (C == 4) {
        atomicAdd(reinterpret_cast<float4*>(dst), make_float4(v[0], v[1], v[2], v[3]));
        return;
    }
    if (C == 2) {
        atomicAdd(reinterpret_cast<float2*>(dst), make_float2(v[0], v[1]));
        return;
    }
    if (C == 3) {
        if ((key & 1) == 0) {
            atomicAdd(reinterpret_cast<float2*>(dst), make_float2(v[0], v[1]));
            if (v[2] != 0.0f)
                atomicAdd(dst + 2, v[2]);
        } else {
            if (v[0] != 0.0f)
                atomicAdd(dst, v[0]);
            atomicAdd(reinterpret_cast<float2*>(dst + 1), make_float2(v[1], v[2]));
        }
        return;
    }
#endif
#pragma unroll
    for (int c = 0; c < kVectorChannels; ++c)
        if (c < C && v[c] != 0.0f)
            atomicAdd(dst + c, v[c]);
}

}  // namespace diffrast
