"""``nn.Module`` wrappers of :func:`fastconv.ops.ssim.ssim` and :func:`~fastconv.ops.ssim.ms_ssim`.

``data_range`` is the dynamic range of the images (1.0 for [0, 1] floats, 255 for 8-bit);
``None`` means 1.0 for float inputs and is an error for integer inputs.
"""
from __future__ import annotations

from typing import Optional, Sequence

from torch import Tensor, nn

from ..ops.ssim import ms_ssim, ssim

__all__ = ["SSIM", "MS_SSIM", "SSIMLoss"]


class SSIM(nn.Module):
    """``SSIM()(X, Y)`` == ``fastconv.ssim(X, Y, **options)`` for (N, C, H, W) batches."""

    def __init__(self, data_range: Optional[float] = None, size_average: bool = True, win_size: int = 11,
                 win_sigma: float = 1.5, K: Sequence[float] = (0.01, 0.03), nonnegative_ssim: bool = False) -> None:
        super().__init__()
        self.data_range = data_range
        self.size_average = size_average
        self.win_size = win_size
        self.win_sigma = win_sigma
        self.K = tuple(K)
        self.nonnegative_ssim = nonnegative_ssim

    def forward(self, X: Tensor, Y: Tensor) -> Tensor:
        return ssim(X, Y, data_range=self.data_range, size_average=self.size_average, win_size=self.win_size,
                    win_sigma=self.win_sigma, K=self.K, nonnegative_ssim=self.nonnegative_ssim)

    def extra_repr(self) -> str:
        return (f"data_range={self.data_range}, size_average={self.size_average}, win_size={self.win_size}, "
                f"win_sigma={self.win_sigma}, K={self.K}, nonnegative_ssim={self.nonnegative_ssim}")


class MS_SSIM(nn.Module):
    """``MS_SSIM()(X, Y)`` == ``fastconv.ms_ssim(X, Y, **options)`` (smaller side > (win_size - 1) * 16)."""

    def __init__(self, data_range: Optional[float] = None, size_average: bool = True, win_size: int = 11,
                 win_sigma: float = 1.5, weights: Optional[Sequence[float]] = None,
                 K: Sequence[float] = (0.01, 0.03)) -> None:
        super().__init__()
        self.data_range = data_range
        self.size_average = size_average
        self.win_size = win_size
        self.win_sigma = win_sigma
        self.weights = None if weights is None else tuple(weights)
        self.K = tuple(K)

    def forward(self, X: Tensor, Y: Tensor) -> Tensor:
        return ms_ssim(X, Y, data_range=self.data_range, size_average=self.size_average, win_size=self.win_size,
                       win_sigma=self.win_sigma, weights=self.weights, K=self.K)

    def extra_repr(self) -> str:
        return (f"data_range={self.data_range}, size_average={self.size_average}, win_size={self.win_size}, "
                f"win_sigma={self.win_sigma}, weights={self.weights}, K={self.K}")


class SSIMLoss(SSIM):
    """Training loss ``1 - SSIM(X, Y)`` (scalar batch mean, or per image with ``size_average=False``)."""

    def forward(self, X: Tensor, Y: Tensor) -> Tensor:
        return 1.0 - super().forward(X, Y)
