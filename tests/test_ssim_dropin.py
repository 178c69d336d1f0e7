"""``fastconv.nn.SSIM``/``MS_SSIM`` and ``fastconv.ssim``/``ms_ssim`` as drop-ins for pytorch-msssim's.

Same argument names and order (positional calls included), the same values and gradients,
clear errors for what fastconv does not do (3-D volumes, arbitrary windows), and the
documented differences: the ``data_range`` default (with its one-time warning) and
``channel=None``.  pytorch-msssim builds its window in float32, so the references get a
float64 window through its ``win`` argument (or attribute) and the comparisons are in float64.
"""
from __future__ import annotations

import inspect
import warnings

import pytest
import torch

import fastconv
from fastconv.nn import MS_SSIM, SSIM, SSIMLoss

pytorch_msssim = pytest.importorskip("pytorch_msssim")

f64 = dict(dtype=torch.float64)


def _pm_win(channels: int, win_size: int = 11, sigma: float = 1.5, dtype=torch.float64) -> torch.Tensor:
    """pytorch-msssim's window, shape (C, 1, 1, win_size), built in float64."""
    t = torch.arange(win_size, dtype=torch.float64) - win_size // 2
    g = torch.exp(-t ** 2 / (2 * sigma ** 2))
    return (g / g.sum()).view(1, 1, 1, -1).repeat(channels, 1, 1, 1).to(dtype)


def _pair(shape, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g, **f64)
    y = (x + 0.15 * torch.randn(shape, generator=g, **f64)).clamp(0, 1)
    return x * scale, y * scale


def _pm_module(cls, args, kwargs):
    """pytorch-msssim's module for these arguments, its window rebuilt in float64."""
    module = cls(*args, **kwargs)
    bound = inspect.signature(cls).bind(*args, **kwargs)
    bound.apply_defaults()
    a = bound.arguments
    module.win = _pm_win(a["channel"], a["win_size"], a["win_sigma"])
    return module


def _values_and_grads(fn, x, y):
    xr, yr = x.clone().requires_grad_(), y.clone().requires_grad_()
    out = fn(xr, yr)
    gx, gy = torch.autograd.grad(out.sum(), (xr, yr))
    return out.detach(), gx, gy


def _assert_same(ours, theirs):
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


# --------------------------------------------------------------------------- signatures


@pytest.mark.parametrize("name", ["SSIM", "MS_SSIM"])
def test_module_signature_is_pytorch_msssims(name):
    ours = inspect.signature(getattr(fastconv.nn, name)).parameters
    theirs = inspect.signature(getattr(pytorch_msssim, name)).parameters
    assert list(ours) == list(theirs)
    differ = {p for p in theirs if ours[p].default != theirs[p].default}
    assert differ == {"data_range", "channel"}           # the two documented differences
    assert ours["data_range"].default is None and ours["channel"].default is None


@pytest.mark.parametrize("name", ["ssim", "ms_ssim"])
def test_function_signature_is_pytorch_msssims(name):
    ours = inspect.signature(getattr(fastconv, name)).parameters
    theirs = inspect.signature(getattr(pytorch_msssim, name)).parameters
    assert list(ours) == list(theirs)
    assert {p for p in theirs if ours[p].default != theirs[p].default} == {"data_range"}


def test_ssimloss_takes_ssims_arguments():
    assert list(inspect.signature(SSIMLoss).parameters) == list(inspect.signature(pytorch_msssim.SSIM).parameters)


# --------------------------------------------------------------------------- values and gradients

SSIM_ARGS = [
    ((1.0,), {}),
    ((1.0, True, 11, 1.5, 3, 2, (0.01, 0.03), False), {}),
    ((255, False, 7, 1.0, 3, 2, (0.02, 0.05), True), {}),
    ((), dict(data_range=255, size_average=True, channel=3)),                        # pytorch-msssim's README
    ((), dict(data_range=1, size_average=False, win_size=5, win_sigma=0.8, channel=3, spatial_dims=2,
              K=[0.01, 0.4], nonnegative_ssim=False)),
]


@pytest.mark.parametrize("args,kwargs", SSIM_ARGS)
def test_ssim_module_matches_pytorch_msssim(args, kwargs):
    ours, theirs = SSIM(*args, **kwargs), _pm_module(pytorch_msssim.SSIM, args, kwargs)
    ours_loss = SSIMLoss(*args, **kwargs)
    dr = kwargs.get("data_range", args[0] if args else 255)
    x, y = _pair((2, 3, 40, 37), scale=float(dr))
    _assert_same(_values_and_grads(ours, x, y), _values_and_grads(theirs, x, y))
    _assert_same(_values_and_grads(ours_loss, x, y), _values_and_grads(lambda a, b: 1 - theirs(a, b), x, y))


