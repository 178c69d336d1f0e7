"""Direct convolution on the lane layout, register-blocked through :func:`fastconv.cpu._simd.gemm_tile`.

For an input packed as ``P[c, y, x, lane]`` (:mod:`fastconv.cpu._lanes`), output pixel
``(oy, ox)`` of output channel ``o`` in every lane is

    Y[o, oy, ox, :] = sum_{c, ky, kx} w[o, c, ky, kx] * P[c, oy*sy + ky*dy, ox*sx + kx*dx, :]

-- a GEMM over ``k = (c, ky, kx)`` whose right-hand side rows are the packed input at a
constant offset per tap (``offs[k]``) from the pixel's base.  The micro-kernel keeps
``MR`` output channels x ``NV`` vectors of lanes in registers for the whole sum; weights
are packed ``[group, o-block, k, MR]`` (zero rows pad the last block).  Tasks are
(group, o-block, lane tile) triples, so threads never write the same output.
"""
from __future__ import annotations

import numpy as np
from .._numba import njit

from ._simd import gemm_tile

__all__ = ["MR", "NV", "pack_weights", "tap_offsets", "forward_tiles"]

#: Output channels per register block.
MR = 8
#: Vectors of lanes per register block.
NV = 2
_GEMM = gemm_tile(MR, NV)


def blocks(og: int) -> int:
    """Register blocks of ``MR`` output channels covering ``og`` channels."""
    return -(-og // MR)


def pack_weights(w: np.ndarray, groups: int) -> np.ndarray:
    """``w`` (O, C/g, kh, kw) packed as [g, o-block, (c, ky, kx), MR], zero-padded to whole blocks, flat."""
    o = w.shape[0]
    og = o // groups
    obs = blocks(og)
    k = w[0].size
    wp = np.zeros((groups, obs * MR, k), dtype=w.dtype)
    wp[:, :og] = w.reshape(groups, og, k)
    return np.ascontiguousarray(wp.reshape(groups, obs, MR, k).transpose(0, 1, 3, 2)).reshape(-1)


def pack_bias(bias, o: int, groups: int, dtype) -> np.ndarray:
    """``bias`` (O,) (or zeros) laid out like the packed weights' rows, [g, o-block, MR], flat."""
    og = o // groups
    bp = np.zeros((groups, blocks(og) * MR), dtype=dtype)
    if bias is not None:
        bp[:, :og] = bias.reshape(groups, og)
    return bp.reshape(-1)


def tap_offsets(groups: int, cg: int, kh: int, kw: int, hb: int, wb: int, dy: int, dx: int, width: int) -> np.ndarray:
    """Offset of tap (c, ky, kx) of each group into the packed input, per lane step, flat [g, k]."""
    c = np.arange(groups * cg, dtype=np.int64).reshape(groups, cg, 1, 1)
    ky = np.arange(kh, dtype=np.int64).reshape(1, 1, kh, 1)
    kx = np.arange(kw, dtype=np.int64).reshape(1, 1, 1, kw)
    return (((c * hb + ky * dy) * wb + kx * dx) * width).reshape(-1)


@njit(cache=True, nogil=True)
def forward_tiles(P, Wp, offs, Bp, Y, obs, K, npix, bw, sy, sx, wb, width, t0, t1):  # pragma: no cover - numba
    """Y[g, ob, p, m, l0:l0+TW] (flat) for the tasks [t0, t1) = (g, ob, lane tile) triples.

    Pixel ``p = oy * bw + ox`` of ``npix``; ``Bp`` holds the bias packed like the weights' rows
    ([g, ob, MR]).  ``P``, ``Wp``, ``Bp``, ``Y`` are flat.
    """
    L = 64 // P.itemsize
    TW = NV * L
    ntl = width // TW
    for task in range(t0, t1):
        gob = task // ntl
        l0 = (task - gob * ntl) * TW
        g = gob // obs
        wbase = gob * K * MR
        ybase = gob * npix * MR * width + l0
        for p in range(npix):
            oy = p // bw
            ox = p - oy * bw
            _GEMM(P, (oy * sy * wb + ox * sx) * width + l0, Wp, wbase, offs, g * K, K, Bp, gob * MR, Y,
                  ybase + p * MR * width, width, MR, TW, 0)


@njit(cache=True, nogil=True)
def forward_rows(X, Wp, offs, Bp, out, og, obs, K, img, wq, t0, t1):  # pragma: no cover - numba
    """Direct convolution with the pixels of an output row in the lanes, straight into NCHW ``out``.

    ``X`` (flat) holds each image's (phase-split, padded) input at ``n * img``; output pixel
    ``(oy, ox)`` reads tap ``k`` at ``X[n * img + offs[k] + oy * wq + ox]``, so a tile of ``NV``
    vectors covers ``TW`` consecutive pixels of one row; the micro-kernel stores it straight
    into ``out`` (masked: a row's partial last tile, a partial o-block).  Tasks [t0, t1) are (image, group, o-block, row)
    quadruples.  ``X`` needs ``TW`` elements of slack past its last image.
    """
    N, O, OH, OW = out.shape
    L = 64 // X.itemsize
    TW = NV * L
    G = O // og
    of = out.reshape(-1)
    plane = OH * OW
    for task in range(t0, t1):
        n = task // (G * obs * OH)
        r = task - n * (G * obs * OH)
        gob = r // OH
        oy = r - gob * OH
        g = gob // obs
        ob = gob - g * obs
        mr = min(MR, og - ob * MR)
        xb = n * img + oy * wq
        dst = ((n * O + g * og + ob * MR) * OH + oy) * OW
        for ox0 in range(0, OW, TW):
            _GEMM(X, xb + ox0, Wp, gob * K * MR, offs, g * K, K, Bp, gob * MR, of, dst + ox0, plane, mr,
                  min(TW, OW - ox0), 0)
