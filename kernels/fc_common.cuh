// fastconv kernel helpers shared by every kernels/*.cu file.
//
// Storage types: float, double, fc_half (IEEE binary16) and fc_bf16 (bfloat16), the
// latter two as raw 16-bit patterns.  On the GPU the conversions are single cvt
// instructions; the plain C++ versions (the same IEEE round-to-nearest-even) serve the
// emulator, so the kernels need neither <cuda_fp16.h> nor <cuda_bf16.h>.  Arithmetic happens in Acc<T>::type
// (double for double, float otherwise); load() widens a stored value, store<T>()
// narrows with round-to-nearest-even.  The runtime inlines this file into each
// kernel source (fastconv.cuda._runtime.kernel_source), so NVRTC receives one
// self-contained translation unit.
#ifndef FASTCONV_FC_COMMON_CUH
#define FASTCONV_FC_COMMON_CUH

#define FC_FULL_MASK 0xffffffffu

template <bool B, class X, class Y>
struct fc_if {
    typedef X type;
};
template <class X, class Y>
struct fc_if<false, X, Y> {
    typedef Y type;
};

template <typename T>
struct Acc {
    typedef float type;
};
template <>
struct Acc<double> {
    typedef double type;
};

__device__ __forceinline__ float load(float v) { return v; }
__device__ __forceinline__ double load(double v) { return v; }
struct fc_half {
    unsigned short x;
};
struct fc_bf16 {
    unsigned short x;
};

__device__ __forceinline__ float fc_bits_to_float(unsigned int b) { return __int_as_float((int)b); }
__device__ __forceinline__ unsigned int fc_float_to_bits(float f) { return (unsigned int)__float_as_int(f); }

__device__ __forceinline__ float load(fc_half h) {
#ifdef __CUDA_ARCH__
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h.x));
    return f;
#else
    const unsigned int sign = (unsigned int)(h.x & 0x8000u) << 16, ex = (h.x >> 10) & 0x1fu, man = h.x & 0x3ffu;
    if (ex == 0x1f) return fc_bits_to_float(sign | 0x7f800000u | (man << 13));
    if (ex != 0) return fc_bits_to_float(sign | ((ex + 112u) << 23) | (man << 13));
    const float mag = (float)man * 5.9604644775390625e-08f;  // subnormal: man * 2^-24 (exact)
    return sign ? -mag : mag;
#endif
}
__device__ __forceinline__ float load(fc_bf16 b) { return fc_bits_to_float((unsigned int)b.x << 16); }

__device__ __forceinline__ fc_half fc_float_to_half(float f) {  // round to nearest even
#ifdef __CUDA_ARCH__
    fc_half r;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r.x) : "f"(f));
    return r;
#else
    const unsigned int u = fc_float_to_bits(f), sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    fc_half h;
    if (a > 0x7f800000u) {
        h.x = (unsigned short)(sign | 0x7e00u);
    } else if (a >= 0x477ff000u) {  // rounds to >= 65520: infinity
        h.x = (unsigned short)(sign | 0x7c00u);
    } else if (a < 0x38800000u) {  // below 2^-14: subnormal or zero
        const int shift = 126 - (int)(a >> 23);
        if (shift > 24) {
            h.x = (unsigned short)sign;
        } else {
            const unsigned int m = (a & 0x7fffffu) | 0x800000u;
            const int s = shift;  // bits to drop
            unsigned int q = m >> s;
            const unsigned int rem = m & ((1u << s) - 1), halfway = 1u << (s - 1);
            if (rem > halfway || (rem == halfway && (q & 1u))) ++q;
            h.x = (unsigned short)(sign | q);
        }
    } else {
        unsigned int q = a - 0x38000000u;
        const unsigned int rem = q & 0x1fffu;
        q >>= 13;
        if (rem > 0x1000u || (rem == 0x1000u && (q & 1u))) ++q;
        h.x = (unsigned short)(sign | q);
    }
    return h;
#endif
}
__device__ __forceinline__ fc_bf16 fc_float_to_bf16(float f) {  // round to nearest even
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    fc_bf16 r;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r.x) : "f"(f));
    return r;
#else
    unsigned int u = fc_float_to_bits(f);
    fc_bf16 b;
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        b.x = (unsigned short)((u >> 16) | 0x40u);
    } else {
        u += 0x7fffu + ((u >> 16) & 1u);
        b.x = (unsigned short)(u >> 16);
    }
    return b;
#endif
}

template <typename T>
__device__ __forceinline__ T store(typename Acc<T>::type v);
template <>
__device__ __forceinline__ float store<float>(float v) { return v; }
template <>
__device__ __forceinline__ double store<double>(double v) { return v; }
template <>
__device__ __forceinline__ fc_half store<fc_half>(float v) { return fc_float_to_half(v); }
template <>
__device__ __forceinline__ fc_bf16 store<fc_bf16>(float v) { return fc_float_to_bf16(v); }

template <typename A>
__device__ __forceinline__ A fc_neg_inf();
template <>
__device__ __forceinline__ float fc_neg_inf<float>() { return __int_as_float(0xff800000); }
template <>
__device__ __forceinline__ double fc_neg_inf<double>() { return __longlong_as_double((long long)0xfff0000000000000ULL); }

