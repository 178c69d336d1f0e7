"""``nn.Module`` forms of ``fastconv.ssim`` and ``fastconv.ms_ssim``, drop-ins for pytorch-msssim's.

:class:`SSIM` and :class:`MS_SSIM` take pytorch-msssim's constructor arguments, positional
and keyword (``from fastconv.nn import SSIM`` replaces ``from pytorch_msssim import SSIM``),
and give its values and gradients.  Two defaults differ:

* ``data_range`` is the dynamic range of the images (1.0 for [0, 1] floats, 255 for 8-bit).
  pytorch-msssim defaults to 255; fastconv's default ``None`` means 1.0 for float inputs and
  is an error for integer inputs.  Code that relied on pytorch-msssim's default with float
  images in [0, 255] must pass ``data_range=255``; to catch it, a module left at ``None``
  warns once if the first images it sees exceed 2 in magnitude.
* ``channel`` only builds pytorch-msssim's per-channel window; fastconv needs no window
  tensor, so its default ``None`` accepts any channel count, and an explicit ``channel`` is
  checked against the images (a ``ValueError`` where pytorch-msssim fails inside a
  convolution).

``spatial_dims`` must be 2: pytorch-msssim's 3-D (volume) SSIM is not implemented.
"""
from __future__ import annotations

import warnings
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from ..ops._op import tracing
from ..ops.ssim import ms_ssim, ssim

__all__ = ["SSIM", "MS_SSIM", "SSIMLoss"]


def _check_channel(cls: str, channel: Optional[int]) -> Optional[int]:
    if channel is None:
        return None
    if isinstance(channel, bool) or not isinstance(channel, int):
        raise TypeError(f"fastconv.nn.{cls}: channel must be an int or None, got {type(channel).__name__} "
                        f"{channel!r} (arguments follow pytorch-msssim's order: data_range, size_average, "
                        f"win_size, win_sigma, channel, spatial_dims, ...; pass K by keyword)")
    if channel < 1:
        raise ValueError(f"fastconv.nn.{cls}: channel must be positive, got {channel}")
    return channel


def _check_spatial_dims(cls: str, spatial_dims: int) -> int:
    if isinstance(spatial_dims, bool) or not isinstance(spatial_dims, int):
        raise TypeError(f"fastconv.nn.{cls}: spatial_dims must be an int, got {type(spatial_dims).__name__} "
                        f"{spatial_dims!r}")
    if spatial_dims == 3:
        raise NotImplementedError(f"fastconv.nn.{cls}: spatial_dims=3 (SSIM of 3-D volumes, as pytorch-msssim's) "
                                  f"is not supported; fastconv computes 2-D SSIM of (N, C, H, W) images only")
    if spatial_dims != 2:
        raise ValueError(f"fastconv.nn.{cls}: spatial_dims must be 2 (images (N, C, H, W)), got {spatial_dims}")
    return spatial_dims


def _init_common(module: nn.Module, data_range: Optional[float], size_average: bool, win_size: int,
                 win_sigma: float, channel: Optional[int], spatial_dims: int, K: Sequence[float]) -> None:
    """Check and store the arguments :class:`SSIM` and :class:`MS_SSIM` share."""
    name = type(module).__name__
    module.data_range = data_range
    module.size_average = size_average
    module.win_size = win_size
    module.win_sigma = win_sigma
    module.channel = _check_channel(name, channel)
    module.spatial_dims = _check_spatial_dims(name, spatial_dims)
    module.K = tuple(K)
    module._range_checked = data_range is not None


def _check_inputs(module: nn.Module, X: Tensor, Y: Tensor) -> None:
    """The module-level checks of a call: ``channel``, and (once) the ``data_range`` default."""
    channel = getattr(module, "channel", None)  # getattr: modules pickled before these attributes existed
    if channel is not None and isinstance(X, Tensor) and X.dim() == 4 and X.shape[1] != channel:
        raise ValueError(f"fastconv.nn.{type(module).__name__}: built with channel={channel}, but the "
                         f"images have {X.shape[1]} channels (shape {list(X.shape)})")
    if not getattr(module, "_range_checked", True):
        _warn_if_not_unit_range(module, X, Y)


