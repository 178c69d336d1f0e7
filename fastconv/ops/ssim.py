"""``fastconv.ssim``, ``fastconv.ms_ssim`` and ``fastconv.psnr``: image-quality metrics with autograd.

Ops in the ``fastconv`` namespace (see :mod:`fastconv.ops._op`):

* ``fastconv::ssim_stats(x, y, win_size, win_sigma, c1, c2) -> (ssim, cs)``: per-(n, c)
  means over valid positions of the SSIM map and of the contrast-structure map;
* ``fastconv::ssim_stats_backward(g_ssim, g_cs, x, y, ...) -> (grad_x, grad_y)``.

Both run fused kernels from ``kernels("ssim", device)``, whose contract is :class:`Backend`.  The
forward op's autograd formula is the backward op, so SSIM is differentiable w.r.t. both images;
double backward is not supported.

Conventions (identical to pytorch-msssim's ``ssim``/``ms_ssim`` and to
``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=...)`` averaged over channels):

* the 1-D Gaussian window (``win_size`` taps, ``win_sigma``) is applied separably at
  *valid* positions only -- no padding; the SSIM map has size
  ``(H - win_size + 1, W - win_size + 1)`` (skimage computes a full-size map and
  then crops ``(win_size - 1) // 2`` pixels per border before averaging: the same
  positions);
* variances/covariance are population (biased) moments ``E[xy] - E[x]E[y]``;
* ``C1 = (K1 * data_range)**2``, ``C2 = (K2 * data_range)**2``.  **``data_range``
  is the dynamic range of the images** (1.0 for images in [0, 1], 255 for 8-bit
  images): a wrong value silently changes the result.  It defaults to 1.0 for
  floating inputs and must be given for integer inputs (pytorch-msssim's default is 255);
* NaN in an input propagates to the result (and to the gradients).

The public functions take pytorch-msssim's arguments in its order, ``win`` included: the
kernels compute their Gaussian window themselves, so a ``win`` tensor is accepted when it is
a normalised Gaussian, whose size and sigma are then read off it (``_window_args``).
"""
from __future__ import annotations

from typing import Optional, Protocol, Sequence, Tuple

import torch
from torch import Tensor

from .. import _shapes as S
from .._backend import kernels
from .._window import fit_gaussian_sigma
from . import _batching as B
from ._op import define
from .pool import avg_pool2d

#: pytorch-msssim's (and Wang et al. 2003's) default MS-SSIM scale weights.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


class Backend(Protocol):
    """What an SSIM backend module (:mod:`fastconv.cpu.ssim`, :mod:`fastconv.cuda.ssim`) provides.

    ``x``, ``y`` are contiguous NCHW tensors of one float dtype, same shape, ``H >= win_size``
    and ``W >= win_size`` (validated by the caller); ``c1 = (K1 * data_range)**2`` and
    ``c2 = (K2 * data_range)**2`` are Python floats.  The window is the normalised 1-D
    Gaussian of :func:`fastconv._window.gaussian_window`, applied separably at valid
    positions (those whose whole window lies inside the image; no padding), with population
    (biased) variances, as pytorch-msssim and ``skimage.metrics.structural_similarity
    (gaussian_weights=True, use_sample_covariance=False)``.
    """

    def ssim_stats_forward(self, x: Tensor, y: Tensor, win_size: int, win_sigma: float, c1: float,
                           c2: float) -> Tuple[Tensor, Tensor]:
        """Two ``(N, C)`` tensors of the input dtype: the means over valid positions of the SSIM
        map and of the contrast-structure map ``cs``."""

    def ssim_stats_backward(self, g_ssim: Tensor, g_cs: Tensor, x: Tensor, y: Tensor, win_size: int,
                            win_sigma: float, c1: float, c2: float) -> Tuple[Tensor, Tensor]:
        """Gradients w.r.t. ``x`` and ``y`` (contiguous, shape and dtype of ``x``) given the
        contiguous ``(N, C)`` upstream gradients of the two outputs of :meth:`ssim_stats_forward`."""


