// fastconv conv2d kernels: implicit GEMM for forward, backward-data and backward-weight; the bias gradient.
//
// Layout: x (N, C, H, W), weight (O, C/groups, KH, KW), y / grad_out (N, O, OH, OW), all contiguous.
// Padding is given as top (ph) / left (pw) plus the explicit output (or input) size, so asymmetric
// padding and output_padding need no copy.  conv_transpose2d's forward is conv2d_backward_input
// with a bias.  Launchers and the tile planner: fastconv/cuda/conv2d.py.
//
// Each convolution is, per group, a GEMM C[M x Ncols] = A[M x K] * B[K x Ncols] whose operands are
// gathered from the tensors while they are staged into shared memory (implicit GEMM: no im2col
// buffer in global memory):
//   forward          M = O/groups   (output channel)  Ncols = N*OH*OW (output pixel)  K = C/groups*KH*KW
//   backward-data    M = C/groups   (input channel)   Ncols = N*H*W   (input pixel)   K = O/groups*KH*KW
//   backward-weight  M = O/groups   (output channel)  Ncols = C/groups*KH*KW (tap)    K = N*OH*OW
// conv_gemm (below) is the one tiled GEMM all three run: a block computes a BM x BN tile of C; the K
// dimension is walked in BK-deep tiles staged by conv_stage (the one staging function) into two
// shared-memory buffers (double buffering: tile k+1 is loaded while tile k is multiplied; plain
// loads); edge tiles are predicated (out-of-range elements stage as zero and are not stored).  The
// multiply is
//   TC = 1: tensor cores through nvcuda::wmma, fp32 accumulation: fp16 / bf16 as stored (m16n16k16),
//           float32 as TF32 (m16n16k8, inputs rounded with __float_to_tf32); FC_CONV_TC_THREADS threads,
//           a 2 x 2 (BM >= 32) or 1 x 4 grid of warps, each owning (BM / 16 / warps_m) x (BN / 16 / warps_n)
//           16 x 16 accumulator fragments;
//   TC = 0: exact FMA in Acc<T>::type (float32 exactly, float64); FC_CONV_EXACT_THREADS threads in a
//           16 x 16 grid, each owning a (BM / 16) x (BN / 16) register tile.
// Indices inside a tile (and every per-image offset) are 32-bit; image and plane bases are 64-bit.
// The launcher checks N*OH*OW, N*H*W, C*H*W, O*OH*OW < 2^31.
//
// Launch contract (all three): block = (FC_CONV_TC_THREADS or FC_CONV_EXACT_THREADS, 1, 1); grid =
// (ceil(Ncols / BN), ceil(M / BM), groups * splits); blockIdx.z = split * groups + group; shared = 0
// dynamic (static shared memory, FC_CONV_SMEM bytes at most).  splits > 1 only for backward-weight
// (split-K: split s walks K range [s * kchunk, min(K, (s + 1) * kchunk)) and writes its partial tile to
// ws[s]); conv2d_backward_weight_reduce then adds the splits in a fixed order.  Deterministic: no atomics.
#include "fc_common.cuh"
#include <mma.h>

#define FC_CONV_TC_THREADS 128     // 4 warps
#define FC_CONV_EXACT_THREADS 256  // 16 x 16
#define FC_CONV_REDUCE_THREADS 256 // conv2d_backward_weight_reduce

// ----------------------------------------------------------------------------------------- operand types

// What a conv tile stages in shared memory and multiplies: S (shared element), its padding, BK.
template <typename T, int TC>
struct ConvMath;
template <>
struct ConvMath<float, 0> {  // exact float32
    typedef float S;
    static const int BK = 16, PAD = 4;
};
template <>
struct ConvMath<double, 0> {  // exact float64
    typedef double S;
    static const int BK = 8, PAD = 2;
};
template <>
struct ConvMath<float, 1> {  // TF32 tensor cores
    typedef float S;
    typedef nvcuda::wmma::precision::tf32 W;
    static const int BK = 16, PAD = 4, KF = 8;
};
template <>
struct ConvMath<fc_half, 1> {  // fp16 tensor cores (raw bits staged)
    typedef unsigned short S;
    typedef __half W;
    static const int BK = 32, PAD = 8, KF = 16;
};
template <>
struct ConvMath<fc_bf16, 1> {  // bf16 tensor cores (raw bits staged)
    typedef unsigned short S;
    typedef __nv_bfloat16 W;
    static const int BK = 32, PAD = 8, KF = 16;
};

