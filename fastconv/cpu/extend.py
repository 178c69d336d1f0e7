"""Boundary extension for the image kernels: a copy of an image with the rows and columns
around it filled by a boundary rule, so that filtering loops never test bounds.

``ext[r, c] = image[r - top, c - left]``; outside the image, ``boundary`` 0 fills with a
constant, 1 mirrors including the edge sample (``np.pad(mode='symmetric')``, repeated as
often as needed), 2 wraps around (``np.pad(mode='wrap')``).
"""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, inline="always")
def _src_index(i, n, boundary):  # pragma: no cover - numba
    """Source index of extended position ``i`` in a length-``n`` axis; -1 means the fill value."""
    if 0 <= i < n:
        return i
    if boundary == 0:
        return -1
    if boundary == 2:
        return i % n
    period = 2 * n
    i = i % period
    return i if i < n else period - 1 - i


@njit(cache=True, nogil=True)
def _extend_block(a, ext, top, left, boundary, fill, He, We):  # pragma: no cover - numba
    """ext[r, c] = a[r - top, c - left] with the boundary rule outside ``a``, for r < He and
    c < We (``ext`` may be larger: a buffer of fixed row pitch).

    Interior columns of each row are a plain unit-stride copy; only the edge columns
    (and rows entirely outside ``a``) evaluate the boundary rule.
    """
    H, W = a.shape
    lo = min(max(left, 0), We)              # first column copied straight from a
    hi = max(min(left + W, We), lo)         # one past the last such column
    n = hi - lo
    for r in range(He):
        dst = ext[r]
        sr = _src_index(r - top, H, boundary)
        if sr < 0:
            for c in range(We):
                dst[c] = fill
            continue
        src = a[sr]
        for c in range(lo):
            sc = _src_index(c - left, W, boundary)
            dst[c] = fill if sc < 0 else src[sc]
        d = dst[lo:]
        s = src[lo - left:]
        for c in range(n):
            d[c] = s[c]
        for c in range(hi, We):
            sc = _src_index(c - left, W, boundary)
            dst[c] = fill if sc < 0 else src[sc]


@njit(cache=True, nogil=True)
def _extend(a, ext, top, left, boundary, fill):  # pragma: no cover - numba
    """:func:`_extend_block` filling all of ``ext``."""
    _extend_block(a, ext, top, left, boundary, fill, ext.shape[0], ext.shape[1])


def extend(a: np.ndarray, top: int, left: int, boundary: int, fill, he: int, we: int) -> np.ndarray:
    """The (he, we) boundary extension of ``a`` whose element (top, left) is ``a[0, 0]``."""
    ext = np.empty((he, we), dtype=a.dtype)
    _extend(a, ext, top, left, boundary, fill)
    return ext