def _ssim_stats(x: Tensor, y: Tensor, win_size: int, win_sigma: float, c1: float, c2: float) -> Tuple[Tensor, Tensor]:
    s, cs = kernels("ssim", x.device).ssim_stats_forward(x.contiguous(), y.contiguous(), win_size, win_sigma, c1, c2)
    return s.to(x.device), cs.to(x.device)


def _stats_fake(x, y, win_size, win_sigma, c1, c2):
    return x.new_empty((x.shape[0], x.shape[1])), x.new_empty((x.shape[0], x.shape[1]))


def _stats_setup(ctx, inputs, output):
    x, y, win_size, win_sigma, c1, c2 = inputs
    ctx.save_for_backward(x, y)
    ctx.save_for_forward(x, y)
    ctx.params = (win_size, win_sigma, c1, c2)


def _stats_backward(ctx, g_ssim, g_cs):
    x, y = ctx.saved_tensors
    if g_ssim is None:
        g_ssim = x.new_zeros((x.shape[0], x.shape[1]))
    if g_cs is None:
        g_cs = x.new_zeros((x.shape[0], x.shape[1]))
    gx, gy = ssim_stats_backward(g_ssim, g_cs, x, y, *ctx.params)
    return (gx if ctx.needs_input_grad[0] else None), (gy if ctx.needs_input_grad[1] else None), \
        None, None, None, None


def _stats_jvp(ctx, x_t, y_t, *_):
    # Each plane's statistics depend on that plane only, so one backward pass with an all-ones
    # upstream gradient gives every plane's gradient at once.
    x, y = ctx.saved_tensors
    ones, zeros = x.new_ones((x.shape[0], x.shape[1])), x.new_zeros((x.shape[0], x.shape[1]))
    tangents = []
    for g_ssim, g_cs in ((ones, zeros), (zeros, ones)):
        gx, gy = ssim_stats_backward(g_ssim, g_cs, x, y, *ctx.params)
        t = 0
        if x_t is not None:
            t = t + (gx * x_t).sum((2, 3))
        if y_t is not None:
            t = t + (gy * y_t).sum((2, 3))
        tangents.append(t if isinstance(t, Tensor) else zeros.clone())
    return tuple(tangents)


def _per_plane_vmap(op):
    def rule(info, in_dims, *args):
        n = info.batch_size
        out = op(*(B.fold(a, d, n) if isinstance(a, Tensor) else a for a, d in zip(args, in_dims)))
        return tuple(B.unfold(o, n) for o in out), (0, 0)
    return rule


ssim_stats = define("ssim_stats", _ssim_stats, _stats_fake, setup_context=_stats_setup, backward=_stats_backward,
                    jvp=_stats_jvp, vmap=_per_plane_vmap(lambda *a: ssim_stats(*a)))


def _ssim_stats_backward(g_ssim: Tensor, g_cs: Tensor, x: Tensor, y: Tensor, win_size: int, win_sigma: float,
                         c1: float, c2: float) -> Tuple[Tensor, Tensor]:
    return kernels("ssim", x.device).ssim_stats_backward(g_ssim.contiguous(), g_cs.contiguous(), x.contiguous(),
                                                         y.contiguous(), win_size, win_sigma, c1, c2)


def _stats_bwd_fake(g_ssim, g_cs, x, y, win_size, win_sigma, c1, c2):
    return torch.empty_like(x, memory_format=torch.contiguous_format), \
        torch.empty_like(y, memory_format=torch.contiguous_format)


def _no_double_backward(ctx, gx, gy):
    raise RuntimeError("fastconv.ssim: double backward (gradient of the SSIM gradient) is not supported")


