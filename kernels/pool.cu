// fastconv pooling kernels: max (with int64 indices), average, adaptive average; forward and backward.
//
// Layout: NCHW contiguous, viewed as NC planes of H x W (input) / OH x OW (output).  Plane
// offsets are 64-bit, indices inside a plane 32-bit (the launchers check H * W < 2^31);
// indices are flat h*W + w within the input plane, exactly as torch.  T is
// float, double, fc_half or fc_bf16; arithmetic in Acc<T>::type.  Deterministic: the
// average-pool gradients are gathers over the windows covering each input element, and so is the
// max-pool gradient (see max_pool2d_backward); no atomics.  Launchers: fastconv/cuda/pool.py.
//
// Launch contract of the elementwise kernels (all but the max_pool2d_backward* and *_global kernels):
//   block = (FC_POOL_THREADS, 1, 1), grid = (min(ceil(per_plane / FC_POOL_THREADS), 65535 * 32), min(NC, 65535)),
//   shared = 0; per_plane = OH * OW outputs (forward) or H * W inputs (backward).  Grid-stride loops cover the
//   planes (blockIdx.y) and the elements of a plane (blockIdx.x), so the grid scales with the tensor.
#include "fc_common.cuh"

#define FC_POOL_THREADS 256          // block of the elementwise kernels

#define FC_POOL_PLANES_LOOP(q, NC) for (long long q = blockIdx.y; q < (NC); q += gridDim.y)
#define FC_POOL_ELEMS_LOOP(e, n) for (int e = blockIdx.x * blockDim.x + threadIdx.x; e < (n); e += gridDim.x * blockDim.x)

// torch semantics: the window starts at the first in-bounds dilated tap; `val > max || isnan(val)`
// updates, so ties keep the first maximum and the last NaN wins.
template <typename T>
__global__ void __launch_bounds__(FC_POOL_THREADS)
    max_pool2d_forward(const T* __restrict__ x, T* __restrict__ y, long long* __restrict__ idx, long long NC, int H,
                       int W, int OH, int OW, int kh, int kw, int sh, int sw, int ph, int pw, int dh, int dw) {
    typedef typename Acc<T>::type A;
    FC_POOL_PLANES_LOOP(q, NC) {
        const T* xp = x + q * H * W;
        FC_POOL_ELEMS_LOOP(e, OH * OW) {
            const int oy = e / OW, ox = e - oy * OW;
            int h0 = oy * sh - ph, w0 = ox * sw - pw;
            const int h1 = min(h0 + (kh - 1) * dh + 1, H), w1 = min(w0 + (kw - 1) * dw + 1, W);
            if (h0 < 0) h0 += ((-h0 + dh - 1) / dh) * dh;
            if (w0 < 0) w0 += ((-w0 + dw - 1) / dw) * dw;
            int best = h0 * W + w0;
            A m = fc_neg_inf<A>();
            for (int ih = h0; ih < h1; ih += dh) {
                for (int iw = w0; iw < w1; iw += dw) {
                    const A v = A(load(xp[ih * W + iw]));
                    if (v > m || isnan(v)) {
                        m = v;
                        best = ih * W + iw;
                    }
                }
            }
            y[q * OH * OW + e] = store<T>(m);
            idx[q * OH * OW + e] = best;
        }
    }
}

// max_pool2d_backward: gx[nc, p] = sum of gy[nc, o] over the outputs o with idx[nc, o] == p, in ascending o: a
// gather, so every gx element is written by one thread and no write races another (no atomics).  The Backend
// contract gives no pooling geometry, so it is recovered from the indices in two small passes:
//
// 1. max_pool2d_backward_bounds -- block (32, FC_POOL_BOUNDS_ROWS), grid (ceil(OW / 32), G): block (bx, g)
//    reads the columns ox in [32 bx, 32 bx + 32) of every output row of the planes [g * PC, (g + 1) * PC)
//    (coalesced along ox) and writes, per output row oy, the least and greatest input row its indices hit
//    (rows_part[((g * gridDim.x + bx) * OH + oy) * 2 + {0, 1}]) and, per output column ox, the least and greatest
//    input column (cols_part[(g * OW + ox) * 2 + {0, 1}]).
// 2. max_pool2d_backward_ranges -- block (FC_POOL_THREADS), grid (ceil((OH + OW) / FC_POOL_THREADS)): folds the
//    partials in a fixed order into bounds[(oy) * 2 + {0, 1}] (rows) and bounds[(OH + ox) * 2 + {0, 1}] (columns).
// 3. max_pool2d_backward -- block (32, FC_POOL_BOUNDS_ROWS), grid (ceil(W / 32) * ceil(H / rows), min(NC, 65535)):
//    a tile of input pixels per block (blockIdx.y strides over the planes).  The block first finds, for each of
//    its input rows ih, the outputs rows oy whose bounds contain ih (their first and last) and likewise for its
//    columns, then each thread sums gy over that rectangle of outputs where idx equals its pixel.
// Indices outside [0, H * W) are ignored.  Inner indices are 32-bit (H * W < 2^31, checked by the launcher); plane
// offsets are 64-bit.
#define FC_POOL_BOUNDS_ROWS 8

