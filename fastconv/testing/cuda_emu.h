// fastconv CUDA emulator: makes an unmodified CUDA C++ kernel file compile with g++.
//
// Force-include this header (g++ -include cuda_emu.h) in a translation unit that
// #includes the .cu file; see fastconv/testing/emulator.py, which generates that
// unit and its launch shims.  Everything is guarded with #ifndef __CUDACC__ so the
// header is inert under nvcc/NVRTC.
//
// Execution model
// ---------------
// * Blocks of a grid run one after another, in x-fastest order.
// * Every CUDA thread of a block is a fiber (ucontext) with its own stack.  The
//   scheduler runs fibers in linear thread order; a fiber only gives up the CPU
//   at a barrier (__syncthreads, __syncwarp) or a warp shuffle, so a schedule is
//   deterministic and a missing barrier shows up as a deterministic wrong result.
// * __syncthreads releases once every live (not yet exited) thread of the block
//   waits at the same barrier call site.  When no thread can run and the waiting
//   threads disagree (different barrier sites, a shuffle waiting for a lane that
//   sits at a barrier or has exited), the launch fails with a deadlock report.
// * Warp shuffles: each lane named by the mask deposits its value, and once all
//   of them arrived every lane reads its source lane's deposit.
// * __shared__ is thread_local storage: all fibers of a block share it (they run
//   on one OS thread) and, since blocks run sequentially, one copy serves the
//   whole grid.  `extern __shared__` arrays are defined by the generated unit
//   (CUDA_EMU_MAX_DYN_SMEM bytes) and filled with 0xFF bytes (NaN in every float
//   format) before each block, so reading dynamic shared memory that was never
//   written poisons results.  Under AddressSanitizer the bytes past the launch's
//   shared_mem size are poisoned as well.
// * atomics are plain read-modify-writes: threads never interleave inside them.
// * Weak global memory (launch option, on by default from fastconv.testing.emulator): a
//   thread's plain writes to the kernel's writable pointer arguments stay private to it --
//   other threads keep reading the old bytes -- until a fence it takes part in publishes
//   them: __syncthreads (every thread of the block), __syncwarp (the lanes of its mask),
//   __threadfence / __threadfence_block (its own writes) or the end of the block.  Warp
//   shuffles are not fences.  Since fibers only switch at those points, the emulator knows
//   which thread wrote what: after each run of a fiber it diffs the buffers against the
//   published bytes, moves the difference into the fiber's pending writes and restores
//   the published bytes; the fiber gets its own pending writes back when it runs again.
#ifndef __CUDACC__
#ifndef FASTCONV_CUDA_EMU_H
#define FASTCONV_CUDA_EMU_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <unordered_map>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define CUDA_EMU_ASAN 1
#else
#define CUDA_EMU_ASAN 0
#endif

#ifndef CUDA_EMU_MAX_DYN_SMEM
#define CUDA_EMU_MAX_DYN_SMEM (227 * 1024)
#endif

// ----------------------------------------------------------------- qualifiers
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __shared__ thread_local
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(...)
#define __syncthreads() ::cuda_emu::syncthreads(__FILE__, __LINE__)
#define __syncwarp(...) ::cuda_emu::SyncwarpAt{__FILE__, __LINE__}(__VA_ARGS__)
#define __shfl_sync(...) ::cuda_emu::shfl_idx(__FILE__, __LINE__, __VA_ARGS__)
#define __shfl_down_sync(...) ::cuda_emu::shfl_down(__FILE__, __LINE__, __VA_ARGS__)
#define __shfl_up_sync(...) ::cuda_emu::shfl_up(__FILE__, __LINE__, __VA_ARGS__)
#define __shfl_xor_sync(...) ::cuda_emu::shfl_xor(__FILE__, __LINE__, __VA_ARGS__)
#define __threadfence() ::cuda_emu::threadfence()
#define __threadfence_block() ::cuda_emu::threadfence()

struct uint3 {
    unsigned int x, y, z;
};
struct dim3 {
    unsigned int x, y, z;
    dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};

inline uint3 threadIdx;
inline uint3 blockIdx;
inline dim3 blockDim;
inline dim3 gridDim;
constexpr int warpSize = 32;

// ----------------------------------------------------------------- half / bfloat16 stand-ins
struct __half {
    unsigned short x;
};
struct __nv_bfloat16 {
    unsigned short x;
};
typedef __half half;