ssim_stats_backward = define("ssim_stats_backward", _ssim_stats_backward, _stats_bwd_fake,
                             setup_context=lambda ctx, inputs, output: None, backward=_no_double_backward,
                             vmap=_per_plane_vmap(lambda *a: ssim_stats_backward(*a)))


# --------------------------------------------------------------------------- validation


def _check_pair(op: str, X: Tensor, Y: Tensor) -> None:
    if not isinstance(X, Tensor) or not isinstance(Y, Tensor):
        raise TypeError(f"fastconv.{op}: expected torch.Tensor inputs, got {type(X).__name__} and {type(Y).__name__}")
    if X.shape != Y.shape:
        raise ValueError(f"fastconv.{op}: input images should have the same shape, got {list(X.shape)} "
                         f"and {list(Y.shape)}")
    if X.dtype != Y.dtype:
        raise TypeError(f"fastconv.{op}: input images should have the same dtype, got {X.dtype} and {Y.dtype}")
    if X.device != Y.device:
        raise RuntimeError(f"fastconv.{op}: input images should be on the same device, got {X.device} "
                           f"and {Y.device}")


def _resolve_range(op: str, X: Tensor, data_range: Optional[float]) -> Tuple[Tensor, Tensor, float]:
    """Validate ``data_range`` and return it as a float (1.0 for float inputs when None)."""
    if X.dtype == torch.bool or X.is_complex():
        raise TypeError(f"fastconv.{op}: unsupported dtype {X.dtype}; expected a real float or integer tensor")
    if data_range is None:
        if not X.is_floating_point():
            raise ValueError(f"fastconv.{op}: integer input ({X.dtype}) needs an explicit data_range "
                             f"(e.g. data_range=255 for 8-bit images); the default 1.0 only suits float "
                             f"images in [0, 1]")
        return 1.0
    if isinstance(data_range, Tensor):
        if data_range.numel() != 1:
            raise ValueError(f"fastconv.{op}: data_range must be a positive scalar, got a tensor of shape "
                             f"{list(data_range.shape)}")
        data_range = data_range.item()
    if isinstance(data_range, bool) or not isinstance(data_range, (int, float)):
        raise TypeError(f"fastconv.{op}: data_range must be a positive number, got {type(data_range).__name__}")
    if not data_range > 0 or data_range != data_range or data_range == float("inf"):
        raise ValueError(f"fastconv.{op}: data_range must be a positive finite number (the dynamic range of "
                         f"the images, e.g. 1.0 or 255), got {data_range}")
    return float(data_range)


def _as_float(op: str, X: Tensor, Y: Tensor) -> Tuple[Tensor, Tensor]:
    if not X.is_floating_point():
        X, Y = X.float(), Y.float()
    S.check_dtype(op, X, Y)
    return X, Y


def _check_window(op: str, win_size: int, win_sigma: float, K: Sequence[float]) -> Tuple[float, float]:
    if isinstance(win_size, bool) or not isinstance(win_size, int):
        raise TypeError(f"fastconv.{op}: win_size must be an int, got {type(win_size).__name__}")
    if win_size < 1 or win_size % 2 == 0:
        raise ValueError(f"fastconv.{op}: win_size must be a positive odd integer, got {win_size}")
    if not float(win_sigma) > 0:
        raise ValueError(f"fastconv.{op}: win_sigma must be positive, got {win_sigma}")
    try:
        k1, k2 = (float(k) for k in K)
    except (TypeError, ValueError):
        raise ValueError(f"fastconv.{op}: K must be a pair of floats (K1, K2), got {K!r}") from None
    if k1 < 0 or k2 < 0:
        raise ValueError(f"fastconv.{op}: K must be non-negative, got {tuple(K)}")
    return k1, k2


