// fastconv conv2d kernels: forward, backward-data, backward-weight, bias gradient.
//
// Layout: x (N, C, H, W), weight (O, C/groups, KH, KW), y / grad_out (N, O, OH, OW),
// all contiguous.  Padding is given as top (ph) / left (pw) plus the explicit output
// (or input) size, so asymmetric padding and output_padding need no copy.  Every
// index is 64-bit.  T is float, double, fc_half or fc_bf16; accumulation uses
// Acc<T>::type.  All kernels are deterministic: no atomics; every output element is
// written by exactly one thread, and reductions run in a fixed order.
// conv_transpose2d reuses these kernels (its forward is conv2d_backward_input with
// a bias).  Launchers: fastconv/cuda/conv2d.py.
#include "fc_common.cuh"

#define FC_CONV_OB 8     // output channels per forward block (register accumulators)
#define FC_CONV_TAPS 8   // weight taps per backward-weight block
#define FC_CONV_REDUCE_THREADS 256  // block of conv2d_backward_weight
#define FC_CONV_MAX_THREADS 256     // largest TH * TW tile of conv2d_forward / conv2d_backward_input
// Forward dynamic shared memory in elements of A: TH input strips of SW = (TW - 1) * sw + (KW - 1) * dw + 1
// plus one weight row of FC_CONV_OB output channels.
#define FC_CONV_FWD_SMEM(TH, TW, KW, SW, DW) ((TH) * (((TW) - 1) * (SW) + ((KW) - 1) * (DW) + 1) + FC_CONV_OB * (KW))

// y[n, o, oy, ox] = bias[o] + sum_{c in group(o), i, j} w[o, c, i, j] * x[n, c, oy*sh - ph + i*dh, ox*sw - pw + j*dw]
//
// Launch contract:
//   block  = (TW, TH, 1): one thread per output pixel of a TH x TW tile.
//   grid   = (tiles_h * tiles_w, groups * ceil(opg / obc), min(N, 65535)); blockIdx.x = tile
//            (row-major, tiles_w per row), blockIdx.y = group * chunks + chunk of obc (<= 8) output
//            channels, blockIdx.z strides over the batch.
//   shared = (TH * SW + FC_CONV_OB * KW) * sizeof(Acc<T>::type), SW = (TW - 1) * sw + (KW - 1) * dw + 1:
//            for each (input channel, kernel row) the block stages one input strip per tile row plus
//            the matching weight row of its obc output channels.
template <typename T>
__global__ void __launch_bounds__(FC_CONV_MAX_THREADS) conv2d_forward(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ bias,
                               T* __restrict__ y, long long N, long long C, long long H, long long W, long long O,
                               long long OH, long long OW, long long KH, long long KW, long long sh, long long sw,
                               long long ph, long long pw, long long dh, long long dw, long long groups,
                               long long tiles_w, long long obc, int has_bias) {
    typedef typename Acc<T>::type A;
    extern __shared__ __align__(16) unsigned char fc_smem[];
    const long long TW = blockDim.x, TH = blockDim.y;
    const long long SW = (TW - 1) * sw + (KW - 1) * dw + 1;
    A* strip = reinterpret_cast<A*>(fc_smem);
    A* wsh = strip + TH * SW;
    const int tid = threadIdx.y * blockDim.x + threadIdx.x, nthreads = blockDim.x * blockDim.y;
    const long long cg = C / groups, opg = O / groups, chunks = (opg + obc - 1) / obc;
    const long long g = blockIdx.y / chunks, o0 = g * opg + (blockIdx.y % chunks) * obc;
    const long long nob = fc_min(obc, (g + 1) * opg - o0);
    const long long ty0 = (blockIdx.x / tiles_w) * TH, tx0 = (blockIdx.x % tiles_w) * TW;
    const long long oy = ty0 + threadIdx.y, ox = tx0 + threadIdx.x;
    const long long ix0 = tx0 * sw - pw;
    const bool active = oy < OH && ox < OW;
    for (long long n = blockIdx.z; n < N; n += gridDim.z) {
        A acc[FC_CONV_OB];
#pragma unroll
        for (int ob = 0; ob < FC_CONV_OB; ++ob) acc[ob] = A(0);
        for (long long cl = 0; cl < cg; ++cl) {
            const T* xp = x + (n * C + g * cg + cl) * H * W;
            for (long long i = 0; i < KH; ++i) {
                for (long long e = tid; e < TH * SW; e += nthreads) {
                    const long long r = e / SW, s = e - r * SW;
                    const long long iy = (ty0 + r) * sh - ph + i * dh, ix = ix0 + s;
                    strip[e] = (iy >= 0 && iy < H && ix >= 0 && ix < W) ? A(load(xp[iy * W + ix])) : A(0);
                }
                for (long long e = tid; e < FC_CONV_OB * KW; e += nthreads) {
                    const long long ob = e / KW, j = e - ob * KW;
                    wsh[e] = ob < nob ? A(load(w[(((o0 + ob) * cg + cl) * KH + i) * KW + j])) : A(0);
                }
                __syncthreads();
                if (active) {
                    const A* row = strip + threadIdx.y * SW + threadIdx.x * sw;
                    for (long long j = 0; j < KW; ++j) {
                        const A v = row[j * dw];
#pragma unroll
                        for (int ob = 0; ob < FC_CONV_OB; ++ob) acc[ob] += v * wsh[ob * KW + j];
                    }
                }
                __syncthreads();
            }
        }
        if (active) {
#pragma unroll
            for (int ob = 0; ob < FC_CONV_OB; ++ob) {
                if (ob < nob) {
                    const long long o = o0 + ob;
                    const A b = has_bias ? A(load(bias[o])) : A(0);
                    y[((n * O + o) * OH + oy) * OW + ox] = store<T>(acc[ob] + b);
                }
            }
        }
    }
}

