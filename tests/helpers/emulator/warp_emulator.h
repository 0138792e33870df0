// A CPU emulation of the small subset of CUDA that diffrast's gradient kernels use, so that
// their logic (indexing, guards, warp shuffles, atomics, deterministic reduction) can be tested
// against the reference on a machine without a GPU. Force-included (g++ -include) before a
// cuda_ops/*.cu file compiled as C++; see tests/helpers/kernel_emulator.py.
//
// Model: a launch runs its blocks one after another and a block's warps one after another (up to a
// __syncthreads, which every warp of the block reaches before any goes on), each as 32 lanes
// (user-level contexts on one host thread) that run in lockstep at every warp-collective call
// (__shfl_*_sync, __ballot_sync, __any_sync): each lane publishes its value and yields; once all
// have, each reads what it needs and yields again (see launch.cpp). A collective that reads a lane
// which has already returned (undefined behaviour on a GPU with a full mask) makes the launch fail
// with that message. Atomics (atomicAdd, atomicMax, atomicCAS) are plain read-modify-writes (one
// host thread) and __threadfence does nothing; the order of the atomics of a launch is that of the
// emulated threads (see emu_set_reverse in launch.cpp). Float arithmetic is IEEE single precision
// without contraction (compile with -ffp-contract=off), with subnormals flushed to zero during a
// launch as on the GPU build (-ftz=true; see launch.cpp).
#pragma once

#include <cmath>
#include <cstring>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
// Blocks run one after another (see launch.cpp), so a block's shared memory is a static.
#define __shared__ static
// Kernels take the paths of an sm_90 GPU where they differ by architecture (vector atomics).
#define DIFFRAST_EMULATOR 1

struct EmuDim3 {
    unsigned x = 0, y = 0, z = 0;
};
extern EmuDim3 threadIdx;
extern EmuDim3 blockIdx;
extern EmuDim3 blockDim;
extern EmuDim3 gridDim;

struct alignas(8) float2 {
    float x, y;
};
struct float3 {
    float x, y, z;
};
struct alignas(16) float4 {
    float x, y, z, w;
};
inline float2 make_float2(float x, float y) { return float2{x, y}; }
inline float3 make_float3(float x, float y, float z) { return float3{x, y, z}; }
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }

