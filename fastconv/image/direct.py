"""Direct (strip) kernels of the image engine: valid cross-correlation of an extension.

Every 2-D filtering problem reduces to one primitive: a *valid* cross-correlation of a
boundary-extended copy of the image with a small kernel,

    out[i, j] = sum_{p, q} ext[i + p, j + q] * kern[p, q],
    ext[r, c] = image[r - top, c - left] extended by the boundary rule,

so the inner loops never test bounds (:mod:`fastconv.image.boundary` builds the extension).
Convolution passes the flipped kernel.

The kernels here treat the rows of the extension as one flat signal and apply the taps in
blocks (3 kernel rows x 3 taps) as long unit-stride loops that LLVM vectorises
(:func:`correlate_flat`); for kernels of five or more rows two output rows are produced per
pass, so that each loaded input element feeds both (:func:`correlate_pairs`); a 3x3 kernel
is one fused pass per pair of output rows (:func:`correlate33`).  Which one runs is
:func:`fastconv.image.plan.strip_kernel`'s choice.  Only genuine taps are multiplied (no zero
padding), so infinities and NaNs propagate exactly as in SciPy's direct sum.  Accumulation
happens in the array dtype, as SciPy's ``convolve2d`` does (float32 sums in float32;
integers are handled in int64, whose wrap-around arithmetic equals SciPy's modulo the
output width).  Kernels are serial and ``nogil``; :mod:`fastconv.image.engine` splits large
problems into output-row blocks on threads.  Small problems (:func:`filter_small`) and the
strip accumulators (tens of KiB) are allocated inside the kernels; large buffers by the
engine with NumPy (Numba's allocator handed large blocks back to the OS on every call).
"""
from __future__ import annotations

import numpy as np
from .._numba import njit

from .boundary import extend_into
from .conventions import conv_geometry
from .plan import strip_kernel


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


#: Elements of the flat accumulator strip of :func:`correlate_flat` (32 KiB in float64).
FLAT_STRIP = 4096


@njit(cache=True, nogil=True)
def correlate_flat(ext, k, out):  # pragma: no cover - numba
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


#: Accumulator elements per output-row parity in a strip of :func:`correlate_pairs`.
PAIR_STRIP = 2048


@njit(cache=True, nogil=True)
def correlate_pairs(ext, k, out):  # pragma: no cover - numba
    """:func:`correlate_flat` producing output rows in even/odd pairs (kernels of 5+ rows).

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
def correlate33(ext, k, out, OW):  # pragma: no cover - numba
    """:func:`correlate` for a 3x3 kernel into the first ``OW`` columns of ``out``, fused:
    output rows in pairs, all nine taps of both rows in one unit-stride pass straight into
    ``out`` (12 loads, 18 multiply-adds, 2 stores per column; no accumulator strip, no copy).
    1.6-1.9x faster than :func:`correlate_flat` on 64-256 px images.  ``ext`` (C-contiguous) is
    read through its flat view at row offsets, so a pass may run past a row's end into the next
    row (:func:`same33_zero` does) while every index stays inside the array; one pair of arrays
    keeps LLVM's alias checks simple, so the loop vectorises."""
    OH = out.shape[0]
    S = ext.shape[1]
    e = ext.reshape(-1)
    w00, w01, w02, w10, w11, w12, w20, w21, w22 = _taps33(k, 0, 0)
    i = 0
    while i + 2 <= OH:
        r0 = i * S
        r1 = r0 + S
        r2 = r1 + S
        r3 = r2 + S
        for j in range(OW):
            a0 = e[np.uint64(r0 + j)]
            a1 = e[np.uint64(r0 + j + 1)]
            a2 = e[np.uint64(r0 + j + 2)]
            b0 = e[np.uint64(r1 + j)]
            b1 = e[np.uint64(r1 + j + 1)]
            b2 = e[np.uint64(r1 + j + 2)]
            c0 = e[np.uint64(r2 + j)]
            c1 = e[np.uint64(r2 + j + 1)]
            c2 = e[np.uint64(r2 + j + 2)]
            d0 = e[np.uint64(r3 + j)]
            d1 = e[np.uint64(r3 + j + 1)]
            d2 = e[np.uint64(r3 + j + 2)]
            out[i, j] = (a0 * w00 + a1 * w01 + a2 * w02) + (
                (b0 * w10 + b1 * w11 + b2 * w12) + (c0 * w20 + c1 * w21 + c2 * w22))
            out[i + 1, j] = (b0 * w00 + b1 * w01 + b2 * w02) + (
                (c0 * w10 + c1 * w11 + c2 * w12) + (d0 * w20 + d1 * w21 + d2 * w22))
        i += 2
    if i < OH:  # odd height: the last row alone
        _block33(out[i], ext[i], ext[i + 1], ext[i + 2], k, 0, 0, OW, True)