def _check_size(op: str, X: Tensor, minimum: int, why: str) -> None:
    if X.dim() != 4:
        raise ValueError(f"fastconv.{op}: expected 4D (N, C, H, W) input images, got shape {list(X.shape)}")
    if X.shape[1] == 0:
        raise ValueError(f"fastconv.{op}: expected images with at least one channel, got shape {list(X.shape)}")
    h, w = X.shape[2], X.shape[3]
    if h < minimum or w < minimum:
        raise ValueError(f"fastconv.{op}: images of size {h}x{w} are too small: {why} needs height and width "
                         f">= {minimum}")


def _window_args(op: str, win: Optional[Tensor], win_size: int, win_sigma: float, X: Tensor) -> Tuple[int, float]:
    """``(win_size, win_sigma)`` of pytorch-msssim's ``win`` argument (or the arguments as given when None).

    fastconv's kernels compute their own Gaussian, so ``win`` must be one: its size is its last
    dimension and its sigma is recovered by :func:`fastconv._window.fit_gaussian_sigma`.
    """
    if win is None:
        return win_size, win_sigma
    if not isinstance(win, Tensor):
        raise TypeError(f"fastconv.{op}: win must be a torch.Tensor window of shape (C, 1, 1, win_size) as "
                        f"pytorch-msssim's, got {type(win).__name__} (note the argument order: ..., win_sigma, "
                        f"win, ...; pass K and weights by keyword)")
    shape = tuple(win.shape)
    if win.dim() == 5:
        raise ValueError(f"fastconv.{op}: win of shape {list(shape)} is a window for 3-D (volume) images; "
                         f"fastconv's SSIM is 2-D only")
    if win.dim() not in (1, 3, 4) or shape[-1] == 0 or any(s != 1 for s in shape[1:-1]) or \
            (win.dim() > 1 and shape[0] not in (1, X.shape[1] if X.dim() > 1 else 1)):
        raise ValueError(f"fastconv.{op}: win must have shape (C, 1, 1, win_size), (1, 1, win_size) or "
                         f"(win_size,), with C the images' channel count, got {list(shape)}")
    if not win.is_floating_point():
        raise TypeError(f"fastconv.{op}: win must be a floating-point tensor, got {win.dtype}")
    if win.requires_grad and torch.is_grad_enabled():
        raise ValueError(f"fastconv.{op}: win requires grad, but fastconv computes no gradient w.r.t. the "
                         f"window (it must be a fixed Gaussian); pass win.detach()")
    n = shape[-1]
    rows = win.detach().to("cpu", torch.float64).reshape(-1, n).numpy()
    rtol = max(1e-6, 16 * torch.finfo(win.dtype).eps)
    g = rows[0]
    if n % 2 == 0:
        return n, win_sigma  # _check_window raises pytorch-msssim's odd-size error
    if n == 1:
        sigma = float(win_sigma) if abs(g[0] - 1.0) <= rtol else None
    else:
        sigma = fit_gaussian_sigma(g, rtol)
    if sigma is None or (rows.shape[0] > 1 and abs(rows - g).max() > rtol * abs(g).max()):
        raise ValueError(f"fastconv.{op}: win must be a normalised 1-D Gaussian (the same in every channel), as "
                         f"pytorch-msssim builds it: fastconv's SSIM kernels use a Gaussian window only; pass "
                         f"win_size and win_sigma instead")
    return n, sigma


# --------------------------------------------------------------------------- public API


