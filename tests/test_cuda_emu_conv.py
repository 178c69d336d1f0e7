"""The implicit-GEMM conv2d kernels and the emulator's WMMA, without a GPU.

Every GEMM kernel (forward, backward-data, backward-weight) runs through the production launchers
(:mod:`fastconv.cuda.conv2d`: planner, tile, split-K) on the emulator in every path: exact float64
and float32, TF32 (``torch.backends.cudnn.allow_tf32``), fp16 and bf16 on tensor cores.  The
reference is torch in float64 on inputs rounded the way the kernel rounds them (to the storage
dtype; TF32 by round-to-nearest-ties-away), so the only differences left are the float32
accumulation (bounded by the same convolution of absolute values) and the output rounding.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fastconv.cuda import _runtime
from fastconv.cuda import conv2d as cuda_conv
from fastconv.testing.emulator import EmuModule, EmulatorRuntime
from fastconv.testing.samples import allow_tf32

pytestmark = pytest.mark.cuda_emu

# (dtype, TF32 allowed)
PATHS = [(torch.float64, False), (torch.float32, False), (torch.float32, True), (torch.float16, True),
         (torch.bfloat16, True)]
PATH_IDS = ["f64", "f32-exact", "f32-tf32", "f16", "bf16"]
# Relative size of the final rounding to the storage dtype, and of the accumulation error per unit of |x|*|w|.
OUT_EPS = {torch.float64: 1e-15, torch.float32: 2e-7, torch.float16: 2 ** -11, torch.bfloat16: 2 ** -8}
ACC_EPS = {torch.float64: 1e-13, torch.float32: 2e-6}

# (N, C, H, W, O, groups, (kh, kw), stride, padding4, dilation)
CASES = [
    (2, 3, 7, 9, 5, 1, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),       # odd channels, 16 x 128 tile, edge tiles
    (1, 4, 10, 13, 6, 2, (3, 2), (2, 1), (1, 1, 2, 2), (1, 2)),     # groups, stride, dilation, asymmetric kernel
    (2, 6, 9, 8, 6, 6, (3, 3), (2, 2), (0, 0, 1, 1), (2, 1)),       # depthwise
    (1, 5, 11, 9, 40, 1, (3, 3), (1, 2), (2, 1, 0, 3), (1, 1)),     # 64 x 64 tile with edge rows, asymmetric pad
    (2, 9, 6, 7, 18, 3, (2, 3), (1, 1), (1, 0, 1, 1), (2, 2)),      # K spans several k tiles per group
]
# Larger layers (several tiles in every GEMM dimension, split-K), for -m slow.
LARGE = [
    (2, 16, 20, 19, 70, 1, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
    (4, 12, 15, 17, 24, 4, (5, 3), (2, 1), (2, 2, 1, 1), (1, 2)),
    (8, 3, 18, 18, 16, 1, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1)),  # backward-weight K = 648 per image x 8
]


def tf32_round(t: torch.Tensor) -> torch.Tensor:
    """float32 -> TF32 with round to nearest, ties away from zero (cvt.rna.tf32.f32), as float32."""
    u = t.float().contiguous().view(torch.int32)
    finite = (u & 0x7F800000) != 0x7F800000
    r = torch.where(finite, (u + 0x1000) & ~0x1FFF, u)
    return r.view(torch.float32)


def _rounded(t: torch.Tensor, dtype: torch.dtype, tf32: bool) -> torch.Tensor:
    t = t.to(dtype)
    if dtype == torch.float32 and tf32:
        t = tf32_round(t)
    return t.double()


@pytest.fixture(scope="module")
def emu():
    rt = EmulatorRuntime()
    with _runtime.use_runtime(rt):
        yield rt


def _conv_ref(x, w, b, stride, pad4, dil, groups):
    xp = F.pad(x, (pad4[2], pad4[3], pad4[0], pad4[1]))
    return F.conv2d(xp, w, b, stride, 0, dil, groups)


def _close(got, ref, bound, dtype, tf32):
    acc = ACC_EPS.get(dtype, ACC_EPS[torch.float32])
    if dtype == torch.float32 and not tf32:
        acc = ACC_EPS[torch.float32]
    tol = OUT_EPS[dtype] * ref.abs() + acc * bound + 1e-300
    err = (got.double() - ref).abs()
    assert bool((err <= tol).all()), f"max error {float(err.max()):.3g}, worst ratio {float((err / tol).max()):.3g}"


def check_case(case, dtype, tf32):
    n, c, h, wd, o, g, k, s, p, d = case
    gen = torch.Generator().manual_seed(sum(case[:5]))
    x0 = torch.randn(n, c, h, wd, generator=gen, dtype=torch.float64)
    w0 = torch.randn(o, c // g, *k, generator=gen, dtype=torch.float64)
    b0 = torch.randn(o, generator=gen, dtype=torch.float64)
    out_hw = tuple(_conv_ref(x0, w0, None, s, p, d, g).shape[2:])
    g0 = torch.randn(n, o, *out_hw, generator=gen, dtype=torch.float64)
    x, w, b, go = (t.to(dtype) for t in (x0, w0, b0, g0))
    xr, wr, gr = (_rounded(t, dtype, tf32).requires_grad_() for t in (x, w, go))
    ref = _conv_ref(xr, wr, b.double(), s, p, d, g)
    ref.backward(gr.detach())
    xa, wa = xr.detach().abs().requires_grad_(), wr.detach().abs().requires_grad_()
    bound = _conv_ref(xa, wa, None, s, p, d, g)
    bound.backward(gr.detach().abs())
    with allow_tf32(tf32):
        y = cuda_conv.conv2d_forward(x, w, b, s, p, d, g, out_hw)
        gx = cuda_conv.conv2d_backward_input(go, w, None, s, p, d, g, (h, wd))
        gw = cuda_conv.conv2d_backward_weight(x, go, s, p, d, g, k)
    assert y.dtype == gx.dtype == gw.dtype == dtype
    _close(y, ref.detach(), bound.detach() + b.double().abs().view(1, -1, 1, 1), dtype, tf32)
    _close(gx, xr.grad, xa.grad, dtype, tf32)
    _close(gw, wr.grad, wa.grad, dtype, tf32)


@pytest.mark.parametrize("path", range(len(PATHS)), ids=PATH_IDS)
@pytest.mark.parametrize("case", range(len(CASES)))
def test_conv_gemm_kernels(emu, case, path):
    check_case(CASES[case], *PATHS[path])


@pytest.mark.slow
@pytest.mark.parametrize("path", range(len(PATHS)), ids=PATH_IDS)
@pytest.mark.parametrize("case", range(len(LARGE)))
def test_conv_gemm_kernels_large(emu, case, path, monkeypatch):
    monkeypatch.setattr(cuda_conv, "MIN_SPLIT_K", 256)  # several split-K slices
    check_case(LARGE[case], *PATHS[path])


def test_tf32_flag_switches_the_path(emu):
    """allow_tf32 on: TF32-rounded result; off: the exact float32 one (and the planner says which)."""
    x = torch.randn(1, 3, 6, 6) * (1 + 2 ** -12)  # mantissa bits that TF32 drops
    w = torch.randn(4, 3, 3, 3)
    with allow_tf32(False):
        exact = cuda_conv.conv2d_forward(x, w, None, (1, 1), (0,) * 4, (1, 1), 1, (4, 4))
        assert not cuda_conv.plan("conv2d_forward", torch.float32, 4, 16, 27, 1).tensor_cores
    with allow_tf32(True):
        tc = cuda_conv.conv2d_forward(x, w, None, (1, 1), (0,) * 4, (1, 1), 1, (4, 4))
        assert cuda_conv.plan("conv2d_forward", torch.float32, 4, 16, 27, 1).tensor_cores
    ref = F.conv2d(x.double(), w.double())
    ref32 = F.conv2d(tf32_round(x).double(), tf32_round(w).double())
    assert (exact.double() - ref).abs().max() < 1e-5
    assert (tc.double() - ref32).abs().max() < 1e-5 and (tc.double() - ref).abs().max() > 1e-4


def test_conv_transpose_uses_backward_input_with_bias(emu):
    x = torch.randn(2, 4, 5, 6, dtype=torch.float64)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    b = torch.randn(3, dtype=torch.float64)
    ref = F.conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=1)
    out = cuda_conv.conv2d_backward_input(x, w, b, (2, 2), (1, 0, 1, 0), (1, 1), 1, tuple(ref.shape[2:]))
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


def test_bias_grad_every_dtype(emu):
    for dt in (torch.float64, torch.float32, torch.float16, torch.bfloat16):
        go = torch.randn(2, 5, 7, 3).to(dt)
        gb = cuda_conv.conv2d_bias_grad(go)
        torch.testing.assert_close(gb.double(), go.double().sum((0, 2, 3)), rtol=OUT_EPS[dt] * 2, atol=1e-5)


def test_planner_is_inspectable_and_split_k_is_deterministic(emu, monkeypatch):
    p = cuda_conv.plan("conv2d_forward", torch.bfloat16, 64, 50176, 576, 1)
    assert (p.tensor_cores, p.tile, p.threads, p.grid) == (True, (64, 64), 128, (784, 1, 1))
    assert p.expression == "conv2d_forward<fc_bf16, 1, 64, 64>"
    narrow = cuda_conv.plan("conv2d_forward", torch.float64, 3, 1000, 27, 1)
    assert (narrow.tensor_cores, narrow.tile, narrow.threads) == (False, (16, 128), 256)
    bw = cuda_conv.plan("conv2d_backward_weight", torch.float16, 64, 576, 8 * 56 * 56, 1)
    assert bw.splits > 1 and bw.kchunk % 64 == 0 and (bw.splits - 1) * bw.kchunk < bw.k <= bw.splits * bw.kchunk
    assert bw.grid[2] == bw.splits
    monkeypatch.setattr(cuda_conv, "MIN_SPLIT_K", 64)  # force several splits on a small problem
    x, go = torch.randn(3, 4, 12, 11), torch.randn(3, 6, 10, 9)
    del emu.launches[:]
    with allow_tf32(False):
        a = cuda_conv.conv2d_backward_weight(x, go, (1, 1), (0,) * 4, (1, 1), 2, (3, 3))
        b = cuda_conv.conv2d_backward_weight(x, go, (1, 1), (0,) * 4, (1, 1), 2, (3, 3))
    (name, grid, _, _), (rname, _, _, _) = emu.launches[:2]
    assert name.startswith("conv2d_backward_weight<") and grid[2] == 2 * 5 and rname.startswith(
        "conv2d_backward_weight_reduce")  # 2 groups x 5 splits of K = 270
    assert torch.equal(a, b)
    ref = torch.nn.grad.conv2d_weight(x.double(), (6, 2, 3, 3), go.double(), groups=2)
    torch.testing.assert_close(a.double(), ref, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- the emulator's WMMA

WMMA = r"""
#include <mma.h>
using namespace nvcuda;

