"""The CUDA backend without a GPU: the emulator itself, every kernel under it, ASan, nvcc and NVRTC.

Kernel tests run the production launchers of :mod:`fastconv.cuda` (grid, block and
shared-memory computation included) on CPU tensors through
:class:`fastconv.testing.emulator.EmulatorRuntime` and compare with torch's CPU ops.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fastconv.cuda import _runtime
from fastconv.cuda import conv2d as cuda_conv
from fastconv.cuda import pool as cuda_pool
from fastconv.testing.emulator import EmuModule, EmulatorError, EmulatorRuntime

pytestmark = pytest.mark.cuda_emu

DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
# (rtol, atol) against a float64 reference computed from the dtype-rounded inputs
TOL = {torch.float64: (1e-12, 1e-12), torch.float32: (1e-5, 1e-5), torch.float16: (4e-3, 4e-3),
       torch.bfloat16: (2e-2, 2e-2)}

PRIMITIVES = r"""
template <typename T>
__global__ void reverse_block(const T* __restrict__ x, T* __restrict__ y, long long n, int sync) {
    extern __shared__ __align__(16) unsigned char smem[];
    T* s = reinterpret_cast<T*>(smem);
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    s[threadIdx.x] = i < n ? x[i] : T(0);
    if (sync) __syncthreads();
    if (i < n) y[i] = s[blockDim.x - 1 - threadIdx.x];
}

template <typename T>
__global__ void static_shift(const T* __restrict__ x, T* __restrict__ y, int sync) {
    __shared__ T s[64];
    s[threadIdx.x] = x[blockIdx.x * 64 + threadIdx.x];
    if (sync) __syncthreads();
    y[blockIdx.x * 64 + threadIdx.x] = s[(threadIdx.x + 1) % 64];
}

template <typename T>
__global__ void block_reduce(const T* __restrict__ x, T* __restrict__ y) {
    __shared__ T red[32];
    T v = x[(long long)blockIdx.x * blockDim.x + threadIdx.x];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
    __syncthreads();
    if (threadIdx.x == 0) {
        T s = 0;
        for (unsigned w = 0; w < blockDim.x / 32; ++w) s += red[w];
        y[blockIdx.x] = s;
    }
}

__global__ void shuffles(const int* __restrict__ x, int* __restrict__ y, int arg, int width) {
    const int t = threadIdx.x, v = x[t];
    y[0 * 64 + t] = __shfl_down_sync(0xffffffffu, v, arg, width);
    y[1 * 64 + t] = __shfl_up_sync(0xffffffffu, v, arg, width);
    y[2 * 64 + t] = __shfl_xor_sync(0xffffffffu, v, arg, width);
    y[3 * 64 + t] = __shfl_sync(0xffffffffu, v, arg, width);
}

__global__ void divergent_barrier(int* y) {
    if (threadIdx.x < 16) {
        __syncthreads();
    } else {
        __syncthreads();
    }
    y[threadIdx.x] = 1;
}

__global__ void early_exit_barrier(int* y) {
    if (threadIdx.x % 3 == 0) return;
    y[threadIdx.x] = 1;
    __syncthreads();
    y[threadIdx.x] += y[(threadIdx.x + 1) % blockDim.x];
}

__global__ void shuffle_after_exit(float* y) {
    if (threadIdx.x == 5) return;
    y[threadIdx.x] = __shfl_down_sync(0xffffffffu, 1.0f, 1);
}

__global__ void shuffle_vs_barrier(float* y) {
    if (threadIdx.x >= 16) {
        y[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0f, 1);
    } else {
        __syncthreads();
    }
}

__global__ void read_dynamic(const float* __restrict__ x, float* __restrict__ y, long long n) {
    extern __shared__ __align__(16) unsigned char smem[];
    float* s = reinterpret_cast<float*>(smem);
    y[threadIdx.x] = s[threadIdx.x + n];  // reads past what the launch requested when n is large
}

__global__ void sizes(const double* __restrict__ x, double* __restrict__ y, long long n, float a, int b) {
    if (threadIdx.x == 0) y[0] = x[0] * a + (double)n + b;
}

__global__ void out_of_bounds(const float* __restrict__ x, float* __restrict__ y) {
    y[threadIdx.x] = x[threadIdx.x + blockDim.x];
}

