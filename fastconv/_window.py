"""The Gaussian window, defined once for the image filters and the SSIM kernels of every backend."""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

__all__ = ["gaussian_1d", "gaussian_window", "fit_gaussian_sigma"]


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


def fit_gaussian_sigma(g: np.ndarray, rtol: float) -> Optional[float]:
    """The ``sigma`` for which :func:`gaussian_1d` of ``len(g)`` taps is ``g``, or None if none is.

    ``g`` is a 1-D window of odd length ``n >= 3``.  ``log g`` is fitted to ``a - d**2 / (2 sigma**2)``
    (``d`` the distance to the centre tap) by least squares weighted by ``g**2`` over the positive
    taps, so the large central taps, known to the best relative precision, decide; the fit is
    accepted when ``|gaussian_1d(n, sigma) - g| <= rtol * max(g)`` at every tap (so ``g`` must
    also be normalised to sum 1).  A uniform window is the limit ``sigma = inf`` (which
    :func:`gaussian_1d` evaluates as uniform).
    """
    g = np.asarray(g, dtype=np.float64)
    n = g.shape[0]
    if g.ndim != 1 or n < 3 or n % 2 == 0 or not np.all(np.isfinite(g)) or not g.max() > 0:
        return None
    d2 = (np.arange(n, dtype=np.float64) - (n - 1) / 2.0) ** 2
    pos = g > 0
    if np.unique(d2[pos]).size < 2:
        return None
    sw = g[pos]  # square root of the weights g**2
    A = np.stack([sw, -d2[pos] * sw], axis=1)
    (_, b), *_ = np.linalg.lstsq(A, np.log(g[pos]) * sw, rcond=None)
    sigma = float(np.sqrt(0.5 / b)) if b > 0 else float("inf")
    if np.abs(gaussian_1d(n, sigma) - g).max() > rtol * g.max():
        return None
    return sigma