// C (16 x 16, float) = A (16 x 16) * B (16 x 16) through fragments, the portable way.
template <typename W>
__global__ void __launch_bounds__(32) mma16(const W* a, const W* b, float* c) {
    wmma::fragment<wmma::matrix_a, 16, 16, 16, W, wmma::row_major> fa;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, W, wmma::col_major> fb;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> fc;
    wmma::fill_fragment(fc, 1.0f);
    wmma::load_matrix_sync(fa, a, 16);
    wmma::load_matrix_sync(fb, b, 16);
    wmma::mma_sync(fc, fa, fb, fc);
    wmma::store_matrix_sync(c, fc, 16, wmma::mem_row_major);
}

// TF32 m16n16k8 with the operands rounded by __float_to_tf32 (round) or not (the hardware truncates).
__global__ void __launch_bounds__(32) mma_tf32(const float* a, const float* b, float* c, int round) {
    wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major> fa;
    wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major> fb;
    wmma::fragment<wmma::accumulator, 16, 16, 8, float> fc;
    wmma::fill_fragment(fc, 0.0f);
    wmma::load_matrix_sync(fa, a, 8);
    wmma::load_matrix_sync(fb, b, 16);
    if (round) {
        for (int i = 0; i < fa.num_elements; ++i) fa.x[i] = wmma::__float_to_tf32(fa.x[i]);
        for (int i = 0; i < fb.num_elements; ++i) fb.x[i] = wmma::__float_to_tf32(fb.x[i]);
    }
    wmma::mma_sync(fc, fa, fb, fc);
    wmma::store_matrix_sync(c, fc, 16, wmma::mem_row_major);
}

