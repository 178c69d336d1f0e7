"""Direct convolution with output channels in the lanes: pixels broadcast against channel vectors.

The forward twin of the gathered weight gradient (:func:`fastconv.cpu._wgrad.weight_gather`).
For output pixel ``p`` (image, row, column) of the row-layout input ``X``
(:mod:`fastconv.cpu._rows`, one phase whatever the stride) and output channel ``o``,

    Y[p, o] = sum_k X[poff[p] + offs[k]] * Wp[o-tile, k, o]

over the taps ``k = (ky, c, kx)`` -- kernel rows outermost, so that the kernel rows a tile's
output rows read only in the padding (the borders of an input gradient's "full" correlation)
are a range it skips -- a GEMM whose left operand is read in place (one scalar per pixel and tap, broadcast) and
whose right operand is the weights packed ``[o-tile, k, TW]`` (:func:`fastconv.cpu._direct.pack_weights`
with ``TW``-channel blocks).  A register tile is ``MRP`` pixels x ``NVO`` vectors of channels
(:func:`fastconv.cpu._simd.gather_tile`), so no lane ever computes a padding column or a stray
pixel: the layout suits narrow planes (8x8, 14x14, 16x16) of deep layers, which the pixel-lane
layouts fill only partly.  The result is channels-last scratch; :func:`unpack` transposes it to
NCHW and adds the bias.  Every output element is one tile row's sum over the taps in order,
whatever the threads.
"""
from __future__ import annotations

import functools
from typing import Tuple

import numpy as np
from .._numba import njit

from ._simd import gather_tile, transpose_tile

__all__ = ["MRP", "NVO", "KCHUNK", "pixels", "pixel_offsets", "steps", "tap_ranges", "forward", "unpack"]

#: Output pixels per register tile.
MRP = 8
#: Vectors of output channels per register tile.
NVO = 2
#: Taps per pass over a task's pixel tiles: their ``KCHUNK x NVO`` weight vectors (32 KB in
#: float32) stay in L1 while every pixel tile of the task adds its share.
KCHUNK = 256
_TILE = gather_tile(MRP, NVO)
#: The one-vector tile for thin layers (no padding channels), twice the pixels.
_TILE1 = gather_tile(2 * MRP, 1)


def pixels(nv: int) -> int:
    """Output pixels per tile of ``nv`` vectors of channels (16 accumulators either way)."""
    return MRP if nv == NVO else 2 * MRP
_TRANSPOSE = transpose_tile()


@functools.lru_cache(maxsize=256)
def pixel_offsets(n: int, oh: int, ow: int, img: int, wq: int, sy: int = 1, sx: int = 1,
                  multiple: int = MRP) -> np.ndarray:
    """Start of each output pixel ``(image, oy, ox)`` in an unsplit row-layout input (one phase:
    the kernels read single elements, so strides need no phase split), ``n*img + oy*sy*wq +
    ox*sx``, padded to a multiple of ``multiple`` by repeating the last pixel (memoised: callers
    must not write)."""
    b, y, x = np.meshgrid(np.arange(n), np.arange(oh), np.arange(ow), indexing="ij")
    p = (b * img + y * (sy * wq) + x * sx).reshape(-1).astype(np.int64)
    pad = -p.size % multiple
    return np.concatenate([p, np.full(pad, p[-1], dtype=np.int64)])


@functools.lru_cache(maxsize=256)
def steps(k: int, tw: int) -> np.ndarray:
    """Offsets ``k * tw`` of each tap's weight vectors within an o-tile (memoised: do not write)."""
    return np.arange(k, dtype=np.int64) * tw