__device__ __forceinline__ float fc_to_smem(float v, float*) { return v; }
__device__ __forceinline__ double fc_to_smem(double v, double*) { return v; }
template <typename T>
__device__ __forceinline__ unsigned short fc_bits(float v);
template <>
__device__ __forceinline__ unsigned short fc_bits<fc_half>(float v) { return fc_float_to_half(v).x; }
template <>
__device__ __forceinline__ unsigned short fc_bits<fc_bf16>(float v) { return fc_float_to_bf16(v).x; }

// Convert an operand value (exactly representable in T) to its staged form.
template <typename T, typename S>
struct Stage {
    static __device__ __forceinline__ S cvt(typename Acc<T>::type v) { return S(v); }
};
template <typename T>
struct Stage<T, unsigned short> {
    static __device__ __forceinline__ unsigned short cvt(float v) { return fc_bits<T>(v); }
};

// ----------------------------------------------------------------------------------------- the three problems

// Geometry shared by the three problems; g = this block's group.
struct ConvGeo {
    int C, H, W, O, OH, OW, KH, KW, sh, sw, ph, pw, dh, dw, cg, opg, g;
    long long Nimg;
};

// The members of the forward and backward-data problems: input, weight, bias, output tensors, geometry and
// GEMM sizes; a column's decode is an image base and a (row, column) origin.
template <typename T>
struct ConvOperands {
    typedef typename Acc<T>::type A;
    const T* in;
    const T* w;
    const T* bias;
    T* out;
    ConvGeo q;
    int M, N, K;
    struct Col {
        const T* base;
        int y0, x0;
    };
    // Column n = (img * rows + y) * cols + x: the image's base in `in` (+ chan_off) and the origin
    // (y * ys + yo, x * xs + xo) its taps are counted from.
    __device__ Col pixel(int n, int rows, int cols, long long img_elems, long long chan_off, int ys, int yo, int xs,
                         int xo) const {
        if (n >= N) return Col{nullptr, 0, 0};
        const int plane = rows * cols, img = n / plane, r = n - img * plane, y = r / cols, x = r - y * cols;
        return Col{in + img * img_elems + chan_off, y * ys + yo, x * xs + xo};
    }
    // out[img, c0 + m, r] = v + bias[c0 + m] for column n = img * plane + r of an output with `channels` planes.
    __device__ void put_plane(int m, int n, A v, int channels, int c0, int plane) const {
        const int img = n / plane, r = n - img * plane, c = c0 + m;
        out[((long long)img * channels + c) * plane + r] = store<T>(v + (bias ? A(load(bias[c])) : A(0)));
    }
};

// Forward.  A[m, k] = w[g*opg + m, k] (k = (c*KH + i)*KW + j), B[k, n] = x[img, g*cg + c, iy, ix] with
// n = (img*OH + oy)*OW + ox, iy = oy*sh - ph + i*dh, ix = ox*sw - pw + j*dw.
template <typename T>
struct ConvForward : ConvOperands<T> {
    typedef typename Acc<T>::type A;
    typedef typename ConvOperands<T>::Col Col;
    __device__ Col col(int n) const {
        const ConvGeo& q = this->q;
        const long long hw = (long long)q.H * q.W;
        return this->pixel(n, q.OH, q.OW, q.C * hw, q.g * q.cg * hw, q.sh, -q.ph, q.sw, -q.pw);
    }
    __device__ A a(int m, int k) const {
        return m < this->M && k < this->K ? A(load(this->w[((long long)this->q.g * this->q.opg + m) * this->K + k]))
                                          : A(0);
    }
    __device__ A b(const Col& c, int k) const {
        const ConvGeo& q = this->q;
        if (!c.base || k >= this->K) return A(0);
        const int kk = q.KH * q.KW, ci = k / kk, ij = k - ci * kk, i = ij / q.KW, j = ij - i * q.KW;
        const int iy = c.y0 + i * q.dh, ix = c.x0 + j * q.dw;
        return iy >= 0 && iy < q.H && ix >= 0 && ix < q.W ? A(load(c.base[ci * q.H * q.W + iy * q.W + ix])) : A(0);
    }
    __device__ void put(int m, int n, A v) const {
        this->put_plane(m, n, v, this->q.O, this->q.g * this->q.opg, this->q.OH * this->q.OW);
    }
};

