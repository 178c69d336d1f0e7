// fastconv pooling kernels: max (with int64 indices), average, adaptive average; forward and backward.
//
// Layout: NCHW contiguous, viewed as NC planes of H x W (input) / OH x OW (output).  Every
// index is 64-bit; indices are flat h*W + w within the input plane, exactly as torch.  T is
// float, double, fc_half or fc_bf16; arithmetic in Acc<T>::type.  Deterministic: the
// average-pool gradients are gathers over the windows covering each input element, and the
// max-pool gradient is a warp-per-plane scatter that combines equal indices with warp
// shuffles in lane order (no atomics).  Launchers: fastconv/cuda/pool.py.
//
// Launch contract of the elementwise kernels (all but max_pool2d_backward):
//   block = (256, 1, 1), grid = (min(ceil(total / 256), 65535 * 32), 1, 1), shared = 0; a grid-stride
//   loop covers `total` = NC * OH * OW outputs (forward) or NC * H * W inputs (backward).
#include "fc_common.cuh"

#define FC_POOL_THREADS 256          // block of the elementwise kernels
#define FC_POOL_BWD_MAX_THREADS 128  // block of max_pool2d_backward

// torch semantics: the window starts at the first in-bounds dilated tap; `val > max || isnan(val)`
// updates, so ties keep the first maximum and the last NaN wins.
template <typename T>
__global__ void __launch_bounds__(FC_POOL_THREADS) max_pool2d_forward(const T* __restrict__ x, T* __restrict__ y, long long* __restrict__ idx,
                                   long long NC, long long H, long long W, long long OH, long long OW, long long kh,
                                   long long kw, long long sh, long long sw, long long ph, long long pw,
                                   long long dh, long long dw) {
    typedef typename Acc<T>::type A;
    const long long total = NC * OH * OW;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        const long long ox = e % OW, oy = (e / OW) % OH, nc = e / (OW * OH);
        long long h0 = oy * sh - ph, w0 = ox * sw - pw;
        const long long h1 = fc_min(h0 + (kh - 1) * dh + 1, H), w1 = fc_min(w0 + (kw - 1) * dw + 1, W);
        if (h0 < 0) h0 += ((-h0 + dh - 1) / dh) * dh;
        if (w0 < 0) w0 += ((-w0 + dw - 1) / dw) * dw;
        const T* xp = x + nc * H * W;
        long long best = h0 * W + w0;
        A m = fc_neg_inf<A>();
        for (long long ih = h0; ih < h1; ih += dh) {
            for (long long iw = w0; iw < w1; iw += dw) {
                const A v = A(load(xp[ih * W + iw]));
                if (v > m || isnan(v)) {
                    m = v;
                    best = ih * W + iw;
                }
            }
        }
        y[e] = store<T>(m);
        idx[e] = best;
    }
}

// gx[nc, p] = sum of gy[nc, o] over the outputs o with idx[nc, o] == p.
//
// Launch contract: block = (128, 1, 1) (a multiple of 32), grid = (min(ceil(NC / warps), 65535 * 32), 1, 1),
// shared = 0; gx must be zero-filled.  Each warp owns whole planes (no two warps touch the same
// element); per round of 32 outputs, the lowest lane of each group of equal indices sums the group in
// lane order via shuffles and adds it to gx.
template <typename T>
__global__ void __launch_bounds__(FC_POOL_BWD_MAX_THREADS) max_pool2d_backward(const T* __restrict__ gy, const long long* __restrict__ idx, T* __restrict__ gx,
                                    long long NC, long long HW, long long OHW) {
    typedef typename Acc<T>::type A;
    const int lane = threadIdx.x & 31;
    const long long wpb = blockDim.x >> 5;
    for (long long plane = blockIdx.x * wpb + (threadIdx.x >> 5); plane < NC; plane += gridDim.x * wpb) {
        const long long* ip = idx + plane * OHW;
        const T* gp = gy + plane * OHW;
        T* xp = gx + plane * HW;
        for (long long base = 0; base < OHW; base += 32) {
            const long long o = base + lane;
            const bool have = o < OHW;
            const long long p = have ? ip[o] : -1;
            const A v = have ? A(load(gp[o])) : A(0);
            A sum = A(0);
            bool leader = have && p >= 0 && p < HW;
            for (int s = 0; s < 32; ++s) {
                const long long ps = __shfl_sync(FC_FULL_MASK, p, s);
                const A vs = __shfl_sync(FC_FULL_MASK, v, s);
                if (ps == p) {
                    if (s < lane) leader = false;
                    sum += vs;
                }
            }
            if (leader) xp[p] = store<T>(A(load(xp[p])) + sum);
        }
    }
}

