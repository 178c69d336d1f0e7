"""FFT filtering: a ``scipy.fft`` product over the boundary-extended image.

The valid correlation of an extension with a kernel is the matching slice of their
circular convolution at a padded (fast) transform size, :func:`fastconv.image.plan.fft_shape`.
Real inputs use ``rfft2``; (H, W, C) extensions are transformed along the first two axes.
"""
from __future__ import annotations

import numpy as np
import scipy.fft as sfft

from .._threads import num_threads
from .plan import fft_shape

__all__ = ["fft_valid"]


def fft_valid(ext: np.ndarray, kk: np.ndarray, oh: int, ow: int) -> np.ndarray:
    """Valid correlation of ``ext`` ((oh+P-1, ow+Q-1[, C])) with ``kk`` ((P, Q)) via a circular FFT product.

    Returns a C-contiguous (oh, ow[, C]) array of ``ext``'s dtype.
    """
    p, q = kk.shape
    s = fft_shape(oh, ow, p, q)
    kflip = kk[::-1, ::-1]
    if ext.ndim == 3:
        kflip = kflip[:, :, None]
    workers = num_threads()
    if ext.dtype.kind == "c":
        prod = sfft.fft2(ext, s, axes=(0, 1), workers=workers) * sfft.fft2(kflip, s, axes=(0, 1), workers=workers)
        full = sfft.ifft2(prod, s, axes=(0, 1), workers=workers)
    else:
        prod = sfft.rfft2(ext, s, axes=(0, 1), workers=workers) * sfft.rfft2(kflip, s, axes=(0, 1), workers=workers)
        full = sfft.irfft2(prod, s, axes=(0, 1), workers=workers)
    return np.ascontiguousarray(full[p - 1:p - 1 + oh, q - 1:q - 1 + ow]).astype(ext.dtype, copy=False)
