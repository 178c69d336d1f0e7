"""Separable filtering: rank-1 kernels detected exactly, and applied as two 1-D passes.

:func:`separable_factors` accepts a kernel only when it is exactly rank 1 -- the cheap
reconstruction from the row and column of its largest entry must reproduce it to within
``8 * max(P, Q) * eps`` (relative to the largest entry), and the SVD must confirm rank 1 --
so the two-pass result equals the direct one up to rounding.  :func:`filter_separable_ext`
is the Numba kernel: per output row, a column pass into a row buffer, then a row pass.
"""
from __future__ import annotations

import functools
from typing import Optional, Tuple

import numpy as np
from .._numba import njit

from .boundary import extend_into

__all__ = ["separable_factors", "filter_separable_ext"]


def separable_factors(k: np.ndarray) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """``(u, v)`` with ``outer(u, v) == k`` to tight tolerance when the 2-D kernel ``k`` is exactly
    rank 1, else None.

    The factors come from the row and column of the largest entry (exact for integer-valued
    kernels such as Sobel); the reconstruction must match,
    ``max|outer(u, v) - k| <= tol * max|k|`` with ``tol = 8 * max(P, Q) * eps`` of the
    kernel's precision, and the SVD must confirm rank 1 (``s[1] <= tol * s[0]``).  Kernels
    failing the cheap reconstruction test skip the SVD.  Results are cached per kernel
    (bytes, shape, dtype), so repeated filtering with one kernel pays this once.  The factors
    are float64 (complex128 for complex kernels).
    """
    if k.dtype.kind not in "iufc":
        return None
    factors = _factors_cached(np.ascontiguousarray(k).tobytes(), k.shape, k.dtype.str)
    return None if factors is None else (factors[0].copy(), factors[1].copy())


@functools.lru_cache(maxsize=256)
def _factors_cached(data: bytes, shape: Tuple[int, int], dtype: str):
    k = np.frombuffer(data, dtype=np.dtype(dtype)).reshape(shape)
    kf = k.astype(np.complex128 if k.dtype.kind == "c" else np.float64)
    eps = np.finfo(k.dtype).eps if k.dtype.kind in "fc" else np.finfo(np.float64).eps
    tol = 8 * max(shape) * eps
    amax = np.abs(kf).max()
    if amax == 0 or not np.isfinite(amax):
        return None
    i, j = np.unravel_index(np.argmax(np.abs(kf)), kf.shape)
    u = kf[:, j].copy()
    v = kf[i, :] / kf[i, j]
    if np.abs(np.outer(u, v) - kf).max() > tol * amax:
        return None
    if min(shape) > 1:
        s = np.linalg.svd(kf, compute_uv=False)
        if s[1] > tol * s[0]:
            return None
    return u, v


@njit(cache=True, nogil=True)
def filter_separable_ext(a, u, v, top, left, boundary, fill, ext, tmp, out):  # pragma: no cover - numba
    """As :func:`fastconv.image.direct.filter_ext` for the rank-1 kernel ``outer(u, v)``: a column
    pass into the row buffer ``tmp`` then a row pass, per output row."""
    extend_into(a, ext, top, left, boundary, fill)
    P = u.shape[0]
    Q = v.shape[0]
    OH, OW = out.shape
    for i in range(OH):
        tmp[:] = 0
        for p in range(P):
            w = u[p]
            src = ext[i + p]
            for j in range(tmp.shape[0]):
                tmp[j] += src[j] * w
        dst = out[i]
        dst[:] = 0
        for q in range(Q):
            w = v[q]
            seg = tmp[q:]
            for j in range(OW):
                dst[j] += seg[j] * w