inline float __half2float(__half h) {
    const unsigned int sign = (h.x & 0x8000u) << 16, ex = (h.x >> 10) & 0x1fu, man = h.x & 0x3ffu;
    unsigned int bits;
    if (ex == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13);
    } else if (ex != 0) {
        bits = sign | ((ex + 112u) << 23) | (man << 13);
    } else if (man == 0) {
        bits = sign;
    } else {  // subnormal half: normalise
        int e = -1;
        unsigned int m = man;
        do {
            ++e;
            m <<= 1;
        } while ((m & 0x400u) == 0);
        bits = sign | ((unsigned int)(112 - e) << 23) | ((m & 0x3ffu) << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

inline __half __float2half(float f) {  // round to nearest even
    unsigned int u;
    memcpy(&u, &f, 4);
    const unsigned int sign = (u >> 16) & 0x8000u;
    unsigned int a = u & 0x7fffffffu;
    __half h;
    if (a > 0x7f800000u) {  // NaN
        h.x = (unsigned short)(sign | 0x7e00u);
        return h;
    }
    if (a >= 0x477ff000u) {  // rounds to >= 65520: infinity
        h.x = (unsigned short)(sign | 0x7c00u);
        return h;
    }
    if (a < 0x38800000u) {  // below the smallest normal half: subnormal or zero
        const int shift = 126 - (int)(a >> 23);  // exponent distance to 2^-14
        if (shift > 24) {
            h.x = (unsigned short)sign;
            return h;
        }
        unsigned int m = (a & 0x7fffffu) | 0x800000u;
        const int s = shift;  // bits to drop
        unsigned int q = m >> s, rem = m & ((1u << s) - 1), halfway = 1u << (s - 1);
        if (rem > halfway || (rem == halfway && (q & 1u))) ++q;
        h.x = (unsigned short)(sign | q);
        return h;
    }
    unsigned int q = a - 0x38000000u;  // rebias exponent (127-15) << 23
    const unsigned int rem = q & 0x1fffu;
    q >>= 13;
    if (rem > 0x1000u || (rem == 0x1000u && (q & 1u))) ++q;
    h.x = (unsigned short)(sign | q);
    return h;
}
inline __half __float2half_rn(float f) { return __float2half(f); }

inline float __bfloat162float(__nv_bfloat16 b) {
    unsigned int bits = (unsigned int)b.x << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}
inline __nv_bfloat16 __float2bfloat16(float f) {  // round to nearest even
    unsigned int u;
    memcpy(&u, &f, 4);
    __nv_bfloat16 b;
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        b.x = (unsigned short)((u >> 16) | 0x40u);
        return b;
    }
    u += 0x7fffu + ((u >> 16) & 1u);
    b.x = (unsigned short)(u >> 16);
    return b;
}
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __float2bfloat16(f); }

inline float __int_as_float(int i) {
    float f;
    memcpy(&f, &i, 4);
    return f;
}
inline int __float_as_int(float f) {
    int i;
    memcpy(&i, &f, 4);
    return i;
}
inline double __longlong_as_double(long long i) {
    double d;
    memcpy(&d, &i, 8);
    return d;
}

// ----------------------------------------------------------------- CUDA's overloaded min / max
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned int min(unsigned int a, unsigned int b) { return a < b ? a : b; }
inline unsigned int max(unsigned int a, unsigned int b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }

// ----------------------------------------------------------------- atomics (no interleaving)
template <class T>
inline T atomicAdd(T* p, T v) {
    T old = *p;
    *p = old + v;
    return old;
}
template <class T>
inline T atomicMax(T* p, T v) {
    T old = *p;
    if (v > old) *p = v;
    return old;
}
template <class T>
inline T atomicExch(T* p, T v) {
    T old = *p;
    *p = v;
    return old;
}

