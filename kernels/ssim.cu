// fastconv fused SSIM kernels: per-plane mean SSIM / cs (forward) and their gradient (backward).
//
// Semantics: exactly fastconv.cpu.ssim (see its module docstring, the backend contract).  x and y
// are contiguous NCHW, viewed as P = N*C planes of H x W.  The local moments mu_x, mu_y, E[x^2],
// E[y^2], E[xy] use the separable Gaussian g (win taps, given as a device array of Acc<T>::type)
// over valid positions only: Hv = H - win + 1 rows by Wv = W - win + 1 columns.  T is float,
// double, fc_half or fc_bf16; moments and maps are computed in A = Acc<T>::type (the input dtype
// for float/double, as the CPU backend; float32 for the 16-bit types); the per-plane sums of the
// SSIM / cs maps are accumulated in double.  Plane offsets are 64-bit, indices inside a plane 32-bit.
//
// Deterministic: no atomics anywhere.  The forward pass writes one partial sum per (plane, tile)
// block (a fixed-order block reduction), and ssim_stats_reduce sums the partials of each plane in a fixed
// order.  The backward pass first writes dL/d(mu_x, mu_y, E[xx] (= E[yy] coefficient), E[xy]) at
// every valid position (ssim_stats_backward_maps), then ssim_stats_backward applies the transposed separable
// Gaussian as a gather: each input pixel sums over the windows that cover it.
// Launchers: fastconv/cuda/ssim.py.
//
// Launch contract of the tiled kernels (ssim_stats_forward, ssim_stats_backward_maps, ssim_stats_backward):
//   block  = (TW, TH, 1) with TH * TW a multiple of 32 (<= 1024): one thread per output position
//            (forward, maps) or input pixel (backward) of a TH x TW tile.
//   grid   = (tiles_h * tiles_w, min(P, 65535), 1); blockIdx.x = tile (row-major, tiles_w per row)
//            over the Hv x Wv valid positions (forward, maps) or the H x W pixels (backward);
//            blockIdx.y strides over the planes.
//   shared = forward / maps: (win + 2 * IH * IW + 5 * IH * TW) * sizeof(A), IH = TH + win - 1,
//            IW = TW + win - 1 (window, the x and y input tile, the horizontally filtered moments);
//            backward: (win + 4 * IH * IW + 4 * TH * IW) * sizeof(A) (window, the four dL/dmoment
//            maps over the covering windows, their vertical transposed pass).  ssim_stats_forward also has
//            256 bytes of static shared memory (the block reduction).
//   The backward launcher may run the planes in chunks (contiguous views), P being the chunk's count.
// ssim_stats_reduce: block = (B, 1, 1), B a multiple of 32 (<= 1024); grid = (min(P, 65535 * 32), 1, 1),
//   a grid-stride loop over the planes; shared = 0.
#include "fc_common.cuh"

#define FC_SSIM_REDUCE_THREADS 256  // block of ssim_stats_reduce
#define FC_SSIM_MAX_THREADS 256     // largest TH * TW block of the tiled kernels
// Dynamic shared memory, in elements of A, of a TH x TW tile with a WIN-tap window (the carve-up below):
// forward / maps: window, x and y input tiles (IH x IW each), five horizontally filtered moments (IH x TW);
// backward: window, four dL/dmoment maps over the covering windows (IH x IW), their vertical pass (TH x IW).
#define FC_SSIM_FWD_SMEM(TH, TW, WIN) ((WIN) + 2 * ((TH) + (WIN) - 1) * ((TW) + (WIN) - 1) + 5 * ((TH) + (WIN) - 1) * (TW))
#define FC_SSIM_BWD_SMEM(TH, TW, WIN) ((WIN) + 4 * ((TH) + (WIN) - 1) * ((TW) + (WIN) - 1) + 4 * (TH) * ((TW) + (WIN) - 1))