// IEEE division rounded to nearest (what `/` means with --prec-div=true), as the intrinsic the compiler inlines.
template <typename A>
__device__ __forceinline__ A fc_div(A a, A b) {
#ifdef __CUDA_ARCH__
    if constexpr (sizeof(A) == 4) {
        return __fdiv_rn(a, b);
    } else {
        return __ddiv_rn(a, b);
    }
#else
    return a / b;
#endif
}

__device__ __forceinline__ long long fc_min(long long a, long long b) { return a < b ? a : b; }
__device__ __forceinline__ long long fc_max(long long a, long long b) { return a > b ? a : b; }

// Sum over the first n (1..32) lanes of a warp, in a fixed butterfly order (lane 0 gets the total).  Only those
// lanes may call it; a lane whose partner does not exist keeps its value (the shuffle's result is discarded).
template <typename A>
__device__ __forceinline__ A warp_sum(A v, int n = 32) {
    const unsigned mask = n >= 32 ? FC_FULL_MASK : ((1u << n) - 1u);
    const int lane = (threadIdx.y * blockDim.x + threadIdx.x) & 31;
    for (int off = 16; off > 0; off >>= 1) {
        const A o = __shfl_down_sync(mask, v, off);
        if (lane + off < n) v += o;
    }
    return v;
}

// Deterministic block sum for any block size up to 1024 threads: warp shuffles (the last warp may be partial),
// then warp 0 reduces the per-warp partials from `red` (>= 32 slots).  Every thread must call it; thread 0
// receives the total.  Ends with a barrier, so `red` may be reused immediately.
template <typename A>
__device__ __forceinline__ A block_sum(A v, A* red) {
    const int tid = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
    const int nthreads = blockDim.x * blockDim.y * blockDim.z;
    const int nwarps = (nthreads + 31) >> 5;
    v = warp_sum(v, min(32, nthreads - (tid & ~31)));
    if ((tid & 31) == 0) red[tid >> 5] = v;
    __syncthreads();
    A total = 0;
    if (tid < 32) {
        total = tid < nwarps ? red[tid] : A(0);
        total = warp_sum(total, min(32, nthreads));
    }
    __syncthreads();
    return total;
}

// Deterministic two-pass row sums over a strided matrix (the bias gradient, global average pooling).
// Row r < R holds S segments of L contiguous elements; segment s of row r starts at x + s * seg_stride +
// r * row_stride.
//
// Launch contract of pass 1: block = (32, FC_ROWSUM_WARPS), grid = (nb, min(ceil(R / FC_ROWSUM_WARPS), 65535)),
// shared = 0.  Warp threadIdx.y of block (bx, by) sums elements [bx * chunk, (bx + 1) * chunk) of the rows
// r = by * FC_ROWSUM_WARPS + threadIdx.y + k * gridDim.y * FC_ROWSUM_WARPS (lanes stride the contiguous
// elements: coalesced; 32-bit offsets inside a segment) and writes partials[r * nb + bx].  nb * chunk >= S * L.
// Pass 2: block = (FC_ROWSUM_THREADS), grid = (min(ceil(R / FC_ROWSUM_THREADS), 65535 * 32)): one thread per row
// adds its nb partials in order and writes out[r] = sum / divisor.
#define FC_ROWSUM_WARPS 8
#define FC_ROWSUM_THREADS 256

template <typename T>
__device__ __forceinline__ void fc_row_sum_pass1(const T* __restrict__ x, typename Acc<T>::type* __restrict__ partials,
                                                 long long R, long long S, int L, long long seg_stride,
                                                 long long row_stride, long long chunk) {
    typedef typename Acc<T>::type A;
    const int lane = threadIdx.x;
    const long long total = S * L;
    const long long j0 = blockIdx.x * chunk, j1 = fc_min(total, j0 + chunk);
    for (long long r = (long long)blockIdx.y * FC_ROWSUM_WARPS + threadIdx.y; r < R;
         r += (long long)gridDim.y * FC_ROWSUM_WARPS) {
        A acc = A(0);
        for (long long j = j0; j < j1;) {
            const long long s = j / L;
            const int off = (int)(j - s * L);
            const int end = (int)fc_min((long long)L, off + (j1 - j));
            const T* p = x + s * seg_stride + r * row_stride;
            for (int e = off + lane; e < end; e += 32) acc += A(load(p[e]));
            j += end - off;
        }
        acc = warp_sum(acc);
        if (lane == 0) partials[r * gridDim.x + blockIdx.x] = acc;
    }
}

template <typename T>
__device__ __forceinline__ void fc_row_sum_pass2(const typename Acc<T>::type* __restrict__ partials,
                                                 T* __restrict__ out, long long R, int nb, double divisor) {
    typedef typename Acc<T>::type A;
    for (long long r = (long long)blockIdx.x * blockDim.x + threadIdx.x; r < R; r += (long long)gridDim.x * blockDim.x) {
        A s = A(0);
        for (int b = 0; b < nb; ++b) s += partials[r * nb + b];
        out[r] = store<T>(s / A(divisor));
    }
}

#endif  // FASTCONV_FC_COMMON_CUH