MS_SSIM_ARGS = [
    ((1.0,), {}),
    ((1.0, True, 11, 1.5, 3, 2, None, (0.01, 0.03)), {}),
    ((255, False, 7, 1.2, 3, 2, [0.3, 0.3, 0.4], (0.02, 0.05)), {}),
    ((), dict(data_range=255, size_average=True, channel=3)),
]


@pytest.mark.parametrize("args,kwargs", MS_SSIM_ARGS)
def test_ms_ssim_module_matches_pytorch_msssim(args, kwargs):
    ours, theirs = MS_SSIM(*args, **kwargs), _pm_module(pytorch_msssim.MS_SSIM, args, kwargs)
    dr = kwargs.get("data_range", args[0] if args else 255)
    x, y = _pair((2, 3, 166, 171), scale=float(dr), seed=3)
    _assert_same(_values_and_grads(ours, x, y), _values_and_grads(theirs, x, y))


def test_functions_match_pytorch_msssim_positionally():
    x, y = _pair((2, 3, 33, 30), seed=5)
    win = _pm_win(3, 7, 1.2)
    args = (1.0, False, 11, 1.5, win, (0.01, 0.05), True)
    _assert_same(_values_and_grads(lambda a, b: fastconv.ssim(a, b, *args), x, y),
                 _values_and_grads(lambda a, b: pytorch_msssim.ssim(a, b, *args), x, y))
    x, y = _pair((1, 3, 100, 103), seed=6)
    args = (1.0, True, 7, 1.5, _pm_win(3, 5, 1.0), [0.4, 0.6], (0.01, 0.03))
    _assert_same(_values_and_grads(lambda a, b: fastconv.ms_ssim(a, b, *args), x, y),
                 _values_and_grads(lambda a, b: pytorch_msssim.ms_ssim(a, b, *args), x, y))


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("cls", [SSIM, MS_SSIM, SSIMLoss])
def test_spatial_dims(cls):
    with pytest.raises(NotImplementedError, match="spatial_dims=3.*not supported"):
        cls(1.0, spatial_dims=3)
    with pytest.raises(ValueError, match="spatial_dims must be 2"):
        cls(1.0, spatial_dims=1)
    with pytest.raises(TypeError, match="spatial_dims must be an int"):
        cls(1.0, spatial_dims=2.0)
    assert cls(1.0, spatial_dims=2).spatial_dims == 2


@pytest.mark.parametrize("cls", [SSIM, MS_SSIM])
def test_channel(cls):
    x, y = _pair((1, 1, 170, 170))
    cls(1.0, channel=None)(x, y)                                          # any channel count
    cls(1.0, channel=1)(x, y)
    with pytest.raises(ValueError, match="channel=3, but the images have 1 channels"):
        cls(1.0, channel=3)(x, y)
    with pytest.raises(ValueError, match="channel must be positive"):
        cls(1.0, channel=0)
    # fastconv's previous positional order had K fifth: it now lands in channel, and says so
    with pytest.raises(TypeError, match="channel must be an int.*pass K by keyword"):
        cls(1.0, True, 11, 1.5, (0.01, 0.03))


def test_pytorch_msssim_fails_on_a_channel_mismatch_too():
    x, y = _pair((1, 1, 20, 20))
    with pytest.raises(RuntimeError):
        pytorch_msssim.SSIM(1.0, channel=3)(x, y)


# --------------------------------------------------------------------------- win


def test_win_shapes_and_pytorch_msssims_own_float32_window():
    x, y = _pair((2, 3, 30, 31), seed=7)
    plain = fastconv.ssim(x, y, size_average=False, win_size=7, win_sigma=1.2)
    for win in (_pm_win(3, 7, 1.2), _pm_win(1, 7, 1.2), _pm_win(1, 7, 1.2)[0], _pm_win(1, 7, 1.2).reshape(-1)):
        torch.testing.assert_close(fastconv.ssim(x, y, size_average=False, win=win), plain, rtol=1e-12, atol=0)
    # the window replaces win_size and win_sigma, as in pytorch-msssim
    torch.testing.assert_close(fastconv.ssim(x, y, size_average=False, win_size=3, win_sigma=9.0,
                                             win=_pm_win(3, 7, 1.2)), plain, rtol=1e-12, atol=0)
    # pytorch-msssim's float32 window (its default): its value, to float32 rounding of the window
    pm_win = pytorch_msssim.SSIM(1.0, win_size=7, win_sigma=1.2).win
    assert pm_win.dtype == torch.float32 and pm_win.shape == (3, 1, 1, 7)
    got = fastconv.ssim(x, y, size_average=False, win=pm_win)
    torch.testing.assert_close(got, pytorch_msssim.ssim(x, y, 1.0, False, win=pm_win), rtol=1e-6, atol=0)
    torch.testing.assert_close(got, plain, rtol=1e-6, atol=0)