def _warn_if_not_unit_range(module: nn.Module, X: Tensor, Y: Tensor) -> None:
    """Once per module: warn if ``data_range=None`` (1.0) meets images far outside [0, 1]."""
    if not (isinstance(X, Tensor) and isinstance(Y, Tensor)) or not X.is_floating_point() or \
            X.shape != Y.shape or X.numel() == 0:
        return  # ssim() reports bad inputs; integer inputs need data_range and raise there
    if tracing((X, Y)) or torch._C._functorch.peek_interpreter_stack() is not None:
        return  # no data-dependent check while compiling, exporting or under torch.func
    module._range_checked = True
    with torch.no_grad():
        peak = float(torch.maximum(X.abs().amax(), Y.abs().amax()))
    if peak > 2.0:
        warnings.warn(f"fastconv.nn.{type(module).__name__}: data_range=None means 1.0 (images in [0, 1]), but "
                      f"these images reach {peak:g}.  pytorch-msssim's default is data_range=255; pass "
                      f"data_range explicitly (e.g. 255 for images in [0, 255]).  Warned once per module.",
                      UserWarning, stacklevel=3)  # points at the forward


class SSIM(nn.Module):
    """SSIM as a module, a drop-in for ``pytorch_msssim.SSIM``: ``SSIM(...)(X, Y)`` is ``fastconv.ssim(X, Y, ...)``.

    The arguments, positional or keyword, are pytorch-msssim's, and so are the values and
    gradients.  Two defaults differ: ``data_range`` (``None`` here, 255 there) and ``channel``
    (``None`` here, 3 there), as described below.  The module has no parameters or buffers.

    Parameters
    ----------
    data_range : float, optional
        The dynamic range of the pixel values (1.0 for images in [0, 1], 255 for 8-bit).
        ``None``: 1.0 for float images, an error for integer images (pytorch-msssim defaults
        to 255: pass it explicitly if your code relied on that).
    size_average : bool, optional
        ``True``: the scalar batch mean; ``False``: one value per image.
    win_size : int, optional
        Odd size of the Gaussian window.
    win_sigma : float, optional
        Standard deviation of the Gaussian window, in pixels.
    channel : int, optional
        The images' channel count, checked at each call (``ValueError`` if it differs);
        ``None`` accepts any.  pytorch-msssim (default 3) uses it to build its window;
        fastconv needs no window tensor.
    spatial_dims : int, optional
        Must be 2; pytorch-msssim's ``spatial_dims=3`` (volumes) raises
        ``NotImplementedError``.
    K : (float, float), optional
        The constants ``(K1, K2)``.
    nonnegative_ssim : bool, optional
        Clamp the per-channel values at 0 before averaging.

    Raises
    ------
    TypeError
        For a ``channel`` or ``spatial_dims`` that is not an int.
    ValueError
        For a non-positive ``channel`` or a ``spatial_dims`` other than 2 or 3; at each call,
        for images whose channel count differs from ``channel`` (and as :func:`fastconv.ssim`).
    NotImplementedError
        For ``spatial_dims=3``.

    Warns
    -----
    UserWarning
        Once, at the first call, if ``data_range`` is None and the images exceed 2 in
        magnitude (likely [0, 255] images meant for pytorch-msssim's default of 255).

    See Also
    --------
    fastconv.ssim : the function, with the formula and conventions.
    SSIMLoss : ``1 - SSIM``.

    Examples
    --------
    >>> import torch
    >>> from fastconv.nn import SSIM
    >>> x = torch.arange(256.0).reshape(1, 1, 16, 16) / 255
    >>> y = x.flip(-1)
    >>> metric = SSIM(data_range=1.0, size_average=True, channel=1)    # pytorch-msssim's arguments
    >>> metric  # doctest: +NORMALIZE_WHITESPACE
    SSIM(data_range=1.0, size_average=True, win_size=11, win_sigma=1.5, channel=1, K=(0.01, 0.03),
         nonnegative_ssim=False)
    >>> metric(x, x)
    tensor(1.)
    >>> SSIM(255, False, 7, 1.5, 1)(x * 255, y * 255).shape               # positional, per image
    torch.Size([1])
    """

    def __init__(self, data_range: Optional[float] = None, size_average: bool = True, win_size: int = 11,
                 win_sigma: float = 1.5, channel: Optional[int] = None, spatial_dims: int = 2,
                 K: Sequence[float] = (0.01, 0.03), nonnegative_ssim: bool = False) -> None:
        super().__init__()
        _init_common(self, data_range, size_average, win_size, win_sigma, channel, spatial_dims, K)
        self.nonnegative_ssim = nonnegative_ssim

    def forward(self, X: Tensor, Y: Tensor) -> Tensor:
        """SSIM of the ``(N, C, H, W)`` batches ``X`` and ``Y``: a scalar, or ``(N,)`` without ``size_average``."""
        _check_inputs(self, X, Y)
        return ssim(X, Y, data_range=self.data_range, size_average=self.size_average, win_size=self.win_size,
                    win_sigma=self.win_sigma, K=self.K, nonnegative_ssim=self.nonnegative_ssim)

    def extra_repr(self) -> str:
        return (f"data_range={self.data_range}, size_average={self.size_average}, win_size={self.win_size}, "
                f"win_sigma={self.win_sigma}, channel={getattr(self, 'channel', None)}, K={self.K}, "
                f"nonnegative_ssim={self.nonnegative_ssim}")


