"""Depthwise convolutions of small planes, with channels in the vector lanes.

:mod:`fastconv.cpu._depthwise` computes one (image, channel) plane at a time, vectorised along
the flattened plane.  A 7x7 or 14x14 plane fills only a few vectors, so there each plane pays
the per-plane work (packing, loop set-up, a partly empty last vector, cropping) for 49 or 196
outputs.  Here a task takes ``L`` channels of one image (16 for float32, 8 for float64) and
puts them side by side in the lanes:

1. the ``L`` input planes are transposed (``L x L`` register transposes,
   :func:`fastconv.cpu._simd.transpose_tile`) into ``T[pixel, lane]`` and copied, a vector per
   pixel, into the padded buffer ``P[row, col, lane]``, whose padding stays zero;
2. each output vector is ``bias + sum_k W[k] * P[position + offs[k]]`` with a weight *vector*
   per tap (each lane its own channel's weight: no broadcasts), ``NB`` outputs of a row at a
   time in registers (:func:`fastconv.cpu._simd.lane_taps`; the outputs past the end of a row
   are computed and overwritten by the next row's);
3. the result ``Z[pixel, lane]`` is transposed back into the ``L`` NCHW output planes.

Every tap of every stride or dilation is a constant offset in ``P``, and no lane computes a
padding column.  A multiplier ``m`` (output channel ``c * m + j`` reads input channel ``c``)
runs ``m`` such sums over one packed block.  The input gradient of a stride-1 layer with
``m == 1`` is the same convolution of the output gradient with the rotated weights (negative
padding, from ``padding > dilation * (kernel - 1)``, only leaves input rows unread).  The weight
gradient (:func:`weight`) packs the input likewise and the output gradient as ``G[pixel,
lane]``, and accumulates per-lane dot products over each output row (:func:`fastconv.cpu._simd.
lane_dots`); a task is a channel block over a fixed chunk of the images, and the chunks' sums
are added in chunk order by the caller, so the result does not depend on the threads.

Lanes past the last channel of a partial block compute from stale or zero values and are never
stored.  The sums multiply the zero padding like the other direct layouts.
"""
from __future__ import annotations

import numpy as np

from .._numba import njit
from ._simd import copy_vector, lane_dots, lane_row_taps, lane_taps, transpose_tile

__all__ = ["NB", "KB", "pack_weights", "forward", "weight", "reduce_chunks"]

#: Outputs of one row per :func:`fastconv.cpu._simd.lane_taps` call (accumulators in registers).
NB = 8
#: Taps per :func:`fastconv.cpu._simd.lane_dots` call in the weight gradient.
KB = 8

_TAPS = lane_taps(NB)
_ROW3 = lane_row_taps(NB, 3)
_ROW5 = lane_row_taps(NB, 5)
_ROW7 = lane_row_taps(NB, 7)
_DOTS = lane_dots(KB)
_DOT1 = lane_dots(1)
_TRANSPOSE = transpose_tile()
_TRANSPOSE_ROWS = transpose_tile(partial=True)
_VEC = copy_vector()


@njit(cache=True, nogil=True, inline="always")
def transpose_in(src, base, lstride, lc, n, T, L):  # pragma: no cover - numba
    """T[p * L + l] = src[base + l * lstride + p] for ``p < n``, ``l < lc`` (lanes from ``lc`` on untouched).
    (:func:`fastconv.cpu._wgrad.image_channels_last` does the same for planes ``n`` apart; called
    here instead of this inlined copy, with the destination stride a runtime value, the 32 x 960 x
    7^2 forward took 0.80-0.88 ms against 0.72-0.83.)"""
    p0 = 0
    if lc == L:
        while p0 + L <= n:
            _TRANSPOSE(src, base + p0, lstride, T, p0 * L, L)
            p0 += L
    for l in range(lc):
        for p in range(p0, n):
            T[p * L + l] = src[base + l * lstride + p]