// gx[n, c, iy, ix] = bias[c] + sum over (o in group(c), i, j) with iy + ph - i*dh = oy*sh, ix + pw - j*dw = ox*sw,
// 0 <= oy < OH, 0 <= ox < OW of g[n, o, oy, ox] * w[o, c % cg, i, j]  (a gather: no atomics).
//
// Launch contract:
//   block  = (TW, TH, 1): one thread per input pixel of a TH x TW tile.
//   grid   = (tiles_h * tiles_w, C, min(N, 65535)); blockIdx.y = input channel, blockIdx.z strides the batch.
//   shared = occ * KH * KW * sizeof(Acc<T>::type): the weights of a chunk of occ output channels of the group.
template <typename T>
__global__ void __launch_bounds__(FC_CONV_MAX_THREADS) conv2d_backward_input(const T* __restrict__ g, const T* __restrict__ w, const T* __restrict__ bias,
                                      T* __restrict__ gx, long long N, long long C, long long H, long long W,
                                      long long O, long long OH, long long OW, long long KH, long long KW,
                                      long long sh, long long sw, long long ph, long long pw, long long dh,
                                      long long dw, long long groups, long long tiles_w, long long occ,
                                      int has_bias) {
    typedef typename Acc<T>::type A;
    extern __shared__ __align__(16) unsigned char fc_smem[];
    A* wsh = reinterpret_cast<A*>(fc_smem);
    const long long TW = blockDim.x, TH = blockDim.y, KK = KH * KW;
    const int tid = threadIdx.y * blockDim.x + threadIdx.x, nthreads = blockDim.x * blockDim.y;
    const long long cg = C / groups, opg = O / groups;
    const long long c = blockIdx.y, grp = c / cg, cl = c - grp * cg;
    const long long iy = (blockIdx.x / tiles_w) * TH + threadIdx.y, ix = (blockIdx.x % tiles_w) * TW + threadIdx.x;
    const bool active = iy < H && ix < W;
    const long long plane = OH * OW;
    for (long long n = blockIdx.z; n < N; n += gridDim.z) {
        A acc = A(0);
        for (long long oc0 = 0; oc0 < opg; oc0 += occ) {
            const long long cnt = fc_min(occ, opg - oc0);
            for (long long e = tid; e < cnt * KK; e += nthreads) {
                const long long ob = e / KK, k = e - ob * KK;
                wsh[e] = A(load(w[((grp * opg + oc0 + ob) * cg + cl) * KK + k]));
            }
            __syncthreads();
            if (active) {
                const T* gbase = g + (n * O + grp * opg + oc0) * plane;
                for (long long i = 0; i < KH; ++i) {
                    const long long ty = iy + ph - i * dh;
                    if (ty < 0 || ty % sh != 0) continue;
                    const long long oy = ty / sh;
                    if (oy >= OH) continue;
                    for (long long j = 0; j < KW; ++j) {
                        const long long tx = ix + pw - j * dw;
                        if (tx < 0 || tx % sw != 0) continue;
                        const long long ox = tx / sw;
                        if (ox >= OW) continue;
                        const T* gp = gbase + oy * OW + ox;
                        const A* wp = wsh + i * KW + j;
                        for (long long ob = 0; ob < cnt; ++ob) acc += A(load(gp[ob * plane])) * wp[ob * KK];
                    }
                }
            }
            __syncthreads();
        }
        if (active) {
            const A b = has_bias ? A(load(bias[c])) : A(0);
            gx[((n * C + c) * H + iy) * W + ix] = store<T>(acc + b);
        }
    }
}

