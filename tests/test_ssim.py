"""SSIM / MS-SSIM / PSNR: values vs pytorch-msssim and scikit-image, gradients vs a pure-torch reference."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fastconv.nn.ssim import MS_SSIM, SSIM, SSIMLoss
from fastconv.testing.ssim_reference import ssim_stats_reference
from fastconv.ops import ssim as ssim_ops
from fastconv.ops.ssim import ms_ssim, psnr, ssim

pytorch_msssim = pytest.importorskip("pytorch_msssim")
skimage_metrics = pytest.importorskip("skimage.metrics")


def _pair(shape, dtype=torch.float64, seed=0, noise=0.1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g, dtype=dtype)
    y = (x + noise * torch.randn(shape, generator=g, dtype=dtype)).clamp(0, 1)
    return x, y


def _pm_win(channels, win_size=11, sigma=1.5):
    """pytorch-msssim's window argument, built in float64 (its default is computed in float32)."""
    t = torch.arange(win_size, dtype=torch.float64) - win_size // 2
    g = torch.exp(-t ** 2 / (2 * sigma ** 2))
    return (g / g.sum()).view(1, 1, 1, -1).repeat(channels, 1, 1, 1)


def _ref_stats(x, y, win_size=11, sigma=1.5, data_range=1.0, K=(0.01, 0.03)):
    """The shared pure-torch reference (:mod:`fastconv.testing.ssim_reference`)."""
    return ssim_stats_reference(x, y, win_size, sigma, (K[0] * data_range) ** 2, (K[1] * data_range) ** 2)


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize("shape,win", [((2, 3, 40, 33), 11), ((1, 1, 11, 11), 11), ((3, 2, 20, 25), 7),
                                       ((1, 1, 9, 30), 3)])
@pytest.mark.parametrize("size_average", [True, False])
def test_ssim_matches_pytorch_msssim(shape, win, size_average):
    x, y = _pair(shape)
    got = ssim(x, y, size_average=size_average, win_size=win)
    want = pytorch_msssim.ssim(x, y, data_range=1.0, size_average=size_average, win_size=win)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    exact = pytorch_msssim.ssim(x, y, data_range=1.0, size_average=size_average, win=_pm_win(shape[1], win))
    torch.testing.assert_close(got, exact, rtol=0, atol=1e-12)


def test_ssim_options_match_pytorch_msssim():
    x, y = _pair((2, 2, 24, 31), noise=0.8)
    x, y = x * 255, y * 255
    for kw in ({"K": (0.02, 0.05), "win_sigma": 2.0}, {"nonnegative_ssim": True}, {"win_size": 5}):
        got = ssim(x, y, data_range=255, size_average=False, **kw)
        want = pytorch_msssim.ssim(x, y, data_range=255, size_average=False, **kw)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    # strongly anti-correlated images: negative SSIM, clamped by nonnegative_ssim
    neg = ssim(x, 255 - x, data_range=255, size_average=False)
    assert (neg < 0).all()
    assert (ssim(x, 255 - x, data_range=255, size_average=False, nonnegative_ssim=True) == 0).all()


def test_ssim_matches_skimage():
    x, y = _pair((2, 3, 37, 29), seed=3)
    got = ssim(x, y, data_range=1.0, size_average=False)
    for n in range(2):
        a = x[n].permute(1, 2, 0).numpy()
        b = y[n].permute(1, 2, 0).numpy()
        want = skimage_metrics.structural_similarity(a, b, channel_axis=2, gaussian_weights=True, sigma=1.5,
                                                     use_sample_covariance=False, data_range=1.0)
        assert abs(got[n].item() - want) < 1e-6


def test_ssim_map_semantics_match_skimage_cropped_map():
    # skimage's full map cropped by (win-1)//2 is exactly our valid region: check cs and ssim per channel
    x, y = _pair((1, 1, 30, 26), seed=4)
    s, cs = ssim_ops.ssim_stats(x, y, 11, 1.5, 0.01 ** 2, 0.03 ** 2)
    _, smap = skimage_metrics.structural_similarity(x[0, 0].numpy(), y[0, 0].numpy(), gaussian_weights=True,
                                                    sigma=1.5, use_sample_covariance=False, data_range=1.0,
                                                    full=True)
    assert abs(s.item() - smap[5:-5, 5:-5].mean()) < 1e-6
    rs, rcs = _ref_stats(x, y)
    torch.testing.assert_close(cs, rcs, rtol=0, atol=1e-12)


def test_ssim_identical_images_is_one():
    x, _ = _pair((2, 1, 16, 16))
    torch.testing.assert_close(ssim(x, x), torch.tensor(1.0, dtype=torch.float64), rtol=0, atol=1e-12)