@njit(cache=True, nogil=True, inline="always")
def transpose_out(Z, lc, n, dst, base, lstride, L):  # pragma: no cover - numba
    """dst[base + l * lstride + p] = Z[p * L + l] for ``p < n``, ``l < lc``."""
    p0 = 0
    while p0 + L <= n:
        if lc == L:
            _TRANSPOSE(Z, p0 * L, L, dst, base + p0, lstride)
        else:
            _TRANSPOSE_ROWS(Z, p0 * L, L, dst, base + p0, lstride, lc)
        p0 += L
    for l in range(lc):
        for p in range(p0, n):
            dst[base + l * lstride + p] = Z[p * L + l]


@njit(cache=True, nogil=True, inline="always")
def pack(xf, base, lc, H, W, T, P, pt, pl, hp, wp, L):  # pragma: no cover - numba
    """Planes ``base + l * H * W`` (``l < lc``) into ``P[((y + pt) * wp + x + pl) * L + l]`` for the
    pixels that land inside the ``hp x wp`` buffer (through ``T``)."""
    transpose_in(xf, base, H * W, lc, H * W, T, L)
    for y in range(max(0, -pt), min(H, hp - pt)):
        for x in range(max(0, -pl), min(W, wp - pl)):
            _VEC(T, (y * W + x) * L, P, ((y + pt) * wp + x + pl) * L)