// gw[o, cl, i, j] = sum_{n, oy, ox} g[n, o, oy, ox] * x[n, grp*cg + cl, oy*sh - ph + i*dh, ox*sw - pw + j*dw]
//
// Launch contract:
//   block  = (256, 1, 1) (any multiple of 32 up to 1024): threads stride over the N*OH*OW positions.
//   grid   = (O * cg * ceil(KH*KW / FC_CONV_TAPS), 1, 1): one block per output channel o, input channel cl
//            of its group and chunk of FC_CONV_TAPS consecutive taps (k = i*KW + j); each thread keeps one
//            accumulator per tap, then block_sum (warp shuffles + a fixed-order pass over the warps) reduces.
//   shared = 0 dynamic (32 accumulators of static shared memory).
template <typename T>
__global__ void __launch_bounds__(FC_CONV_REDUCE_THREADS) conv2d_backward_weight(const T* __restrict__ x, const T* __restrict__ g, T* __restrict__ gw,
                                       long long N, long long C, long long H, long long W, long long O,
                                       long long OH, long long OW, long long KH, long long KW, long long sh,
                                       long long sw, long long ph, long long pw, long long dh, long long dw,
                                       long long groups) {
    typedef typename Acc<T>::type A;
    __shared__ A red[32];
    const long long KK = KH * KW, nchunks = (KK + FC_CONV_TAPS - 1) / FC_CONV_TAPS;
    const long long cg = C / groups, opg = O / groups;
    long long b = blockIdx.x;
    const long long tc = b % nchunks;
    b /= nchunks;
    const long long cl = b % cg, o = b / cg;
    const long long c = (o / opg) * cg + cl, k0 = tc * FC_CONV_TAPS;
    const long long ntaps = fc_min(FC_CONV_TAPS, KK - k0);
    long long ti[FC_CONV_TAPS], tj[FC_CONV_TAPS];
#pragma unroll
    for (int t = 0; t < FC_CONV_TAPS; ++t) {
        const long long k = k0 + (t < ntaps ? t : 0);
        ti[t] = (k / KW) * dh - ph;
        tj[t] = (k % KW) * dw - pw;
    }
    A acc[FC_CONV_TAPS];
#pragma unroll
    for (int t = 0; t < FC_CONV_TAPS; ++t) acc[t] = A(0);
    const long long plane = OH * OW, total = N * plane;
    const int tid = threadIdx.x;
    for (long long p = tid; p < total; p += blockDim.x) {
        const long long n = p / plane, r = p - n * plane, oy = r / OW, ox = r - oy * OW;
        const A gv = A(load(g[(n * O + o) * plane + r]));
        const T* xp = x + (n * C + c) * H * W;
#pragma unroll
        for (int t = 0; t < FC_CONV_TAPS; ++t) {
            const long long iy = oy * sh + ti[t], ix = ox * sw + tj[t];
            if (t < ntaps && iy >= 0 && iy < H && ix >= 0 && ix < W) acc[t] += gv * A(load(xp[iy * W + ix]));
        }
    }
#pragma unroll
    for (int t = 0; t < FC_CONV_TAPS; ++t) {
        const A s = block_sum(acc[t], red);
        if (tid == 0 && t < ntaps) gw[(o * cg + cl) * KK + k0 + t] = store<T>(s);
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