def test_ssim_float32_close_to_pytorch_msssim():
    x, y = _pair((2, 3, 48, 40), dtype=torch.float32)
    got = ssim(x, y, size_average=False)
    assert got.dtype == torch.float32
    want = pytorch_msssim.ssim(x, y, data_range=1.0, size_average=False)
    torch.testing.assert_close(got, want, rtol=0, atol=2e-5)


@pytest.mark.parametrize("shape", [(2, 2, 170, 181), (1, 1, 161, 200)])
def test_ms_ssim_matches_pytorch_msssim(shape):
    x, y = _pair(shape, seed=5)
    got = ms_ssim(x, y, size_average=False)
    want = pytorch_msssim.ms_ssim(x, y, data_range=1.0, size_average=False)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    exact = pytorch_msssim.ms_ssim(x, y, data_range=1.0, size_average=False, win=_pm_win(shape[1]))
    torch.testing.assert_close(got, exact, rtol=0, atol=1e-12)
    w = [0.2, 0.3, 0.5]
    torch.testing.assert_close(ms_ssim(x, y, weights=w, win_size=7),
                               pytorch_msssim.ms_ssim(x, y, data_range=1.0, weights=w, win_size=7),
                               rtol=0, atol=1e-6)


def test_psnr_matches_skimage():
    x, y = _pair((3, 2, 10, 12), seed=6)
    per = psnr(x, y, reduction="none")
    for n in range(3):
        want = skimage_metrics.peak_signal_noise_ratio(x[n].numpy(), y[n].numpy(), data_range=1.0)
        assert abs(per[n].item() - want) < 1e-9
    torch.testing.assert_close(psnr(x, y), per.mean())
    torch.testing.assert_close(psnr(x, y, reduction="sum"), per.sum())
    xi = (x * 255).round().to(torch.uint8)
    yi = (y * 255).round().to(torch.uint8)
    want = skimage_metrics.peak_signal_noise_ratio(xi[0].numpy(), yi[0].numpy(), data_range=255)
    assert abs(psnr(xi, yi, data_range=255, reduction="none")[0].item() - want) < 1e-4
    assert math.isinf(psnr(x, x).item())


# --------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("shape,win", [((2, 3, 23, 19), 11), ((1, 2, 9, 12), 5)])
def test_ssim_gradients_match_reference(shape, win):
    x, y = _pair(shape, seed=7)
    wts = torch.rand(shape[0], dtype=torch.float64)
    xa, ya = x.clone().requires_grad_(), y.clone().requires_grad_()
    (ssim(xa, ya, size_average=False, win_size=win) * wts).sum().backward()
    xb, yb = x.clone().requires_grad_(), y.clone().requires_grad_()
    s, _ = _ref_stats(xb, yb, win_size=win)
    (s.mean(1) * wts).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, rtol=0, atol=1e-6 * xb.grad.abs().max().item())
    torch.testing.assert_close(ya.grad, yb.grad, rtol=0, atol=1e-6 * yb.grad.abs().max().item())
    assert xa.grad.abs().max() > 0


def test_cs_gradient_matches_reference():
    x, y = _pair((2, 2, 15, 14), seed=8)
    xa, ya = x.clone().requires_grad_(), y.clone().requires_grad_()
    gs, gc = torch.rand(2, 2, dtype=torch.float64), torch.rand(2, 2, dtype=torch.float64)
    s, cs = ssim_ops.ssim_stats(xa, ya, 7, 1.5, 1e-4, 9e-4)
    ((s * gs).sum() + (cs * gc).sum()).backward()
    xb, yb = x.clone().requires_grad_(), y.clone().requires_grad_()
    rs, rcs = _ref_stats(xb, yb, win_size=7)
    ((rs * gs).sum() + (rcs * gc).sum()).backward()
    torch.testing.assert_close(xa.grad, xb.grad, rtol=0, atol=1e-9)
    torch.testing.assert_close(ya.grad, yb.grad, rtol=0, atol=1e-9)


def test_ms_ssim_gradients_match_pytorch_msssim():
    x, y = _pair((1, 1, 161, 164), seed=9)
    xa, ya = x.clone().requires_grad_(), y.clone().requires_grad_()
    ms_ssim(xa, ya).backward()
    xb, yb = x.clone().requires_grad_(), y.clone().requires_grad_()
    pytorch_msssim.ms_ssim(xb, yb, data_range=1.0, win=_pm_win(1)).backward()
    scale = xb.grad.abs().max().item()
    torch.testing.assert_close(xa.grad, xb.grad, rtol=0, atol=1e-6 * scale)
    torch.testing.assert_close(ya.grad, yb.grad, rtol=0, atol=1e-6 * scale)


