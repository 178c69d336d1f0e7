"""The row layout of the CPU convolution engine: the pixels of an output row in the vector lanes.

For images wide enough to fill vectors (about 24 pixels and up), each image is copied
once into a zero-padded buffer, split into ``sy x sx`` stride phases:

    X[n, c, ry, rx, i, j] = x_pad[n, c, ry + sy * i, rx + sx * j]

so that output pixel ``(oy, ox)`` reads tap ``(ky, kx)`` at phase ``(ky*dy % sy, kx*dx % sx)``,
position ``(oy + ky*dy // sy, ox + kx*dx // sx)``: a constant offset per tap from
``oy * wq + ox``, at unit stride along the row whatever the convolution's stride.  A
vector of lanes that runs past the end of an output row reads the next row or zeros;
the engine drops (forward) or zeroes (weight gradient) those lanes.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from .._numba import njit
from ._scratch import scratch

__all__ = ["Rows", "plan_rows", "pack_plane", "pack_rows", "tap_offsets_rows"]


@dataclass(frozen=True)
class Rows:
    """Geometry of a row-layout buffer: ``(sy, sx)`` phases of ``(hq, wq)`` pixels per channel,
    ``img`` elements per image, ``slack`` zero elements after the last image."""

    sy: int
    sx: int
    hq: int
    wq: int
    img: int
    slack: int


def plan_rows(c: int, rows_needed: int, cols_needed: int, stride, min_wq: int, slack: int) -> Rows:
    """Geometry for ``c`` channels whose convolution reads ``rows_needed x cols_needed`` padded
    pixels; each phase row is at least ``min_wq`` wide."""
    sy, sx = stride
    hq = -(-rows_needed // sy)
    wq = max(-(-cols_needed // sx), min_wq)
    return Rows(sy, sx, hq, wq, c * sy * sx * hq * wq, slack)


@njit(cache=True, nogil=True, inline="always")
def pack_plane(xf, src, H, W, X, base, sy, sx, hq, wq, pt, pl, cols, R):  # pragma: no cover - numba
    """X[base + ((ry * sx + rx) * hq + i) * wq + j] = plane[ry + sy*i - pt, rx + sx*j - pl] of the
    H x W plane at ``xf[src:]`` (flat), zero outside it and from padded column ``cols`` on;
    ``R`` is a row of at least ``2 * wq`` elements of scratch.

    Each column phase's span of columns inside the plane is worked out once, not per row (its
    floor divisions cost more than a short row's copy).  Unit-stride rows copy through unsigned
    flat indices (no wrap-around test per element), so the copies vectorise; with stride 2 each
    row is copied, padded, into ``R`` and split into its two phases in one loop (two vector loads
    and shuffles: a phase alone compiled to gathers)."""
    if sx == 2:
        lo = min(max(pl, 0), 2 * wq)  # the padded row's columns inside the plane: [lo, hi)
        hi = min(max(min(pl + W, cols), lo), 2 * wq)
        R[:lo] = 0
        R[hi:2 * wq] = 0
        n = np.uint64(hi - lo)
        for ry in range(sy):
            p0 = base + ry * 2 * hq * wq
            for i in range(hq):
                iy = ry + sy * i - pt
                d0 = p0 + i * wq
                d1 = d0 + hq * wq
                if iy < 0 or iy >= H:
                    X[d0:d0 + wq] = 0
                    X[d1:d1 + wq] = 0
                    continue
                sb = np.uint64(src + iy * W + lo - pl)
                for j in range(n):
                    R[np.uint64(lo) + j] = xf[sb + j]
                for j in range(np.uint64(wq)):
                    X[np.uint64(d0) + j] = R[np.uint64(2) * j]
                    X[np.uint64(d1) + j] = R[np.uint64(2) * j + np.uint64(1)]
        return
    for rx in range(sx):
        # columns rx + sx*j - pl inside the row and before padded column ``cols``: j in [lo, hi)
        if sx == 1:  # (no divisions: a plane of 3 x 32x32 pixels costs about as much as four)
            lo = min(max(pl, 0), wq)
            hi = min(max(min(pl + W, cols), lo), wq)
        else:
            lo = min(max(-((rx - pl) // sx), 0), wq)
            hi = min(max(min((W - 1 + pl - rx) // sx, (cols - 1 - rx) // sx) + 1, lo), wq)
        n = np.uint64(hi - lo)
        for ry in range(sy):
            pbase = base + (ry * sx + rx) * hq * wq
            for i in range(hq):
                iy = ry + sy * i - pt
                d = pbase + i * wq
                if iy < 0 or iy >= H:
                    X[d:d + wq] = 0
                    continue
                for j in range(lo):
                    X[d + j] = 0
                dst = np.uint64(d + lo)
                sb = np.uint64(src + iy * W + rx + sx * lo - pl)
                if sx == 1:
                    for j in range(n):
                        X[dst + j] = xf[sb + j]
                else:
                    step = np.uint64(sx)
                    for j in range(n):
                        X[dst + j] = xf[sb + step * j]
                for j in range(hi, wq):
                    X[d + j] = 0


@njit(cache=True, nogil=True)
def _pack_rows(x, X, sy, sx, hq, wq, pt, pl, cols, t0, t1):  # pragma: no cover - numba
    """X[n, c, ry, rx, i, j] = x[n, c, ry + sy*i - pt, rx + sx*j - pl] (zero outside x and from
    padded column ``cols`` on), for the (image, channel) planes [t0, t1) (:func:`pack_plane`); the
    task of the last plane zeroes the slack after the planes."""
    N, C, H, W = x.shape
    xf = x.reshape(-1)
    R = np.empty(2 * wq, dtype=x.dtype)
    for t in range(t0, t1):
        pack_plane(xf, t * H * W, H, W, X, t * sy * sx * hq * wq, sy, sx, hq, wq, pt, pl, cols, R)
    if t1 == N * C:
        for i in range(N * C * sy * sx * hq * wq, X.size):
            X[i] = 0


def pack_rows(x: np.ndarray, rows: Rows, pad_top: int, pad_left: int, cols: int, parallel,
              slot: str = "pack") -> np.ndarray:
    """The flat row-layout buffer of NCHW ``x``: padded columns from ``cols`` on are zero
    (``parallel(kernel, tasks, *args, work=...)`` runs the copy); in scratch buffer ``slot``."""
    n, c = x.shape[:2]
    X = scratch(slot, n * rows.img + rows.slack, x.dtype)
    parallel(_pack_rows, n * c, x, X, rows.sy, rows.sx, rows.hq, rows.wq, pad_top, pad_left, cols, work=X.size)
    return X


@functools.lru_cache(maxsize=1024)
def tap_offsets_rows(rows: Rows, groups: int, cg: int, kh: int, kw: int, dy: int, dx: int) -> np.ndarray:
    """Offset of tap (c, ky, kx) of each group from an output pixel's ``oy * wq + ox``, flat [g, k]
    (memoised: callers must not write to it)."""
    c = np.arange(groups * cg, dtype=np.int64).reshape(-1, 1, 1)
    ay, ry = np.divmod(np.arange(kh, dtype=np.int64) * dy, rows.sy)
    ax, rx = np.divmod(np.arange(kw, dtype=np.int64) * dx, rows.sx)
    phase = (c * rows.sy + ry.reshape(1, -1, 1)) * rows.sx + rx.reshape(1, 1, -1)
    return (phase * rows.hq * rows.wq + ay.reshape(1, -1, 1) * rows.wq + ax.reshape(1, 1, -1)).reshape(-1)
