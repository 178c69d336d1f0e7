"""Numba kernels behind :mod:`fastconv.signal` and :mod:`fastconv.filters` (NumPy in, NumPy out).

Every 2-D filtering problem is reduced to one primitive: a *valid* cross-correlation
of a boundary-extended copy of the image with a small kernel,

    out[i, j] = sum_{p, q} ext[i + p, j + q] * kern[p, q],
    ext[r, c] = image[r - top, c - left] extended by the boundary rule,

so the inner loops never test bounds.  The extension is built once per call
(:mod:`fastconv.cpu.extend`; ``boundary`` codes 0 = constant ``fill``, 1 = symmetric,
2 = periodic).  Convolution passes the flipped kernel.

float32/float64 kernels of 2 to 16 rows (except 3x3) go to the register-blocked kernel
of :mod:`fastconv.cpu.tiles`, which builds the extension tile by tile itself.  For the
others, the correlation treats the rows of the extension as one flat signal and applies the taps
in blocks (3 kernel rows x 3 taps) as long unit-stride loops that LLVM vectorises; for
kernels of five or more rows two output rows are produced per pass, so that each loaded
input element feeds both (:func:`_correlate_pairs`); a 3x3 kernel is one fused pass per
pair of output rows (:func:`_correlate33`).  Only genuine taps are multiplied
(no zero padding), so infinities and NaNs propagate exactly as in SciPy's direct sum.
Accumulation happens in the array dtype, as SciPy's ``convolve2d`` does (float32 sums in
float32; integers are handled in int64, whose wrap-around arithmetic equals SciPy's
modulo the output width).  Kernels are serial and ``nogil``; large problems are split
into output-row blocks run on threads by :mod:`fastconv.cpu._threads` (see there why this
is not ``prange``).  Large buffers are allocated by the callers with NumPy (Numba's own
allocator handed large blocks back to the OS on every call, and the page faults cost
more than the arithmetic): the boundary extension of a large image is a per-thread
scratch buffer reused across calls.  Small problems (:func:`_filter_small`) and the
strip accumulators (tens of KiB) are allocated inside the kernels.
"""
from __future__ import annotations

import threading

import numpy as np
from numba import njit
from numba.extending import register_jitable

from ._threads import num_threads, parallel_ranges
from .extend import _extend
from .tiles import tile_kernel


@njit(cache=True, inline="always")
def _taps33(k, p, q):  # pragma: no cover - numba
    """The nine weights k[p:p+3, q:q+3], row by row."""
    return (k[p, q], k[p, q + 1], k[p, q + 2], k[p + 1, q], k[p + 1, q + 1], k[p + 1, q + 2],
            k[p + 2, q], k[p + 2, q + 1], k[p + 2, q + 2])


@njit(cache=True, nogil=True)
def _block33(acc, s0, s1, s2, k, p, q, n, init):  # pragma: no cover - numba
    """acc[:n] += taps k[p:p+3, q:q+3] applied to the flat rows s0, s1, s2 (nine per load/store
    of acc); ``init`` overwrites acc instead (the first block of a strip: no zeroing pass)."""
    w00, w01, w02, w10, w11, w12, w20, w21, w22 = _taps33(k, p, q)
    if init:
        for j in range(n):
            t0 = s0[j] * w00 + s0[j + 1] * w01 + s0[j + 2] * w02
            t1 = s1[j] * w10 + s1[j + 1] * w11 + s1[j + 2] * w12
            t2 = s2[j] * w20 + s2[j + 1] * w21 + s2[j + 2] * w22
            acc[j] = t0 + (t1 + t2)
        return
    for j in range(n):
        t0 = s0[j] * w00 + s0[j + 1] * w01 + s0[j + 2] * w02
        t1 = s1[j] * w10 + s1[j + 1] * w11 + s1[j + 2] * w12
        t2 = s2[j] * w20 + s2[j + 1] * w21 + s2[j + 2] * w22
        acc[j] = (acc[j] + t0) + (t1 + t2)


@njit(cache=True, nogil=True)
def _block31(acc, s0, s1, s2, k, p, q, n):  # pragma: no cover - numba
    """acc[:n] += the single-column taps k[p:p+3, q]."""
    w0 = k[p, q]
    w1 = k[p + 1, q]
    w2 = k[p + 2, q]
    for j in range(n):
        acc[j] = (acc[j] + s0[j] * w0) + (s1[j] * w1 + s2[j] * w2)