// Backward-data.  A[m, k] = w[g*opg + o, m, i, j] (k = o*KH*KW + i*KW + j), B[k, n] = g[img, g*opg + o, oy, ox]
// where iy + ph - i*dh = oy*sh and ix + pw - j*dw = ox*sw (else 0), n = (img*H + iy)*W + ix.
template <typename T>
struct ConvBackwardData : ConvOperands<T> {
    typedef typename Acc<T>::type A;
    typedef typename ConvOperands<T>::Col Col;
    __device__ Col col(int n) const {
        const ConvGeo& q = this->q;
        const long long ohw = (long long)q.OH * q.OW;
        return this->pixel(n, q.H, q.W, q.O * ohw, q.g * q.opg * ohw, 1, q.ph, 1, q.pw);
    }
    __device__ A a(int m, int k) const {
        const ConvGeo& q = this->q;
        if (m >= this->M || k >= this->K) return A(0);
        const int kk = q.KH * q.KW, o = k / kk, ij = k - o * kk;
        return A(load(this->w[(((long long)q.g * q.opg + o) * q.cg + m) * kk + ij]));
    }
    __device__ A b(const Col& c, int k) const {
        const ConvGeo& q = this->q;
        if (!c.base || k >= this->K) return A(0);
        const int kk = q.KH * q.KW, o = k / kk, ij = k - o * kk, i = ij / q.KW, j = ij - i * q.KW;
        const int ty = c.y0 - i * q.dh, tx = c.x0 - j * q.dw;
        if (ty < 0 || tx < 0) return A(0);
        const int oy = ty / q.sh, ox = tx / q.sw;
        if (oy * q.sh != ty || ox * q.sw != tx || oy >= q.OH || ox >= q.OW) return A(0);
        return A(load(c.base[o * q.OH * q.OW + oy * q.OW + ox]));
    }
    __device__ void put(int m, int n, A v) const {
        this->put_plane(m, n, v, this->q.C, this->q.g * this->q.cg, this->q.H * this->q.W);
    }
};

// Backward-weight (one split-K slice).  A[m, k] = g[img, g*opg + m, oy, ox] (k = (img*OH + oy)*OW + ox),
// B[k, n] = x[img, g*cg + c, oy*sh - ph + i*dh, ox*sw - pw + j*dw] (n = c*KH*KW + i*KW + j); the partial
// C goes to ws[split][g*opg + m][n] in Acc<T>::type.
template <typename T>
struct ConvBackwardWeight {
    typedef typename Acc<T>::type A;
    const T* x;
    const T* gy;
    A* ws;
    ConvGeo q;
    int M, N, K, split;
    struct Col {
        int coff, di, dj;
        bool ok;
    };
    __device__ Col col(int n) const {
        const int kk = q.KH * q.KW, c = n / kk, ij = n - c * kk, i = ij / q.KW, j = ij - i * q.KW;
        return Col{(q.g * q.cg + c) * q.H * q.W, i * q.dh - q.ph, j * q.dw - q.pw, n < N};
    }
    __device__ A a(int m, int k) const {
        if (m >= M || k >= K) return A(0);
        const int ohw = q.OH * q.OW, img = k / ohw, r = k - img * ohw;
        return A(load(gy[((long long)img * q.O + q.g * q.opg + m) * ohw + r]));
    }
    __device__ A b(const Col& c, int k) const {
        if (!c.ok || k >= K) return A(0);
        const int ohw = q.OH * q.OW, img = k / ohw, r = k - img * ohw, oy = r / q.OW, ox = r - oy * q.OW;
        const int iy = oy * q.sh + c.di, ix = ox * q.sw + c.dj;
        if (iy < 0 || iy >= q.H || ix < 0 || ix >= q.W) return A(0);
        return A(load(x[(long long)img * q.C * q.H * q.W + c.coff + iy * q.W + ix]));
    }
    __device__ void put(int m, int n, A v) const { ws[((long long)split * q.O + q.g * q.opg + m) * N + n] = v; }
};

// ----------------------------------------------------------------------------------------- the tiled GEMM