def ssim(X: Tensor, Y: Tensor, data_range: Optional[float] = None, size_average: bool = True, win_size: int = 11,
         win_sigma: float = 1.5, win: Optional[Tensor] = None, K: Sequence[float] = (0.01, 0.03),
         nonnegative_ssim: bool = False) -> Tensor:
    """Structural similarity (SSIM) of two image batches, differentiable w.r.t. both.

    Same signature and values as ``pytorch_msssim.ssim`` (except the ``data_range`` default,
    see below), and as skimage's ``structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=...)`` averaged over channels.  Per position,

    ``SSIM = (2 mu_x mu_y + C1) (2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1) (s_x^2 + s_y^2 + C2))``

    with Gaussian-weighted means ``mu``, population (biased) variances and covariance ``s``,
    ``C1 = (K1 * data_range)**2`` and ``C2 = (K2 * data_range)**2``.  The separable Gaussian
    window is applied at *valid* positions only (no padding): the map has size
    ``(H - win_size + 1, W - win_size + 1)`` and is averaged over positions, then channels.

    Parameters
    ----------
    X, Y : Tensor
        ``(N, C, H, W)`` images of one dtype and device, at least ``win_size`` pixels high and
        wide: float32 or float64 (and float16/bfloat16 storage on CUDA), or integer images,
        which are compared in float32.
    data_range : float, optional
        The dynamic range of the pixel values: 1.0 for images in [0, 1], 255 for 8-bit images.
        A wrong value silently changes the result.  ``None`` (the default) means 1.0 for float
        images and is an error for integer images.  **pytorch-msssim's default is 255**: code
        relying on that default must pass ``data_range=255``.
    size_average : bool, optional
        ``True``: the scalar mean over the batch; ``False``: one value per image.
    win_size : int, optional
        Odd window size (taps of the 1-D Gaussian).
    win_sigma : float, optional
        Standard deviation of the Gaussian, in pixels.
    win : Tensor, optional
        pytorch-msssim's window argument: a normalised 1-D Gaussian of shape
        ``(C, 1, 1, win_size)`` (as ``pytorch_msssim.SSIM(...).win``), ``(1, 1, win_size)`` or
        ``(win_size,)``, the same in every channel.  It replaces ``win_size`` and ``win_sigma``:
        fastconv's kernels compute their window themselves, so ``win`` is accepted only if it
        is such a Gaussian (to 16 ulps of its dtype); its size and sigma are read off it and
        fastconv's float64 Gaussian of that sigma is used (a float32 window from pytorch-msssim
        therefore gives pytorch-msssim's value to float32 rounding).  Any other window raises
        ``ValueError``; no gradient flows to ``win``.
    K : (float, float), optional
        The constants ``(K1, K2)``.
    nonnegative_ssim : bool, optional
        Clamp the per-channel values at 0 (``relu``) before averaging.

    Returns
    -------
    Tensor
        A scalar with ``size_average``, else ``(N,)``; in the images' float dtype (float32 for
        integer images).  1 for identical images.  A NaN in an input gives NaN.

    Raises
    ------
    TypeError
        For non-tensor inputs, mixed or unsupported dtypes (bool, complex), or a ``win`` that
        is not a floating-point tensor.
    ValueError
        For images of different shapes, not 4-D, without channels or smaller than the
        window; a missing ``data_range`` on integer images; a non-positive ``data_range``;
        an even or non-positive ``win_size``, non-positive ``win_sigma`` or bad ``K``; a
        ``win`` that is not a normalised Gaussian of a supported shape.
    RuntimeError
        For images on different devices.

    See Also
    --------
    ms_ssim : the multi-scale variant.
    fastconv.nn.SSIM, fastconv.nn.SSIMLoss : the module forms.

    Examples
    --------
    >>> import torch
    >>> import fastconv
    >>> x8 = torch.arange(256).reshape(1, 1, 16, 16).to(torch.uint8)         # an 8-bit ramp
    >>> checker = 20 * (-1) ** (torch.arange(16)[:, None] + torch.arange(16))
    >>> y8 = (x8 + checker).clamp(0, 255).to(torch.uint8)
    >>> fastconv.ssim(x8, y8, data_range=255)              # integer images need data_range
    tensor(0.7518)
    >>> x, y = x8 / 255, y8 / 255                            # float images in [0, 1]: the default
    >>> fastconv.ssim(x, y)
    tensor(0.7518)
    >>> fastconv.ssim(torch.cat([x, y]), torch.cat([y, y]), size_average=False)
    tensor([0.7518, 1.0000])
    """
    _check_pair("ssim", X, Y)
    data_range = _resolve_range("ssim", X, data_range)
    win_size, win_sigma = _window_args("ssim", win, win_size, win_sigma, X)
    k1, k2 = _check_window("ssim", win_size, win_sigma, K)
    _check_size("ssim", X, win_size, f"SSIM with win_size={win_size}")
    X, Y = _as_float("ssim", X, Y)
    s, _ = ssim_stats(X, Y, win_size, float(win_sigma), (k1 * data_range) ** 2, (k2 * data_range) ** 2)
    if nonnegative_ssim:
        s = torch.relu(s)
    return s.mean() if size_average else s.mean(1)