namespace cuda_emu {

enum State { RUNNABLE = 0, AT_BARRIER = 1, AT_SHUFFLE = 2, DONE = 3 };
enum ShflOp { SH_IDX = 0, SH_DOWN = 1, SH_UP = 2, SH_XOR = 3, SH_SYNC = 4, SH_COLLECTIVE = 5 };

struct Fiber {
    ucontext_t ctx;
    char* stack = nullptr;
    size_t stack_size = 0;
    void* fake_stack = nullptr;
    int state = DONE;
    uint3 tid{0, 0, 0};
    const char* file = nullptr;  // where it waits
    int line = 0;
    // shuffle slot
    unsigned int mask = 0;
    int op = 0, arg = 0, width = 32;
    size_t vsize = 0;
    unsigned char value[8];
    unsigned char result[8];
    std::unordered_map<unsigned char*, unsigned char> pending;  // weak memory: unpublished global writes
};

struct GlobalBuf {  // a writable pointer argument under the weak memory model
    unsigned char* base;
    size_t size;
    std::vector<unsigned char> published;
};

struct Scheduler {
    std::vector<Fiber> fibers;
    ucontext_t home;
    const void* home_stack_bottom = nullptr;
    size_t home_stack_size = 0;
    void* home_fake_stack = nullptr;
    int current = -1;
    int nthreads = 0;
    void (*body)(void*) = nullptr;
    void* body_ctx = nullptr;
    std::string error;
    size_t stack_size = (CUDA_EMU_ASAN ? 1024 : 256) * 1024;
    bool weak = false;
    std::vector<GlobalBuf> bufs;
};

inline Scheduler& sched() {
    static thread_local Scheduler s;
    return s;
}

inline std::string site(const char* file, int line) {
    const char* base = strrchr(file, '/');
    return std::string(base ? base + 1 : file) + ":" + std::to_string(line);
}

// ----------------------------------------------------------------- weak global memory
// After fiber t ran: record the bytes it changed as its pending writes, restore the published bytes.
inline void collect_writes(Fiber& f) {
    Scheduler& s = sched();
    for (GlobalBuf& b : s.bufs) {
        unsigned char* buf = b.base;
        const unsigned char* pub = b.published.data();
        for (size_t i = 0; i < b.size;) {
            const size_t n = std::min<size_t>(256, b.size - i);
            if (memcmp(buf + i, pub + i, n) != 0) {
                for (size_t j = i; j < i + n; ++j)
                    if (buf[j] != pub[j]) f.pending[buf + j] = buf[j];
            }
            i += n;
        }
    }
    for (auto& kv : f.pending) kv.second = *kv.first;  // a write back to the published value is a write too
    for (GlobalBuf& b : s.bufs)
        for (auto& kv : f.pending)
            if (kv.first >= b.base && kv.first < b.base + b.size) *kv.first = b.published[kv.first - b.base];
}

inline void apply_writes(const Fiber& f) {
    for (const auto& kv : f.pending) *kv.first = kv.second;
}

// Publish the pending writes of fiber f (in the caller's order of fibers).
inline void publish(Fiber& f) {
    Scheduler& s = sched();
    for (const auto& kv : f.pending) {
        for (GlobalBuf& b : s.bufs)
            if (kv.first >= b.base && kv.first < b.base + b.size) b.published[kv.first - b.base] = kv.second;
        *kv.first = kv.second;
    }
    f.pending.clear();
}

// A fence taken by the running fiber: first gather what it wrote since it was scheduled.
inline void fence_current() {
    Scheduler& s = sched();
    if (!s.weak || s.current < 0) return;
    Fiber& f = s.fibers[s.current];
    collect_writes(f);
    apply_writes(f);
}

inline void threadfence() {  // __threadfence / __threadfence_block: publish this thread's writes
    fence_current();
    Scheduler& s = sched();
    if (s.weak && s.current >= 0) publish(s.fibers[s.current]);
}

// Switch from the current fiber back to the scheduler.
inline void yield_to_scheduler() {
    Scheduler& s = sched();
    Fiber& f = s.fibers[s.current];
#if CUDA_EMU_ASAN
    __sanitizer_start_switch_fiber(&f.fake_stack, s.home_stack_bottom, s.home_stack_size);
#endif
    swapcontext(&f.ctx, &s.home);
#if CUDA_EMU_ASAN
    __sanitizer_finish_switch_fiber(f.fake_stack, nullptr, nullptr);
#endif
    // resumed: restore the built-in indices of this thread
    threadIdx = f.tid;
}

inline void fail(const std::string& msg) {
    Scheduler& s = sched();
    if (s.error.empty()) s.error = msg;
    s.fibers[s.current].state = DONE;
    for (;;) yield_to_scheduler();  // never resumed again
}

inline void syncthreads(const char* file, int line) {
    Scheduler& s = sched();
    Fiber& f = s.fibers[s.current];
    f.state = AT_BARRIER;
    f.file = file;
    f.line = line;
    yield_to_scheduler();
}

inline int lane_of(int t) { return t & 31; }

// Complete a shuffle once every lane of the mask has arrived; returns true if complete.
inline bool try_complete_shuffle(int warp_base, unsigned int mask) {
    Scheduler& s = sched();
    for (int l = 0; l < 32; ++l) {
        if (!(mask >> l & 1u)) continue;
        const Fiber& g = s.fibers[warp_base + l];
        if (g.state != AT_SHUFFLE) return false;
    }
    for (int l = 0; l < 32; ++l) {
        if (!(mask >> l & 1u)) continue;
        Fiber& g = s.fibers[warp_base + l];
        if (g.mask != mask || g.vsize != s.fibers[s.current].vsize)
            fail("warp shuffle at " + site(g.file, g.line) + ": lanes disagree on the mask or value type");
        int src = l;
        const int seg = l & ~(g.width - 1), in_seg = l & (g.width - 1);
        switch (g.op) {
            case SH_IDX: src = seg + (g.arg & (g.width - 1)); break;
            case SH_DOWN: src = in_seg + g.arg < g.width ? l + g.arg : l; break;
            case SH_UP: src = in_seg - g.arg >= 0 ? l - g.arg : l; break;
            case SH_XOR: src = (l ^ g.arg); if (src >= seg + g.width) src = l; break;
            default: src = l; break;
        }
        if (!(mask >> src & 1u)) {  // undefined in CUDA: the lane gets poison (NaN in every float format)
            memset(g.result, 0xff, g.vsize);
            continue;
        }
        memcpy(g.result, s.fibers[warp_base + src].value, g.vsize);
    }
    if (s.weak && s.fibers[s.current].op == SH_SYNC) {  // __syncwarp: the mask's lanes publish, in lane order
        fence_current();
        const int cur = s.current;
        Fiber& me = s.fibers[cur];
        for (int l = 0; l < 32; ++l)
            if (mask >> l & 1u) publish(s.fibers[warp_base + l]);
        apply_writes(me);  // nothing left pending for a lane of the mask; kept for clarity
    }
    for (int l = 0; l < 32; ++l)
        if (mask >> l & 1u) s.fibers[warp_base + l].state = RUNNABLE;
    return true;
}

template <class T>
inline T shuffle(const char* file, int line, int op, unsigned int mask, T v, int arg, int width) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffle of an unsupported type");
    Scheduler& s = sched();
    const int t = s.current, warp_base = t & ~31, nt = s.nthreads;
    if (width <= 0 || width > 32 || (width & (width - 1)))
        fail("warp shuffle at " + site(file, line) + ": width must be a power of two <= 32");
    if (!(mask >> lane_of(t) & 1u))
        fail("warp shuffle at " + site(file, line) + ": calling lane " + std::to_string(lane_of(t)) +
             " is not in mask");
    for (int l = 0; l < 32; ++l)
        if ((mask >> l & 1u) && warp_base + l >= nt)
            fail("warp shuffle at " + site(file, line) + ": mask names lane " + std::to_string(l) +
                 ", which does not exist in a block of " + std::to_string(nt) + " threads");
    Fiber& f = s.fibers[t];
    f.state = AT_SHUFFLE;
    f.file = file;
    f.line = line;
    f.mask = mask;
    f.op = op;
    f.arg = arg;
    f.width = width;
    f.vsize = sizeof(T);
    memcpy(f.value, &v, sizeof(T));
    if (!try_complete_shuffle(warp_base, mask)) yield_to_scheduler();
    T r;
    memcpy(&r, f.result, sizeof(T));
    return r;
}