@pytest.mark.parametrize("win_size,sigma", [(3, 0.5), (5, 1.0), (11, 1.5), (11, 3.0), (15, 2.2), (21, 10.0)])
def test_win_sigma_is_recovered(win_size, sigma):
    x, y = _pair((1, 2, 24, 24), seed=win_size)
    torch.testing.assert_close(fastconv.ssim(x, y, win=_pm_win(2, win_size, sigma)),
                               fastconv.ssim(x, y, win_size=win_size, win_sigma=sigma), rtol=1e-11, atol=0)
    f32 = _pm_win(2, win_size, sigma, torch.float32)
    torch.testing.assert_close(fastconv.ssim(x, y, win=f32), pytorch_msssim.ssim(x, y, 1.0, win=f32),
                               rtol=1e-6, atol=0)


def test_ms_ssim_win():
    x, y = _pair((1, 3, 170, 168), seed=8)
    torch.testing.assert_close(fastconv.ms_ssim(x, y, win=_pm_win(3, 11, 1.5)), fastconv.ms_ssim(x, y),
                               rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="normalised 1-D Gaussian"):
        fastconv.ms_ssim(x, y, win=torch.tensor([1.0, 2.0, 3.0, 2.0, 1.0], **f64) / 9)


def test_win_errors():
    x, y = _pair((1, 3, 20, 20))
    good = _pm_win(3, 7, 1.5)
    with pytest.raises(ValueError, match="normalised 1-D Gaussian"):     # triangle, not a Gaussian
        fastconv.ssim(x, y, win=torch.tensor([1.0, 2.0, 3.0, 2.0, 1.0], **f64) / 9)
    with pytest.raises(ValueError, match="normalised 1-D Gaussian"):     # not normalised
        fastconv.ssim(x, y, win=2 * good)
    different = good.clone()
    different[1] = _pm_win(1, 7, 2.0)[0]
    with pytest.raises(ValueError, match="the same in every channel"):
        fastconv.ssim(x, y, win=different)
    with pytest.raises(ValueError, match="3-D \\(volume\\)"):
        fastconv.ssim(x, y, win=good.unsqueeze(2))
    with pytest.raises(ValueError, match="win must have shape"):
        fastconv.ssim(x, y, win=_pm_win(2, 7, 1.5))                       # 2 rows for 3 channels
    with pytest.raises(ValueError, match="win must have shape"):
        fastconv.ssim(x, y, win=good.view(3, 1, 7, 1))
    with pytest.raises(ValueError, match="odd"):
        fastconv.ssim(x, y, win=torch.full((1, 1, 4), 0.25, **f64))
    with pytest.raises(TypeError, match="win must be a torch.Tensor.*pass K and weights by keyword"):
        fastconv.ssim(x, y, 1.0, True, 11, 1.5, (0.01, 0.03))             # fastconv's old positional K
    with pytest.raises(TypeError, match="floating-point"):
        fastconv.ssim(x, y, win=torch.ones(1, 1, 1, dtype=torch.int64))
    with pytest.raises(ValueError, match="no gradient"):
        fastconv.ssim(x, y, win=good.clone().requires_grad_())
    # size 1: the window [1] (any sigma)
    torch.testing.assert_close(fastconv.ssim(x, y, win=torch.ones(1, 1, 1, **f64)), fastconv.ssim(x, y, win_size=1))


# --------------------------------------------------------------------------- the data_range default


def test_data_range_default_warns_once_on_images_beyond_unit_range():
    x, y = _pair((1, 3, 24, 24))
    module = SSIM()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module(x * 255, y * 255)
        module(x * 255, y * 255)
        SSIM()(x, y)                                   # [0, 1] images: the default is right
        SSIM(data_range=255)(x * 255, y * 255)         # explicit: no check
        SSIM()(x.float(), y.float())
    assert len(caught) == 1 and issubclass(caught[0].category, UserWarning)
    assert "data_range=None means 1.0" in str(caught[0].message) and "255" in str(caught[0].message)
    with pytest.warns(UserWarning, match="data_range=None"):
        MS_SSIM()(*_pair((1, 1, 170, 170), scale=255.0))


def test_data_range_check_stays_out_of_traced_code():
    x, y = _pair((1, 1, 24, 24), scale=255.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.func.grad(lambda a: SSIM()(a, y))(x)      # under torch.func: no data-dependent check