def test_ssim_gradcheck():
    x, y = _pair((1, 2, 13, 12), seed=10, noise=0.3)
    x.requires_grad_()
    y.requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: ssim(a, b, win_size=7, size_average=False), (x, y))
    assert torch.autograd.gradcheck(lambda a, b: ssim_ops.ssim_stats(a, b, 5, 1.0, 1e-4, 9e-4), (x, y))


def test_psnr_gradient():
    x, y = _pair((2, 1, 6, 7), seed=12)
    x.requires_grad_()
    y.requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: psnr(a, b, reduction="none"), (x, y))


def test_double_backward_is_a_clear_error():
    x, y = _pair((1, 1, 12, 12))
    x.requires_grad_()
    (gx,) = torch.autograd.grad(ssim(x, y, win_size=7), x, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        gx.sum().backward()


# --------------------------------------------------------------------------- modules


def test_modules():
    x, y = _pair((2, 1, 170, 170), seed=13)
    torch.testing.assert_close(SSIM()(x, y), ssim(x, y))
    torch.testing.assert_close(SSIM(size_average=False, win_size=7)(x, y), ssim(x, y, size_average=False,
                                                                                win_size=7))
    torch.testing.assert_close(SSIMLoss()(x, y), 1 - ssim(x, y))
    torch.testing.assert_close(MS_SSIM()(x, y), ms_ssim(x, y))
    xr = x.clone().requires_grad_()
    SSIMLoss(data_range=1.0)(xr, y).backward()
    assert xr.grad is not None and xr.grad.abs().sum() > 0
    assert "win_size=11" in repr(SSIM())


# --------------------------------------------------------------------------- errors


def test_shape_dtype_device_errors():
    x, y = _pair((1, 1, 16, 16))
    with pytest.raises(ValueError, match="same shape"):
        ssim(x, y[:, :, :15])
    with pytest.raises(TypeError, match="same dtype"):
        ssim(x, y.float())
    with pytest.raises(ValueError, match="4D"):
        ssim(x[0], y[0])
    with pytest.raises(TypeError, match="unsupported dtype"):
        ssim(x > 0.5, y > 0.5, data_range=1)
    with pytest.raises(TypeError, match="unsupported dtype"):
        ssim(x.half(), y.half())


def test_integer_input_needs_data_range():
    x, y = _pair((1, 1, 16, 16))
    xi, yi = (x * 255).round().to(torch.uint8), (y * 255).round().to(torch.uint8)
    for fn in (ssim, psnr):
        with pytest.raises(ValueError, match="explicit data_range"):
            fn(xi, yi)
    got = ssim(xi, yi, data_range=255)
    want = ssim(xi.float(), yi.float(), data_range=255)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf")])
def test_data_range_must_be_positive(bad):
    x, y = _pair((1, 1, 16, 16))
    for fn in (ssim, psnr):
        with pytest.raises(ValueError, match="data_range"):
            fn(x, y, data_range=bad)


def test_window_and_size_errors():
    x, y = _pair((1, 1, 10, 40))
    with pytest.raises(ValueError, match=r">= 11"):
        ssim(x, y)
    with pytest.raises(ValueError, match="odd"):
        ssim(x, y, win_size=4)
    with pytest.raises(ValueError, match="win_sigma"):
        ssim(x, y, win_size=3, win_sigma=0)
    x, y = _pair((1, 1, 160, 200))
    with pytest.raises(ValueError, match=r">= 161"):
        ms_ssim(x, y)
    with pytest.raises(ValueError, match="reduction"):
        psnr(x, y, reduction="max")


def test_nan_propagates():
    x, y = _pair((2, 1, 16, 16))
    x[0, 0, 3, 4] = float("nan")
    v = ssim(x, y, size_average=False)
    assert torch.isnan(v[0]) and torch.isfinite(v[1])
    xr = x.clone().requires_grad_()
    ssim(xr, y, size_average=False)[1].backward()
    assert torch.isfinite(xr.grad[1]).all()
    assert torch.isnan(psnr(x, y, reduction="none")[0])


@pytest.mark.slow
def test_torch_compile_fullgraph():
    x, y = _pair((2, 1, 170, 170), dtype=torch.float32, seed=14)
    xa = x.clone().requires_grad_()
    fn = torch.compile(lambda a, b: 1 - ssim(a, b) + (1 - ms_ssim(a, b)), fullgraph=True)
    fn(xa, y).backward()
    xb = x.clone().requires_grad_()
    (1 - ssim(xb, y) + (1 - ms_ssim(xb, y))).backward()
    torch.testing.assert_close(xa.grad, xb.grad)