template <class T>
inline T shfl_idx(const char* file, int line, unsigned mask, T v, int src, int width = 32) {
    return shuffle(file, line, SH_IDX, mask, v, src, width);
}
template <class T>
inline T shfl_down(const char* file, int line, unsigned mask, T v, unsigned d, int width = 32) {
    return shuffle(file, line, SH_DOWN, mask, v, (int)d, width);
}
template <class T>
inline T shfl_up(const char* file, int line, unsigned mask, T v, unsigned d, int width = 32) {
    return shuffle(file, line, SH_UP, mask, v, (int)d, width);
}
template <class T>
inline T shfl_xor(const char* file, int line, unsigned mask, T v, int m, int width = 32) {
    return shuffle(file, line, SH_XOR, mask, v, m, width);
}
inline void syncwarp(const char* file, int line, unsigned mask = 0xffffffffu) {
    (void)shuffle(file, line, SH_SYNC, mask, 0, 0, 32);
}
// A warp-collective operation (WMMA): every lane of the warp must arrive; not a memory fence.
inline void collective(const char* file, int line) {
    Scheduler& s = sched();
    const int nt = s.nthreads, base = s.current & ~31;
    const unsigned mask = nt - base >= 32 ? 0xffffffffu : ((1u << (nt - base)) - 1u);
    (void)shuffle(file, line, SH_COLLECTIVE, mask, 0, 0, 32);
}

struct SyncwarpAt {  // __syncwarp() and __syncwarp(mask) through one macro
    const char* file;
    int line;
    void operator()(unsigned mask = 0xffffffffu) const { syncwarp(file, line, mask); }
};

inline void fiber_entry() {
    Scheduler& s = sched();
#if CUDA_EMU_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &s.home_stack_bottom, &s.home_stack_size);
#endif
    threadIdx = s.fibers[s.current].tid;
    s.body(s.body_ctx);
    Fiber& f = s.fibers[s.current];
    f.state = DONE;
#if CUDA_EMU_ASAN
    __sanitizer_start_switch_fiber(nullptr, s.home_stack_bottom, s.home_stack_size);
#endif
    setcontext(&s.home);
}

