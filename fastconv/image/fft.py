"""FFT filtering: a ``scipy.fft`` product over the boundary-extended image, exact where the input is not finite.

The valid correlation of an extension with a kernel is the matching slice of their
circular convolution at a padded (fast) transform size, :func:`fastconv.image.plan.fft_shape`.
Real inputs use ``rfft2``; (H, W, C) extensions are transformed along the first two axes.

Accuracy.  Each output's absolute error is at most about
``eps * log2(n) * max|x| * sum|k|`` (:func:`fastconv.image.plan.fft_error_bound`): ``max|x|``
is the largest magnitude anywhere in the extension, not in the output's window, because
the transform spreads rounding errors over all outputs.  Outputs much smaller than the
image's largest values therefore lose relative precision (the direct method's error is
local); ``method='auto'`` weighs this (:func:`fastconv.image.plan.fft_precise_enough`).

Non-finite input.  A NaN or infinity would spread over the whole transform, where the
direct sum gives a non-finite value only within the kernel's reach.  :func:`fft_filter`
transforms the extension with its non-finite samples set to zero and then recomputes each
output they reach as the direct sum of its taps (:func:`patch_nonfinite`), so the
non-finite pattern is exactly the direct method's (every output whose window holds a
non-finite sample is non-finite: ``inf * 0`` is NaN).  When those outputs are too many
(:func:`fastconv.image.plan.fft_patch_pays`), when a kernel tap is not finite, or when the
transform overflows, :func:`fft_filter` returns None and the caller runs the direct method.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
from .._numba import njit

from .._threads import num_threads
from .plan import fft_shape

__all__ = ["fft_valid", "fft_filter", "patch_nonfinite"]


def fft_valid(ext: np.ndarray, kk: np.ndarray, oh: int, ow: int) -> np.ndarray:
    """Valid correlation of ``ext`` ((oh+P-1, ow+Q-1[, C])) with ``kk`` ((P, Q)) via a circular FFT product.

    Returns a C-contiguous (oh, ow[, C]) array of ``ext``'s dtype.
    """
    import scipy.fft as sfft  # on first use (see fastconv.image.plan.fft_shape)
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


@njit(cache=True, nogil=True)
def patch_nonfinite(ext, kk, out, rows, cols):  # pragma: no cover - numba
    """Set every output of ``out`` (the valid correlation of ``ext`` with ``kk``, computed from
    finite data) whose window holds one of the samples ``ext[rows[t], cols[t]]`` to the direct
    sum of its taps.  Those sums are non-finite, so an output already patched is recognised
    by its value and computed once."""
    P, Q = kk.shape
    OH, OW = out.shape
    for t in range(rows.shape[0]):
        r = rows[t]
        c = cols[t]
        for i in range(max(0, r - P + 1), min(OH, r + 1)):
            for j in range(max(0, c - Q + 1), min(OW, c + 1)):
                if not np.isfinite(out[i, j]):
                    continue
                acc = ext[i, j] * kk[0, 0]
                for p in range(P):
                    src = ext[i + p, j:]
                    w = kk[p]
                    for q in range(Q):
                        if p > 0 or q > 0:
                            acc += src[q] * w[q]
                out[i, j] = acc


def fft_filter(ext: np.ndarray, kk: np.ndarray, oh: int, ow: int) -> Optional[np.ndarray]:
    """:func:`fft_valid`, with the outputs reached by non-finite samples of ``ext`` patched to the
    direct sum; None where the caller should filter directly (see the module docstring).

    ``ext`` is the (oh+P-1, ow+Q-1[, C]) extension and ``kk`` the (P, Q) correlation kernel, both of
    the transform's dtype.
    """
    if not np.isfinite(kk).all():
        return None
    finite = np.isfinite(ext)
    clean = ext if finite.all() else np.where(finite, ext, ext.dtype.type(0))
    with np.errstate(over="ignore", invalid="ignore"):
        out = fft_valid(clean, kk, oh, ow)
    if not np.isfinite(out).all():  # the transform overflowed
        return None
    if clean is not ext:
        planes = [(ext, out, finite)] if ext.ndim == 2 else \
            [(ext[:, :, c], out[:, :, c], finite[:, :, c]) for c in range(ext.shape[2])]
        for e, o, f in planes:
            rows, cols = np.nonzero(~f)
            if rows.size:
                patch_nonfinite(e, kk, o, rows, cols)
    return out
