// Launcher of the warp emulator (see warp_emulator.h). Compiled with EMU_SOURCE, the path of one
// module's source as the loader assembles it (cuda_ops/loader.py source(): generated parameter
// structs, the .cu file with its headers, generated entry points; included below, as C++), and
// EMU_KERNELS, a list of EMU_KERNEL(name) entries naming its kernels.
// Exposes `int emu_launch(const char* kernel, unsigned grid, unsigned block, void** args)`,
// where args[i] points at the i-th argument's value, like cuLaunchKernel's kernelParams (a
// kernel's arguments are the fields of its parameter struct, args[i] points into the packed
// struct); it
// returns 0, 1 for an unknown kernel, or 2 after a misused collective (emu_last_error()).
// `void emu_set_reverse(int)` makes the following launches run their blocks, warps and lanes in
// the reverse order (another order of their atomics, for tests of order independence).
#include EMU_SOURCE

#include <ucontext.h>
#if defined(__SSE__)
#include <xmmintrin.h>
#endif

#include <cstring>
#include <functional>
#include <utility>
#include <vector>

EmuDim3 threadIdx;
EmuDim3 blockIdx;
EmuDim3 blockDim;
EmuDim3 gridDim;
EmuWarp* emu_warp = nullptr;

namespace {

// The threads of a block are user-level contexts (ucontext) on this thread. Warps run one after
// another: the scheduler resumes the 32 lanes of one warp round-robin, each until its next
// collective (emu_yield) or its return, so one round is one barrier phase of the warp, until
// every lane of the warp has returned or waits at __syncthreads; then the next warp runs. Once
// every thread of the block has returned or waits, the waiting ones are released and the warps
// run again from the first (a kernel without __syncthreads runs its warps strictly one after
// another, each to its end).
constexpr std::size_t kStackBytes = 256 * 1024;
constexpr unsigned kMaxBlock = 1024;

ucontext_t scheduler;
ucontext_t lanes[kMaxBlock];
std::vector<char> stacks[kMaxBlock];
EmuWarp warps[kMaxBlock / 32];
bool waiting[kMaxBlock];  // the thread waits at __syncthreads
unsigned current = 0;     // the running thread of the block
const std::function<void()>* body = nullptr;
bool reverse_order = false;

void lane_main()
{
    (*body)();
    warps[current / 32].exited[current % 32] = true;
    swapcontext(&lanes[current], &scheduler);  // never resumed
}

template <class... Args, std::size_t... I>
void call_unpacked(void (*kernel)(Args...), void** args, std::index_sequence<I...>)
{
    kernel(*static_cast<Args*>(args[I])...);
}

template <class... Args>
void call(void (*kernel)(Args...), void** args)
{
    call_unpacked(kernel, args, std::index_sequence_for<Args...>{});
}

// Runs the lanes of warp w round-robin until each has returned or waits at __syncthreads.
void run_warp(unsigned w, unsigned block)
{
    EmuWarp& warp = warps[w];
    emu_warp = &warp;
    bool running = true;
    while (running) {
        running = false;
        for (int li = 0; li < 32; ++li) {
            const int l = reverse_order ? 31 - li : li;
            const unsigned t = 32 * w + l;
            if (t >= block || warp.exited[l] || waiting[t])
                continue;
            current = t;
            threadIdx.x = t;
            swapcontext(&scheduler, &lanes[t]);
            running = running || !(warp.exited[l] || waiting[t]);
        }
    }
}

void run(unsigned grid, unsigned block, const std::function<void()>& fn)
{
    if (block == 0 || block > kMaxBlock) {
        emu_fail("a block of no thread or of more than 1024");
        return;
    }
    gridDim.x = grid;
    blockDim.x = block;
    body = &fn;
    const unsigned num_warps = (block + 31) / 32;
    for (unsigned bi = 0; bi < grid; ++bi) {
        const unsigned b = reverse_order ? grid - 1 - bi : bi;
        for (unsigned t = 0; t < 32 * num_warps; ++t) {
            EmuWarp& warp = warps[t / 32];
            if (t % 32 == 0)
                std::memset(warp.slot, 0, sizeof warp.slot);
            warp.exited[t % 32] = t >= block;  // lanes past the block never run
            waiting[t] = false;
            if (t >= block)
                continue;
            if (stacks[t].empty())
                stacks[t].resize(kStackBytes);
            getcontext(&lanes[t]);
            lanes[t].uc_stack.ss_sp = stacks[t].data();
            lanes[t].uc_stack.ss_size = kStackBytes;
            lanes[t].uc_link = nullptr;
            makecontext(&lanes[t], lane_main, 0);
        }
        blockIdx.x = b;
        for (;;) {
            for (unsigned wi = 0; wi < num_warps; ++wi)
                run_warp(reverse_order ? num_warps - 1 - wi : wi, block);
            bool any_waiting = false;
            for (unsigned t = 0; t < block; ++t) {
                any_waiting = any_waiting || waiting[t];
                waiting[t] = false;  // every thread still running waits here: release them
            }
            if (!any_waiting)
                break;
        }
    }
    emu_warp = nullptr;
}

}  // namespace

void emu_yield()
{
    swapcontext(&lanes[current], &scheduler);
}

void __syncthreads()
{
    waiting[current] = true;
    emu_yield();
}

namespace {
const char* emu_error = nullptr;
}

void emu_fail(const char* what)
{
    if (emu_error == nullptr)
        emu_error = what;
}

extern "C" const char* emu_last_error()
{
    return emu_error;
}

extern "C" void emu_set_reverse(int reverse)
{
    reverse_order = reverse != 0;
}

// Kernels run with the float environment of the GPU build: CuPy compiles every RawModule with
// -ftz=true, so single-precision arithmetic and comparisons treat subnormal inputs as zero and
// flush subnormal results to zero. On x86 the MXCSR's FTZ (bit 15) and DAZ (bit 6) flags do the
// same for SSE arithmetic; they are set for the launch only (the lanes' contexts, made inside
// run(), inherit them). Elsewhere arithmetic stays IEEE with subnormals.
struct EmuFlushToZero {
#if defined(__SSE__)
    unsigned saved = _mm_getcsr();
    EmuFlushToZero() { _mm_setcsr(saved | 0x8040u); }
    ~EmuFlushToZero() { _mm_setcsr(saved); }
#endif
};

#define EMU_KERNEL(name)                                                                   \
    if (std::strcmp(kernel, #name) == 0) {                                                 \
        emu_error = nullptr;                                                               \
        EmuFlushToZero ftz;                                                                \
        run(grid, block, [&] { call(name, args); });                                       \
        return emu_error == nullptr ? 0 : 2;                                               \
    }

extern "C" int emu_launch(const char* kernel, unsigned grid, unsigned block, void** args)
{
    EMU_KERNELS
    return 1;  // unknown kernel
}