inline std::string describe_ranges(const std::vector<int>& ts) {
    std::string out;
    size_t i = 0;
    int shown = 0;
    while (i < ts.size()) {
        size_t j = i;
        while (j + 1 < ts.size() && ts[j + 1] == ts[j] + 1) ++j;
        if (shown++ == 6) {
            out += ", ...";
            break;
        }
        if (!out.empty()) out += ", ";
        out += std::to_string(ts[i]);
        if (j > i) out += "-" + std::to_string(ts[j]);
        i = j + 1;
    }
    return out;
}

inline std::string deadlock_report() {
    Scheduler& s = sched();
    std::vector<std::pair<std::string, std::vector<int>>> groups;
    for (int t = 0; t < s.nthreads; ++t) {
        const Fiber& f = s.fibers[t];
        if (f.state == DONE) continue;
        std::string what = (f.state == AT_BARRIER ? "__syncthreads at " : "warp shuffle/__syncwarp at ") +
                           site(f.file, f.line);
        auto it = std::find_if(groups.begin(), groups.end(), [&](auto& g) { return g.first == what; });
        if (it == groups.end()) {
            groups.push_back({what, {t}});
        } else {
            it->second.push_back(t);
        }
    }
    std::string msg = "deadlock: no thread can make progress;";
    for (auto& g : groups) msg += " threads [" + describe_ranges(g.second) + "] wait at " + g.first + ";";
    int exited = 0;
    for (int t = 0; t < s.nthreads; ++t) exited += s.fibers[t].state == DONE;
    msg += " " + std::to_string(exited) + " threads exited";
    return msg;
}

// Run one block to completion; returns false (with sched().error) on deadlock or fault.
inline bool run_block() {
    Scheduler& s = sched();
    for (int t = 0; t < s.nthreads; ++t) {
        Fiber& f = s.fibers[t];
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = f.stack;
        f.ctx.uc_stack.ss_size = f.stack_size;
        f.ctx.uc_link = nullptr;
        makecontext(&f.ctx, fiber_entry, 0);
        f.state = RUNNABLE;
        f.fake_stack = nullptr;
    }
    for (;;) {
        bool ran = false;
        for (int t = 0; t < s.nthreads; ++t) {
            Fiber& f = s.fibers[t];
            if (f.state != RUNNABLE) continue;
            ran = true;
            s.current = t;
            threadIdx = f.tid;
            if (s.weak) apply_writes(f);
#if CUDA_EMU_ASAN
            __sanitizer_start_switch_fiber(&s.home_fake_stack, f.stack, f.stack_size);
#endif
            swapcontext(&s.home, &f.ctx);
#if CUDA_EMU_ASAN
            __sanitizer_finish_switch_fiber(s.home_fake_stack, nullptr, nullptr);
#endif
            if (s.weak) collect_writes(f);
            s.current = -1;
            if (!s.error.empty()) return false;
        }
        if (ran) continue;
        const char* file = nullptr;
        int line = 0;
        bool live = false, uniform = true;
        for (int t = 0; t < s.nthreads; ++t) {
            const Fiber& f = s.fibers[t];
            if (f.state == DONE) continue;
            if (f.state != AT_BARRIER) {
                uniform = false;
                break;
            }
            if (!live) {
                file = f.file;
                line = f.line;
                live = true;
            } else if (f.line != line || strcmp(f.file, file) != 0) {
                uniform = false;
                break;
            }
        }
        if (uniform && !live) {  // every thread exited: the end of the block publishes everything
            if (s.weak)
                for (int t = 0; t < s.nthreads; ++t) publish(s.fibers[t]);
            return true;
        }
        if (!uniform) {
            s.error = deadlock_report();
            return false;
        }
        if (s.weak)  // __syncthreads: every thread publishes, in thread order
            for (int t = 0; t < s.nthreads; ++t) publish(s.fibers[t]);
        for (int t = 0; t < s.nthreads; ++t)
            if (s.fibers[t].state == AT_BARRIER) s.fibers[t].state = RUNNABLE;
    }
}

struct DynSmem {
    unsigned char* base;
    size_t capacity;
};

