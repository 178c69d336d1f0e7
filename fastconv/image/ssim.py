"""The SSIM map of two NumPy images, with :func:`fastconv.ssim`'s window and conventions.

:func:`ssim_map` gives the per-position SSIM at *valid* positions (no padding; an (H, W)
pair gives an (H - win + 1, W - win + 1) map) with the separable Gaussian window of
:func:`fastconv._window.gaussian_1d` (11 taps, sigma 1.5 by default), population moments and
``C1 = (K1 * data_range)**2``, ``C2 = (K2 * data_range)**2``.  Its arithmetic is that of the
fused CPU kernel behind :func:`fastconv.ssim`: each of the five moments (``x``, ``y``,
``x*x``, ``y*y``, ``x*y``) is filtered horizontally and then vertically, tap by tap from
zero, in the images' dtype, and the map is ``lum * cs`` with the same expressions.  So
the map's mean is :func:`fastconv.ssim` of the pair up to the order of the final float64
sum.  Every position's value depends only on its window (no position-dependent rounding),
which is what lets :mod:`fastconv.dask` compute it chunk by chunk, bit for bit.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

from .._window import gaussian_1d

__all__ = ["ssim_map"]


def _moment(a: np.ndarray, g: np.ndarray, hv: int, wv: int) -> np.ndarray:
    """Valid separable filtering of ``a`` with ``g``: rows first, then columns, tap by tap from zero."""
    h = np.zeros((a.shape[0], wv), dtype=a.dtype)
    for t, w in enumerate(g):
        h += w * a[:, t:t + wv]
    m = np.zeros((hv, wv), dtype=a.dtype)
    for t, w in enumerate(g):
        m += w * h[t:t + hv]
    return m


def ssim_map(x: np.ndarray, y: np.ndarray, win_size: int = 11, win_sigma: float = 1.5,
             c: Tuple[float, float] = (1e-4, 9e-4)) -> np.ndarray:
    """SSIM map of two 2-D float32/float64 images of one shape and dtype at valid positions.

    Parameters
    ----------
    x, y : ndarray
        (H, W) images of one floating dtype, H and W at least ``win_size``.
    win_size : int, optional
        Odd window size.
    win_sigma : float, optional
        Standard deviation of the Gaussian window.
    c : (float, float), optional
        ``(C1, C2) = ((K1 * data_range)**2, (K2 * data_range)**2)``; the default is K = (0.01,
        0.03) with ``data_range=1``.

    Returns
    -------
    ndarray
        (H - win_size + 1, W - win_size + 1) map of the images' dtype.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.image.ssim import ssim_map
    >>> x = np.random.default_rng(0).random((16, 16))
    >>> ssim_map(x, x).shape, bool(np.allclose(ssim_map(x, x), 1.0))
    ((6, 6), True)
    """
    dt = x.dtype
    g = gaussian_1d(win_size, win_sigma).astype(dt)
    hv, wv = x.shape[0] - win_size + 1, x.shape[1] - win_size + 1
    mx, my = _moment(x, g, hv, wv), _moment(y, g, hv, wv)
    exx, eyy, exy = _moment(x * x, g, hv, wv), _moment(y * y, g, hv, wv), _moment(x * y, g, hv, wv)
    c1, c2, two = dt.type(c[0]), dt.type(c[1]), dt.type(2)
    mxx, myy, mxy = mx * mx, my * my, mx * my
    cs = (two * (exy - mxy) + c2) / ((exx - mxx) + (eyy - myy) + c2)
    lum = (two * mxy + c1) / (mxx + myy + c1)
    return lum * cs