__device__ __forceinline__ int fc_warp_min(int v) {
    for (int off = 16; off > 0; off >>= 1) v = min(v, __shfl_xor_sync(FC_FULL_MASK, v, off));
    return v;
}
__device__ __forceinline__ int fc_warp_max(int v) {
    for (int off = 16; off > 0; off >>= 1) v = max(v, __shfl_xor_sync(FC_FULL_MASK, v, off));
    return v;
}

__global__ void __launch_bounds__(32 * FC_POOL_BOUNDS_ROWS)
    max_pool2d_backward_bounds(const long long* __restrict__ idx, int* __restrict__ rows_part,
                               int* __restrict__ cols_part, long long NC, long long PC, int H, int W, int OH,
                               int OW) {
    __shared__ int red[2][FC_POOL_BOUNDS_ROWS][32];
    const int ox = blockIdx.x * 32 + threadIdx.x, ty = threadIdx.y;
    const long long q0 = blockIdx.y * PC, q1 = fc_min(NC, q0 + PC);
    const long long HW = (long long)H * W;
    int clo = 0x7fffffff, chi = -1;
    for (int oy = ty; oy < OH; oy += FC_POOL_BOUNDS_ROWS) {
        int rlo = 0x7fffffff, rhi = -1;
        if (ox < OW) {
            for (long long q = q0; q < q1; ++q) {
                const long long p = idx[(q * OH + oy) * OW + ox];
                if (p < 0 || p >= HW) continue;
                const int ih = (int)(p / W), iw = (int)(p - (long long)ih * W);
                rlo = min(rlo, ih);
                rhi = max(rhi, ih);
                clo = min(clo, iw);
                chi = max(chi, iw);
            }
        }
        rlo = fc_warp_min(rlo);  // over the 32 columns of this row (a warp is one row of the block)
        rhi = fc_warp_max(rhi);
        if (threadIdx.x == 0) {
            int* rp = rows_part + ((blockIdx.y * (long long)gridDim.x + blockIdx.x) * OH + oy) * 2;
            rp[0] = rlo;
            rp[1] = rhi;
        }
    }
    red[0][ty][threadIdx.x] = clo;
    red[1][ty][threadIdx.x] = chi;
    __syncthreads();
    if (ty == 0 && ox < OW) {
        for (int r = 1; r < FC_POOL_BOUNDS_ROWS; ++r) {
            clo = min(clo, red[0][r][threadIdx.x]);
            chi = max(chi, red[1][r][threadIdx.x]);
        }
        int* cp = cols_part + (blockIdx.y * (long long)OW + ox) * 2;
        cp[0] = clo;
        cp[1] = chi;
    }
}

__global__ void __launch_bounds__(FC_POOL_THREADS)
    max_pool2d_backward_ranges(const int* __restrict__ rows_part, const int* __restrict__ cols_part,
                               int* __restrict__ bounds, int G, int tiles_x, int OH, int OW) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= OH + OW) return;
    int lo = 0x7fffffff, hi = -1;
    if (i < OH) {
        for (int b = 0; b < G * tiles_x; ++b) {
            lo = min(lo, rows_part[((long long)b * OH + i) * 2]);
            hi = max(hi, rows_part[((long long)b * OH + i) * 2 + 1]);
        }
    } else {
        for (int g = 0; g < G; ++g) {
            lo = min(lo, cols_part[((long long)g * OW + i - OH) * 2]);
            hi = max(hi, cols_part[((long long)g * OW + i - OH) * 2 + 1]);
        }
    }
    bounds[2 * i] = lo;
    bounds[2 * i + 1] = hi;
}

// First and last index k < n with lo[k] <= v <= hi[k] (bounds interleaved as (lo, hi) pairs); first > last if none.
__device__ __forceinline__ void fc_covering(const int* __restrict__ b, int n, int v, int& first, int& last) {
    first = n;
    last = -1;
    for (int k = 0; k < n; ++k) {
        if (b[2 * k] <= v && v <= b[2 * k + 1]) {
            first = min(first, k);
            last = k;
        }
    }
}