@functools.lru_cache(maxsize=256)
def tap_ranges(n: int, oh: int, ow: int, sy: int, dy: int, kh: int, pad_top: int, h: int, per_row: int,
               flip: bool, tile: int = MRP) -> Tuple[np.ndarray, np.ndarray]:
    """For each tile of ``tile`` pixels, the taps ``[k0, k1)`` (ordered ``(ky, c, kx)``, ``per_row = c * kw``
    taps per kernel row) whose kernel rows read inside the image for some pixel of the tile:
    the rest read zero padding.  Kernel row ``ky`` (position in the packed weights) reads input
    row ``oy*sy + ky'*dy - pad_top`` with ``ky' = kh-1-ky`` when ``flip``.  (Memoised: do not write.)"""
    y = (np.arange(n * oh * ow) // ow) % oh
    pad = -y.size % tile
    y = np.concatenate([y, np.full(pad, y[-1])]).reshape(-1, tile)
    ky = np.arange(kh)
    eff = kh - 1 - ky if flip else ky
    iy = y[:, :, None] * sy + eff[None, None, :] * dy - pad_top  # (tiles, MRP, kh)
    live = ((iy >= 0) & (iy < h)).any(axis=1)  # (tiles, kh): a kernel row some pixel needs
    first = np.where(live.any(axis=1), live.argmax(axis=1), 0)
    last = np.where(live.any(axis=1), kh - live[:, ::-1].argmax(axis=1), 0)
    return (first * per_row).astype(np.int64), (last * per_row).astype(np.int64)


@njit(cache=True, nogil=True)
def forward(X, poff, offs, Wp, sb, K, tk0, tk1, Y, opad, pchunks, nv, t0, t1):  # pragma: no cover - numba
    """The tasks [t0, t1) = (o-tile, pixel chunk) pairs of ``Y[p, o] = sum_k X[poff[p] + offs[k]] * Wp``.

    ``Y`` is ``[pixels, opad]`` flat; ``Wp`` holds ``opad / TW`` o-tiles of ``K x TW`` (``TW = nv``
    vectors, tiles of :func:`pixels` pixels); ``sb`` is :func:`steps`.  Pixel tile ``t`` sums the taps ``[tk0[t], tk1[t])`` only (:func:`tap_ranges`:
    the others read padding), and is zero when that range is empty.  A task's pixel tiles are a
    contiguous share of the ``poff.size / MRP`` tiles; it passes over its taps ``KCHUNK`` at a
    time (a tile accumulates in ``Y``).
    """
    L = 64 // X.itemsize
    TW = nv * L
    mrp = MRP if nv == NVO else 2 * MRP
    ntiles = poff.shape[0] // mrp
    for task in range(t0, t1):
        ot = task // pchunks
        c = task - ot * pchunks
        p0 = ntiles * c // pchunks
        p1 = ntiles * (c + 1) // pchunks
        for pt in range(p0, p1):
            if tk0[pt] >= tk1[pt]:
                for m in range(mrp):
                    row = (pt * mrp + m) * opad + ot * TW
                    Y[row:row + TW] = 0
        for k0 in range(0, K, KCHUNK):
            k1 = min(K, k0 + KCHUNK)
            for pt in range(p0, p1):
                lo = max(k0, tk0[pt])
                hi = min(k1, tk1[pt])
                if lo < hi and nv == NVO:
                    _TILE(X, 0, poff, pt * mrp, offs[lo:hi], Wp, ot * K * TW, sb[lo:hi], hi - lo, Y,
                          pt * mrp * opad + ot * TW, opad, lo > tk0[pt])
                elif lo < hi:
                    _TILE1(X, 0, poff, pt * mrp, offs[lo:hi], Wp, ot * K * TW, sb[lo:hi], hi - lo, Y,
                           pt * mrp * opad + ot * TW, opad, lo > tk0[pt])


@njit(cache=True, nogil=True)
def unpack(Y, opad, out, bias, has_bias, t0, t1):  # pragma: no cover - numba
    """``out[n, o, p] = Y[n*HW + p, o] (+ bias[o])`` for the tasks [t0, t1) = (image, block of ``L``
    channels) pairs; whole ``L x L`` blocks go through register transposes."""
    N, O, H, W = out.shape
    HW = H * W
    L = 64 // Y.itemsize
    obs = -(-O // L)
    of = out.reshape(-1)
    pfull = HW - HW % L
    for task in range(t0, t1):
        n = task // obs
        o0 = (task - n * obs) * L
        o1 = min(O, o0 + L)
        src = n * HW * opad
        dst = n * O * HW
        if o1 - o0 == L:
            for p0 in range(0, pfull, L):
                _TRANSPOSE(Y, src + p0 * opad + o0, opad, of, dst + o0 * HW + p0, HW)
            for o in range(o0, o1):
                for p in range(pfull, HW):
                    of[dst + o * HW + p] = Y[src + p * opad + o]
        else:
            for o in range(o0, o1):
                for p in range(HW):
                    of[dst + o * HW + p] = Y[src + p * opad + o]
        if has_bias:
            for o in range(o0, o1):
                v = bias[o]
                for p in range(dst + o * HW, dst + (o + 1) * HW):
                    of[p] += v
