"""The Gaussian window, defined once for the image filters and the SSIM kernels of every backend."""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["gaussian_1d", "gaussian_window"]


def gaussian_1d(n: int, sigma: float) -> np.ndarray:
    """Normalised (sum 1) float64 Gaussian of ``n`` taps centred on ``(n - 1) / 2``.

    ``g[t] = exp(-(t - (n - 1) / 2)**2 / (2 sigma**2)) / sum``, computed in float64.
    Raises ``ValueError`` unless ``sigma > 0``.
    """
    if not float(sigma) > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    t = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
    g = np.exp(-(t * t) / (2.0 * float(sigma) ** 2))
    return g / g.sum()


def gaussian_window(win_size: int, win_sigma: float, dtype: torch.dtype) -> torch.Tensor:
    """The SSIM window: :func:`gaussian_1d` of odd ``win_size`` taps as a CPU tensor of ``dtype``."""
    return torch.from_numpy(gaussian_1d(win_size, win_sigma)).to(dtype)