// Lane 0 writes y[1]; lane 1 reads it after a shuffle (not a fence) or after __syncwarp (a fence).
__global__ void publish_after_fence(float* y, int fence) {
    if (threadIdx.x == 0) y[1] = 5.0f;
    float v = __shfl_sync(0xffffffffu, 1.0f, 0);
    if (fence) __syncwarp();
    if (threadIdx.x == 1) y[2] = y[1] + v - 1.0f;
}

// The max_pool2d_backward of fastconv 0.1 (kernels/pool.cu before the gather): one warp per plane, rounds of 32
// outputs, a read-modify-write of gx with only shuffles between rounds -- a race between lanes.
template <typename T>
__global__ void racy_max_pool2d_backward(const T* __restrict__ gy, const long long* __restrict__ idx, T* __restrict__ gx,
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

template <typename T>
__global__ void any_block_sum(const T* __restrict__ x, T* __restrict__ y) {
    __shared__ T red[32];
    const int n = blockDim.x * blockDim.y;
    const T s = block_sum(x[blockIdx.x * n + threadIdx.y * blockDim.x + threadIdx.x], red);
    if (threadIdx.x == 0 && threadIdx.y == 0) y[blockIdx.x] = s;
}

__global__ void to_half(const float* __restrict__ x, fc_half* __restrict__ h, fc_bf16* __restrict__ b,
                        float* __restrict__ back, long long n) {
    for (long long i = threadIdx.x; i < n; i += blockDim.x) {
        h[i] = store<fc_half>(x[i]);
        b[i] = store<fc_bf16>(x[i]);
        back[2 * i] = load(h[i]);
        back[2 * i + 1] = load(b[i]);
    }
}
"""
NAMES = ["reverse_block<float>", "static_shift<float>", "block_reduce<float>", "block_reduce<double>", "shuffles",
         "divergent_barrier", "early_exit_barrier", "shuffle_after_exit", "shuffle_vs_barrier", "read_dynamic",
         "sizes", "out_of_bounds", "to_half", "publish_after_fence", "racy_max_pool2d_backward<float>",
         "any_block_sum<double>"]


def primitives_source() -> str:
    return (_runtime.kernels_dir() / "fc_common.cuh").read_text() + PRIMITIVES


@pytest.fixture(scope="module")
def prims():
    return EmuModule(primitives_source(), _runtime.COMPILE_OPTIONS, NAMES, source_name="primitives.cu")


@pytest.fixture(scope="module")
def emu():
    rt = EmulatorRuntime()
    with _runtime.use_runtime(rt):
        yield rt


# --------------------------------------------------------------------------- the emulator itself


def test_missing_syncthreads_gives_wrong_result(prims):
    x = np.arange(100, dtype=np.float32)
    k = prims.get_function("reverse_block<float>")
    y = np.zeros_like(x)
    k((4,), (32,), (x, y, np.int64(100), np.int32(1)), shared_mem=32 * 4)
    i = np.arange(100)
    src = i // 32 * 32 + 31 - i % 32
    np.testing.assert_array_equal(y, np.where(src < 100, src, 0).astype(np.float32))
    y2 = np.zeros_like(x)
    k((4,), (32,), (x, y2, np.int64(100), np.int32(0)), shared_mem=32 * 4)
    assert np.isnan(y2[:16]).all(), "without the barrier, early threads must read unwritten (NaN) shared memory"
    assert not np.array_equal(np.nan_to_num(y2), y)


def test_missing_syncthreads_static_shared(prims):
    x = np.random.default_rng(0).standard_normal(3 * 64).astype(np.float32)
    k = prims.get_function("static_shift<float>")
    y, y2 = np.zeros_like(x), np.zeros_like(x)
    k((3,), (64,), (x, y, np.int32(1)))
    np.testing.assert_array_equal(y, np.roll(x.reshape(3, 64), -1, axis=1).ravel())
    k((3,), (64,), (x, y2, np.int32(0)))
    assert not np.array_equal(y2, y)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_shuffle_block_reduction_is_exact(prims, dtype):
    rng = np.random.default_rng(1)
    x = rng.integers(-1000, 1000, size=8 * 256).astype(dtype)  # integer values: any order sums exactly
    y = np.zeros(8, dtype=dtype)
    name = "block_reduce<float>" if dtype == np.float32 else "block_reduce<double>"
    prims.get_function(name)((8,), (256,), (x, y))
    np.testing.assert_array_equal(y, x.reshape(8, 256).sum(1))


@pytest.mark.parametrize("arg,width", [(1, 32), (5, 32), (3, 8), (17, 32), (2, 4)])
def test_shuffle_variants(prims, arg, width):
    x = (np.arange(64, dtype=np.int32) * 7 + 3)
    y = np.zeros(4 * 64, dtype=np.int32)
    prims.get_function("shuffles")((1,), (64,), (x, y, np.int32(arg), np.int32(width)))
    lane = np.arange(64) % 32
    warp = np.arange(64) // 32 * 32
    seg = lane // width * width
    down = np.where(lane % width + arg < width, np.arange(64) + arg, np.arange(64))
    up = np.where(lane % width - arg >= 0, np.arange(64) - arg, np.arange(64))
    xo = lane ^ arg
    xo = np.where(xo < seg + width, warp + xo, np.arange(64))
    idx = warp + seg + arg % width
    for row, src in enumerate((down, up, xo, idx)):
        np.testing.assert_array_equal(y[row * 64:(row + 1) * 64], x[src], err_msg=f"variant {row}")


def test_divergent_barrier_is_reported_as_deadlock(prims):
    with pytest.raises(EmulatorError, match=r"deadlock.*\[0-15\].*__syncthreads.*\[16-31\].*__syncthreads"):
        prims.get_function("divergent_barrier")((1,), (32,), (np.zeros(32, np.int32),))


def test_exited_threads_do_not_count_at_barriers(prims):
    y = np.zeros(30, np.int32)
    prims.get_function("early_exit_barrier")((1,), (30,), (y,))
    t = np.arange(30)
    live = t % 3 != 0
    expect = np.where(live, 1 + live[(t + 1) % 30].astype(np.int32), 0)
    np.testing.assert_array_equal(y, expect)


def test_shuffle_waiting_for_an_exited_lane_is_a_deadlock(prims):
    with pytest.raises(EmulatorError, match="deadlock"):
        prims.get_function("shuffle_after_exit")((1,), (32,), (np.zeros(32, np.float32),))


def test_shuffle_and_barrier_mix_is_a_deadlock(prims):
    with pytest.raises(EmulatorError, match=r"deadlock.*\[0-15\].*__syncthreads.*\[16-31\].*shuffle"):
        prims.get_function("shuffle_vs_barrier")((1,), (32,), (np.zeros(32, np.float32),))


def test_full_mask_shuffle_in_partial_warp_is_rejected(prims):
    with pytest.raises(EmulatorError, match="does not exist"):
        prims.get_function("block_reduce<float>")((1,), (48,), (np.zeros(48, np.float32), np.zeros(1, np.float32)))


def test_dynamic_shared_memory_is_nan_filled(prims):
    y = np.zeros(32, np.float32)
    prims.get_function("read_dynamic")((1,), (32,), (np.zeros(1, np.float32), y, np.int64(0)), shared_mem=128)
    assert np.isnan(y).all()


def test_scalar_arguments_are_type_checked(prims):
    k = prims.get_function("sizes")
    x, y = np.array([2.0]), np.zeros(1)
    k((1,), (1,), (x, y, np.int64(3), np.float32(0.5), np.int32(4)))
    assert y[0] == 8.0
    with pytest.raises(EmulatorError, match="typed NumPy scalar"):
        k((1,), (1,), (x, y, 3, np.float32(0.5), np.int32(4)))
    with pytest.raises(EmulatorError, match="i8"):
        k((1,), (1,), (x, y, np.int32(3), np.float32(0.5), np.int32(4)))
    with pytest.raises(EmulatorError, match="f4"):
        k((1,), (1,), (x, y, np.int64(3), np.float64(0.5), np.int32(4)))
    with pytest.raises(EmulatorError, match="8-byte"):
        k((1,), (1,), (x.astype(np.float32), y, np.int64(3), np.float32(0.5), np.int32(4)))
    with pytest.raises(EmulatorError, match="expected 5 arguments"):
        k((1,), (1,), (x, y))


def test_launch_limits(prims):
    k = prims.get_function("sizes")
    args = (np.zeros(1), np.zeros(1), np.int64(0), np.float32(0), np.int32(0))
    with pytest.raises(EmulatorError, match="block"):
        k((1,), (1025,), args)
    with pytest.raises(EmulatorError, match="grid"):
        k((1, 65536), (1,), args)
    with pytest.raises(EmulatorError, match="shared memory"):
        k((1,), (1,), args, shared_mem=48 * 1024 + 1)


def test_weak_memory_writes_are_private_until_a_fence(prims):
    k = prims.get_function("publish_after_fence")
    for fence, want in ((0, 0.0), (1, 5.0)):
        y = np.zeros(3, np.float32)
        k((1,), (32,), (y, np.int32(fence)))
        assert y[1] == 5.0  # published at the end of the block either way
        assert y[2] == want, f"fence={fence}: lane 1 read {y[2]}"
        y = np.zeros(3, np.float32)
        k((1,), (32,), (y, np.int32(fence)), weak_memory=False)  # the sequential model hides the race
        assert y[2] == 5.0


def test_weak_memory_catches_the_old_max_pool_backward_race(prims):
    """The pre-gather kernel loses updates under the weak model; the shipped kernel does not."""
    idx = np.array([[0, 1, 1, 2] * 8 + [1, 1, 3, 3] * 8], dtype=np.int64)  # index 1 in round 0 and round 1
    gy = np.arange(1, 65, dtype=np.float32)[None]
    want = np.zeros(4, np.float32)
    np.add.at(want, idx[0], gy[0])
    k = prims.get_function("racy_max_pool2d_backward<float>")
    args = lambda gx: (gy, idx, gx, np.int64(1), np.int64(4), np.int64(64))  # noqa: E731
    strong = np.zeros(4, np.float32)
    k((1,), (32,), args(strong), weak_memory=False)
    np.testing.assert_array_equal(strong, want)
    weak = np.zeros(4, np.float32)
    k((1,), (32,), args(weak))
    assert not np.array_equal(weak, want)
    with _runtime.use_runtime(EmulatorRuntime()):  # the shipped kernel, same input
        gx = cuda_pool.max_pool2d_backward(torch.from_numpy(gy).view(1, 1, 8, 8), torch.from_numpy(idx).view(1, 1, 8, 8),
                                           (2, 2))
    np.testing.assert_array_equal(gx.flatten().numpy(), want)


@pytest.mark.parametrize("block", [(48, 1), (1000, 1), (7, 3), (32, 1), (1, 1)])
def test_block_sum_any_block_size(prims, block):
    n = block[0] * block[1]
    x = np.random.default_rng(3).integers(-100, 100, size=3 * n).astype(np.float64)
    y = np.zeros(3)
    prims.get_function("any_block_sum<double>")((3,), block, (x, y))
    np.testing.assert_array_equal(y, x.reshape(3, n).sum(1))


def test_half_and_bfloat16_round_to_nearest_even(prims):
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.standard_normal(300) * 10.0 ** rng.integers(-9, 6, 300),
                        [0.0, -0.0, 65504.0, 65519.0, 65520.0, 1e-8, 6e-8, 3e-8, 2.98e-8, np.inf, -np.inf, np.nan,
                         1 + 2 ** -11, 1 + 3 * 2 ** -11, 3.0e38]]).astype(np.float32)
    n = x.size
    h = np.zeros(n, np.float16)
    b = np.zeros(n, np.int16)
    back = np.zeros(2 * n, np.float32)
    prims.get_function("to_half")((1,), (64,), (x, h, b, back, np.int64(n)))
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(h, x.astype(np.float16))
    tb = torch.from_numpy(x).to(torch.bfloat16)
    nan = np.isnan(x)
    np.testing.assert_array_equal(b[~nan], tb.view(torch.int16).numpy()[~nan])
    assert torch.isnan(torch.from_numpy(b).view(torch.bfloat16)[torch.from_numpy(nan)]).all()
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(back[0::2], x.astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(back[1::2], tb.float().numpy())


# --------------------------------------------------------------------------- pooling kernels

POOL_CASES = [  # (N, C, H, W, kernel, stride, padding, dilation, ceil_mode)
    (2, 3, 9, 11, (3, 2), (2, 1), (1, 1), (1, 2), False),
    (1, 2, 8, 8, (2, 2), (2, 2), (0, 0), (1, 1), True),
    (1, 2, 13, 7, (3, 3), (1, 2), (1, 0), (2, 1), True),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", range(len(POOL_CASES)))
def test_max_pool_kernels(emu, case, dtype):
    n, c, h, w, k, s, p, d, cm = POOL_CASES[case]
    x = torch.randn(n, c, h, w, dtype=torch.float64).to(dtype).double()
    x[0, 0, 1, 1] = float("nan")
    x[-1, -1, :3, :3] = 0.5  # ties pick the first maximum
    ref, ridx = F.max_pool2d(x, k, s, p, d, ceil_mode=cm, return_indices=True)
    y, idx = cuda_pool.max_pool2d_forward(x.to(dtype), k, s, p, d, tuple(ref.shape[2:]))
    assert torch.equal(idx, ridx)
    torch.testing.assert_close(y.double(), ref, equal_nan=True, rtol=0, atol=0)
    values = cuda_pool.max_pool2d_values_for(tuple(x.shape), dtype, k, s, p, d, tuple(ref.shape[2:]))
    torch.testing.assert_close(values(x.to(dtype)).double(), ref, equal_nan=True, rtol=0, atol=0)
    go = torch.randn_like(ref).to(dtype).double()
    xr = x.clone().requires_grad_()
    F.max_pool2d(xr, k, s, p, d, ceil_mode=cm).backward(go)
    gx = cuda_pool.max_pool2d_backward(go.to(dtype), ridx, (h, w))
    rtol, atol = TOL[dtype]
    torch.testing.assert_close(gx.double(), xr.grad, rtol=rtol, atol=atol)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cip,div", [(True, 0), (False, 0), (True, 5)])
@pytest.mark.parametrize("case", range(len(POOL_CASES)))
def test_avg_pool_kernels(emu, case, cip, div, dtype):
    n, c, h, w, k, s, _, _, cm = POOL_CASES[case]
    p = (k[0] // 2, k[1] // 2)
    x = torch.randn(n, c, h, w, dtype=torch.float64).to(dtype).double()
    xr = x.clone().requires_grad_()
    ref = F.avg_pool2d(xr, k, s, p, ceil_mode=cm, count_include_pad=cip, divisor_override=div or None)
    go = torch.randn_like(ref).to(dtype).double()
    ref.backward(go)
    rtol, atol = TOL[dtype]
    y = cuda_pool.avg_pool2d_forward(x.to(dtype), k, s, p, cip, div, tuple(ref.shape[2:]))
    torch.testing.assert_close(y.double(), ref.detach(), rtol=rtol, atol=atol)
    forward = cuda_pool.avg_pool2d_forward_for(tuple(x.shape), dtype, k, s, p, cip, div, tuple(ref.shape[2:]))
    assert torch.equal(forward(x.to(dtype)), y)
    gx = cuda_pool.avg_pool2d_backward(go.to(dtype), k, s, p, cip, div, (h, w))
    torch.testing.assert_close(gx.double(), xr.grad, rtol=rtol, atol=atol)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("in_hw,out_hw", [((9, 11), (4, 5)), ((7, 7), (7, 3)), ((5, 6), (8, 9)), ((9, 11), (1, 1))])
def test_adaptive_avg_pool_kernels(emu, in_hw, out_hw, dtype):
    x = torch.randn(2, 3, *in_hw, dtype=torch.float64).to(dtype).double()
    xr = x.clone().requires_grad_()
    ref = F.adaptive_avg_pool2d(xr, out_hw)
    go = torch.randn_like(ref).to(dtype).double()
    ref.backward(go)
    rtol, atol = TOL[dtype]
    y = cuda_pool.adaptive_avg_pool2d_forward(x.to(dtype), out_hw)
    torch.testing.assert_close(y.double(), ref.detach(), rtol=rtol, atol=atol)
    gx = cuda_pool.adaptive_avg_pool2d_backward(go.to(dtype), in_hw)
    torch.testing.assert_close(gx.double(), xr.grad, rtol=rtol, atol=atol)


def test_reductions_scale_with_the_tensor(emu, monkeypatch):
    """Bias gradient, global average pooling and max-pool backward split their work over a 2-D grid."""
    from fastconv.cuda import _rowsum

    monkeypatch.setattr(_rowsum, "MIN_CHUNK", 32)
    monkeypatch.setattr(_rowsum, "MAX_GRID_Y", 2)
    monkeypatch.setattr(cuda_pool, "MAX_GRID_Y", 2)
    go = torch.randn(3, 1, 13, 17, dtype=torch.float64)  # a one-channel head: still many blocks
    del emu.launches[:]
    gb = cuda_conv.conv2d_bias_grad(go)
    torch.testing.assert_close(gb, go.sum((0, 2, 3)), rtol=1e-13, atol=1e-13)
    (name, grid, block, _), _fin = emu.launches
    assert name == "conv2d_bias_grad<double>" and grid[0] == -(-3 * 13 * 17 // 32) and block == (32, 8, 1)
    x = torch.randn(5, 7, 6, 9, dtype=torch.float64)
    y = cuda_pool.adaptive_avg_pool2d_forward(x, (1, 1))
    torch.testing.assert_close(y, x.mean((2, 3), keepdim=True), rtol=1e-13, atol=1e-13)
    assert emu.launches[-2][1][1] == 2  # 35 planes on a grid of 2 rows of blocks: the kernel strides
    xr = x.clone().requires_grad_()
    v, i = F.max_pool2d(xr, 3, 2, 1, return_indices=True)
    g = torch.randn_like(v)
    v.backward(g)
    gx = cuda_pool.max_pool2d_backward(g, i, (6, 9))
    torch.testing.assert_close(gx, xr.grad, rtol=1e-13, atol=1e-13)
    assert torch.equal(gx, cuda_pool.max_pool2d_backward(g, i, (6, 9)))  # deterministic


# --------------------------------------------------------------------------- AddressSanitizer

ASAN_SCRIPT = r"""
import numpy as np, torch
from fastconv.cuda import _runtime
from fastconv.testing import samples
from fastconv.testing.emulator import EmuModule, EmulatorRuntime
import sys
src, names = sys.argv[1], sys.argv[2].split(",")
if sys.argv[3] == "oob":
    m = EmuModule(open(src).read(), _runtime.COMPILE_OPTIONS, names, asan=True)
    x = np.zeros(32, np.float32); y = np.zeros(32, np.float32)
    m.get_function("out_of_bounds")((1,), (32,), (x, y))
    print("NO ERROR")
    sys.exit(0)
with _runtime.use_runtime(EmulatorRuntime(asan=True)):
    # every contract function of every family (fastconv._backend.FAMILIES), every kernel of the table
    samples.run_all()
print("ASAN CLEAN")
"""


def _run_asan(tmp_path, mode):
    from fastconv.testing.emulator import asan_runtime, libstdcxx_runtime

    lib = asan_runtime()
    if not os.path.isabs(lib):
        pytest.skip("g++ has no AddressSanitizer runtime")
    # libstdc++ is preloaded too, so ASan's __cxa_throw interceptor finds the real one (torch throws).
    lib = f"{lib} {libstdcxx_runtime()}"
    src = tmp_path / "prims.cu"
    src.write_text(primitives_source())
    script = tmp_path / "asan_run.py"
    script.write_text(ASAN_SCRIPT)
    env = dict(os.environ, LD_PRELOAD=lib, ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1",
               PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, str(script), str(src), ",".join(NAMES), mode], env=env,
                          capture_output=True, text=True, timeout=600)


def test_asan_catches_out_of_bounds(tmp_path):
    proc = _run_asan(tmp_path, "oob")
    assert proc.returncode != 0 and "heap-buffer-overflow" in proc.stderr, proc.stderr[-3000:]


@pytest.mark.slow
def test_asan_all_kernels_clean(tmp_path):
    proc = _run_asan(tmp_path, "kernels")
    assert proc.returncode == 0 and "ASAN CLEAN" in proc.stdout, (proc.stdout + proc.stderr)[-5000:]


# --------------------------------------------------------------------------- kernel sources

FAMILIES = list(_runtime.FAMILIES)  # the nvcc / NVRTC checks: tests/test_cuda_static.py, tests/test_cuda_launch.py


def test_kernel_sources_found_and_self_contained():
    for fam in FAMILIES:
        src = _runtime.kernel_source(fam)
        assert '#include "' not in src.replace('#include "fc_common.cuh"', "")
        assert "Launch contract" in src