// Stage the A tile (BM x BK, rows m0.., columns k0..) and the B tile (BK x BN) of problem p into as / bs.
// Each thread owns one column of B (its decode `col` is hoisted out of the K loop) and strides over A.
template <typename T, typename S, int BM, int BN, int BK, int PAD, int THREADS, class P>
__device__ __forceinline__ void conv_stage(const P& p, const typename P::Col& col, S* as, S* bs, int m0, int k0) {
    const int tid = threadIdx.x;
    for (int e = tid; e < BM * BK; e += THREADS) {
        const int m = e / BK, kk = e - m * BK;
        as[m * (BK + PAD) + kk] = Stage<T, S>::cvt(p.a(m0 + m, k0 + kk));
    }
    const int nn = tid % BN;
    for (int kk = tid / BN; kk < BK; kk += THREADS / BN) bs[kk * (BN + PAD) + nn] = Stage<T, S>::cvt(p.b(col, k0 + kk));
}

// Exact multiply: each of the 16 x 16 threads accumulates a (BM/16) x (BN/16) tile (columns strided by 16).
template <typename T, int BM, int BN>
struct ExactCore {
    typedef typename Acc<T>::type A;
    typedef ConvMath<T, 0> Mth;
    static const int TM = BM / 16, TN = BN / 16;
    A acc[TM][TN];
    __device__ void init() {
#pragma unroll
        for (int i = 0; i < TM; ++i)
#pragma unroll
            for (int j = 0; j < TN; ++j) acc[i][j] = A(0);
    }
    __device__ void step(const A* as, const A* bs) {
        const int ty = threadIdx.x / 16, tx = threadIdx.x % 16;
#pragma unroll
        for (int kk = 0; kk < Mth::BK; ++kk) {
            A av[TM], bv[TN];
#pragma unroll
            for (int i = 0; i < TM; ++i) av[i] = as[(ty * TM + i) * (Mth::BK + Mth::PAD) + kk];
#pragma unroll
            for (int j = 0; j < TN; ++j) bv[j] = bs[kk * (BN + Mth::PAD) + tx + 16 * j];
#pragma unroll
            for (int i = 0; i < TM; ++i)
#pragma unroll
                for (int j = 0; j < TN; ++j) acc[i][j] += av[i] * bv[j];
        }
    }
    __device__ void finish(A* cs) {
        const int ty = threadIdx.x / 16, tx = threadIdx.x % 16;
#pragma unroll
        for (int i = 0; i < TM; ++i)
#pragma unroll
            for (int j = 0; j < TN; ++j) cs[(ty * TM + i) * (BN + 4) + tx + 16 * j] = acc[i][j];
    }
};

// Tensor-core multiply through nvcuda::wmma; fragments are only ever used whole (no element layout assumed).
template <typename T, int BM, int BN>
struct TensorCore {
    typedef ConvMath<T, 1> Mth;
    typedef typename Mth::S S;
    typedef typename Mth::W W;
    typedef typename fc_if<sizeof(S) == 2, W, float>::type LoadT;  // what load_matrix_sync reads
    static const int WM = BM >= 32 ? 2 : 1, WN = 4 / WM, FM = BM / 16 / WM, FN = BN / 16 / WN, KF = Mth::KF;
    nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, KF, float> acc[FM][FN];
    __device__ void init() {
#pragma unroll
        for (int i = 0; i < FM; ++i)
#pragma unroll
            for (int j = 0; j < FN; ++j) nvcuda::wmma::fill_fragment(acc[i][j], 0.0f);
    }
    __device__ void step(const S* as, const S* bs) {
        using namespace nvcuda;
        const int warp = threadIdx.x / 32, wm = warp / WN, wn = warp % WN;
#pragma unroll
        for (int ks = 0; ks < Mth::BK; ks += KF) {
            wmma::fragment<wmma::matrix_a, 16, 16, KF, W, wmma::row_major> fa[FM];
            wmma::fragment<wmma::matrix_b, 16, 16, KF, W, wmma::row_major> fb[FN];
#pragma unroll
            for (int i = 0; i < FM; ++i) {
                const S* p = as + ((wm * FM + i) * 16) * (Mth::BK + Mth::PAD) + ks;
                wmma::load_matrix_sync(fa[i], reinterpret_cast<const LoadT*>(p), Mth::BK + Mth::PAD);
                round_tf32(fa[i]);
            }
#pragma unroll
            for (int j = 0; j < FN; ++j) {
                const S* p = bs + ks * (BN + Mth::PAD) + (wn * FN + j) * 16;
                wmma::load_matrix_sync(fb[j], reinterpret_cast<const LoadT*>(p), BN + Mth::PAD);
                round_tf32(fb[j]);
            }
#pragma unroll
            for (int i = 0; i < FM; ++i)
#pragma unroll
                for (int j = 0; j < FN; ++j) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
        }
    }
    template <class F>
    __device__ static void round_tf32(F& f) {  // TF32 operands: round every element (layout-independent)
        if constexpr (sizeof(S) == 4)
            for (int t = 0; t < f.num_elements; ++t) f.x[t] = nvcuda::wmma::__float_to_tf32(f.x[t]);
    }
    __device__ void finish(float* cs) {
        const int warp = threadIdx.x / 32, wm = warp / WN, wn = warp % WN;
#pragma unroll
        for (int i = 0; i < FM; ++i)
#pragma unroll
            for (int j = 0; j < FN; ++j)
                nvcuda::wmma::store_matrix_sync(cs + ((wm * FM + i) * 16) * (BN + 4) + (wn * FN + j) * 16, acc[i][j],
                                                BN + 4, nvcuda::wmma::mem_row_major);
    }
};

