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

import functools
from typing import Optional

import numpy as np
import torch

from .. import _programs
from .._numba import njit
from .._threads import parallel_for
from ._scratch import scratch
from ._simd import gemm_tile

__all__ = ["MR", "NV", "BLOCKINGS", "blocking", "pack_weights", "tap_offsets", "forward_tiles", "forward_rows",
           "forward_rows_chunked"]

#: Output channels per register block.
MR = 8
#: Vectors of lanes per register block.
NV = 2
_GEMM = gemm_tile(MR, NV)
#: Register blockings (output channels, vectors of lanes) of :func:`forward_tiles`: thin
#: layers (fewer output channels per group than ``MR``) would waste most of an 8-channel
#: block, so they hold fewer channels and more vectors (8-16 accumulators).
BLOCKINGS = ((8, 2), (4, 4), (1, 8))
_GEMM4 = gemm_tile(4, 4)
_GEMM1 = gemm_tile(1, 8)


def blocking(og: int):
    """The (output channels, vectors) register block of :func:`forward_tiles` for ``og`` channels per group."""
    if og == 1:
        return BLOCKINGS[2]
    if og <= 4:
        return BLOCKINGS[1]
    return BLOCKINGS[0]


#: The ``bias`` argument of kernels when there is none, by NumPy type character (read only with
#: a ``has_bias`` flag; writeable, as native regions take only such arrays).
NO_BIAS = {np.dtype(t).char: np.zeros(1, dtype=t) for t in (np.float32, np.float64)}


def bias_arg(bias: Optional[np.ndarray], dtype) -> np.ndarray:
    """The ``bias`` argument of a kernel: ``bias``, or :data:`NO_BIAS` of ``dtype`` without one."""
    return NO_BIAS[np.dtype(dtype).char] if bias is None else bias