// Bit casts between same-sized types (CUDA's __float_as_uint and friends).
template <class To, class From>
inline To emu_bit_cast(From from)
{
    static_assert(sizeof(To) == sizeof(From), "bit casts keep the size");
    To to;
    std::memcpy(&to, &from, sizeof to);
    return to;
}
inline unsigned __float_as_uint(float f) { return emu_bit_cast<unsigned>(f); }
inline float __uint_as_float(unsigned u) { return emu_bit_cast<float>(u); }
inline int __float_as_int(float f) { return emu_bit_cast<int>(f); }
inline float __int_as_float(int i) { return emu_bit_cast<float>(i); }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
using std::fabs; using std::isfinite; using std::isnan;
inline float fabsf(float x) { return std::fabs(x); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline int __ffs(unsigned x) { return __builtin_ffs((int)x); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }

// The state of the warp being run (see launch.cpp).
struct EmuWarp {
    unsigned long long slot[32];  // values published by the lanes at a collective
    bool exited[32];              // lanes that have returned from the kernel
};
// Suspends the calling lane until every lane of the warp has reached its next collective or
// returned (one barrier phase).
void emu_yield();
// Records the first misuse of a collective (undefined behaviour on a GPU); the launch then
// reports it as an error instead of crashing the test process.
void emu_fail(const char* what);
extern EmuWarp* emu_warp;

// Fails the launch with `what` unless `address` is a multiple of `bytes`: the GPU faults on a
// vector access (load, store or atomic) not aligned to its size.
inline void emu_check_aligned(const void* address, unsigned bytes, const char* what)
{
    if (reinterpret_cast<unsigned long long>(address) % bytes != 0)
        emu_fail(what);
}

inline int emu_lane() { return (int)(threadIdx.x & 31u); }

template <class T>
inline T emu_exchange(T value, int src)
{
    static_assert(sizeof(T) <= sizeof(unsigned long long), "exchange of a wide type");
    const int lane = emu_lane();
    unsigned long long bits = 0;
    std::memcpy(&bits, &value, sizeof(T));
    emu_warp->slot[lane] = bits;
    emu_yield();
    if (emu_warp->exited[src])
        emu_fail("a shuffle reads a lane that has returned");
    bits = emu_warp->slot[src];
    emu_yield();
    T out;
    std::memcpy(&out, &bits, sizeof(T));
    return out;
}

inline void emu_check_mask(unsigned mask)
{
    if (mask != 0xffffffffu)
        emu_fail("only full-warp masks are emulated");
}

template <class T>
inline T __shfl_down_sync(unsigned mask, T value, unsigned delta)
{
    emu_check_mask(mask);
    const int lane = emu_lane();
    const int src = lane + (int)delta <= 31 ? lane + (int)delta : lane;
    return emu_exchange(value, src);
}

template <class T>
inline T __shfl_up_sync(unsigned mask, T value, unsigned delta)
{
    emu_check_mask(mask);
    const int lane = emu_lane();
    const int src = lane - (int)delta >= 0 ? lane - (int)delta : lane;
    return emu_exchange(value, src);
}

template <class T>
inline T __shfl_xor_sync(unsigned mask, T value, int lane_mask)
{
    emu_check_mask(mask);
    return emu_exchange(value, (emu_lane() ^ lane_mask) & 31);
}

inline unsigned __ballot_sync(unsigned mask, int predicate)
{
    emu_check_mask(mask);
    const int lane = emu_lane();
    emu_warp->slot[lane] = predicate ? 1ull : 0ull;
    emu_yield();
    unsigned bits = 0;
    for (int l = 0; l < 32; ++l) {
        if (emu_warp->exited[l])
            emu_fail("a vote includes a lane that has returned");
        bits |= (emu_warp->slot[l] ? 1u : 0u) << l;
    }
    emu_yield();
    return bits;
}

inline int __any_sync(unsigned mask, int predicate) { return __ballot_sync(mask, predicate) != 0; }

template <class T>
inline T __shfl_sync(unsigned mask, T value, int src_lane)
{
    emu_check_mask(mask);
    return emu_exchange(value, src_lane & 31);
}

// The lanes whose value has the same bits as the calling lane's.
template <class T>
inline unsigned __match_any_sync(unsigned mask, T value)
{
    static_assert(sizeof(T) <= sizeof(unsigned long long), "match of a wide type");
    emu_check_mask(mask);
    const int lane = emu_lane();
    unsigned long long bits = 0;
    std::memcpy(&bits, &value, sizeof(T));
    emu_warp->slot[lane] = bits;
    emu_yield();
    unsigned lanes = 0;
    for (int l = 0; l < 32; ++l) {
        if (emu_warp->exited[l])
            emu_fail("a match includes a lane that has returned");
        lanes |= (emu_warp->slot[l] == bits ? 1u : 0u) << l;
    }
    emu_yield();
    return lanes;
}

inline void __threadfence() {}

// Waits until every thread of the block has reached a __syncthreads or returned (see launch.cpp).
void __syncthreads();

inline float atomicAdd(float* address, float value)
{
    const float old = *address;
    *address = old + value;
    return old;
}

// The vector atomics of sm_90 (each component added on its own), with the GPU's alignment
// requirement checked: a misaligned vector atomic is an error there.
inline float2 atomicAdd(float2* address, float2 value)
{
    emu_check_aligned(address, 8, "a float2 atomicAdd at an address not 8-byte aligned");
    const float2 old = *address;
    *address = float2{old.x + value.x, old.y + value.y};
    return old;
}
inline float4 atomicAdd(float4* address, float4 value)
{
    emu_check_aligned(address, 16, "a float4 atomicAdd at an address not 16-byte aligned");
    const float4 old = *address;
    *address = float4{old.x + value.x, old.y + value.y, old.z + value.z, old.w + value.w};
    return old;
}

template <class T>
inline T emu_atomic_add(T* address, T value)
{
    const T old = *address;
    *address = old + value;
    return old;
}
inline int atomicAdd(int* address, int value) { return emu_atomic_add(address, value); }
inline unsigned atomicAdd(unsigned* address, unsigned value)
{
    return emu_atomic_add(address, value);
}
inline unsigned long long atomicAdd(unsigned long long* address, unsigned long long value)
{
    return emu_atomic_add(address, value);
}
inline int atomicMax(int* address, int value)
{
    const int old = *address;
    *address = old > value ? old : value;
    return old;
}
inline int atomicCAS(int* address, int compare, int value)
{
    const int old = *address;
    if (old == compare)
        *address = value;
    return old;
}
inline unsigned long long atomicCAS(unsigned long long* address, unsigned long long compare,
                                    unsigned long long value)
{
    const unsigned long long old = *address;
    if (old == compare)
        *address = value;
    return old;
}