// Load the window and the IH x IW input tile of plane (x, y) starting at (r0, c0), then filter it
// horizontally into hs[k][r][j] (k = mu_x, mu_y, E[xx], E[yy], E[xy]; r < IH, j < TW).  Returns,
// for this thread's output position (r0 + threadIdx.y, c0 + threadIdx.x), whether it is a valid
// position and its five moments (vertical pass).  Calling it again for the next plane needs no barrier
// in between: xs / ys are last read before its second barrier and hs is next written after the first.
template <typename T, typename A>
__device__ __forceinline__ bool ssim_tile_moments(const T* __restrict__ xp, const T* __restrict__ yp,
                                                  const A* __restrict__ gs, A* __restrict__ xs, A* __restrict__ ys,
                                                  A* __restrict__ hs, int H, int W, int Hv,
                                                  int Wv, int win, int r0, int c0,
                                                  A m[5]) {
    const int TW = blockDim.x, TH = blockDim.y;
    const int IH = TH + win - 1, IW = TW + win - 1;
    const int tid = threadIdx.y * blockDim.x + threadIdx.x, nthreads = blockDim.x * blockDim.y;
    for (int e = tid; e < IH * IW; e += nthreads) {
        const int r = e / IW, s = e - r * IW;
        const int gr = r0 + r, gc = c0 + s;
        const bool in = gr < H && gc < W;
        xs[e] = in ? A(load(xp[gr * W + gc])) : A(0);
        ys[e] = in ? A(load(yp[gr * W + gc])) : A(0);
    }
    __syncthreads();
    const int plane = IH * TW;
    for (int e = tid; e < plane; e += nthreads) {
        const int r = e / TW, j = e - r * TW;
        const A* xr = xs + r * IW + j;
        const A* yr = ys + r * IW + j;
        A a0 = A(0), a1 = A(0), a2 = A(0), a3 = A(0), a4 = A(0);
        for (int t = 0; t < win; ++t) {
            const A wt = gs[t], xv = xr[t], yv = yr[t];
            a0 += wt * xv;
            a1 += wt * yv;
            a2 += wt * (xv * xv);
            a3 += wt * (yv * yv);
            a4 += wt * (xv * yv);
        }
        hs[e] = a0;
        hs[plane + e] = a1;
        hs[2 * plane + e] = a2;
        hs[3 * plane + e] = a3;
        hs[4 * plane + e] = a4;
    }
    __syncthreads();
    const int i = r0 + threadIdx.y, j = c0 + threadIdx.x;
    const bool valid = i < Hv && j < Wv;
    for (int k = 0; k < 5; ++k) m[k] = A(0);
    if (valid) {
        for (int t = 0; t < win; ++t) {
            const A wt = gs[t];
            const A* col = hs + (threadIdx.y + t) * TW + threadIdx.x;
#pragma unroll
            for (int k = 0; k < 5; ++k) m[k] += wt * col[k * plane];
        }
    }
    return valid;
}

// Shared-memory carve-up of the forward / maps kernels (all in A): g, x tile, y tile, horizontal moments.
template <typename A>
__device__ __forceinline__ void ssim_fwd_smem(A* base, int win, A*& gs, A*& xs, A*& ys, A*& hs) {
    const int IH = blockDim.y + win - 1, IW = blockDim.x + win - 1;
    gs = base;
    xs = gs + win;
    ys = xs + IH * IW;
    hs = ys + IH * IW;
}

template <typename A>
__device__ __forceinline__ void load_window(const A* __restrict__ g, A* gs, int win) {
    const int tid = threadIdx.y * blockDim.x + threadIdx.x, nthreads = blockDim.x * blockDim.y;
    for (int t = tid; t < win; t += nthreads) gs[t] = g[t];
}

// partials[(p * ntiles + tile) * 2 + {0, 1}] = sum over this tile's valid positions of the SSIM / cs maps
// of plane p.  Launch contract: see the top of the file.
template <typename T>
__global__ void __launch_bounds__(FC_SSIM_MAX_THREADS) ssim_stats_forward(const T* __restrict__ x, const T* __restrict__ y,
                             const typename Acc<T>::type* __restrict__ g,
                             double* __restrict__ partials, long long P, int H, int W, int win,
                             double c1, double c2, int tiles_w) {
    typedef typename Acc<T>::type A;
    extern __shared__ __align__(16) unsigned char fc_smem[];
    __shared__ double red[32];
    A *gs, *xs, *ys, *hs;
    ssim_fwd_smem(reinterpret_cast<A*>(fc_smem), win, gs, xs, ys, hs);
    const int Hv = H - win + 1, Wv = W - win + 1;
    const long long ntiles = gridDim.x; const int tile = blockIdx.x;
    const int r0 = (tile / tiles_w) * blockDim.y, c0 = (tile % tiles_w) * blockDim.x;
    const A C1 = A(c1), C2 = A(c2), two = A(2);
    load_window(g, gs, win);  // published by the first barrier inside ssim_tile_moments
    for (long long p = blockIdx.y; p < P; p += gridDim.y) {
        A m[5];
        const bool valid = ssim_tile_moments(x + p * H * W, y + p * H * W, gs, xs, ys, hs, H, W, Hv, Wv, win, r0,
                                             c0, m);
        double s = 0.0, c = 0.0;
        if (valid) {
            const A mx = m[0], my = m[1];
            const A mxx = mx * mx, myy = my * my, mxy = mx * my;
            const A sxx = m[2] - mxx, syy = m[3] - myy, sxy = m[4] - mxy;
            const A cs = (two * sxy + C2) / (sxx + syy + C2);
            const A lum = (two * mxy + C1) / (mxx + myy + C1);
            s = double(lum * cs);
            c = double(cs);
        }
        s = block_sum(s, red);  // its barriers also order this plane's smem reads before the next plane's writes
        c = block_sum(c, red);
        if (threadIdx.x == 0 && threadIdx.y == 0) {
            partials[(p * ntiles + tile) * 2] = s;
            partials[(p * ntiles + tile) * 2 + 1] = c;
        }
    }
}