class MS_SSIM(nn.Module):
    """MS-SSIM as a module, a drop-in for ``pytorch_msssim.MS_SSIM``: ``MS_SSIM(...)(X, Y)`` is ``ms_ssim(X, Y, ...)``.

    The arguments, positional or keyword, are pytorch-msssim's, and so are the values and
    gradients; the ``data_range`` and ``channel`` defaults differ as in :class:`SSIM`.  The
    images' smaller side must exceed ``(win_size - 1) * 16`` (160 for the default window).

    Parameters
    ----------
    data_range, size_average, win_size, win_sigma, channel, spatial_dims
        As in :class:`SSIM`.
    weights : sequence of float, optional
        One weight per scale; default ``(0.0448, 0.2856, 0.3001, 0.2363, 0.1333)`` (five
        scales, pytorch-msssim's default).
    K : (float, float), optional
        The constants ``(K1, K2)``.

    Raises
    ------
    TypeError, ValueError, NotImplementedError
        As :class:`SSIM`; at each call as :func:`fastconv.ms_ssim`.

    Warns
    -----
    UserWarning
        As :class:`SSIM`, about ``data_range``.

    See Also
    --------
    fastconv.ms_ssim : the function.

    Examples
    --------
    >>> import torch
    >>> from fastconv.nn import MS_SSIM
    >>> i = torch.arange(176.0)
    >>> x = (torch.sin(i / 7)[:, None] * torch.cos(i / 11)[None, :] + 1).expand(2, 3, 176, 176) / 2
    >>> metric = MS_SSIM(data_range=1.0, size_average=False, channel=3)
    >>> metric(x, x)
    tensor([1., 1.])
    >>> MS_SSIM(1.0, True, 7, 1.5, 3, 2, [0.5, 0.5])(x, x)      # positional, two scales
    tensor(1.)
    """

    def __init__(self, data_range: Optional[float] = None, size_average: bool = True, win_size: int = 11,
                 win_sigma: float = 1.5, channel: Optional[int] = None, spatial_dims: int = 2,
                 weights: Optional[Sequence[float]] = None, K: Sequence[float] = (0.01, 0.03)) -> None:
        super().__init__()
        _init_common(self, data_range, size_average, win_size, win_sigma, channel, spatial_dims, K)
        self.weights = None if weights is None else tuple(weights)

    def forward(self, X: Tensor, Y: Tensor) -> Tensor:
        """MS-SSIM of the ``(N, C, H, W)`` batches ``X`` and ``Y``: a scalar, or ``(N,)`` without ``size_average``."""
        _check_inputs(self, X, Y)
        return ms_ssim(X, Y, data_range=self.data_range, size_average=self.size_average, win_size=self.win_size,
                       win_sigma=self.win_sigma, weights=self.weights, K=self.K)

    def extra_repr(self) -> str:
        return (f"data_range={self.data_range}, size_average={self.size_average}, win_size={self.win_size}, "
                f"win_sigma={self.win_sigma}, channel={getattr(self, 'channel', None)}, weights={self.weights}, "
                f"K={self.K}")


class SSIMLoss(SSIM):
    """Training loss ``1 - SSIM(X, Y)``: :class:`SSIM`'s arguments, 0 for identical images.

    Parameters
    ----------
    data_range, size_average, win_size, win_sigma, channel, spatial_dims, K, nonnegative_ssim
        As in :class:`SSIM`; ``size_average=False`` gives one loss per image.

    Raises
    ------
    TypeError, ValueError, NotImplementedError
        As :class:`SSIM`.

    Examples
    --------
    >>> import torch
    >>> from fastconv.nn import SSIMLoss
    >>> target = torch.arange(256.0).reshape(1, 1, 16, 16) / 255
    >>> pred = torch.full_like(target, 0.5, requires_grad=True)
    >>> loss = SSIMLoss(data_range=1.0)(pred, target)
    >>> loss.backward()
    >>> pred.grad.shape
    torch.Size([1, 1, 16, 16])
    >>> SSIMLoss(data_range=1.0)(target, target)
    tensor(0.)
    """

    def forward(self, X: Tensor, Y: Tensor) -> Tensor:
        """``1 - SSIM(X, Y)``: a scalar, or ``(N,)`` without ``size_average``."""
        return 1.0 - super().forward(X, Y)
