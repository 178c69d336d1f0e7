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

The correlation loop produces output rows in pairs; each pass adds three kernel taps
worth of scaled, shifted input row to both rows of the pair (one load of the input serves
six multiply-adds), in unit-stride loops LLVM vectorises.
Accumulation happens in the array dtype, as SciPy's ``convolve2d`` does (float32 sums in
float32; integers are handled in int64, whose wrap-around arithmetic equals SciPy's
modulo the output width).  Kernels are serial and ``nogil``; large problems are split
into output-row blocks run on threads by :mod:`fastconv.cpu._threads` (see there why this
is not ``prange``).  All buffers are allocated by the callers with NumPy (Numba's own
allocator handed large blocks back to the OS on every call, and the page faults cost
more than the arithmetic); the boundary-extension buffer is a per-thread scratch
buffer reused across calls.
"""
from __future__ import annotations

import threading

import numpy as np
from numba import njit

from ._threads import num_threads, parallel_ranges


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
def _extend(a, ext, top, left, boundary, fill):  # pragma: no cover - numba
    """ext[r, c] = a[r - top, c - left] with the boundary rule outside ``a``.

    Interior columns of each row are a plain unit-stride copy; only the edge columns
    (and rows entirely outside ``a``) evaluate the boundary rule.
    """
    H, W = a.shape
    He, We = ext.shape
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
def _taps1(row, src, k, p, ow):  # pragma: no cover - numba
    """row[:ow] += sum_q src[q:q+ow] * k[p, q]: taps in groups of three, then singly."""
    Q = k.shape[1]
    Q3 = Q - Q % 3
    for q in range(0, Q3, 3):
        s0 = src[q:]
        s1 = src[q + 1:]
        s2 = src[q + 2:]
        w0 = k[p, q]
        w1 = k[p, q + 1]
        w2 = k[p, q + 2]
        for j in range(ow):
            row[j] += s0[j] * w0 + s1[j] * w1 + s2[j] * w2
    for q in range(Q3, Q):
        s0 = src[q:]
        w0 = k[p, q]
        for j in range(ow):
            row[j] += s0[j] * w0


@njit(cache=True, nogil=True)
def _taps2(ra, rb, src, k, pa, pb, ow):  # pragma: no cover - numba
    """:func:`_taps1` for two output rows fed by the same input row (kernel rows pa and pb):
    each input element loaded once serves both rows."""
    Q = k.shape[1]
    Q3 = Q - Q % 3
    for q in range(0, Q3, 3):
        s0 = src[q:]
        s1 = src[q + 1:]
        s2 = src[q + 2:]
        a0 = k[pa, q]
        a1 = k[pa, q + 1]
        a2 = k[pa, q + 2]
        b0 = k[pb, q]
        b1 = k[pb, q + 1]
        b2 = k[pb, q + 2]
        for j in range(ow):
            x0 = s0[j]
            x1 = s1[j]
            x2 = s2[j]
            ra[j] += x0 * a0 + x1 * a1 + x2 * a2
            rb[j] += x0 * b0 + x1 * b1 + x2 * b2
    for q in range(Q3, Q):
        s0 = src[q:]
        a0 = k[pa, q]
        b0 = k[pb, q]
        for j in range(ow):
            x0 = s0[j]
            ra[j] += x0 * a0
            rb[j] += x0 * b0


@njit(cache=True, nogil=True)
def _correlate(ext, k, out):  # pragma: no cover - numba
    """out = valid cross-correlation of ``ext`` with ``k``.

    Output rows are produced in pairs: input row ``i + r`` feeds row ``i`` through kernel
    row ``r`` and row ``i + 1`` through kernel row ``r - 1`` in one pass, and taps go in
    groups of three, so each pass over a row does several multiply-adds per load/store.
    Inner loops run over slices (not 2-D index arithmetic) so LLVM vectorises them.
    """
    P = k.shape[0]
    OH, OW = out.shape
    i = 0
    while i + 1 < OH:
        ra = out[i]
        rb = out[i + 1]
        ra[:] = 0
        rb[:] = 0
        _taps1(ra, ext[i], k, 0, OW)
        for r in range(1, P):
            _taps2(ra, rb, ext[i + r], k, r, r - 1, OW)
        _taps1(rb, ext[i + P], k, P - 1, OW)
        i += 2
    if i < OH:
        row = out[i]
        row[:] = 0
        for p in range(P):
            _taps1(row, ext[i + p], k, p, OW)


@njit(cache=True, nogil=True)
def _filter(a, k, top, left, boundary, fill, ext, out):  # pragma: no cover - numba
    """Extend ``a`` into ``ext`` (top/left offsets) and correlate it with ``k`` into ``out``."""
    _extend(a, ext, top, left, boundary, fill)
    _correlate(ext, k, out)


@njit(cache=True, nogil=True)
def _filter_separable(a, u, v, top, left, boundary, fill, ext, tmp, out):  # pragma: no cover - numba
    """As :func:`_filter` for the rank-1 kernel ``outer(u, v)``: a column pass into the row
    buffer ``tmp`` then a row pass, per output row."""
    _extend(a, ext, top, left, boundary, fill)
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


#: Below this many multiply-adds a call runs on one thread: dispatching to a second thread
#: costs ~50-150 us on this 2-vCPU machine (measured with benchmarks/quick_signal.py).
PARALLEL_MIN_MACS = 4_000_000


_tls = threading.local()
#: Largest scratch buffer (bytes) kept per thread between calls.
SCRATCH_KEEP_BYTES = 64 << 20
#: Below this size a fresh ``np.empty`` is cheaper than the cache lookup.
SCRATCH_MIN_BYTES = 256 << 10


def _scratch(shape, dtype) -> np.ndarray:
    """A per-thread reusable buffer of ``shape`` (fresh page-faulting allocations cost ~25% on big images)."""
    dtype = np.dtype(dtype)
    n = shape[0] * shape[1]
    nbytes = n * dtype.itemsize
    if nbytes > SCRATCH_KEEP_BYTES or nbytes < SCRATCH_MIN_BYTES:
        return np.empty(shape, dtype=dtype)
    cache = getattr(_tls, "buffers", None)
    if cache is None:
        cache = _tls.buffers = {}
    buf = cache.get(dtype)
    if buf is None or buf.size < n:
        buf = cache[dtype] = np.empty(max(n, 4096), dtype=dtype)
    return buf[:n].reshape(shape)


def _chunks(rows: int, macs: int) -> int:
    if macs < PARALLEL_MIN_MACS or rows < 16:
        return 1
    return num_threads()


def correlate_valid_ext(a: np.ndarray, k: np.ndarray, top: int, left: int, boundary: int, fill,
                        oh: int, ow: int) -> np.ndarray:
    """``out[i, j] = sum ext[i + p, j + q] * k[p, q]`` with ``ext[r, c] = a[r - top, c - left]`` extended.

    ``a`` and ``k`` are C-contiguous 2-D arrays of one Numba-supported dtype; ``fill`` is a
    scalar of that dtype; ``boundary`` is 0 (fill), 1 (symmetric) or 2 (wrap).  Returns a
    new (oh, ow) array of that dtype.
    """
    P, Q = k.shape
    out = np.empty((oh, ow), dtype=a.dtype)
    chunks = _chunks(oh, oh * ow * P * Q)
    if chunks == 1:
        _filter(a, k, top, left, boundary, fill, _scratch((oh + P - 1, ow + Q - 1), a.dtype), out)
        return out

    def run(r0, r1):
        ext = _scratch((r1 - r0 + P - 1, ow + Q - 1), a.dtype)
        _filter(a, k, top - r0, left, boundary, fill, ext, out[r0:r1])

    parallel_ranges(run, oh, chunks)
    return out


def correlate_separable(a: np.ndarray, u: np.ndarray, v: np.ndarray, top: int, left: int, boundary: int,
                        fill, oh: int, ow: int) -> np.ndarray:
    """:func:`correlate_valid_ext` for the rank-1 kernel ``outer(u, v)`` in two 1-D passes."""
    P, Q = u.shape[0], v.shape[0]
    out = np.empty((oh, ow), dtype=a.dtype)

    def run(r0, r1):
        ext = _scratch((r1 - r0 + P - 1, ow + Q - 1), a.dtype)
        tmp = np.empty(ow + Q - 1, dtype=a.dtype)
        _filter_separable(a, u, v, top - r0, left, boundary, fill, ext, tmp, out[r0:r1])

    parallel_ranges(run, oh, _chunks(oh, oh * ow * (P + Q)))
    return out


def extend(a: np.ndarray, top: int, left: int, boundary: int, fill, he: int, we: int) -> np.ndarray:
    """The (he, we) boundary extension of ``a`` whose element (top, left) is ``a[0, 0]``."""
    ext = np.empty((he, we), dtype=a.dtype)
    _extend(a, ext, top, left, boundary, fill)
    return ext
