"""Every fastconv op on a CUDA device against torch/cuDNN: values, gradients, float64 gradcheck.

Skips, saying why, without a CUDA device or CuPy; runs unchanged on a GPU machine.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import fastconv
import fastconv.functional as FF

try:
    import cupy  # noqa: F401
    _CUPY = True
except ImportError:
    _CUPY = False

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available"),
    pytest.mark.skipif(not _CUPY, reason="cupy not installed (pip install 'fastconv[cuda]')"),
]

DEV = "cuda"
TOL = {torch.float64: (1e-10, 1e-10), torch.float32: (1e-4, 1e-4), torch.float16: (1e-2, 1e-2),
       torch.bfloat16: (5e-2, 5e-2)}


def _check(fn_fast, fn_ref, inputs, dtype):
    rtol, atol = TOL[dtype]
    a = [t.detach().to(DEV, dtype).requires_grad_() for t in inputs]
    b = [t.detach().to(DEV, dtype).requires_grad_() for t in inputs]
    out, ref = fn_fast(*a), fn_ref(*b)
    assert out.device.type == "cuda" and out.dtype == dtype
    torch.testing.assert_close(out, ref, rtol=rtol, atol=atol)
    g = torch.randn_like(ref)
    ga = torch.autograd.grad(out, a, g)
    gb = torch.autograd.grad(ref, b, g)
    for x, y in zip(ga, gb):
        torch.testing.assert_close(x, y, rtol=rtol * 10, atol=atol * 10)


CONV = [dict(stride=1, padding=1), dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2),
        dict(stride=1, padding="same", dilation=2)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("kw", CONV, ids=str)
def test_conv2d(kw, dtype):
    x, w, b = torch.randn(2, 4, 13, 11), torch.randn(6, 4 // kw.get("groups", 1), 3, 3), torch.randn(6)
    _check(lambda *t: FF.conv2d(*t, **kw), lambda *t: F.conv2d(*t, **kw), (x, w, b), dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_conv_transpose2d(dtype):
    kw = dict(stride=2, padding=1, output_padding=1, groups=2, dilation=1)
    x, w, b = torch.randn(2, 4, 7, 6), torch.randn(4, 3, 3, 3), torch.randn(6)
    _check(lambda *t: FF.conv_transpose2d(*t, **kw), lambda *t: F.conv_transpose2d(*t, **kw), (x, w, b), dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_pooling(dtype):
    x = torch.randn(2, 3, 15, 14)
    _check(lambda t: FF.max_pool2d(t, 3, 2, 1, dilation=1, ceil_mode=True),
           lambda t: F.max_pool2d(t, 3, 2, 1, dilation=1, ceil_mode=True), (x,), dtype)
    _check(lambda t: FF.avg_pool2d(t, 3, 2, 1, count_include_pad=False),
           lambda t: F.avg_pool2d(t, 3, 2, 1, count_include_pad=False), (x,), dtype)
    _check(lambda t: FF.adaptive_avg_pool2d(t, (4, 5)), lambda t: F.adaptive_avg_pool2d(t, (4, 5)), (x,), dtype)


def test_gradcheck_float64():
    x = torch.randn(1, 2, 6, 5, device=DEV, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 1, 3, 2, device=DEV, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, device=DEV, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *t: FF.conv2d(*t, stride=(2, 1), padding=1, groups=2), (x, w, b))
    assert torch.autograd.gradgradcheck(lambda *t: FF.conv2d(*t, padding=1, groups=2), (x, w, b))
    assert torch.autograd.gradcheck(lambda t: FF.avg_pool2d(t, 2, 1, 1), (x,))
    assert torch.autograd.gradcheck(lambda t: FF.adaptive_avg_pool2d(t, (3, 4)), (x,))
    assert torch.autograd.gradcheck(lambda t: FF.max_pool2d(t, 2, 1), (x,))


@pytest.mark.skipif(not hasattr(fastconv, "ssim"), reason="fastconv.ssim not present")
def test_ssim_runs_on_cuda():
    x = torch.rand(2, 3, 32, 32, device=DEV, dtype=torch.float64, requires_grad=True)
    y = torch.rand(2, 3, 32, 32, device=DEV, dtype=torch.float64)
    s = fastconv.ssim(x, y, data_range=1.0)
    ref = fastconv.ssim(x.detach().cpu(), y.cpu(), data_range=1.0)
    torch.testing.assert_close(s.cpu(), ref, rtol=1e-9, atol=1e-9)


# --------------------------------------------------------------------------- SSIM (kernels/ssim.cu)

def _ssim_ref(x, y, win_size=11, win_sigma=1.5):
    """Per-image SSIM (data_range 1) from the shared pure-torch reference, in float64."""
    from fastconv.testing.ssim_reference import ssim_stats_reference

    return ssim_stats_reference(x.double(), y.double(), win_size, win_sigma)[0].mean(1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("win_size", [7, 11])
def test_ssim(dtype, win_size):
    from fastconv.ops.ssim import ssim

    x = torch.rand(2, 3, 37, 29, dtype=torch.float64)
    y = (x + 0.2 * torch.randn_like(x)).clamp(0, 1)
    xr, yr = x.to(dtype).double(), y.to(dtype).double()  # the reference sees the same rounded inputs
    ref_tol = {torch.float64: 1e-10, torch.float32: 1e-4, torch.float16: 4e-3, torch.bfloat16: 2e-2}[dtype]
    a = [t.to(DEV, dtype).requires_grad_() for t in (x, y)]
    b = [t.to(DEV).requires_grad_() for t in (xr, yr)]
    out = ssim(*a, data_range=1.0, size_average=False, win_size=win_size)
    ref = _ssim_ref(*b, win_size=win_size)
    assert out.device.type == torch.device(DEV).type and out.dtype == dtype
    torch.testing.assert_close(out.double(), ref, rtol=ref_tol, atol=ref_tol)
    g = torch.randn(2, dtype=torch.float64, device=DEV)
    ga = torch.autograd.grad(out, a, g.to(dtype))
    gb = torch.autograd.grad(ref, b, g)
    for u, v in zip(ga, gb):
        torch.testing.assert_close(u.double(), v, rtol=ref_tol * 3, atol=ref_tol * 3 * float(v.abs().max()))
    if dtype in (torch.float32, torch.float64):  # same precision as the CPU backend
        tol = 1e-12 if dtype == torch.float64 else 1e-5
        ac = [t.to(dtype).requires_grad_() for t in (x, y)]
        cpu = ssim(*ac, data_range=1.0, size_average=False, win_size=win_size)
        torch.testing.assert_close(out.cpu(), cpu.detach(), rtol=tol, atol=tol)
        gc = torch.autograd.grad(cpu, ac, g.cpu().to(dtype))
        for u, v in zip(ga, gc):
            torch.testing.assert_close(u.cpu(), v, rtol=tol, atol=tol * float(v.abs().max()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_ms_ssim_matches_cpu(dtype):
    from fastconv.ops.ssim import ms_ssim

    x = torch.rand(1, 2, 180, 170, dtype=dtype)
    y = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    a = [t.to(DEV).requires_grad_() for t in (x, y)]
    c = [t.clone().requires_grad_() for t in (x, y)]
    out, ref = ms_ssim(*a, data_range=1.0), ms_ssim(*c, data_range=1.0)
    torch.testing.assert_close(out.cpu(), ref.detach(), rtol=tol, atol=tol)
    for u, v in zip(torch.autograd.grad(out, a), torch.autograd.grad(ref, c)):
        torch.testing.assert_close(u.cpu(), v, rtol=tol * 10, atol=tol * 10 * float(v.abs().max()))


def test_ssim_gradcheck_and_determinism():
    from fastconv.ops.ssim import ssim_stats

    x = torch.rand(1, 2, 9, 10, device=DEV, dtype=torch.float64, requires_grad=True)
    y = torch.rand(1, 2, 9, 10, device=DEV, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: ssim_stats(a, b, 7, 1.5, 1e-4, 9e-4), (x, y))
    xf = torch.rand(3, 3, 300, 257, device=DEV)
    yf = (xf + 0.1 * torch.randn_like(xf)).clamp(0, 1)
    r1 = ssim_stats(xf, yf, 11, 1.5, 1e-4, 9e-4)
    r2 = ssim_stats(xf, yf, 11, 1.5, 1e-4, 9e-4)
    assert all(torch.equal(u, v) for u, v in zip(r1, r2))