// Bytes of static shared memory of a conv tile: two staging buffers of A and B, or the C tile (they alias).
#define FC_CONV_STAGE_BYTES(BM, BN, BK, PAD, SZ) (2 * ((BM) * ((BK) + (PAD)) + (BK) * ((BN) + (PAD))) * (SZ))
#define FC_CONV_C_BYTES(BM, BN, SZ) ((BM) * ((BN) + 4) * (SZ))

// The block's BM x BN tile of C over K range [k0, k1) of problem p, stored through p.put.
template <typename T, int TC, int BM, int BN, class P>
__device__ __forceinline__ void conv_gemm(const P& p, int m0, int n0, int k0, int k1) {
    typedef ConvMath<T, TC> Mth;
    typedef typename Mth::S S;
    typedef typename fc_if<TC == 1, float, typename Acc<T>::type>::type CT;  // C tile element
    typedef typename fc_if<TC == 1, TensorCore<T, BM, BN>, ExactCore<T, BM, BN> >::type Core;
    constexpr int THREADS = TC ? FC_CONV_TC_THREADS : FC_CONV_EXACT_THREADS, BK = Mth::BK, PAD = Mth::PAD;
    constexpr int STAGE = FC_CONV_STAGE_BYTES(BM, BN, BK, PAD, sizeof(S)), CB = FC_CONV_C_BYTES(BM, BN, sizeof(CT));
    __shared__ __align__(128) unsigned char smem[STAGE > CB ? STAGE : CB];
    // buffer t of A and of B (computed, not indexed from an array: that would live in local memory)
    S* const base = reinterpret_cast<S*>(smem);
    constexpr int ASZ = BM * (BK + PAD), BSZ = BK * (BN + PAD);
    const typename P::Col col = p.col(n0 + threadIdx.x % BN);
    Core core;
    core.init();
    if (k0 < k1) conv_stage<T, S, BM, BN, BK, PAD, THREADS>(p, col, base, base + 2 * ASZ, m0, k0);
    __syncthreads();
    for (int k = k0, t = 0; k < k1; k += BK, t ^= 1) {
        if (k + BK < k1)
            conv_stage<T, S, BM, BN, BK, PAD, THREADS>(p, col, base + (t ^ 1) * ASZ, base + 2 * ASZ + (t ^ 1) * BSZ, m0,
                                                       k + BK);
        core.step(base + t * ASZ, base + 2 * ASZ + t * BSZ);
        __syncthreads();  // tile t consumed, tile t ^ 1 staged
    }
    CT* cs = reinterpret_cast<CT*>(smem);
    core.finish(cs);
    __syncthreads();
    for (int e = threadIdx.x; e < BM * BN; e += THREADS) {
        const int m = e / BN, nn = e - m * BN;
        if (m0 + m < p.M && n0 + nn < p.N) p.put(m0 + m, n0 + nn, typename Acc<T>::type(cs[m * (BN + 4) + nn]));
    }
}

#define FC_CONV_GEO                                                                                          \
    ConvGeo q {                                                                                              \
        C, H, W, O, OH, OW, KH, KW, sh, sw, ph, pw, dh, dw, C / groups, O / groups, (int)(blockIdx.z % groups), N \
    }