template <typename T>
__global__ void __launch_bounds__(32 * FC_POOL_BOUNDS_ROWS)
    max_pool2d_backward(const T* __restrict__ gy, const long long* __restrict__ idx, const int* __restrict__ bounds,
                        T* __restrict__ gx, long long NC, int H, int W, int OH, int OW, int tiles_w) {
    typedef typename Acc<T>::type A;
    __shared__ int rng[2][2][32];  // [rows/cols][first/last][row or column of the tile]
    const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * 32 + tx;
    const int ih0 = (blockIdx.x / tiles_w) * FC_POOL_BOUNDS_ROWS, iw0 = (blockIdx.x % tiles_w) * 32;
    if (tid < FC_POOL_BOUNDS_ROWS) fc_covering(bounds, OH, ih0 + tid, rng[0][0][tid], rng[0][1][tid]);
    if (tid >= 32 && tid < 64) fc_covering(bounds + 2 * OH, OW, iw0 + tid - 32, rng[1][0][tid - 32], rng[1][1][tid - 32]);
    __syncthreads();
    const int ih = ih0 + ty, iw = iw0 + tx;
    if (ih >= H || iw >= W) return;
    const int oy0 = rng[0][0][ty], oy1 = rng[0][1][ty], ox0 = rng[1][0][tx], ox1 = rng[1][1][tx];
    const long long p = (long long)ih * W + iw, OHW = (long long)OH * OW, HW = (long long)H * W;
    for (long long q = blockIdx.y; q < NC; q += gridDim.y) {
        const long long* ip = idx + q * OHW;
        const T* gp = gy + q * OHW;
        A s = A(0);
        for (int oy = oy0; oy <= oy1; ++oy)
            for (int ox = ox0; ox <= ox1; ++ox) {
                const int o = oy * OW + ox;
                if (ip[o] == p) s += A(load(gp[o]));
            }
        gx[q * HW + p] = store<T>(s);
    }
}

// torch semantics: hend = min(hstart + kh, H + ph); pool_size counts the padded window before clipping;
// divisor = divisor_override, else pool_size (count_include_pad) or the clipped area.
template <typename T>
__global__ void __launch_bounds__(FC_POOL_THREADS)
    avg_pool2d_forward(const T* __restrict__ x, T* __restrict__ y, long long NC, int H, int W, int OH, int OW, int kh,
                       int kw, int sh, int sw, int ph, int pw, int count_include_pad, int divisor_override) {
    typedef typename Acc<T>::type A;
    FC_POOL_PLANES_LOOP(q, NC) {
        const T* xp = x + q * H * W;
        FC_POOL_ELEMS_LOOP(e, OH * OW) {
            const int oy = e / OW, ox = e - oy * OW;
            int hs = oy * sh - ph, ws = ox * sw - pw;
            int he = min(hs + kh, H + ph), we = min(ws + kw, W + pw);
            const int pool = (he - hs) * (we - ws);
            hs = max(hs, 0);
            ws = max(ws, 0);
            he = min(he, H);
            we = min(we, W);
            A s = A(0);
            for (int ih = hs; ih < he; ++ih)
                for (int iw = ws; iw < we; ++iw) s += A(load(xp[ih * W + iw]));
            const int div = divisor_override ? divisor_override : (count_include_pad ? pool : (he - hs) * (we - ws));
            y[q * OH * OW + e] = store<T>(hs >= he || ws >= we ? A(0) : fc_div(s, A(div)));
        }
    }
}

template <typename T>
__global__ void __launch_bounds__(FC_POOL_THREADS)
    avg_pool2d_backward(const T* __restrict__ gy, T* __restrict__ gx, long long NC, int H, int W, int OH, int OW,
                        int kh, int kw, int sh, int sw, int ph, int pw, int count_include_pad, int divisor_override) {
    typedef typename Acc<T>::type A;
    FC_POOL_PLANES_LOOP(q, NC) {
        const T* gp = gy + q * OH * OW;
        FC_POOL_ELEMS_LOOP(e, H * W) {
            const int ih = e / W, iw = e - ih * W;
            // windows oy with oy*sh - ph <= ih < oy*sh - ph + kh
            const int oy0 = ih + ph < kh ? 0 : (ih + ph - kh) / sh + 1, oy1 = min((ih + ph) / sh + 1, OH);
            const int ox0 = iw + pw < kw ? 0 : (iw + pw - kw) / sw + 1, ox1 = min((iw + pw) / sw + 1, OW);
            A s = A(0);
            for (int oy = oy0; oy < oy1; ++oy) {
                const int hs = oy * sh - ph, he = min(hs + kh, H + ph);
                const int hc = min(he, H) - max(hs, 0);
                for (int ox = ox0; ox < ox1; ++ox) {
                    const int ws = ox * sw - pw, we = min(ws + kw, W + pw);
                    const int wc = min(we, W) - max(ws, 0);
                    const int div =
                        divisor_override ? divisor_override : (count_include_pad ? (he - hs) * (we - ws) : hc * wc);
                    s += fc_div(A(load(gp[oy * OW + ox])), A(div));
                }
            }
            gx[q * H * W + e] = store<T>(s);
        }
    }
}