// ssim_out[p], cs_out[p] = (sum over the ntiles partials of plane p, in tile order per thread, then a
// fixed block reduction) / count.
template <typename T>
__global__ void __launch_bounds__(FC_SSIM_REDUCE_THREADS) ssim_stats_reduce(const double* __restrict__ partials, T* __restrict__ ssim_out, T* __restrict__ cs_out,
                            long long P, long long ntiles, double count) {
    typedef typename Acc<T>::type A;
    __shared__ double red[32];
    for (long long p = blockIdx.x; p < P; p += gridDim.x) {
        const double* pp = partials + p * ntiles * 2;
        double s = 0.0, c = 0.0;
        for (long long t = threadIdx.x; t < ntiles; t += blockDim.x) {
            s += pp[2 * t];
            c += pp[2 * t + 1];
        }
        s = block_sum(s, red);
        c = block_sum(c, red);
        if (threadIdx.x == 0) {
            ssim_out[p] = store<T>(A(s / count));
            cs_out[p] = store<T>(A(c / count));
        }
    }
}

// d[((p * 4 + k) * Hv + i) * Wv + j] = dL/d(moment k) at valid position (i, j) of plane p, for
// L = sum_p g_ssim[p] * mean(ssim map) + g_cs[p] * mean(cs map); k = mu_x, mu_y, E[xx] (which is also the
// E[yy] coefficient), E[xy].  Same tiling, shared memory and launch contract as ssim_stats_forward.
template <typename T>
__global__ void __launch_bounds__(FC_SSIM_MAX_THREADS) ssim_stats_backward_maps(const T* __restrict__ x, const T* __restrict__ y,
                                   const typename Acc<T>::type* __restrict__ g, const T* __restrict__ g_ssim,
                                   const T* __restrict__ g_cs, typename Acc<T>::type* __restrict__ d, long long P,
                                   int H, int W, int win, double c1, double c2, int tiles_w) {
    typedef typename Acc<T>::type A;
    extern __shared__ __align__(16) unsigned char fc_smem[];
    A *gs, *xs, *ys, *hs;
    ssim_fwd_smem(reinterpret_cast<A*>(fc_smem), win, gs, xs, ys, hs);
    const int Hv = H - win + 1, Wv = W - win + 1, count = Hv * Wv;
    const int tile = blockIdx.x;
    const int r0 = (tile / tiles_w) * blockDim.y, c0 = (tile % tiles_w) * blockDim.x;
    const A C1 = A(c1), C2 = A(c2), one = A(1), two = A(2);
    load_window(g, gs, win);
    for (long long p = blockIdx.y; p < P; p += gridDim.y) {
        A m[5];
        const bool valid = ssim_tile_moments(x + p * H * W, y + p * H * W, gs, xs, ys, hs, H, W, Hv, Wv, win, r0,
                                             c0, m);
        if (valid) {
            const A a = A(double(load(g_ssim[p])) / double(count));
            const A b = A(double(load(g_cs[p])) / double(count));
            const A mx = m[0], my = m[1];
            const A mxx = mx * mx, myy = my * my, mxy = mx * my;
            const A sxx = m[2] - mxx, syy = m[3] - myy, sxy = m[4] - mxy;
            const A ib1 = one / (mxx + myy + C1);
            const A ib2 = one / (sxx + syy + C2);
            const A lum = (two * mxy + C1) * ib1;
            const A cs = (two * sxy + C2) * ib2;
            const A wl = a * cs * two * ib1;   // weight of dlum/d(mu): lum = (2 mx my + C1) / B1
            const A wc = (a * lum + b) * ib2;  // weight of dcs/d(sigma): cs = (2 sxy + C2) / B2
            const int i = r0 + threadIdx.y, j = c0 + threadIdx.x;
            A* dp = d + (p * 4 * Hv + i) * Wv + j;
            dp[0] = wl * (my - lum * mx) + two * wc * (cs * mx - my);
            dp[count] = wl * (mx - lum * my) + two * wc * (cs * my - mx);
            dp[2 * count] = -wc * cs;
            dp[3 * count] = two * wc;
        }
    }
}