inline int run_grid(void (*body)(void*), void* ctx, const long long* dims, unsigned long long shmem,
                    const DynSmem* dyn, int ndyn, char* err, int errlen) {
    Scheduler& s = sched();
    for (GlobalBuf& b : s.bufs) b.published.assign(b.base, b.base + b.size);
    const dim3 grid((unsigned)dims[0], (unsigned)dims[1], (unsigned)dims[2]);
    const dim3 block((unsigned)dims[3], (unsigned)dims[4], (unsigned)dims[5]);
    const int nt = (int)(block.x * block.y * block.z);
    if (s.fibers.size() < (size_t)nt) s.fibers.resize(nt);
    for (int t = 0; t < nt; ++t) {
        Fiber& f = s.fibers[t];
        if (!f.stack) {
            void* p = mmap(nullptr, s.stack_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                           -1, 0);
            if (p == MAP_FAILED) {
                snprintf(err, errlen, "emulator: cannot allocate a fiber stack");
                return 1;
            }
            mprotect(p, 4096, PROT_NONE);  // guard page against stack overflow
            f.stack = (char*)p + 4096;
            f.stack_size = s.stack_size - 4096;
        }
        f.pending.clear();
        f.tid.x = t % block.x;
        f.tid.y = (t / block.x) % block.y;
        f.tid.z = t / (block.x * block.y);
    }
    s.nthreads = nt;
    s.body = body;
    s.body_ctx = ctx;
    s.error.clear();
    gridDim = grid;
    blockDim = block;
    for (unsigned bz = 0; bz < grid.z; ++bz)
        for (unsigned by = 0; by < grid.y; ++by)
            for (unsigned bx = 0; bx < grid.x; ++bx) {
                blockIdx = uint3{bx, by, bz};
                for (int d = 0; d < ndyn; ++d) {
#if CUDA_EMU_ASAN
                    ASAN_UNPOISON_MEMORY_REGION(dyn[d].base, dyn[d].capacity);
#endif
                    memset(dyn[d].base, 0xff, dyn[d].capacity);
#if CUDA_EMU_ASAN
                    ASAN_POISON_MEMORY_REGION(dyn[d].base + shmem, dyn[d].capacity - shmem);
#endif
                }
                const bool ok = run_block();
                if (!ok && s.weak)
                    for (int t = 0; t < nt; ++t) s.fibers[t].pending.clear();
                if (!ok) {
                    snprintf(err, errlen, "block (%u,%u,%u): %s", bx, by, bz, s.error.c_str());
                    s.error.clear();
                    return 2;
                }
            }
#if CUDA_EMU_ASAN
    for (int d = 0; d < ndyn; ++d) ASAN_UNPOISON_MEMORY_REGION(dyn[d].base, dyn[d].capacity);
#endif
    return 0;
}

// ----------------------------------------------------------------- typed launch shims
template <class T>
inline std::string param_code() {
    using U = std::remove_cv_t<T>;
    if constexpr (std::is_pointer<U>::value) {
        using P = std::remove_cv_t<std::remove_pointer_t<U>>;
        if constexpr (std::is_void<P>::value) {
            return "p0";
        } else {
            return "p" + std::to_string(sizeof(P));
        }
    } else if constexpr (std::is_floating_point<U>::value) {
        return "f" + std::to_string(sizeof(U));
    } else if constexpr (std::is_same<U, bool>::value) {
        return "b1";
    } else if constexpr (std::is_integral<U>::value && std::is_signed<U>::value) {
        return "i" + std::to_string(sizeof(U));
    } else if constexpr (std::is_integral<U>::value) {
        return "u" + std::to_string(sizeof(U));
    } else {
        return "s" + std::to_string(sizeof(U));  // other trivially copyable struct (e.g. __half)
    }
}

template <class... A>
inline const char* signature(void (*)(A...)) {
    static const std::string sig = [] {
        std::string out;
        ((out += (out.empty() ? "" : ",") + param_code<A>()), ...);
        return out;
    }();
    return sig.c_str();
}

template <class T>
inline void add_writable(void* arg, unsigned long long nbytes) {
    using U = std::remove_cv_t<T>;
    if constexpr (std::is_pointer<U>::value) {
        if constexpr (!std::is_const<std::remove_pointer_t<U>>::value) {
            unsigned char* p = *static_cast<unsigned char**>(arg);
            if (p && nbytes) sched().bufs.push_back(GlobalBuf{p, (size_t)nbytes, {}});
        }
    }
}

template <class... A, size_t... I>
inline int launch_impl(void (*k)(A...), std::index_sequence<I...>, const long long* dims, unsigned long long shmem,
                       void** args, const unsigned long long* nbytes, const DynSmem* dyn, int ndyn, char* err,
                       int errlen) {
    Scheduler& s = sched();
    s.bufs.clear();
    s.weak = nbytes != nullptr;
    if (s.weak) (add_writable<A>(args[I], nbytes[I]), ...);
    struct Closure {
        void (*k)(A...);
        std::tuple<std::decay_t<A>...> vals;
    } c{k, std::tuple<std::decay_t<A>...>{*static_cast<std::decay_t<A>*>(args[I])...}};
    auto body = [](void* p) {
        Closure* cl = static_cast<Closure*>(p);
        cl->k(std::get<I>(cl->vals)...);
    };
    const int rc = run_grid(body, &c, dims, shmem, dyn, ndyn, err, errlen);
    s.bufs.clear();
    s.weak = false;
    return rc;
}