// Adaptive pooling to 1 x 1 (global average pooling): a deterministic two-pass row sum over the NC planes (see
// fc_row_sum_pass1 / fc_row_sum_pass2 in fc_common.cuh for the launch contract), then the mean.
template <typename T>
__global__ void __launch_bounds__(32 * FC_ROWSUM_WARPS)
    adaptive_avg_pool2d_forward_global(const T* __restrict__ x, typename Acc<T>::type* __restrict__ partials,
                                       long long NC, int HW, long long chunk) {
    fc_row_sum_pass1(x, partials, NC, 1, HW, 0, HW, chunk);
}

template <typename T>
__global__ void __launch_bounds__(FC_POOL_THREADS)
    adaptive_avg_pool2d_forward_global_finish(const typename Acc<T>::type* __restrict__ partials, T* __restrict__ y,
                                              long long NC, int nb, double count) {
    fc_row_sum_pass2(partials, y, NC, nb, count);
}

// Adaptive windows: rows [floor(oy*H/OH), ceil((oy+1)*H/OH)), likewise for columns (products in 64 bits).
template <typename T>
__global__ void __launch_bounds__(FC_POOL_THREADS)
    adaptive_avg_pool2d_forward(const T* __restrict__ x, T* __restrict__ y, long long NC, int H, int W, int OH,
                                int OW) {
    typedef typename Acc<T>::type A;
    FC_POOL_PLANES_LOOP(q, NC) {
        const T* xp = x + q * H * W;
        FC_POOL_ELEMS_LOOP(e, OH * OW) {
            const int oy = e / OW, ox = e - oy * OW;
            const int hs = (int)((long long)oy * H / OH), he = (int)(((long long)(oy + 1) * H + OH - 1) / OH);
            const int ws = (int)((long long)ox * W / OW), we = (int)(((long long)(ox + 1) * W + OW - 1) / OW);
            A s = A(0);
            for (int ih = hs; ih < he; ++ih)
                for (int iw = ws; iw < we; ++iw) s += A(load(xp[ih * W + iw]));
            y[q * OH * OW + e] = store<T>(s / A((he - hs) * (we - ws)));
        }
    }
}

// Gather: input row ih lies in the windows oy in [floor(ih*OH/H), floor(((ih+1)*OH - 1)/H)].
template <typename T>
__global__ void __launch_bounds__(FC_POOL_THREADS)
    adaptive_avg_pool2d_backward(const T* __restrict__ gy, T* __restrict__ gx, long long NC, int H, int W, int OH,
                                 int OW) {
    typedef typename Acc<T>::type A;
    FC_POOL_PLANES_LOOP(q, NC) {
        const T* gp = gy + q * OH * OW;
        FC_POOL_ELEMS_LOOP(e, H * W) {
            const int ih = e / W, iw = e - ih * W;
            const int oy0 = (int)((long long)ih * OH / H), oy1 = min((int)(((long long)(ih + 1) * OH - 1) / H) + 1, OH);
            const int ox0 = (int)((long long)iw * OW / W), ox1 = min((int)(((long long)(iw + 1) * OW - 1) / W) + 1, OW);
            A s = A(0);
            for (int oy = oy0; oy < oy1; ++oy) {
                const int hc = (int)(((long long)(oy + 1) * H + OH - 1) / OH - (long long)oy * H / OH);
                for (int ox = ox0; ox < ox1; ++ox) {
                    const int wc = (int)(((long long)(ox + 1) * W + OW - 1) / OW - (long long)ox * W / OW);
                    s += A(load(gp[oy * OW + ox])) / A(hc * wc);
                }
            }
            gx[q * H * W + e] = store<T>(s);
        }
    }
}