@njit(cache=True, nogil=True)
def _block13(acc, s0, k, p, q, n):  # pragma: no cover - numba
    """acc[:n] += the single-row taps k[p, q:q+3]."""
    w0 = k[p, q]
    w1 = k[p, q + 1]
    w2 = k[p, q + 2]
    for j in range(n):
        acc[j] = (acc[j] + s0[j] * w0) + (s0[j + 1] * w1 + s0[j + 2] * w2)


@njit(cache=True, nogil=True)
def _block11(acc, s0, k, p, q, n):  # pragma: no cover - numba
    """acc[:n] += the single tap k[p, q]."""
    w0 = k[p, q]
    for j in range(n):
        acc[j] += s0[j] * w0


@njit(cache=True, nogil=True, inline="always")
def _copy_row(dst, src, n):  # pragma: no cover - numba
    for j in range(n):
        dst[j] = src[j]


#: Elements of the flat accumulator strip of :func:`_correlate_flat` (32 KiB in float64).
FLAT_STRIP = 4096


@njit(cache=True, nogil=True)
def _correlate_flat(ext, k, out):  # pragma: no cover - numba
    """out = valid cross-correlation of ``ext`` with ``k``; rows of ``ext`` are one flat signal.

    ``wide[n] = sum_{p,q} ext.flat[n + p*We + q] * k[p, q]`` is the correlation at
    (n // We, n % We) for the columns n % We < OW (the others are discarded), so every
    3x3 block of taps is one long unit-stride loop over a strip of rows instead of one
    short loop per row (whose entry cost dominated 64-px images), doing nine
    multiply-adds per load/store of the accumulator.
    """
    P, Q = k.shape
    OH, OW = out.shape
    We = ext.shape[1]
    e = ext.ravel()
    P3 = P - P % 3
    Q3 = Q - Q % 3
    R = max(1, FLAT_STRIP // We)
    buf = np.empty(R * We, dtype=out.dtype)
    for i0 in range(0, OH, R):
        r = min(R, OH - i0)
        n = (r - 1) * We + OW  # the last row stops at its last valid column (ext ends there)
        acc = buf[:n]
        if P3 == 0 or Q3 == 0:
            for j in range(n):
                acc[j] = 0
        for p in range(0, P3, 3):
            o = (i0 + p) * We
            for q in range(0, Q3, 3):
                _block33(acc, e[o + q:], e[o + We + q:], e[o + 2 * We + q:], k, p, q, n, p + q == 0)
            for q in range(Q3, Q):
                _block31(acc, e[o + q:], e[o + We + q:], e[o + 2 * We + q:], k, p, q, n)
        for p in range(P3, P):
            o = (i0 + p) * We
            for q in range(0, Q3, 3):
                _block13(acc, e[o + q:], k, p, q, n)
            for q in range(Q3, Q):
                _block11(acc, e[o + q:], k, p, q, n)
        for t in range(r):
            _copy_row(out[i0 + t], buf[t * We:], OW)


@njit(cache=True, nogil=True)
def _pair2x3(ae, ao, x, y, k, s, q, n):  # pragma: no cover - numba
    """Source rows s (``x``) and s+1 (``y``), taps q..q+2, into an even/odd output-row pair:
    ``ae`` takes kernel rows s and s+1, ``ao`` (one row lower) rows s-1 and s.  Every
    loaded element feeds both outputs."""
    e0 = k[s, q]
    e1 = k[s, q + 1]
    e2 = k[s, q + 2]
    f0 = k[s + 1, q]
    f1 = k[s + 1, q + 1]
    f2 = k[s + 1, q + 2]
    d0 = k[s - 1, q]
    d1 = k[s - 1, q + 1]
    d2 = k[s - 1, q + 2]
    for j in range(n):
        x0 = x[j]
        x1 = x[j + 1]
        x2 = x[j + 2]
        y0 = y[j]
        y1 = y[j + 1]
        y2 = y[j + 2]
        ae[j] = (ae[j] + (x0 * e0 + x1 * e1 + x2 * e2)) + (y0 * f0 + y1 * f1 + y2 * f2)
        ao[j] = (ao[j] + (x0 * d0 + x1 * d1 + x2 * d2)) + (y0 * e0 + y1 * e1 + y2 * e2)


@njit(cache=True, nogil=True)
def _pair2x1(ae, ao, x, y, k, s, q, n):  # pragma: no cover - numba
    """:func:`_pair2x3` for the single tap q."""
    e0 = k[s, q]
    f0 = k[s + 1, q]
    d0 = k[s - 1, q]
    for j in range(n):
        x0 = x[j]
        y0 = y[j]
        ae[j] = ae[j] + (x0 * e0 + y0 * f0)
        ao[j] = ao[j] + (x0 * d0 + y0 * e0)


@njit(cache=True, nogil=True)
def _split_rows(ext, even, odd, t0, rows):  # pragma: no cover - numba
    """even[t] = ext[2 (t0 + t)] and odd[t] = ext[2 (t0 + t) + 1] as flat rows (zeros past the end)."""
    He, We = ext.shape
    for t in range(rows):
        for parity in range(2):
            r = 2 * (t0 + t) + parity
            dst = (even if parity == 0 else odd)[t * We:(t + 1) * We]
            if r < He:
                src = ext[r]
                for c in range(We):
                    dst[c] = src[c]
            else:
                for c in range(We):
                    dst[c] = 0


#: Accumulator elements per output-row parity in a strip of :func:`_correlate_pairs`.
PAIR_STRIP = 2048


@njit(cache=True, nogil=True)
def _correlate_pairs(ext, k, out):  # pragma: no cover - numba
    """:func:`_correlate_flat` producing output rows in even/odd pairs (kernels of 5+ rows).

    Output rows 2t and 2t+1 read the same input rows 2t+1 .. 2t+P-1, through kernel rows
    one apart, so each loaded element feeds two accumulators: about 0.7 loads per
    multiply-add instead of 1.1 (1.2-1.5x faster for 7- and 15-row kernels; 3-row kernels
    lose to the single-accumulator form).  The even and odd input rows are first copied
    into two flat buffers, so that both output parities are again long unit-stride loops.
    Only genuine taps are applied (no zero padding: ``0 * inf`` would turn into NaN).
    """
    P, Q = k.shape
    OH, OW = out.shape
    We = ext.shape[1]
    Q3 = Q - Q % 3
    pairs = (OH + 1) // 2
    R = max(1, PAIR_STRIP // We)
    M = P // 2 + 1                          # extra source rows per parity below a strip
    even = np.empty((R + M) * We, dtype=out.dtype)
    odd = np.empty((R + M) * We, dtype=out.dtype)
    ae_buf = np.empty(R * We, dtype=out.dtype)
    ao_buf = np.empty(R * We, dtype=out.dtype)
    for t0 in range(0, pairs, R):
        r = min(R, pairs - t0)
        n = (r - 1) * We + OW
        _split_rows(ext, even, odd, t0, r + M)
        ae = ae_buf[:n]
        ao = ao_buf[:n]
        for j in range(n):
            ae[j] = 0
            ao[j] = 0
        # source row s (relative to the even output row) is even[s // 2] or odd[s // 2];
        # row 0 feeds only the even output, row P only the odd one.
        for q in range(0, Q3, 3):
            _block13(ae, even[q:], k, 0, q, n)
        for q in range(Q3, Q):
            _block11(ae, even[q:], k, 0, q, n)
        s = 1
        while s + 1 <= P - 1:
            x = (odd if s % 2 == 1 else even)[(s // 2) * We:]
            y = (even if s % 2 == 1 else odd)[((s + 1) // 2) * We:]
            for q in range(0, Q3, 3):
                _pair2x3(ae, ao, x[q:], y[q:], k, s, q, n)
            for q in range(Q3, Q):
                _pair2x1(ae, ao, x[q:], y[q:], k, s, q, n)
            s += 2
        if s <= P - 1:  # even P: one source row left, applied to each output separately
            x = (odd if s % 2 == 1 else even)[(s // 2) * We:]
            for q in range(0, Q3, 3):
                _block13(ae, x[q:], k, s, q, n)
                _block13(ao, x[q:], k, s - 1, q, n)
            for q in range(Q3, Q):
                _block11(ae, x[q:], k, s, q, n)
                _block11(ao, x[q:], k, s - 1, q, n)
        x = (odd if P % 2 == 1 else even)[(P // 2) * We:]
        for q in range(0, Q3, 3):
            _block13(ao, x[q:], k, P - 1, q, n)
        for q in range(Q3, Q):
            _block11(ao, x[q:], k, P - 1, q, n)
        for t in range(r):
            i = 2 * (t0 + t)
            _copy_row(out[i], ae_buf[t * We:], OW)
            if i + 1 < OH:
                _copy_row(out[i + 1], ao_buf[t * We:], OW)


@njit(cache=True, nogil=True)
def _correlate33(ext, k, out, OW):  # pragma: no cover - numba
    """:func:`_correlate` for a 3x3 kernel into the first ``OW`` columns of ``out``, fused:
    output rows in pairs, all nine taps of both rows in one unit-stride pass straight into
    ``out`` (12 loads, 18 multiply-adds, 2 stores per column; no accumulator strip, no copy).
    1.6-1.9x faster than :func:`_correlate_flat` on 64-256 px images.  2-D indexing of one
    C-contiguous ``ext`` keeps LLVM's alias checks to one pair of arrays, so the loop vectorises."""
    OH = out.shape[0]
    w00, w01, w02, w10, w11, w12, w20, w21, w22 = _taps33(k, 0, 0)
    i = 0
    while i + 2 <= OH:
        for j in range(OW):
            a0 = ext[i, j]
            a1 = ext[i, j + 1]
            a2 = ext[i, j + 2]
            b0 = ext[i + 1, j]
            b1 = ext[i + 1, j + 1]
            b2 = ext[i + 1, j + 2]
            c0 = ext[i + 2, j]
            c1 = ext[i + 2, j + 1]
            c2 = ext[i + 2, j + 2]
            d0 = ext[i + 3, j]
            d1 = ext[i + 3, j + 1]
            d2 = ext[i + 3, j + 2]
            out[i, j] = (a0 * w00 + a1 * w01 + a2 * w02) + (
                (b0 * w10 + b1 * w11 + b2 * w12) + (c0 * w20 + c1 * w21 + c2 * w22))
            out[i + 1, j] = (b0 * w00 + b1 * w01 + b2 * w02) + (
                (c0 * w10 + c1 * w11 + c2 * w12) + (d0 * w20 + d1 * w21 + d2 * w22))
        i += 2
    if i < OH:  # odd height: the last row alone
        _block33(out[i], ext[i], ext[i + 1], ext[i + 2], k, 0, 0, OW, True)


#: Kernels with at least this many rows use :func:`_correlate_pairs` (measured crossover).
PAIR_MIN_ROWS = 5


@njit(cache=True, nogil=True)
def _correlate(ext, k, out):  # pragma: no cover - numba
    """out = valid cross-correlation of ``ext`` (C-contiguous) with ``k``."""
    if k.shape[0] == 3 and k.shape[1] == 3:
        _correlate33(ext, k, out, out.shape[1])
    elif k.shape[0] >= PAIR_MIN_ROWS:
        _correlate_pairs(ext, k, out)
    else:
        _correlate_flat(ext, k, out)


@njit(cache=True, nogil=True)
def _same33_zero(a, k, flip, out):  # pragma: no cover - numba
    """'same' 3x3 convolution (``flip``) or correlation of ``a`` (at least 3x3) with zero fill
    into ``out``, without an extension.  The interior comes straight from ``a`` through
    :func:`_correlate33` on C-contiguous views of ``out`` whose rows start at column 1, N wide
    rather than N - 2 (a whole number of vectors): the two extra values of each row read on
    into the next image row and land in the edge columns, which are computed afterwards,
    as are the first and last rows, without their out-of-image taps.  Only the last rows,
    whose overrun would pass the end of ``a``, run N - 2 wide.  1.1-1.2x the extension path
    at 64 px, 1.2-1.4x at 256 px."""
    kk = k[::-1, ::-1] if flip else k  # a view: only its nine weights are read
    M, N = a.shape
    n = N - 2
    flat = out.reshape(-1)
    R1 = max(0, (M - 4) // 2 * 2)  # interior rows run N wide (pairs end within a)
    if R1 > 0:
        _correlate33(a, kk, flat[N + 1:N + 1 + R1 * N].reshape(R1, N), N)
    rest = flat[N + 1 + R1 * N:N + 1 + (M - 2) * N].reshape(M - 2 - R1, N)
    _correlate33(a.reshape(-1)[R1 * N:].reshape(M - R1, N), kk, rest, n)
    for r, p0, p1 in ((0, 1, 3), (M - 1, 0, 2)):  # kernel rows p0..p1-1 meet the image
        dst = out[r, 1:]
        for j in range(n):
            dst[j] = 0
        for p in range(p0, p1):
            _block13(dst, a[r + p - 1], kk, p, 0, n)
    w00, w01, w02, w10, w11, w12, w20, w21, w22 = _taps33(kk, 0, 0)
    for r in range(1, M - 1):  # first and last columns: two taps per kernel row
        x, y, z = a[r - 1], a[r], a[r + 1]
        out[r, 0] = (x[0] * w01 + x[1] * w02) + ((y[0] * w11 + y[1] * w12) + (z[0] * w21 + z[1] * w22))
        out[r, N - 1] = (x[N - 2] * w00 + x[N - 1] * w01) + (
            (y[N - 2] * w10 + y[N - 1] * w11) + (z[N - 2] * w20 + z[N - 1] * w21))
    x, y = a[0], a[1]  # corners: four taps
    out[0, 0] = (x[0] * w11 + x[1] * w12) + (y[0] * w21 + y[1] * w22)
    out[0, N - 1] = (x[N - 2] * w10 + x[N - 1] * w11) + (y[N - 2] * w20 + y[N - 1] * w21)
    x, y = a[M - 2], a[M - 1]
    out[M - 1, 0] = (x[0] * w01 + x[1] * w02) + (y[0] * w11 + y[1] * w12)
    out[M - 1, N - 1] = (x[N - 2] * w00 + x[N - 1] * w01) + (y[N - 2] * w10 + y[N - 1] * w11)


@njit(cache=True, nogil=True)
def _filter(a, k, top, left, boundary, fill, ext, out):  # pragma: no cover - numba
    """Extend ``a`` into ``ext`` (top/left offsets) and correlate it with ``k`` into ``out``."""
    _extend(a, ext, top, left, boundary, fill)
    _correlate(ext, k, out)


@njit(cache=True, nogil=True)
def _filter_small(a, k, flip, top, left, boundary, fill, oh, ow):  # pragma: no cover - numba
    """:func:`_filter` for small problems into a new (oh, ow) array, with the per-call work moved
    out of Python: the output and the extension are allocated here and ``flip`` (convolution)
    reverses ``k`` here."""
    P, Q = k.shape
    kk = k[::-1, ::-1].copy() if flip else k
    out = np.empty((oh, ow), dtype=a.dtype)
    ext = np.empty((oh + P - 1, ow + Q - 1), dtype=a.dtype)
    _filter(a, kk, top, left, boundary, fill, ext, out)
    return out


@register_jitable
def conv_geometry(mode: int, M: int, N: int, P: int, Q: int, flip: bool):
    """(oh, ow, top, left): output size and extension offsets of an (M, N) image filtered by a
    (P, Q) kernel in ``mode`` 0 = 'valid', 1 = 'same', 2 = 'full' (SciPy's conventions).

    'same' is centred on the full output as SciPy does: convolution (``flip``) starts at
    offset P // 2, correlation at (P - 1) // 2 (they differ for even kernels).
    """
    if mode == 2:
        return M + P - 1, N + Q - 1, P - 1, Q - 1
    if mode == 0:
        return M - P + 1, N - Q + 1, 0, 0
    if flip:
        return M, N, P // 2, Q // 2
    return M, N, (P - 1) // 2, (Q - 1) // 2


@njit(cache=True, nogil=True)
def _zero_fill_small(a, k, flip, mode):  # pragma: no cover - numba
    """``scipy.signal`` convolution (``flip``) or correlation in ``mode`` with zero fill, for small
    problems: the whole call in one Numba entry (64-px images spend a third of the time in Python
    otherwise)."""
    oh, ow, top, left = conv_geometry(mode, a.shape[0], a.shape[1], k.shape[0], k.shape[1], flip)
    return _filter_small(a, k, flip, top, left, 0, np.zeros(1, dtype=a.dtype)[0], oh, ow)


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


#: Below this many multiply-adds a call runs on one thread.  Measured on the 2-vCPU machine
#: class (two SMT siblings of one core) in interleaved rounds, one image per call, two
#: threads against one: 0.83-0.97x at 2.4-3.7M (128/15, 256/7, 512/3), 0.95-1.3x at
#: 4.5-5.8M, 1.2-1.85x at 6.6-15M (512/5, 512/7, 256/11, 256/15), float64 and float32.
#: The crossover moves with load on the sibling vCPU (an earlier session, with the sibling
#: busy, found two threads slower up to 15M), hence a threshold on the safe side.
PARALLEL_MIN_MACS = 6_000_000


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


def _run_tiles(tiles, a, k, flip, top, left, boundary, fill, oh, ow) -> np.ndarray:
    """:func:`correlate_valid_ext` through the register-blocked kernel ``tiles``."""
    out = np.empty((oh, ow), dtype=a.dtype)
    chunks = _chunks(oh, oh * ow * k.size)
    if chunks == 1:
        tiles(a, k, flip, top, left, boundary, fill, out)
    else:
        parallel_ranges(lambda r0, r1: tiles(a, k, flip, top - r0, left, boundary, fill, out[r0:r1]), oh, chunks)
    return out


def correlate_valid_ext(a: np.ndarray, k: np.ndarray, top: int, left: int, boundary: int, fill,
                        oh: int, ow: int, flip: bool = False) -> np.ndarray:
    """``out[i, j] = sum ext[i + p, j + q] * kk[p, q]`` with ``ext[r, c] = a[r - top, c - left]`` extended.

    ``kk`` is ``k``, or ``k`` reversed along both axes when ``flip`` (convolution).  ``a`` and
    ``k`` are C-contiguous 2-D arrays of one Numba-supported dtype; ``fill`` is a scalar of
    that dtype; ``boundary`` is 0 (fill), 1 (symmetric) or 2 (wrap).  Returns a new
    (oh, ow) array of that dtype.
    """
    tiles = tile_kernel(k.shape, a.dtype)
    if tiles is not None:
        return _run_tiles(tiles, a, k, flip, top, left, boundary, fill, oh, ow)
    P, Q = k.shape
    chunks = _chunks(oh, oh * ow * P * Q)
    if chunks == 1 and (oh + P - 1) * (ow + Q - 1) * a.itemsize < SCRATCH_MIN_BYTES:
        return _filter_small(a, k, flip, top, left, boundary, fill, oh, ow)
    out = np.empty((oh, ow), dtype=a.dtype)
    if flip:
        k = np.ascontiguousarray(k[::-1, ::-1])
    if chunks == 1:
        _filter(a, k, top, left, boundary, fill, _scratch((oh + P - 1, ow + Q - 1), a.dtype), out)
        return out

    def run(r0, r1):
        ext = _scratch((r1 - r0 + P - 1, ow + Q - 1), a.dtype)
        _filter(a, k, top - r0, left, boundary, fill, ext, out[r0:r1])

    parallel_ranges(run, oh, chunks)
    return out


_ZEROS = {np.dtype(t): np.dtype(t).type(0) for t in (np.float32, np.float64)}


def correlate_zero_fill(a: np.ndarray, k: np.ndarray, mode: int, flip: bool) -> np.ndarray:
    """``scipy.signal.convolve2d`` (``flip``) or ``correlate2d`` of real ``a`` and ``k`` with
    ``boundary='fill', fillvalue=0`` in ``mode`` (0 valid, needing ``a`` at least as large as
    ``k``; 1 same; 2 full).  Both arrays C-contiguous, non-empty, of one dtype."""
    M, N = a.shape
    P, Q = k.shape
    tiles = tile_kernel(k.shape, a.dtype)
    if tiles is not None:
        oh, ow, top, left = conv_geometry(mode, M, N, P, Q, flip)
        return _run_tiles(tiles, a, k, flip, top, left, 0, _ZEROS[a.dtype], oh, ow)
    if mode == 1 and P == 3 and Q == 3 and M >= 3 and N >= 3 and M * N * 9 < PARALLEL_MIN_MACS:
        out = np.empty((M, N), dtype=a.dtype)  # NumPy's allocation: cheaper than returning Numba's
        _same33_zero(a, k, flip, out)
        return out
    # bounds on the extension and the work for every mode, without the exact geometry
    if ((M + 2 * P) * (N + 2 * Q) * a.itemsize < SCRATCH_MIN_BYTES
            and (M + P) * (N + Q) * P * Q < PARALLEL_MIN_MACS):
        return _zero_fill_small(a, k, flip, mode)
    oh, ow, top, left = conv_geometry(mode, M, N, P, Q, flip)
    return correlate_valid_ext(a, k, top, left, 0, a.dtype.type(0), oh, ow, flip)


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
