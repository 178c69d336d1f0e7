"""The lane layout of the CPU convolution engine: images side by side in the vector lanes.

A small image (8x8, 16x16) has too few pixels per row to fill 512-bit vectors, and a
convolution's output channels are better spent on broadcast weights.  So the engine puts
*images* in the lanes: a tensor is packed as ``P[c, y, x, lane]`` with the lane innermost,
and one vector holds the same pixel of 16 (float32) or 8 (float64) images.  Every tap of
the convolution is then a constant offset, whatever the stride or dilation, and no lane
is wasted on padding columns.

Batches smaller than a vector, or big images, are split into spatial *blocks*: the output
of each image is cut into ``BY x BX`` blocks of ``bh x bw`` pixels, each block with the
input region it reads (its halo) is one lane.  Lane ``l = (n * BY + by) * BX + bx``.

:class:`Lanes` describes such a packing; :func:`pack` and :func:`unpack` convert between
NCHW and the lane layout.  Lanes past the last image hold zeros.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Tuple

import numpy as np
from .._numba import njit

from ._simd import copy_short, transpose_tile

__all__ = ["Lanes", "plan_lanes", "pack", "pack_task", "unpack_task", "block_places"]

_TRANSPOSE = transpose_tile()
_TRANSPOSE_ROWS = transpose_tile(partial=True)
_COPY = copy_short()


@dataclass(frozen=True)
class Lanes:
    """A lane packing of N images (see the module docstring).

    ``(BY, BX)`` blocks of ``(bh, bw)`` output pixels per image; each lane holds an input
    region of ``(hb, wb)`` pixels starting at ``(by * bh * sy - py, bx * bw * sx - px)`` of its
    image; ``count`` real lanes, ``width`` allocated (a multiple of the tile width).
    """

    n: int
    BY: int
    BX: int
    bh: int
    bw: int
    count: int
    width: int

    @property
    def blocks(self) -> int:
        return self.BY * self.BX


def plan_lanes(n: int, oh: int, ow: int, tile: int, min_lanes: int) -> Lanes:
    """A blocking of an ``(n, oh, ow)`` output with at least ``min_lanes`` lanes where possible.

    Blocks are split along the longer side first, never below 4 pixels; the allocated
    width is ``count`` rounded up to a multiple of ``tile``.
    """
    by = bx = 1
    while n * by * bx < min_lanes:
        if oh // (by * 2) >= 4 and (oh / by >= ow / bx or ow // (bx * 2) < 4):
            by *= 2
        elif ow // (bx * 2) >= 4:
            bx *= 2
        else:
            break
    bh, bw = -(-oh // by), -(-ow // bx)
    by, bx = -(-oh // bh), -(-ow // bw)
    count = n * by * bx
    return Lanes(n, by, bx, bh, bw, count, -(-count // tile) * tile)


@njit(cache=True, nogil=True, inline="always")
def _lane_block(l, BY, BX):  # pragma: no cover - numba
    """Lane ``l``'s image and block row and column (``l = (n * BY + by) * BX + bx``)."""
    n = l // (BY * BX)
    b = l - n * (BY * BX)
    return n, b // BX, b % BX


@njit(cache=True, nogil=True, inline="always")
def _copy(src, s, dst, d, n):  # pragma: no cover - numba
    """dst[d:d + n] = src[s:s + n], one masked vector at a time (a loop over a 10-16 element row ran
    only its scalar remainder)."""
    L = 64 // src.itemsize
    for j in range(0, n, L):
        _COPY(src, s + j, dst, d + j, min(L, n - j))