@njit(cache=True, nogil=True)
def correlate(ext, k, out):  # pragma: no cover - numba
    """out = valid cross-correlation of ``ext`` (C-contiguous) with ``k``, by the strip kernel
    that :func:`fastconv.image.plan.strip_kernel` picks."""
    kind = strip_kernel(k.shape[0], k.shape[1])
    if kind == 0:
        correlate33(ext, k, out, out.shape[1])
    elif kind == 1:
        correlate_pairs(ext, k, out)
    else:
        correlate_flat(ext, k, out)


@njit(cache=True, nogil=True)
def same33_zero(a, k, flip, out):  # pragma: no cover - numba
    """'same' 3x3 convolution (``flip``) or correlation of ``a`` (at least 3x3) with zero fill
    into ``out``, without an extension.  The interior comes straight from ``a`` through
    :func:`correlate33` on C-contiguous views of ``out`` whose rows start at column 1, N wide
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
        correlate33(a, kk, flat[N + 1:N + 1 + R1 * N].reshape(R1, N), N)
    rest = flat[N + 1 + R1 * N:N + 1 + (M - 2) * N].reshape(M - 2 - R1, N)
    correlate33(a.reshape(-1)[R1 * N:].reshape(M - R1, N), kk, rest, n)
    w00, w01, w02, w10, w11, w12, w20, w21, w22 = _taps33(kk, 0, 0)
    # first and last rows: two kernel rows meet the image; summed as correlate33 sums them with a
    # zero row (t0 + (t1 + t2) with t0 or t2 zero), so every path rounds alike
    x, y, dst = a[0], a[1], out[0, 1:]
    for j in range(n):
        dst[j] = (x[j] * w10 + x[j + 1] * w11 + x[j + 2] * w12) + (y[j] * w20 + y[j + 1] * w21 + y[j + 2] * w22)
    x, y, dst = a[M - 2], a[M - 1], out[M - 1, 1:]
    for j in range(n):
        dst[j] = (x[j] * w00 + x[j + 1] * w01 + x[j + 2] * w02) + (y[j] * w10 + y[j + 1] * w11 + y[j + 2] * w12)
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
    # the direct sum multiplies the zero fill by the out-of-image taps: NaN where one is not finite
    if not np.isfinite(w00 + w01 + w02 + w10 + w12 + w20 + w21 + w22):
        if not (np.isfinite(w00) and np.isfinite(w01) and np.isfinite(w02)):
            out[0, :] = np.nan
        if not (np.isfinite(w20) and np.isfinite(w21) and np.isfinite(w22)):
            out[M - 1, :] = np.nan
        if not (np.isfinite(w00) and np.isfinite(w10) and np.isfinite(w20)):
            out[:, 0] = np.nan
        if not (np.isfinite(w02) and np.isfinite(w12) and np.isfinite(w22)):
            out[:, N - 1] = np.nan


@njit(cache=True, nogil=True)
def filter_ext(a, k, top, left, boundary, fill, ext, out):  # pragma: no cover - numba
    """Extend ``a`` into ``ext`` (top/left offsets) and correlate it with ``k`` into ``out``."""
    extend_into(a, ext, top, left, boundary, fill)
    correlate(ext, k, out)


@njit(cache=True, nogil=True)
def filter_small(a, k, flip, top, left, boundary, fill, oh, ow):  # pragma: no cover - numba
    """:func:`filter_ext` for small problems into a new (oh, ow) array, with the per-call work moved
    out of Python: the output and the extension are allocated here and ``flip`` (convolution)
    reverses ``k`` here."""
    P, Q = k.shape
    kk = k[::-1, ::-1].copy() if flip else k
    out = np.empty((oh, ow), dtype=a.dtype)
    ext = np.empty((oh + P - 1, ow + Q - 1), dtype=a.dtype)
    filter_ext(a, kk, top, left, boundary, fill, ext, out)
    return out


@njit(cache=True, nogil=True)
def zero_fill_small(a, k, flip, mode):  # pragma: no cover - numba
    """``scipy.signal`` convolution (``flip``) or correlation in ``mode`` with zero fill, for small
    problems: the whole call in one Numba entry (64-px images spend a third of the time in Python
    otherwise)."""
    oh, ow, top, left = conv_geometry(mode, a.shape[0], a.shape[1], k.shape[0], k.shape[1], flip)
    return filter_small(a, k, flip, top, left, 0, np.zeros(1, dtype=a.dtype)[0], oh, ow)