def _downsample(t: Tensor) -> Tensor:
    """2x2 average pooling with zero padding ``(H % 2, W % 2)``, count_include_pad (as pytorch-msssim)."""
    return avg_pool2d(t, kernel_size=2, padding=(t.shape[2] % 2, t.shape[3] % 2))


def ms_ssim(X: Tensor, Y: Tensor, data_range: Optional[float] = None, size_average: bool = True,
            win_size: int = 11, win_sigma: float = 1.5, win: Optional[Tensor] = None,
            weights: Optional[Sequence[float]] = None, K: Sequence[float] = (0.01, 0.03)) -> Tensor:
    """Multi-scale SSIM of two image batches, differentiable w.r.t. both.

    Same signature and values as ``pytorch_msssim.ms_ssim`` (except the ``data_range``
    default, see :func:`ssim`).  At each of ``len(weights)`` scales the SSIM statistics are
    computed as in :func:`ssim`; between scales both images are downsampled by 2x2 average
    pooling with zero padding ``(H % 2, W % 2)`` (``count_include_pad``).  Per image and
    channel the result is ``prod_i relu(cs_i) ** w_i`` over the scales but the last, times
    ``relu(ssim_last) ** w_last``; it is then averaged over channels.

    Parameters
    ----------
    X, Y : Tensor
        ``(N, C, H, W)`` images as in :func:`ssim`, whose smaller side exceeds
        ``(win_size - 1) * 2**4`` (161 pixels or more for the default ``win_size=11``), as
        pytorch-msssim requires.
    data_range : float, optional
        The dynamic range of the pixel values, as in :func:`ssim` (``None``: 1.0 for float
        images; pytorch-msssim's default is 255).
    size_average : bool, optional
        ``True``: the scalar mean over the batch; ``False``: one value per image.
    win_size, win_sigma : int, float, optional
        The Gaussian window, as in :func:`ssim`.
    win : Tensor, optional
        pytorch-msssim's window argument, accepted as in :func:`ssim` (a normalised Gaussian
        only).
    weights : sequence of float, optional
        One weight per scale; default ``(0.0448, 0.2856, 0.3001, 0.2363, 0.1333)``, Wang et
        al.'s five scales (pytorch-msssim's default).
    K : (float, float), optional
        The constants ``(K1, K2)``.

    Returns
    -------
    Tensor
        A scalar with ``size_average``, else ``(N,)``; in the images' float dtype.

    Raises
    ------
    TypeError, ValueError, RuntimeError
        As :func:`ssim`; also ``ValueError`` for images too small for the scales or empty
        ``weights``.

    Examples
    --------
    >>> import torch
    >>> import fastconv
    >>> i = torch.arange(176.0)
    >>> x = (torch.sin(i / 7)[:, None] * torch.cos(i / 11)[None, :] + 1).expand(1, 3, 176, 176) / 2
    >>> checker = 0.05 * (-1) ** (i[:, None] + i[None, :])
    >>> fastconv.ms_ssim(x, (x + checker).clamp(0, 1))
    tensor(0.9861)
    >>> fastconv.ms_ssim(x[..., :100, :100], x[..., :100, :100], win_size=7, weights=[0.5, 0.5])
    tensor(1.)
    """
    _check_pair("ms_ssim", X, Y)
    data_range = _resolve_range("ms_ssim", X, data_range)
    win_size, win_sigma = _window_args("ms_ssim", win, win_size, win_sigma, X)
    k1, k2 = _check_window("ms_ssim", win_size, win_sigma, K)
    _check_size("ms_ssim", X, (win_size - 1) * 2 ** 4 + 1,
                f"MS-SSIM with win_size={win_size} (smaller side > (win_size - 1) * 2**4)")
    X, Y = _as_float("ms_ssim", X, Y)
    w = torch.tensor(MS_SSIM_WEIGHTS if weights is None else list(weights), dtype=X.dtype, device=X.device)
    if w.dim() != 1 or w.numel() == 0:
        raise ValueError(f"fastconv.ms_ssim: weights must be a non-empty sequence of floats, got {weights!r}")
    levels = w.numel()
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    terms = []
    for i in range(levels):
        if X.shape[2] < win_size or X.shape[3] < win_size:
            raise ValueError(f"fastconv.ms_ssim: scale {i} has size {X.shape[2]}x{X.shape[3]}, smaller than "
                             f"win_size={win_size}; use fewer weights or larger images")
        s, cs = ssim_stats(X, Y, win_size, float(win_sigma), c1, c2)
        if i < levels - 1:
            terms.append(torch.relu(cs))
            X, Y = _downsample(X), _downsample(Y)
    terms.append(torch.relu(s))
    val = torch.prod(torch.stack(terms, dim=0) ** w.view(-1, 1, 1), dim=0)
    return val.mean() if size_average else val.mean(1)


