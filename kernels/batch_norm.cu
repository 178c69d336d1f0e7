// fastconv training-mode BatchNorm fused with its activation: batch statistics, the normalised and
// activated output, and the exact gradient.  The CPU reference is fastconv/cpu/batch_norm.py; the
// formulas are its module docstring's:
//   mean = sum(x) / n, var = sum((x - mean)^2) / n - (sum(x - mean) / n)^2 (float64 sums; n = N * HW),
//   z = x * alpha + beta with alpha = w / sqrt(var + eps), beta = b - mean * alpha (rounded to Acc<T>),
//   y = act(z); backward g = dy * act'(z), db = sum(g), dw = sum(g * (x - mean)) / sqrt(var + eps),
//   dx = (g - db / n - (x - mean) * dw / (sqrt(var + eps) * n)) * alpha.
// act: FC_BN_RELU (z < 0 -> 0, NaN passes; the gradient passes where z is not <= 0), FC_BN_LEAKY
// (z > 0 ? z : z * slope), FC_BN_IDENTITY, FC_BN_SILU (z / (1 + exp(-z))).
//
// Layout: NCHW contiguous, viewed as N x C planes of HW elements; T is float, double, fc_half or fc_bf16,
// arithmetic in Acc<T>::type, sums in double.  One block per channel: each thread adds its elements in a
// fixed order (plane by plane, stride blockDim.x), then block_sum adds the threads' sums in a fixed tree,
// so results are bitwise reproducible; no atomics.  w and b are read only when has_w / has_b (else 1 and
// 0); the launchers pass x in their place.
//
// Launch contract (both kernels): block = (FC_BN_THREADS, 1, 1), grid = (min(C, 65535 * 32), 1, 1),
// shared = 0; blocks stride over the channels.
#include "fc_common.cuh"

#define FC_BN_THREADS 256
#define FC_BN_RELU 0
#define FC_BN_LEAKY 1
#define FC_BN_IDENTITY 2
#define FC_BN_SILU 3

// float's exp goes through double: CUDA's expf uses ex2.approx.ftz, and these kernels keep subnormals
// (no .ftz instruction anywhere; tests/test_cuda_launch.py).
__device__ __forceinline__ float fc_bn_exp(float v) { return float(exp(double(v))); }
__device__ __forceinline__ double fc_bn_exp(double v) { return exp(v); }

// z of one element: one expression for the forward and the backward, so the backward's mask is the forward's.
template <typename A>
__device__ __forceinline__ A fc_bn_z(A x, A alpha, A beta) {
    return x * alpha + beta;
}

// Sum over the block, returned to every thread (block_sum leaves it in warp 0).
__device__ __forceinline__ double fc_bn_total(double v, double* red, double* out) {
    v = block_sum(v, red);
    if (threadIdx.x == 0) *out = v;
    __syncthreads();
    const double t = *out;
    __syncthreads();
    return t;
}

template <typename T>
__device__ __forceinline__ double fc_bn_param(const T* p, int has, int c, double dflt) {
    return has ? double(load(p[c])) : dflt;
}

// Channel c's alpha and beta, rounded to A: one computation for the forward and the backward, so the
// backward recomputes the forward's z exactly.  Returns 1 / sqrt(var + eps) in double.
template <typename T, typename A>
__device__ __forceinline__ double fc_bn_affine(const T* w, const T* b, int has_w, int has_b, int c, double m,
                                               double v, double eps, A* alpha, A* beta) {
    const double invstd = 1.0 / sqrt(v + eps), sw = invstd * fc_bn_param(w, has_w, c, 1.0);
    *alpha = A(sw);
    *beta = A(fc_bn_param(b, has_b, c, 0.0) - m * sw);
    return invstd;
}