// gx[p, r, q] = Gx0 + 2 x Gx2 + y Gx3 and gy[p, r, q] = Gx1 + 2 y Gx2 + x Gx3 with
// Gxk[r, q] = sum over the valid windows (i, j) covering (r, q) of g[r - i] g[q - j] d[p, k, i, j]: a gather
// (vertical transposed pass into shared memory, then horizontal).  Launch contract: see the top of the file.
template <typename T>
__global__ void __launch_bounds__(FC_SSIM_MAX_THREADS) ssim_stats_backward(const T* __restrict__ x, const T* __restrict__ y,
                              const typename Acc<T>::type* __restrict__ g, const typename Acc<T>::type* __restrict__ d,
                              T* __restrict__ gx, T* __restrict__ gy, long long P, int H, int W,
                              int win, int tiles_w) {
    typedef typename Acc<T>::type A;
    extern __shared__ __align__(16) unsigned char fc_smem[];
    const int TW = blockDim.x, TH = blockDim.y;
    const int IH = TH + win - 1, IW = TW + win - 1;
    A* gs = reinterpret_cast<A*>(fc_smem);
    A* ds = gs + win;            // [4][IH][IW]: d over rows r0 - win + 1 .. r0 + TH - 1, likewise columns
    A* vs = ds + 4 * IH * IW;    // [4][TH][IW]: vertical transposed pass
    const int Hv = H - win + 1, Wv = W - win + 1, count = Hv * Wv;
    const int tid = threadIdx.y * blockDim.x + threadIdx.x, nthreads = blockDim.x * blockDim.y;
    const int tile = blockIdx.x;
    const int r0 = (tile / tiles_w) * TH, c0 = (tile % tiles_w) * TW;
    const int i0 = r0 - win + 1, j0 = c0 - win + 1;
    const A two = A(2);
    load_window(g, gs, win);
    for (long long p = blockIdx.y; p < P; p += gridDim.y) {
        const A* dp = d + p * 4 * count;
        for (int e = tid; e < 4 * IH * IW; e += nthreads) {
            const int k = e / (IH * IW), rem = e - k * IH * IW;
            const int r = rem / IW, s = rem - r * IW;
            const int i = i0 + r, j = j0 + s;
            ds[e] = (i >= 0 && i < Hv && j >= 0 && j < Wv) ? dp[k * count + i * Wv + j] : A(0);
        }
        __syncthreads();
        for (int e = tid; e < 4 * TH * IW; e += nthreads) {
            const int k = e / (TH * IW), rem = e - k * TH * IW;
            const int r = rem / IW, s = rem - r * IW;
            const A* col = ds + k * IH * IW + (r + win - 1) * IW + s;  // row r + win - 1 - t is window row R - t
            A acc = A(0);
            for (int t = win - 1; t >= 0; --t) acc += gs[t] * col[-t * IW];  // window rows ascending
            vs[e] = acc;
        }
        __syncthreads();
        const int r = r0 + threadIdx.y, q = c0 + threadIdx.x;
        if (r < H && q < W) {
            A acc[4];
#pragma unroll
            for (int k = 0; k < 4; ++k) {
                const A* row = vs + (k * TH + threadIdx.y) * IW + threadIdx.x + win - 1;
                A s = A(0);
                for (int t = 0; t < win; ++t) s += gs[t] * row[-t];
                acc[k] = s;
            }
            const long long o = (p * H + r) * W + q;
            const A xv = A(load(x[o])), yv = A(load(y[o]));
            gx[o] = store<T>(acc[0] + two * xv * acc[2] + yv * acc[3]);
            gy[o] = store<T>(acc[1] + two * yv * acc[2] + xv * acc[3]);
        }
        // No barrier: the next plane's ds writes follow this plane's last ds read (second barrier), and
        // its vs writes come after its first barrier, which every thread reaches after its vs reads.
    }
}