def psnr(X: Tensor, Y: Tensor, data_range: Optional[float] = None, reduction: str = "mean") -> Tensor:
    """Peak signal-to-noise ratio ``10 * log10(data_range**2 / MSE)`` in dB, differentiable w.r.t. both.

    The mean squared error is taken per image, over all its channels and pixels.

    Parameters
    ----------
    X, Y : Tensor
        ``(N, C, H, W)`` (or any ``(N, ...)``) batches of one shape, dtype and device; integer
        images are compared in float32.
    data_range : float, optional
        The dynamic range of the pixel values, as in :func:`ssim` (``None``: 1.0 for float
        images, an error for integer images).
    reduction : {'mean', 'sum', 'none'}, optional
        Mean or sum of the per-image PSNRs, or the ``(N,)`` tensor of them.

    Returns
    -------
    Tensor
        A scalar, or ``(N,)`` with ``reduction='none'``; ``inf`` for identical images.

    Raises
    ------
    TypeError, ValueError, RuntimeError
        As :func:`ssim` for the inputs and ``data_range``; ``ValueError`` for an unknown
        ``reduction`` or inputs with fewer than 2 dimensions.

    Examples
    --------
    >>> import torch
    >>> import fastconv
    >>> x = torch.zeros(2, 1, 4, 4, dtype=torch.float64)
    >>> y = x + torch.tensor([0.1, 0.01], dtype=torch.float64).view(2, 1, 1, 1)
    >>> fastconv.psnr(x, y, reduction="none")
    tensor([20., 40.], dtype=torch.float64)
    >>> fastconv.psnr(x, y)
    tensor(30., dtype=torch.float64)
    >>> fastconv.psnr(x, x)
    tensor(inf, dtype=torch.float64)
    """
    _check_pair("psnr", X, Y)
    data_range = _resolve_range("psnr", X, data_range)
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"fastconv.psnr: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if X.dim() < 2:
        raise ValueError(f"fastconv.psnr: expected a batch of images (N, C, H, W), got shape {list(X.shape)}")
    X, Y = _as_float("psnr", X, Y)
    mse = (X - Y).square().flatten(1).mean(1)
    val = 10.0 * torch.log10(data_range ** 2 / mse)
    if reduction == "mean":
        return val.mean()
    if reduction == "sum":
        return val.sum()
    return val