// y = conv2d(x, w) + bias.  Launch contract: see the top of the file (M = O/groups, Ncols = N*OH*OW).
template <typename T, int TC, int BM, int BN>
__global__ void __launch_bounds__(TC ? FC_CONV_TC_THREADS : FC_CONV_EXACT_THREADS)
    conv2d_forward(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ bias, T* __restrict__ y,
                   long long N, int C, int H, int W, int O, int OH, int OW, int KH, int KW, int sh, int sw,
                   int ph, int pw, int dh, int dw, int groups, int has_bias) {
    FC_CONV_GEO;
    const ConvForward<T> p{{x, w, has_bias ? bias : nullptr, y, q, q.opg, (int)(N * OH * OW), q.cg * KH * KW}};
    conv_gemm<T, TC, BM, BN>(p, blockIdx.y * BM, blockIdx.x * BN, 0, p.K);
}

// gx = conv2d's gradient w.r.t. x (+ bias per channel: conv_transpose2d).  M = C/groups, Ncols = N*H*W.
template <typename T, int TC, int BM, int BN>
__global__ void __launch_bounds__(TC ? FC_CONV_TC_THREADS : FC_CONV_EXACT_THREADS)
    conv2d_backward_input(const T* __restrict__ g, const T* __restrict__ w, const T* __restrict__ bias,
                          T* __restrict__ gx, long long N, int C, int H, int W, int O, int OH, int OW, int KH,
                          int KW, int sh, int sw, int ph, int pw, int dh, int dw, int groups, int has_bias) {
    FC_CONV_GEO;
    const ConvBackwardData<T> p{{g, w, has_bias ? bias : nullptr, gx, q, q.cg, (int)(N * H * W), q.opg * KH * KW}};
    conv_gemm<T, TC, BM, BN>(p, blockIdx.y * BM, blockIdx.x * BN, 0, p.K);
}

// ws[split] = the split's partial of conv2d's gradient w.r.t. w.  M = O/groups, Ncols = C/groups*KH*KW,
// K = N*OH*OW cut into `splits` ranges of kchunk (a multiple of 64).
template <typename T, int TC, int BM, int BN>
__global__ void __launch_bounds__(TC ? FC_CONV_TC_THREADS : FC_CONV_EXACT_THREADS)
    conv2d_backward_weight(const T* __restrict__ x, const T* __restrict__ g, typename Acc<T>::type* __restrict__ ws,
                           long long N, int C, int H, int W, int O, int OH, int OW, int KH, int KW, int sh,
                           int sw, int ph, int pw, int dh, int dw, int groups, int kchunk) {
    FC_CONV_GEO;
    const int split = blockIdx.z / groups, K = (int)(N * OH * OW);
    const ConvBackwardWeight<T> p{x, g, ws, q, q.opg, q.cg * KH * KW, K, split};
    conv_gemm<T, TC, BM, BN>(p, blockIdx.y * BM, blockIdx.x * BN, split * kchunk, min(K, (split + 1) * kchunk));
}

// gw[i] = sum over s = 0 .. splits-1 (in this order) of ws[s * total + i].  block = (FC_CONV_REDUCE_THREADS),
// grid = (min(ceil(total / FC_CONV_REDUCE_THREADS), 65535 * 32)), grid-stride; shared = 0.
template <typename T>
__global__ void __launch_bounds__(FC_CONV_REDUCE_THREADS)
    conv2d_backward_weight_reduce(const typename Acc<T>::type* __restrict__ ws, T* __restrict__ gw, long long total,
                                  int splits) {
    typedef typename Acc<T>::type A;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (long long)gridDim.x * blockDim.x) {
        A s = A(0);
        for (int t = 0; t < splits; ++t) s += ws[t * total + i];
        gw[i] = store<T>(s);
    }
}

// out[o] = sum_{n, y, x} g[n, o, y, x]  (the bias gradient): a deterministic two-pass row sum (rows o, segments n
// of HW elements); launch contract: fc_row_sum_pass1 / fc_row_sum_pass2 in fc_common.cuh.  The grid scales with
// N * HW and O, not with O alone.
template <typename T>
__global__ void __launch_bounds__(32 * FC_ROWSUM_WARPS)
    conv2d_bias_grad(const T* __restrict__ g, typename Acc<T>::type* __restrict__ partials, long long N, long long O,
                     int HW, long long chunk) {
    fc_row_sum_pass1(g, partials, O, N, HW, O * HW, HW, chunk);
}

template <typename T>
__global__ void __launch_bounds__(FC_ROWSUM_THREADS)
    conv2d_bias_grad_finish(const typename Acc<T>::type* __restrict__ partials, T* __restrict__ out, long long O,
                            int nb) {
    fc_row_sum_pass2(partials, out, O, nb, 1.0);
}