@njit(cache=True, nogil=True)
def forward(x, Wl, Bl, offs, roffs, kw, out, m, sy, sx, pt, pl, hp, wp, t0, t1):  # pragma: no cover - numba
    """Tasks [t0, t1) (``n * CB + cb``: image ``n``, channel block ``cb`` of ``L``) of a depthwise
    convolution into NCHW ``out``.

    ``Wl``/``Bl`` hold the weights and bias per lane, ``[CB, m, K, L]`` / ``[CB, m, L]`` (zero past
    the last channel); ``offs[k]`` is tap ``k``'s offset in ``P`` (``(ky * dy * wp + kx * dx) * L``);
    ``(pt, pl)`` the top and left padding (negative: input rows or columns left out) and ``hp x
    wp`` the rows and columns the outputs read.  With ``kw`` 3, 5 or 7 (taps adjacent along a row:
    stride and dilation 1 there), ``roffs[ky]`` holds each kernel row's offset and the row's inputs
    are loaded once for its taps (:func:`fastconv.cpu._simd.lane_row_taps`); else ``kw`` is 0."""
    N, C, H, W = x.shape
    O, OH, OW = out.shape[1], out.shape[2], out.shape[3]
    L = 16 if x.itemsize == 4 else 8
    CB = -(-C // L)
    K = offs.size
    OHW = OH * OW
    P = np.zeros((hp * wp + NB * sx) * L, dtype=x.dtype)  # slack: the last outputs of a row read past it
    T = np.zeros(H * W * L, dtype=x.dtype)
    Z = np.empty((OHW + NB) * L, dtype=x.dtype)
    xf = x.reshape(-1)
    of = out.reshape(-1)
    for t in range(t0, t1):
        n = t // CB
        cb = t - n * CB
        c0 = cb * L
        lc = min(L, C - c0)
        pack(xf, (n * C + c0) * H * W, lc, H, W, T, P, pt, pl, hp, wp, L)
        for j in range(m):
            wb = (cb * m + j) * K * L
            bb = (cb * m + j) * L
            for oy in range(OH):
                prow = oy * sy * wp * L
                for ox in range(0, OW, NB):
                    z = (oy * OW + ox) * L
                    if kw == 3:
                        _ROW3(P, prow + ox * L, Wl, wb, roffs, roffs.size, Bl, bb, Z, z)
                    elif kw == 5:
                        _ROW5(P, prow + ox * L, Wl, wb, roffs, roffs.size, Bl, bb, Z, z)
                    elif kw == 7:
                        _ROW7(P, prow + ox * L, Wl, wb, roffs, roffs.size, Bl, bb, Z, z)
                    else:
                        _TAPS(P, prow + ox * sx * L, sx * L, Wl, wb, offs, 0, K, Bl, bb, Z, z)
            transpose_out(Z, lc, OHW, of, (n * O + c0 * m + j) * OHW, m * OHW, L)


@njit(cache=True, nogil=True)
def weight(x, g, offs, acc, m, chunk, sy, sx, pt, pl, hp, wp, t0, t1):  # pragma: no cover - numba
    """Tasks [t0, t1) (``cb * S + s``: channel block ``cb``, images ``[s * chunk, (s + 1) * chunk)``)
    of a depthwise weight gradient: ``acc[t, j, k, l]`` = the sum over those images, in order, and
    over the output pixels of ``g[n, (c0 + l) * m + j] * x[n, c0 + l]`` at tap ``k`` (``offs`` and
    the padding as in :func:`forward`)."""
    N, C, H, W = x.shape
    O, OH, OW = g.shape[1], g.shape[2], g.shape[3]
    L = 16 if x.itemsize == 4 else 8
    S = -(-N // chunk)
    K = offs.size
    OHW = OH * OW
    P = np.zeros((hp * wp + sx) * L, dtype=x.dtype)
    T = np.zeros(H * W * L, dtype=x.dtype)
    G = np.zeros(OHW * L, dtype=x.dtype)
    xf = x.reshape(-1)
    gf = g.reshape(-1)
    for t in range(t0, t1):
        cb = t // S
        s = t - cb * S
        c0 = cb * L
        lc = min(L, C - c0)
        a0 = t * m * K * L
        acc[a0:a0 + m * K * L] = 0
        for n in range(s * chunk, min(N, (s + 1) * chunk)):
            pack(xf, (n * C + c0) * H * W, lc, H, W, T, P, pt, pl, hp, wp, L)
            for j in range(m):
                transpose_in(gf, (n * O + c0 * m + j) * OHW, m * OHW, lc, OHW, G, L)
                ab = a0 + j * K * L
                for oy in range(OH):
                    prow = oy * sy * wp * L
                    k0 = 0
                    while k0 + KB <= K:
                        _DOTS(G, oy * OW * L, P, prow, sx * L, offs, k0, OW, acc, ab + k0 * L)
                        k0 += KB
                    for k in range(k0, K):
                        _DOT1(G, oy * OW * L, P, prow, sx * L, offs, k, OW, acc, ab + k * L)


@njit(cache=True, nogil=True)
def pack_weights(w, b, has_bias, m, flip, Wl, Bl, t0, t1):  # pragma: no cover - numba
    """``Wl[cb, j, k, l] = w[(cb * L + l) * m + j, 0, ky, kx]`` (``k = ky * kw + kx``; the kernel
    rotated by 180 degrees with ``flip``) and ``Bl[cb, j, l]`` the bias likewise (zero without
    one, and past the last channel); ``w`` any strides.  One task does it all (weights are small)."""
    if t0 >= t1:
        return
    O, _, kh, kw = w.shape
    C = O // m
    K = kh * kw
    L = 16 if Wl.itemsize == 4 else 8
    Wl[:] = 0
    Bl[:] = 0
    for c in range(C):
        cb = c // L
        l = c - cb * L
        for j in range(m):
            base = (cb * m + j) * K
            for ky in range(kh):
                for kx in range(kw):
                    v = w[c * m + j, 0, kh - 1 - ky, kw - 1 - kx] if flip else w[c * m + j, 0, ky, kx]
                    Wl[(base + ky * kw + kx) * L + l] = v
            if has_bias:
                Bl[(cb * m + j) * L + l] = b[c * m + j]


@njit(cache=True, nogil=True)
def reduce_chunks(acc, S, m, K, dw, t0, t1):  # pragma: no cover - numba
    """``dw[(c * m + j) * K + k]`` = the sum over chunks ``s < S``, in order, of :func:`weight`'s
    ``acc[cb * S + s, j, k, l]`` (``c = cb * L + l``), for the channels [t0, t1)."""
    L = 16 if acc.itemsize == 4 else 8
    for c in range(t0, t1):
        cb = c // L
        l = c - cb * L
        for j in range(m):
            for k in range(K):
                v = acc[(((cb * S) * m + j) * K + k) * L + l]
                for s in range(1, S):
                    v += acc[(((cb * S + s) * m + j) * K + k) * L + l]
                dw[(c * m + j) * K + k] = v