// torch semantics: hend = min(hstart + kh, H + ph); pool_size counts the padded window before clipping;
// divisor = divisor_override, else pool_size (count_include_pad) or the clipped area.
template <typename T>
__global__ void __launch_bounds__(FC_POOL_THREADS) avg_pool2d_forward(const T* __restrict__ x, T* __restrict__ y, long long NC, long long H, long long W,
                                   long long OH, long long OW, long long kh, long long kw, long long sh, long long sw,
                                   long long ph, long long pw, int count_include_pad, long long divisor_override) {
    typedef typename Acc<T>::type A;
    const long long total = NC * OH * OW;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        const long long ox = e % OW, oy = (e / OW) % OH, nc = e / (OW * OH);
        long long hs = oy * sh - ph, ws = ox * sw - pw;
        long long he = fc_min(hs + kh, H + ph), we = fc_min(ws + kw, W + pw);
        const long long pool = (he - hs) * (we - ws);
        hs = fc_max(hs, 0);
        ws = fc_max(ws, 0);
        he = fc_min(he, H);
        we = fc_min(we, W);
        if (hs >= he || ws >= we) {
            y[e] = store<T>(A(0));
            continue;
        }
        const T* xp = x + nc * H * W;
        A s = A(0);
        for (long long ih = hs; ih < he; ++ih)
            for (long long iw = ws; iw < we; ++iw) s += A(load(xp[ih * W + iw]));
        const long long div = divisor_override ? divisor_override : (count_include_pad ? pool : (he - hs) * (we - ws));
        y[e] = store<T>(s / A(div));
    }
}

template <typename T>
__global__ void __launch_bounds__(FC_POOL_THREADS) avg_pool2d_backward(const T* __restrict__ gy, T* __restrict__ gx, long long NC, long long H,
                                    long long W, long long OH, long long OW, long long kh, long long kw, long long sh,
                                    long long sw, long long ph, long long pw, int count_include_pad,
                                    long long divisor_override) {
    typedef typename Acc<T>::type A;
    const long long total = NC * H * W;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        const long long iw = e % W, ih = (e / W) % H, nc = e / (W * H);
        // windows oy with oy*sh - ph <= ih < oy*sh - ph + kh
        const long long oy0 = ih + ph < kh ? 0 : (ih + ph - kh) / sh + 1, oy1 = fc_min((ih + ph) / sh + 1, OH);
        const long long ox0 = iw + pw < kw ? 0 : (iw + pw - kw) / sw + 1, ox1 = fc_min((iw + pw) / sw + 1, OW);
        const T* gp = gy + nc * OH * OW;
        A s = A(0);
        for (long long oy = oy0; oy < oy1; ++oy) {
            const long long hs = oy * sh - ph, he = fc_min(hs + kh, H + ph);
            const long long hc = fc_min(he, H) - fc_max(hs, 0);
            for (long long ox = ox0; ox < ox1; ++ox) {
                const long long ws = ox * sw - pw, we = fc_min(ws + kw, W + pw);
                const long long wc = fc_min(we, W) - fc_max(ws, 0);
                const long long div =
                    divisor_override ? divisor_override : (count_include_pad ? (he - hs) * (we - ws) : hc * wc);
                s += A(load(gp[oy * OW + ox])) / A(div);
            }
        }
        gx[e] = store<T>(s);
    }
}

// Adaptive windows: rows [floor(oy*H/OH), ceil((oy+1)*H/OH)), likewise for columns.
template <typename T>
__global__ void __launch_bounds__(FC_POOL_THREADS) adaptive_avg_pool2d_forward(const T* __restrict__ x, T* __restrict__ y, long long NC, long long H,
                                            long long W, long long OH, long long OW) {
    typedef typename Acc<T>::type A;
    const long long total = NC * OH * OW;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        const long long ox = e % OW, oy = (e / OW) % OH, nc = e / (OW * OH);
        const long long hs = oy * H / OH, he = ((oy + 1) * H + OH - 1) / OH;
        const long long ws = ox * W / OW, we = ((ox + 1) * W + OW - 1) / OW;
        const T* xp = x + nc * H * W;
        A s = A(0);
        for (long long ih = hs; ih < he; ++ih)
            for (long long iw = ws; iw < we; ++iw) s += A(load(xp[ih * W + iw]));
        y[e] = store<T>(s / A((he - hs) * (we - ws)));
    }
}

// Gather: input row ih lies in the windows oy in [floor(ih*OH/H), floor(((ih+1)*OH - 1)/H)].
template <typename T>
__global__ void __launch_bounds__(FC_POOL_THREADS) adaptive_avg_pool2d_backward(const T* __restrict__ gy, T* __restrict__ gx, long long NC, long long H,
                                             long long W, long long OH, long long OW) {
    typedef typename Acc<T>::type A;
    const long long total = NC * H * W;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        const long long iw = e % W, ih = (e / W) % H, nc = e / (W * H);
        const long long oy0 = ih * OH / H, oy1 = fc_min(((ih + 1) * OH - 1) / H + 1, OH);
        const long long ox0 = iw * OW / W, ox1 = fc_min(((iw + 1) * OW - 1) / W + 1, OW);
        const T* gp = gy + nc * OH * OW;
        A s = A(0);
        for (long long oy = oy0; oy < oy1; ++oy) {
            const long long hc = ((oy + 1) * H + OH - 1) / OH - oy * H / OH;
            for (long long ox = ox0; ox < ox1; ++ox) {
                const long long wc = ((ox + 1) * W + OW - 1) / OW - ox * W / OW;
                s += A(load(gp[oy * OW + ox])) / A(hc * wc);
            }
        }
        gx[e] = store<T>(s);
    }
}