def blocks(og: int, mr: int = MR) -> int:
    """Register blocks of ``mr`` output channels covering ``og`` channels."""
    return -(-og // mr)


#: Packings at least this large (elements) are strided copies on torch's thread team: about
#: 4x faster than the scalar loop of :func:`_pack_weights` (256 x 256 x 3x3 float32, two
#: threads: 0.10 against 0.42 ms), which keeps the small ones (no call overhead) and views
#: with negative strides (torch has none).
PACK_COPY_MIN = 16384


def pack_weights(w: np.ndarray, groups: int, mr: int = MR) -> np.ndarray:
    """``w`` (O, C/g, kh, kw), any strides (a flipped or transposed view too), packed as
    [g, o-block, (c, ky, kx), mr], zero-padded to whole blocks, flat, in the calling thread's
    scratch slot ``'weights'`` (valid until the next packing)."""
    o, cg, kh, kw = w.shape
    og = o // groups
    obs = blocks(og, mr)
    wp = scratch("weights", groups * obs * mr * w[0].size, w.dtype)
    if groups == 1 and w.transpose(1, 0, 2, 3).flags.c_contiguous:
        # a transposed weight (an input gradient's): copy whole kernels of ``mr`` rows at a time
        parallel_for(_pack_transposed, obs, w.transpose(1, 0, 2, 3).reshape(cg, o, kh * kw), mr, wp, work=wp.size)
        return wp
    if wp.size < PACK_COPY_MIN or min(w.strides) < 0 or _programs.recorder() is not None:
        # (a recorded pass packs in its program: no torch call to replay; hot, 256 x 256 x 3x3
        # float32 on two threads takes 0.19 ms so against 0.12 for torch's copy and its call)
        parallel_for(_pack_weights, groups * obs, w, groups, mr, wp, work=wp.size)
        return wp
    full, rest = divmod(og, mr)
    src = torch.from_numpy(w).unflatten(0, (groups, og))  # (g, og, cg, kh, kw)
    dst = torch.from_numpy(wp).view(groups, obs, cg, kh, kw, mr)
    if full:
        dst[:, :full].copy_(src[:, :full * mr].unflatten(1, (full, mr)).permute(0, 1, 3, 4, 5, 2))
    if rest:
        dst[:, full, ..., :rest].copy_(src[:, full * mr:].permute(0, 2, 3, 4, 1))
        dst[:, full, ..., rest:] = 0
    return wp


@njit(cache=True, nogil=True)
def _pack_weights(w, groups, mr, wp, t0, t1):  # pragma: no cover - numba
    """The blocks [t0, t1) = (group, o-block) pairs of :func:`pack_weights`."""
    O, cg, kh, kw = w.shape
    og = O // groups
    obs = -(-og // mr)
    K = cg * kh * kw
    for task in range(t0, t1):
        g = task // obs
        ob = task - g * obs
        base = task * K * mr
        for m in range(mr):
            o = ob * mr + m
            if o >= og:
                for k in range(K):
                    wp[base + k * mr + m] = 0
                continue
            src = w[g * og + o]
            k = 0
            for c in range(cg):
                for ky in range(kh):
                    for kx in range(kw):
                        wp[base + k * mr + m] = src[c, ky, kx]
                        k += 1


@njit(cache=True, nogil=True)
def _pack_transposed(wt, mr, wp, t0, t1):  # pragma: no cover - numba
    """:func:`pack_weights` of ``wt.transpose(1, 0, 2)`` for the o-blocks [t0, t1), ``wt`` the
    C-contiguous (C, O, taps) original: packed row ``o`` of block ``ob`` is ``wt[:, ob*mr + m]``,
    so each (c, block) copies ``mr`` contiguous kernels into one ``taps x mr`` tile."""
    C, O, T = wt.shape
    for ob in range(t0, t1):
        mv = min(mr, O - ob * mr)
        for c in range(C):
            base = (ob * C + c) * T * mr
            for m in range(mv):
                src = wt[c, ob * mr + m]
                for t in range(T):
                    wp[base + t * mr + m] = src[t]
            for m in range(mv, mr):
                for t in range(T):
                    wp[base + t * mr + m] = 0


def pack_bias(bias, o: int, groups: int, dtype, mr: int = MR) -> np.ndarray:
    """``bias`` (O,) (or zeros) laid out like the packed weights' rows, [g, o-block, mr], flat
    (copied by a kernel: a recorded pass copies it again on every replay, :mod:`fastconv._programs`)."""
    og = o // groups
    bp = np.empty(groups * blocks(og, mr) * mr, dtype=dtype)
    parallel_for(_pack_bias, 1, bias_arg(bias, dtype), bias is not None, og, bp)
    return bp


@njit(cache=True, nogil=True)
def _pack_bias(bias, has_bias, og, bp, t0, t1):  # pragma: no cover - numba
    """bp[g, j] = bias[g * og + j] for j < og (zero past it, and everywhere without a bias)."""
    if t0 >= t1:
        return
    for i in range(bp.size):
        bp[i] = 0
    if has_bias:
        groups = bias.size // og
        ogp = bp.size // groups
        for g in range(groups):
            for j in range(og):
                bp[g * ogp + j] = bias[g * og + j]


@njit(cache=True, nogil=True)
def copy_channels(x, c0, out, t0, t1):  # pragma: no cover - numba
    """out[n] = x[n, c0:c0 + out.shape[1]] for the images [t0, t1) (one group's channels, NCHW)."""
    span = out[0].size
    xf = x.reshape(-1)
    of = out.reshape(-1)
    for n in range(t0, t1):
        src = (n * x.shape[1] + c0) * x.shape[2] * x.shape[3]
        of[n * span:(n + 1) * span] = xf[src:src + span]


@njit(cache=True, nogil=True)
def transpose_groups(w, groups, out, t0, t1):  # pragma: no cover - numba
    """out[g * cg + c, j] = w[g * og + j, c] (kernels copied whole) for the rows [t0, t1) of ``w``
    (O, cg, kh, kw); ``out`` (groups * cg, og, kh, kw)."""
    O, cg = w.shape[0], w.shape[1]
    og = O // groups
    for o in range(t0, t1):
        g = o // og
        j = o - g * og
        for c in range(cg):
            src = w[o, c]
            dst = out[g * cg + c, j]
            for y in range(src.shape[0]):
                for x in range(src.shape[1]):
                    dst[y, x] = src[y, x]


@njit(cache=True, nogil=True)
def select_taps(w, ty, tx, out, t0, t1):  # pragma: no cover - numba
    """out[o, c, i, j] = w[o, c, ty[i], tx[j]] for the rows [t0, t1) of ``w`` (O, cg, kh, kw)."""
    for o in range(t0, t1):
        for c in range(w.shape[1]):
            for i in range(ty.size):
                for j in range(tx.size):
                    out[o, c, i, j] = w[o, c, ty[i], tx[j]]


@njit(cache=True, nogil=True)
def crop_planes(Z, wq, out, t0, t1):  # pragma: no cover - numba
    """out[n, o] = the first ``OW`` columns of each ``wq``-wide row of the flat plane Z[n, o, 0],
    for the planes [t0, t1) (``out`` (N, O, OH, OW))."""
    N, O, OH, OW = out.shape
    for t in range(t0, t1):
        n = t // O
        o = t - n * O
        src = Z[n, o, 0]
        for y in range(OH):
            row = out[n, o, y]
            for x in range(OW):
                row[x] = src[y * wq + x]


@functools.lru_cache(maxsize=1024)
def tap_offsets(groups: int, cg: int, kh: int, kw: int, hb: int, wb: int, dy: int, dx: int, width: int) -> np.ndarray:
    """Offset of tap (c, ky, kx) of each group into the packed input, per lane step, flat [g, k]
    (memoised: callers must not write to it)."""
    c = np.arange(groups * cg, dtype=np.int64).reshape(groups, cg, 1, 1)
    ky = np.arange(kh, dtype=np.int64).reshape(1, 1, kh, 1)
    kx = np.arange(kw, dtype=np.int64).reshape(1, 1, 1, kw)
    return (((c * hb + ky * dy) * wb + kx * dx) * width).reshape(-1)


@njit(cache=True, nogil=True)
def forward_tiles(P, Wp, offs, Bp, Y, obs, K, npix, bw, sy, sx, wb, width, mr, t0, t1):  # pragma: no cover - numba
    """Y[g, ob, p, m, l0:l0+TW] (flat) for the tasks [t0, t1) = (g, ob, lane tile) triples.

    Pixel ``p = oy * bw + ox`` of ``npix``; ``mr`` (8, 4 or 1) picks the register block of
    :data:`BLOCKINGS` (``TW`` = its vectors x lanes; ``width`` is a multiple of it); ``Wp`` and
    ``Bp`` are packed with that ``mr`` ([g, ob, K, mr] and [g, ob, mr]).  All arrays are flat.
    """
    L = 64 // P.itemsize
    nv = 2 if mr == 8 else (4 if mr == 4 else 8)
    TW = nv * L
    ntl = width // TW
    for task in range(t0, t1):
        gob = task // ntl
        l0 = (task - gob * ntl) * TW
        g = gob // obs
        wbase = gob * K * mr
        ybase = gob * npix * mr * width + l0
        for p in range(npix):
            oy = p // bw
            ox = p - oy * bw
            xb = (oy * sy * wb + ox * sx) * width + l0
            if mr == 8:
                _GEMM(P, xb, Wp, wbase, offs, g * K, K, Bp, gob * mr, Y, ybase + p * mr * width, width, mr, TW, 0)
            elif mr == 4:
                _GEMM4(P, xb, Wp, wbase, offs, g * K, K, Bp, gob * mr, Y, ybase + p * mr * width, width, mr, TW, 0)
            else:
                _GEMM1(P, xb, Wp, wbase, offs, g * K, K, Bp, gob * mr, Y, ybase + p * mr * width, width, mr, TW, 0)


@njit(cache=True, nogil=True)
def forward_rows(X, Wp, offs, Bp, out, og, obs, K, img, wq, mr, t0, t1):  # pragma: no cover - numba
    """Direct convolution with the pixels of an output row in the lanes, straight into NCHW ``out``.

    ``X`` (flat) holds each image's (phase-split, padded) input at ``n * img``; output pixel
    ``(oy, ox)`` reads tap ``k`` at ``X[n * img + offs[k] + oy * wq + ox]``, so a tile of
    vectors covers ``TW`` consecutive pixels of one row; the micro-kernel stores it straight
    into ``out`` (masked: a row's partial last tile, a partial o-block).  ``mr`` (8, 4 or 1)
    picks the register block of :data:`BLOCKINGS`, ``Wp``/``Bp`` packed with it.  Tasks [t0, t1)
    are (image, group, o-block, row) quadruples.  ``X`` needs ``TW`` elements of slack past its
    last image.
    """
    N, O, OH, OW = out.shape
    L = 64 // X.itemsize
    nv = 2 if mr == 8 else (4 if mr == 4 else 8)
    TW = nv * L
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
        m = min(mr, og - ob * mr)
        xb = n * img + oy * wq
        dst = ((n * O + g * og + ob * mr) * OH + oy) * OW
        for ox0 in range(0, OW, TW):
            t = min(TW, OW - ox0)
            if mr == 8:
                _GEMM(X, xb + ox0, Wp, gob * K * mr, offs, g * K, K, Bp, gob * mr, of, dst + ox0, plane, m, t, 0)
            elif mr == 4:
                _GEMM4(X, xb + ox0, Wp, gob * K * mr, offs, g * K, K, Bp, gob * mr, of, dst + ox0, plane, m, t, 0)
            else:
                _GEMM1(X, xb + ox0, Wp, gob * K * mr, offs, g * K, K, Bp, gob * mr, of, dst + ox0, plane, m, t, 0)


@njit(cache=True, nogil=True)
def forward_rows_chunked(X, Wp, offs, Bp, out, og, obs, K, img, wq, kchunk, t0, t1):  # pragma: no cover - numba
    """:func:`forward_rows` with the 8-channel block, a task per (image, group, row), and the taps
    taken ``kchunk`` at a time across all the group's o-blocks: a chunk's input lines stay in L1
    while every o-block adds its share (each tile accumulates in ``out``), instead of streaming
    from L2 once per o-block.  Needs whole tiles: ``og`` a multiple of :data:`MR` and rows a
    multiple of the tile (the accumulating micro-kernel reads whole tiles back).
    """
    N, O, OH, OW = out.shape
    L = 64 // X.itemsize
    TW = NV * L
    G = O // og
    of = out.reshape(-1)
    plane = OH * OW
    for task in range(t0, t1):
        n = task // (G * OH)
        r = task - n * (G * OH)
        g = r // OH
        oy = r - g * OH
        xb = n * img + oy * wq
        for ox0 in range(0, OW, TW):
            for k0 in range(0, K, kchunk):
                kc = min(kchunk, K - k0)
                for ob in range(obs):
                    gob = g * obs + ob
                    dst = ((n * O + g * og + ob * MR) * OH + oy) * OW + ox0
                    _GEMM(X, xb + ox0, Wp, (gob * K + k0) * MR, offs, g * K + k0, kc, Bp, gob * MR, of, dst, plane,
                          MR, TW, k0 > 0)
