// Device helpers shared by the kernels of cuda_ops/*.cu, defined here once: the shims that let a
// kernel file compile both under NVRTC / nvcc and as host C++ for the CPU kernel emulator of the
// tests (tests/helpers/kernel_emulator.py, which force-includes tests/helpers/emulator/
// warp_emulator.h), explicitly rounded float arithmetic, bit-level float classification, small
// integer helpers, 16-byte vector loads and stores, and warp reductions of a fixed order.
//
// Everything that must give the same bits everywhere (the forward passes that reproduce the
// reference's float32 rounding) goes through the *_rn wrappers: CUDA's explicitly rounded
// intrinsics, which are never contracted into a fused multiply-add.
#pragma once

// The emulator compiles the kernels as host C++, where __launch_bounds__ means nothing.
#if !defined(__CUDACC__) && !defined(__launch_bounds__)
#define __launch_bounds__(...)
#endif

namespace diffrast {

constexpr unsigned kFullWarp = 0xffffffffu;

// ---- math, bit casts and integer atomics: CUDA's, or compiler builtins in the emulator ----
//
// NVRTC has no host headers to include, and the emulator lacks some CUDA intrinsics
// (__longlong_as_double, __double2ll_rn, atomicOr, 64-bit atomicAdd on long long).

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

// ---- exactly rounded arithmetic (never contracted into an FMA) ----

__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ float sub_rn(float a, float b) { return __fsub_rn(a, b); }
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ float div_rn(float a, float b) { return __fdiv_rn(a, b); }
__device__ __forceinline__ float fma_rn(float a, float b, float c) { return __fmaf_rn(a, b, c); }

// ---- float classification on the bit pattern (immune to fast-math assumptions) ----

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
// torch.clamp: NaN stays NaN.
__device__ __forceinline__ float clamp_keep_nan(float x, float lo, float hi)
{
    return x < lo ? lo : (x > hi ? hi : x);
}

// ---- integers ----

__device__ __forceinline__ int imin(int a, int b) { return a < b ? a : b; }
__device__ __forceinline__ int imax(int a, int b) { return a > b ? a : b; }
__device__ __forceinline__ int iabs(int a) { return a < 0 ? -a : a; }
__device__ __forceinline__ long long lmin(long long a, long long b) { return a < b ? a : b; }
__device__ __forceinline__ long long lmax(long long a, long long b) { return a > b ? a : b; }

// ---- 16-byte vectors: element `index` of a float4 array given as floats (16-byte aligned) ----

// (The GPU faults on a float4 access that is not 16-byte aligned; the emulator checks it.)
__device__ __forceinline__ float4 load4(const float* __restrict__ base, long long index)
{
#if defined(DIFFRAST_EMULATOR)
    emu_check_aligned(base + 4 * index, 16, "a float4 load at an address not 16-byte aligned");
#endif
    return reinterpret_cast<const float4*>(base)[index];
}

__device__ __forceinline__ void store4(float* __restrict__ base, long long index, float4 value)
{
#if defined(DIFFRAST_EMULATOR)
    emu_check_aligned(base + 4 * index, 16, "a float4 store at an address not 16-byte aligned");
#endif
    reinterpret_cast<float4*>(base)[index] = value;
}

// ---- warps (every lane of the warp must call these) ----

__device__ __forceinline__ int lane_id() { return (int)(threadIdx.x & 31u); }

// Sum of v over the 32 lanes by a fixed butterfly; every lane gets the total. The order of the
// additions depends only on the lane numbering, never on timing.
template <class T>
__device__ __forceinline__ T warp_sum_fixed_order(T v)
{
    for (int s = 16; s > 0; s >>= 1)
        v += __shfl_xor_sync(kFullWarp, v, s);
    return v;
}

// Sum and maximum of v over the 32 lanes by a tree of shuffles down; the result in lane 0 (a
// different order of the additions than warp_sum_fixed_order's, so other float bits).
template <class T>
__device__ __forceinline__ T warp_sum_to_lane0(T v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_down_sync(kFullWarp, v, o);
    return v;
}
__device__ __forceinline__ unsigned warp_max_to_lane0(unsigned v)
{
    for (int o = 16; o > 0; o >>= 1) {
        const unsigned w = __shfl_down_sync(kFullWarp, v, o);
        v = w > v ? w : v;
    }
    return v;
}

}  // namespace diffrast
