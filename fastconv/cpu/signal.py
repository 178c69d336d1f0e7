"""Numba kernels behind :mod:`fastconv.signal` and :mod:`fastconv.filters` (NumPy in, NumPy out).

Every 2-D filtering problem is reduced to one primitive: a *valid* cross-correlation
of a boundary-extended copy of the image with a small kernel,

    out[i, j] = sum_{p, q} ext[i + p, j + q] * kern[p, q],
    ext[r, c] = image[r - top, c - left] extended by the boundary rule,

so the inner loops never test bounds.  The extension is built once per call
(:func:`_extend`), its interior rows being straight copies; ``boundary`` codes are
0 = constant ``fill``, 1 = symmetric (``np.pad(mode='symmetric')``, repeated as often
as needed), 2 = periodic (``np.pad(mode='wrap')``).  Convolution passes the flipped
kernel.

The correlation loop runs output row by output row; for each kernel tap it adds a
scaled, shifted input row to the output row, a unit-stride loop LLVM vectorises.
Accumulation happens in the array dtype, as SciPy's ``convolve2d`` does (float32 sums in
float32; integers are handled in int64, whose wrap-around arithmetic equals SciPy's
modulo the output width).  Each kernel comes as a serial variant (small problems: no
thread-pool wake-up) and a ``parallel=True`` one over output rows.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange


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


@njit(cache=True)
def _extend_rows(a, ext, top, left, boundary, fill, r0, r1):  # pragma: no cover - numba
    H, W = a.shape
    We = ext.shape[1]
    lo = min(max(left, 0), We)              # first column copied straight from a
    hi = max(min(left + W, We), lo)         # one past the last such column
    for r in range(r0, r1):
        sr = _src_index(r - top, H, boundary)
        if sr < 0:
            for c in range(We):
                ext[r, c] = fill
            continue
        for c in range(lo):
            sc = _src_index(c - left, W, boundary)
            ext[r, c] = fill if sc < 0 else a[sr, sc]
        for c in range(lo, hi):
            ext[r, c] = a[sr, c - left]
        for c in range(hi, We):
            sc = _src_index(c - left, W, boundary)
            ext[r, c] = fill if sc < 0 else a[sr, sc]


@njit(cache=True)
def _correlate_rows(ext, k, out, r0, r1):  # pragma: no cover - numba
    """out[r0:r1] = valid cross-correlation of ``ext`` with ``k`` (rows r0..r1-1 only)."""
    P, Q = k.shape
    OW = out.shape[1]
    for i in range(r0, r1):
        row = out[i]
        for j in range(OW):
            row[j] = 0
        for p in range(P):
            src = ext[i + p]
            for q in range(Q):
                w = k[p, q]
                seg = src[q:q + OW]
                for j in range(OW):
                    row[j] += seg[j] * w


@njit(cache=True)
def _filter_serial(a, k, top, left, boundary, fill, oh, ow):  # pragma: no cover - numba
    """Extend ``a`` and correlate it with ``k`` into a fresh (oh, ow) array, single-threaded."""
    P, Q = k.shape
    ext = np.empty((oh + P - 1, ow + Q - 1), dtype=a.dtype)
    _extend_rows(a, ext, top, left, boundary, fill, 0, ext.shape[0])
    out = np.empty((oh, ow), dtype=a.dtype)
    _correlate_rows(ext, k, out, 0, oh)
    return out


@njit(parallel=True, cache=True)
def _filter_parallel(a, k, top, left, boundary, fill, oh, ow):  # pragma: no cover - numba
    """:func:`_filter_serial` with both passes split into row blocks across threads."""
    P, Q = k.shape
    ext = np.empty((oh + P - 1, ow + Q - 1), dtype=a.dtype)
    out = np.empty((oh, ow), dtype=a.dtype)
    he = ext.shape[0]
    nb = max(1, min(64, oh // 4))
    for b in prange(nb):
        _extend_rows(a, ext, top, left, boundary, fill, b * he // nb, (b + 1) * he // nb)
    for b in prange(nb):
        _correlate_rows(ext, k, out, b * oh // nb, (b + 1) * oh // nb)
    return out


@njit(parallel=True, cache=True)
def _extend_parallel(a, top, left, boundary, fill, he, we):  # pragma: no cover - numba
    """Boundary-extended copy of ``a`` of shape (he, we) (used by the separable and FFT paths)."""
    ext = np.empty((he, we), dtype=a.dtype)
    nb = max(1, min(64, he // 8))
    for b in prange(nb):
        _extend_rows(a, ext, top, left, boundary, fill, b * he // nb, (b + 1) * he // nb)
    return ext


@njit(parallel=True, cache=True)
def _separable_parallel(ext, u, v, oh, ow):  # pragma: no cover - numba
    """Valid correlation of ``ext`` with the rank-1 kernel ``outer(u, v)``: a column pass, then a row pass."""
    P = u.shape[0]
    Q = v.shape[0]
    we = ext.shape[1]
    tmp = np.empty((oh, we), dtype=ext.dtype)
    out = np.empty((oh, ow), dtype=ext.dtype)
    nb = max(1, min(64, oh // 4))
    for b in prange(nb):
        for i in range(b * oh // nb, (b + 1) * oh // nb):
            row = tmp[i]
            for j in range(we):
                row[j] = 0
            for p in range(P):
                w = u[p]
                src = ext[i + p]
                for j in range(we):
                    row[j] += src[j] * w
            dst = out[i]
            for j in range(ow):
                dst[j] = 0
            for q in range(Q):
                w = v[q]
                seg = row[q:q + ow]
                for j in range(ow):
                    dst[j] += seg[j] * w
    return out


#: Below this many multiply-adds the serial kernel wins (thread wake-up costs ~10-20 us here).
PARALLEL_MIN_MACS = 150_000


def correlate_valid_ext(a: np.ndarray, k: np.ndarray, top: int, left: int, boundary: int, fill,
                        oh: int, ow: int) -> np.ndarray:
    """``out[i, j] = sum ext[i + p, j + q] * k[p, q]`` with ``ext`` = ``a`` shifted by (top, left), extended.

    ``a`` and ``k`` are C-contiguous 2-D arrays of one Numba-supported dtype; ``fill`` is a
    scalar of that dtype.  Returns a new (oh, ow) array of that dtype.
    """
    if oh * ow * k.shape[0] * k.shape[1] < PARALLEL_MIN_MACS:
        return _filter_serial(a, k, top, left, boundary, fill, oh, ow)
    return _filter_parallel(a, k, top, left, boundary, fill, oh, ow)


def extend(a: np.ndarray, top: int, left: int, boundary: int, fill, he: int, we: int) -> np.ndarray:
    """The (he, we) boundary extension of ``a`` whose element (top, left) is ``a[0, 0]``."""
    return _extend_parallel(a, top, left, boundary, fill, he, we)


def correlate_separable_ext(ext: np.ndarray, u: np.ndarray, v: np.ndarray, oh: int, ow: int) -> np.ndarray:
    """Valid correlation of an extended image with ``outer(u, v)`` in two 1-D passes."""
    return _separable_parallel(ext, u, v, oh, ow)