// A kernel that assumes the sm_80 accumulator layout (lane l holds row l / 4 and l / 4 + 8, columns
// 2 * (l % 4) + {0, 1} and + 8) and writes fragment elements itself instead of store_matrix_sync.
__global__ void __launch_bounds__(32) layout_assuming(const __half* a, const __half* b, float* c) {
    wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> fa;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::row_major> fb;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> fc;
    wmma::fill_fragment(fc, 0.0f);
    wmma::load_matrix_sync(fa, a, 16);
    wmma::load_matrix_sync(fb, b, 16);
    wmma::mma_sync(fc, fa, fb, fc);
    const int l = threadIdx.x, r = l / 4, q = 2 * (l % 4);
    const int rows[8] = {r, r, r + 8, r + 8, r, r, r + 8, r + 8}, cols[8] = {q, q + 1, q, q + 1, q + 8, q + 9, q + 8, q + 9};
    for (int i = 0; i < 8; ++i) c[rows[i] * 16 + cols[i]] = fc.x[i];
}

// A warp where one lane skips the collective: must be reported, never hang.
__global__ void __launch_bounds__(32) divergent_mma(const __half* a, float* c) {
    wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> fa;
    if (threadIdx.x == 3) return;
    wmma::load_matrix_sync(fa, a, 16);
    c[threadIdx.x] = 1.0f;
}
"""


@pytest.fixture(scope="module")
def wmma_mod():
    code = (_runtime.kernels_dir() / "fc_common.cuh").read_text() + WMMA
    return EmuModule(code, _runtime.COMPILE_OPTIONS, ["mma16<__half>", "mma16<__nv_bfloat16>", "mma_tf32",
                                                      "layout_assuming", "divergent_mma"], source_name="wmma.cu")


@pytest.mark.parametrize("kind", ["__half", "__nv_bfloat16"])
def test_wmma_fragments_compute_a_product(wmma_mod, kind):
    rng = np.random.default_rng(5)
    a32, b32 = rng.standard_normal((16, 16)).astype(np.float32), rng.standard_normal((16, 16)).astype(np.float32)
    if kind == "__half":
        a, b = a32.astype(np.float16), b32.astype(np.float16)
        av, bv = a.astype(np.float64), b.astype(np.float64)
    else:
        ta, tb = torch.from_numpy(a32).bfloat16(), torch.from_numpy(b32).bfloat16()
        a, b = ta.view(torch.int16).numpy(), tb.view(torch.int16).numpy()
        av, bv = ta.double().numpy(), tb.double().numpy()
    bcol = np.ascontiguousarray(b.T)  # the kernel loads B column-major
    c = np.zeros((16, 16), np.float32)
    wmma_mod.get_function(f"mma16<{kind}>")((1,), (32,), (a, bcol, c))
    np.testing.assert_allclose(c, av @ bv + 1.0, rtol=1e-5, atol=1e-5)


def test_wmma_tf32_rounding_is_bit_exact(wmma_mod):
    rng = np.random.default_rng(6)
    a = (rng.standard_normal((16, 8)) * (1 + 2.0 ** -11)).astype(np.float32)
    b = rng.standard_normal((8, 16)).astype(np.float32)
    a[0, :4] = np.array([1 + 2 ** -11, 1 + 3 * 2 ** -11, -(1 + 2 ** -11), 2 ** -140], np.float32)  # ties, subnormal
    c_round, c_trunc = np.zeros((16, 16), np.float32), np.zeros((16, 16), np.float32)
    k = wmma_mod.get_function("mma_tf32")
    k((1,), (32,), (a, b, c_round, np.int32(1)))
    k((1,), (32,), (a, b, c_trunc, np.int32(0)))
    ar, br = tf32_round(torch.from_numpy(a)), tf32_round(torch.from_numpy(b))
    assert ar[0, 0].item() == 1 + 2 ** -10 and ar[0, 1].item() == 1 + 2 ** -9 and ar[0, 2].item() == -(1 + 2 ** -10)
    np.testing.assert_allclose(c_round, (ar.double() @ br.double()).numpy(), rtol=1e-6, atol=1e-6)
    u = torch.from_numpy(a).view(torch.int32) & ~0x1FFF
    at = u.view(torch.float32)
    bt = (torch.from_numpy(b).view(torch.int32) & ~0x1FFF).view(torch.float32)
    np.testing.assert_allclose(c_trunc, (at.double() @ bt.double()).numpy(), rtol=1e-6, atol=1e-6)
    assert not np.allclose(c_round, c_trunc, rtol=0, atol=1e-7)


def test_layout_assuming_kernel_fails_on_the_emulator(wmma_mod):
    """The fragment layout is unspecified; the emulator's permuted one breaks a kernel that assumes sm_80's."""
    rng = np.random.default_rng(7)
    a, b = rng.standard_normal((16, 16)).astype(np.float16), rng.standard_normal((16, 16)).astype(np.float16)
    c = np.zeros((16, 16), np.float32)
    wmma_mod.get_function("layout_assuming")((1,), (32,), (a, b, c))
    assert not np.allclose(c, a.astype(np.float64) @ b.astype(np.float64), rtol=1e-3, atol=1e-3)


def test_wmma_is_warp_collective(wmma_mod):
    from fastconv.testing.emulator import EmulatorError

    with pytest.raises(EmulatorError, match="deadlock"):
        wmma_mod.get_function("divergent_mma")((1,), (32,), (np.zeros((16, 16), np.float16), np.zeros(32, np.float32)))