// nbytes: the size of each pointer argument's buffer, or null for the strong (sequential) memory model.
template <class... A>
inline int launch(void (*k)(A...), const long long* dims, unsigned long long shmem, void** args,
                  const unsigned long long* nbytes, const DynSmem* dyn, int ndyn, char* err, int errlen) {
    return launch_impl(k, std::index_sequence_for<A...>{}, dims, shmem, args, nbytes, dyn, ndyn, err, errlen);
}

}  // namespace cuda_emu


// ----------------------------------------------------------------- WMMA (nvcuda::wmma)
// Fragments are warp-collective: load_matrix_sync, store_matrix_sync, fill_fragment and mma_sync
// wait until all 32 lanes of the warp arrive (a missing lane is a deadlock).  The element order of a
// fragment is unspecified in CUDA; here lane l's element i holds matrix element f = ((l * n + i) * P) mod
// (rows * cols) (row-major f), with a different odd P for matrix_a, matrix_b and accumulator, so a
// kernel that reads or writes fragment elements assuming a layout gets wrong results.  Element-wise
// operations on frag.x[] that do not depend on the position (scaling, __float_to_tf32) stay correct.
// mma_sync multiplies exactly (products of tf32 / bf16 / fp16 values are exact in float) and
// accumulates in float in ascending k; __float_to_tf32 rounds to nearest, ties away from zero
// (cvt.rna.tf32.f32), bit-exactly, and a tf32 operand that skipped it is truncated, as the hardware reads it.
namespace nvcuda {
namespace wmma {
struct row_major {};
struct col_major {};
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
namespace precision {
struct tf32 {};
}  // namespace precision
enum layout_t { mem_row_major = 0, mem_col_major = 1 };

template <class T>
struct storage_of {
    typedef T type;
};
template <>
struct storage_of<precision::tf32> {
    typedef float type;
};
inline float to_f(float v) { return v; }
inline float to_f(__half v) { return __half2float(v); }
inline float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
inline void from_f(float& d, float v) { d = v; }
inline void from_f(__half& d, float v) { d = __float2half(v); }
inline void from_f(__nv_bfloat16& d, float v) { d = __float2bfloat16(v); }

template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
    typedef typename storage_of<T>::type element_type;
    static constexpr int rows = std::is_same<Use, matrix_b>::value ? K : M;
    static constexpr int cols = std::is_same<Use, matrix_a>::value ? K : N;
    static constexpr int num_elements = rows * cols / 32;
    static constexpr int perm = std::is_same<Use, matrix_a>::value ? 37 : (std::is_same<Use, matrix_b>::value ? 53 : 71);
    element_type x[num_elements];
    // Matrix position (row-major flat index) of this lane's element i.
    static int position(int lane, int i) { return (int)(((long long)(lane * num_elements + i) * perm) % (rows * cols)); }
};

inline int lane_id() { return ::cuda_emu::sched().current & 31; }

inline float __float_to_tf32(float f) {
    unsigned int u;
    memcpy(&u, &f, 4);
    if ((u & 0x7f800000u) != 0x7f800000u) {
        u += 0x1000u;  // round the magnitude to nearest, ties away from zero, at the 10th mantissa bit
        u &= 0xffffe000u;
    }
    memcpy(&f, &u, 4);
    return f;
}

template <class Use, int M, int N, int K, class T, class L, class V>
inline void fill_fragment_at(const char* file, int line, fragment<Use, M, N, K, T, L>& f, const V& v) {
    ::cuda_emu::collective(file, line);
    for (int i = 0; i < f.num_elements; ++i) f.x[i] = v;
}

// Copy between a fragment and row- or column-major memory, as one warp-collective step.
template <class F, class P>
inline void transfer(const char* file, int line, F& f, P* p, unsigned ldm, bool row, bool to_memory) {
    ::cuda_emu::collective(file, line);
    const int lane = lane_id();
    for (int i = 0; i < f.num_elements; ++i) {
        const int pos = f.position(lane, i), r = pos / f.cols, c = pos % f.cols;
        P& m = p[row ? (size_t)r * ldm + c : (size_t)c * ldm + r];
        if constexpr (std::is_const<P>::value) {
            f.x[i] = m;
        } else if (to_memory) {
            m = f.x[i];
        } else {
            f.x[i] = m;
        }
    }
    ::cuda_emu::collective(file, line);
}

template <class Use, int M, int N, int K, class T, class L, class P>
inline void load_matrix_at(const char* file, int line, fragment<Use, M, N, K, T, L>& f, const P* p, unsigned ldm) {
    static_assert(!std::is_same<L, void>::value, "use the layout_t overload for accumulators");
    transfer(file, line, f, p, ldm, std::is_same<L, row_major>::value, false);
}

template <int M, int N, int K, class T, class P>
inline void load_matrix_at(const char* file, int line, fragment<accumulator, M, N, K, T, void>& f, const P* p,
                           unsigned ldm, layout_t layout) {
    transfer(file, line, f, p, ldm, layout == mem_row_major, false);
}

template <int M, int N, int K, class T, class P>
inline void store_matrix_at(const char* file, int line, P* p, const fragment<accumulator, M, N, K, T, void>& f,
                            unsigned ldm, layout_t layout) {
    transfer(file, line, const_cast<fragment<accumulator, M, N, K, T, void>&>(f), p, ldm, layout == mem_row_major,
             true);
}

// What a tf32 tensor core reads of a float that was not rounded with __float_to_tf32: its top 19 bits.
template <class T>
inline float tf32_in(float v) {
    if (!std::is_same<T, precision::tf32>::value) return v;
    unsigned int u;
    memcpy(&u, &v, 4);
    u &= 0xffffe000u;
    memcpy(&v, &u, 4);
    return v;
}

struct MmaSlot {
    void* d;
    const void* a;
    const void* b;
    const void* c;
};
inline MmaSlot* mma_slots() {
    static thread_local MmaSlot slots[1024];
    return slots;
}

// D = A * B + C for the whole warp: lanes deposit their fragments, the warp's lowest lane computes every
// lane's D once all arrived, then all leave together.
template <int M, int N, int K, class TA, class LA, class LB, class TC>
inline void mma_at(const char* file, int line, fragment<accumulator, M, N, K, TC, void>& d,
                   const fragment<matrix_a, M, N, K, TA, LA>& a, const fragment<matrix_b, M, N, K, TA, LB>& b,
                   const fragment<accumulator, M, N, K, TC, void>& c) {
    typedef fragment<accumulator, M, N, K, TC, void> FD;
    typedef fragment<matrix_a, M, N, K, TA, LA> FA;
    typedef fragment<matrix_b, M, N, K, TA, LB> FB;
    ::cuda_emu::Scheduler& s = ::cuda_emu::sched();
    const int t = s.current, base = t & ~31;
    mma_slots()[t] = MmaSlot{&d, &a, &b, &c};
    ::cuda_emu::collective(file, line);
    if ((t & 31) == 0) {
        float A[M * K], B[K * N], C[M * N];
        for (int l = 0; l < 32; ++l) {
            const MmaSlot& sl = mma_slots()[base + l];
            for (int i = 0; i < FA::num_elements; ++i) A[FA::position(l, i)] = tf32_in<TA>(to_f(((const FA*)sl.a)->x[i]));
            for (int i = 0; i < FB::num_elements; ++i) B[FB::position(l, i)] = tf32_in<TA>(to_f(((const FB*)sl.b)->x[i]));
            for (int i = 0; i < FD::num_elements; ++i) C[FD::position(l, i)] = to_f(((const FD*)sl.c)->x[i]);
        }
        float D[M * N];
        for (int r = 0; r < M; ++r)
            for (int col = 0; col < N; ++col) {
                float acc = C[r * N + col];
                for (int k = 0; k < K; ++k) acc += A[r * K + k] * B[k * N + col];
                D[r * N + col] = acc;
            }
        for (int l = 0; l < 32; ++l) {
            FD* dl = (FD*)mma_slots()[base + l].d;
            for (int i = 0; i < FD::num_elements; ++i) from_f(dl->x[i], D[FD::position(l, i)]);
        }
    }
    ::cuda_emu::collective(file, line);
}
}  // namespace wmma
}  // namespace nvcuda
#define fill_fragment(...) fill_fragment_at(__FILE__, __LINE__, __VA_ARGS__)
#define load_matrix_sync(...) load_matrix_at(__FILE__, __LINE__, __VA_ARGS__)
#define store_matrix_sync(...) store_matrix_at(__FILE__, __LINE__, __VA_ARGS__)
#define mma_sync(...) mma_at(__FILE__, __LINE__, __VA_ARGS__)

#endif  // FASTCONV_CUDA_EMU_H
#endif  // __CUDACC__