template <typename T>
__global__ void __launch_bounds__(FC_BN_THREADS)
    batch_norm_act_forward(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ b,
                           T* __restrict__ y, double* __restrict__ mean, double* __restrict__ var, long long N, int C,
                           long long HW, double eps, int act, double slope, int has_w, int has_b) {
    typedef typename Acc<T>::type A;
    __shared__ double red[32];
    __shared__ double out;
    const double cnt = double(N) * double(HW);
    for (int c = blockIdx.x; c < C; c += gridDim.x) {
        double s = 0.0;
        for (long long n = 0; n < N; ++n) {
            const T* xp = x + (n * C + c) * HW;
            for (long long i = threadIdx.x; i < HW; i += blockDim.x) s += double(load(xp[i]));
        }
        const double m = fc_bn_total(s, red, &out) / cnt;
        double d = 0.0, q = 0.0;
        for (long long n = 0; n < N; ++n) {
            const T* xp = x + (n * C + c) * HW;
            for (long long i = threadIdx.x; i < HW; i += blockDim.x) {
                const double e = double(load(xp[i])) - m;
                d += e;
                q += e * e;
            }
        }
        d = fc_bn_total(d, red, &out) / cnt;
        q = fc_bn_total(q, red, &out) / cnt;
        double v = q - d * d;
        v = v < 0.0 ? 0.0 : v;  // rounding below 0 clamps; NaN (inf inputs) propagates
        if (threadIdx.x == 0) {
            mean[c] = m;
            var[c] = v;
        }
        A alpha, beta;
        fc_bn_affine(w, b, has_w, has_b, c, m, v, eps, &alpha, &beta);
        const A ns = A(slope), zero = A(0);
        for (long long n = 0; n < N; ++n) {
            const T* xp = x + (n * C + c) * HW;
            T* yp = y + (n * C + c) * HW;
            for (long long i = threadIdx.x; i < HW; i += blockDim.x) {
                const A z = fc_bn_z(A(load(xp[i])), alpha, beta);
                A r = z;
                if (act == FC_BN_RELU) r = z < zero ? zero : z;
                else if (act == FC_BN_LEAKY) r = z > zero ? z : z * ns;
                else if (act == FC_BN_SILU) r = z / (A(1) + fc_bn_exp(-z));
                yp[i] = store<T>(r);
            }
        }
    }
}

template <typename A>
__device__ __forceinline__ A fc_bn_grad(A dy, A z, int act, A ns) {
    if (act == FC_BN_RELU) return z <= A(0) ? A(0) : dy;
    if (act == FC_BN_LEAKY) return z > A(0) ? dy : dy * ns;
    if (act == FC_BN_SILU) {
        const A s = A(1) / (A(1) + fc_bn_exp(-z));
        return dy * s * (A(1) + z * (A(1) - s));
    }
    return dy;
}

template <typename T>
__global__ void __launch_bounds__(FC_BN_THREADS)
    batch_norm_act_backward(const T* __restrict__ grad, const T* __restrict__ x, const T* __restrict__ w,
                            const T* __restrict__ b, const double* __restrict__ mean, const double* __restrict__ var,
                            T* __restrict__ dx, double* __restrict__ dw, double* __restrict__ db, long long N, int C,
                            long long HW, double eps, int act, double slope, int has_w, int has_b) {
    typedef typename Acc<T>::type A;
    __shared__ double red[32];
    __shared__ double out;
    const double cnt = double(N) * double(HW);
    for (int c = blockIdx.x; c < C; c += gridDim.x) {
        const double m = mean[c];
        A alpha, beta;
        const double invstd = fc_bn_affine(w, b, has_w, has_b, c, m, var[c], eps, &alpha, &beta);
        const A ns = A(slope);
        double sg = 0.0, sgx = 0.0;
        for (long long n = 0; n < N; ++n) {
            const long long base = (n * C + c) * HW;
            for (long long i = threadIdx.x; i < HW; i += blockDim.x) {
                const A xv = A(load(x[base + i]));
                const A g = fc_bn_grad(A(load(grad[base + i])), fc_bn_z(xv, alpha, beta), act, ns);
                sg += double(g);
                sgx += double(g) * (double(xv) - m);
            }
        }
        sg = fc_bn_total(sg, red, &out);
        sgx = fc_bn_total(sgx, red, &out);
        if (threadIdx.x == 0) {
            db[c] = sg;
            dw[c] = sgx * invstd;
        }
        const A k = A(sgx * invstd * invstd / cnt), gm = A(sg / cnt), mc = A(m);
        for (long long n = 0; n < N; ++n) {
            const long long base = (n * C + c) * HW;
            for (long long i = threadIdx.x; i < HW; i += blockDim.x) {
                const A xv = A(load(x[base + i]));
                const A g = fc_bn_grad(A(load(grad[base + i])), fc_bn_z(xv, alpha, beta), act, ns);
                dx[base + i] = store<T>((g - gm - (xv - mc) * k) * alpha);
            }
        }
    }
}