@njit(cache=True, nogil=True)
def _pack(x, P, BY, BX, hb, wb, ry, rx, py, px, coff, c0, c1):  # pragma: no cover - numba
    """P[c + coff, y, x, l] = x[n, c, by*ry - py + y, bx*rx - px + x] (zero outside x), for channels [c0, c1).

    Per (channel, region row, L lanes), the lanes' row segments are copied side by side into a
    scratch and written to the lanes through an L x L transpose.  The lanes' columns inside the
    image are fixed, so each scratch row keeps its zeros outside them; only rows above or below
    the image are zeroed.  (A scalar store per pixel and lane took 0.14 ms for 4 x 128 x 16x16
    in Winograd's 32 lanes, this 0.05.)"""
    N, C, H, W = x.shape
    width = P.shape[3]
    L = 64 // x.itemsize
    count = N * BY * BX
    SW = -(-wb // L) * L
    S = np.zeros(width * SW, dtype=x.dtype)  # row l: lane l's segment
    src = np.empty(width, dtype=np.int64)  # lane l: its image's plane (channel 0) + column x0
    iy0 = np.empty(width, dtype=np.int64)
    lo = np.zeros(width, dtype=np.int64)
    hi = np.zeros(width, dtype=np.int64)
    for l in range(count):
        n, by, bx = _lane_block(l, BY, BX)
        x0 = bx * rx - px
        iy0[l] = by * ry - py
        src[l] = n * C * H * W + x0
        lo[l] = min(max(0, -x0), wb)
        hi[l] = max(min(wb, W - x0), lo[l])
    xf = x.reshape(-1)
    Pf = P.reshape(-1)
    plane = hb * wb * width
    for c in range(c0, c1):
        for y in range(hb):
            for l in range(count):
                base = l * SW
                iy = iy0[l] + y
                if 0 <= iy < H:
                    _copy(xf, src[l] + (c * H + iy) * W + lo[l], S, base + lo[l], hi[l] - lo[l])
                else:
                    for xx in range(lo[l], hi[l]):
                        S[base + xx] = 0
            d = (c + coff) * plane + y * wb * width
            for g0 in range(0, width, L):
                for xx0 in range(0, wb, L):
                    _TRANSPOSE_ROWS(S, g0 * SW + xx0, SW, Pf, d + xx0 * width + g0, width, min(L, wb - xx0))


@njit(cache=True, nogil=True)
def _pack_planes(x, P, hb, wb, py, px, coff, c0, c1):  # pragma: no cover - numba
    """:func:`_pack` for unblocked lanes (lane = image, region = the padded image), through
    L x L transposes of (images x pixels) blocks; zero borders, zero padding lanes."""
    N, C, H, W = x.shape
    width = P.shape[3]
    L = 64 // x.itemsize
    xf = x.reshape(-1)
    HW = H * W
    S = np.empty(L * L, dtype=x.dtype)
    nfull = N - N % L
    qfull = HW - HW % L
    for c in range(c0, c1):
        Pc = P[c + coff]
        for y in range(hb):  # borders and padding lanes first
            iy = y - py
            row = Pc[y]
            if iy < 0 or iy >= H:
                row[:, :] = 0
                continue
            for xx in range(wb):
                ix = xx - px
                if ix < 0 or ix >= W:
                    row[xx, :] = 0
                else:
                    row[xx, nfull:] = 0
        Pf = Pc.reshape(-1)
        for n0 in range(0, nfull, L):
            for q0 in range(0, qfull, L):
                iy = q0 // W
                if q0 - iy * W + L <= W:  # L pixels of one row: transposed straight into place
                    _TRANSPOSE(xf, (n0 * C + c) * HW + q0, C * HW, Pf, ((iy + py) * wb + q0 - iy * W + px) * width + n0,
                               width)
                    continue
                _TRANSPOSE(xf, (n0 * C + c) * HW + q0, C * HW, S, 0, L)
                for j in range(L):
                    q = q0 + j
                    iy = q // W
                    d = np.uint64(((iy + py) * wb + q - iy * W + px) * width + n0)
                    for i in range(L):
                        Pf[d + np.uint64(i)] = S[j * L + i]
            for q in range(qfull, HW):
                iy = q // W
                d = ((iy + py) * wb + q - iy * W + px) * width
                for i in range(L):
                    Pf[d + n0 + i] = xf[((n0 + i) * C + c) * HW + q]
        for n in range(nfull, N):
            for q in range(HW):
                iy = q // W
                Pf[((iy + py) * wb + q - iy * W + px) * width + n] = xf[(n * C + c) * HW + q]


def pack_task(x: np.ndarray, lanes: Lanes, hb: int, wb: int, stride: Tuple[int, int], pad: Tuple[int, int],
              P: np.ndarray, coff: int) -> Tuple[Callable, tuple]:
    """The kernel, and its arguments but the channel range ``c0, c1`` (last), that packs channels
    [c0, c1) of NCHW ``x`` into channels ``c + coff`` of ``P`` (channels, hb, wb, width): the input
    region of each lane starts at ``(by * bh * sy - py, bx * bw * sx - px)`` of its image.  Regions
    that reach past the image are zero-filled.  Run it as ``parallel_for(kernel, c, *args)``."""
    if P.shape[3] % (64 // P.itemsize):
        raise ValueError(f"lane width {P.shape[3]} is not whole vectors")  # (the transposes write whole ones)
    if lanes.blocks == 1 and pad[0] >= 0 and pad[1] >= 0 and hb >= x.shape[2] + pad[0] and wb >= x.shape[3] + pad[1]:
        return _pack_planes, (x, P, hb, wb, pad[0], pad[1], coff)
    return _pack, (x, P, lanes.BY, lanes.BX, hb, wb, lanes.bh * stride[0], lanes.bw * stride[1], pad[0], pad[1], coff)


def pack(x: np.ndarray, lanes: Lanes, hb: int, wb: int, stride: Tuple[int, int], pad: Tuple[int, int],
         P: np.ndarray, coff: int, c0: int, c1: int) -> None:
    """Pack channels [c0, c1) of ``x`` into ``P``, on the calling thread (see :func:`pack_task`)."""
    kernel, args = pack_task(x, lanes, hb, wb, stride, pad, P, coff)
    kernel(*args, c0, c1)


@njit(cache=True, nogil=True)
def block_places(shape, BY, BX, bh, bw):  # pragma: no cover - numba
    """Where each lane's block lies in an NCHW output of ``shape`` (N, O, OH, OW), blocked ``BY x BX``
    by ``bh x bw``: its first pixel in channel 0, and its rows and columns inside the output
    (int64, one per lane)."""
    N, O, OH, OW = shape
    count = N * BY * BX
    dst = np.empty(count, dtype=np.int64)
    rows = np.empty(count, dtype=np.int64)
    cols = np.empty(count, dtype=np.int64)
    for l in range(count):
        n, by, bx = _lane_block(l, BY, BX)
        x0 = bx * bw
        dst[l] = (n * O * OH + by * bh) * OW + x0
        rows[l] = min(bh, OH - by * bh)
        cols[l] = min(bw, OW - x0)
    return dst, rows, cols


@njit(cache=True, nogil=True)
def _unpack(Y, ymap, rstride, out, BY, BX, bh, bw, o0, o1):  # pragma: no cover - numba
    """out[n, o, by*bh + y, bx*bw + x] = Y[ymap[o] + (y*bw + x) * rstride + l] for o in [o0, o1),
    inside ``out`` (lane ``l`` of block (by, bx) of image n)."""
    N, O, OH, OW = out.shape
    L = 64 // out.itemsize
    count = N * BY * BX
    of = out.reshape(-1)
    if BY * BX == 1 and bh == OH and bw == OW:
        HW = OH * OW
        nfull = N - N % L
        qfull = HW - HW % L
        for o in range(o0, o1):
            base = ymap[o]
            for n0 in range(0, nfull, L):
                for q0 in range(0, qfull, L):
                    _TRANSPOSE(Y, base + q0 * rstride + n0, rstride, of, (n0 * O + o) * HW + q0, O * HW)
                for q in range(qfull, HW):
                    for i in range(L):
                        of[((n0 + i) * O + o) * HW + q] = Y[base + q * rstride + n0 + i]
            for n in range(nfull, N):
                for q in range(HW):
                    of[(n * O + o) * HW + q] = Y[base + q * rstride + n]
        return
    # blocks: per (channel, block row, L lanes), the lanes' pixels are transposed into a scratch
    # of L rows, each then copied into its block (a scalar load a pixel and lane took 0.085 ms for
    # 4 x 128 x 16x16 and 0.54 for 4 x 16 x 128x128 in Winograd's 32 lanes, this 0.066 and 0.24)
    SW = -(-bw // L) * L
    S = np.empty(L * SW, dtype=Y.dtype)
    dst, rows, cols = block_places(out.shape, BY, BX, bh, bw)
    top = Y.shape[0]
    for o in range(o0, o1):
        base = ymap[o]
        for y in range(bh):
            for g0 in range(0, count, L):
                nl = min(L, count - g0)
                for xx0 in range(0, bw, L):
                    s0 = base + (y * bw + xx0) * rstride + g0
                    if s0 + (L - 1) * rstride + L <= top:  # (rows past the block row read other pixels)
                        _TRANSPOSE(Y, s0, rstride, S, xx0, SW)
                    else:
                        for i in range(min(L, bw - xx0)):
                            for j in range(nl):
                                S[j * SW + xx0 + i] = Y[s0 + i * rstride + j]
                for i in range(nl):
                    l = g0 + i
                    if y < rows[l]:
                        _copy(S, i * SW, of, dst[l] + (o * OH + y) * OW, cols[l])


def unpack_task(Y: np.ndarray, ymap: np.ndarray, rstride: int, out: np.ndarray, lanes: Lanes
                ) -> Tuple[Callable, tuple]:
    """The kernel, and its arguments but the channel range ``o0, o1`` (last), that writes channels
    [o0, o1) of NCHW ``out`` from the flat lane-layout ``Y``: output channel ``o``, pixel
    ``p = y * bw + x`` of a block, lane ``l`` is ``Y[ymap[o] + p * rstride + l]``."""
    return _unpack, (Y, ymap, rstride, out, lanes.BY, lanes.BX, lanes.bh, lanes.bw)
