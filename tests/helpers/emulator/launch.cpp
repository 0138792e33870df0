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

// Warps run one after another. The 32 lanes of a warp are user-level contexts (ucontext) on
// this thread, resumed round-robin by the scheduler: a lane runs until its next collective
// (emu_yield) or its return, so one round of the scheduler is one barrier phase of the warp.
constexpr std::size_t kStackBytes = 256 * 1024;

ucontext_t scheduler;
ucontext_t lanes[32];
std::vector<char> stacks[32];
int current = 0;
const std::function<void()>* body = nullptr;
bool reverse_order = false;

void lane_main()
{
    (*body)();
    emu_warp->exited[current] = true;
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

void run(unsigned grid, unsigned block, const std::function<void()>& fn)
{
    gridDim.x = grid;
    blockDim.x = block;
    body = &fn;
    EmuWarp warp;
    emu_warp = &warp;
    const unsigned num_warps = (block + 31) / 32;
    for (unsigned bi = 0; bi < grid; ++bi) {
        const unsigned b = reverse_order ? grid - 1 - bi : bi;
        for (unsigned wi = 0; wi < num_warps; ++wi) {
            const unsigned first = 32 * (reverse_order ? num_warps - 1 - wi : wi);
            std::memset(warp.slot, 0, sizeof warp.slot);
            for (int l = 0; l < 32; ++l) {
                warp.exited[l] = first + l >= block;  // lanes past the block never run
                if (warp.exited[l])
                    continue;
                if (stacks[l].empty())
                    stacks[l].resize(kStackBytes);
                getcontext(&lanes[l]);
                lanes[l].uc_stack.ss_sp = stacks[l].data();
                lanes[l].uc_stack.ss_size = kStackBytes;
                lanes[l].uc_link = nullptr;
                makecontext(&lanes[l], lane_main, 0);
            }
            blockIdx.x = b;
            bool running = true;
            while (running) {
                running = false;
                for (int li = 0; li < 32; ++li) {
                    const int l = reverse_order ? 31 - li : li;
                    if (warp.exited[l])
                        continue;
                    current = l;
                    threadIdx.x = first + l;
                    swapcontext(&scheduler, &lanes[l]);
                    running = running || !warp.exited[l];
                }
            }
        }
    }
    emu_warp = nullptr;
}

}  // namespace

void emu_yield()
{
    swapcontext(&lanes[current], &scheduler);
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
