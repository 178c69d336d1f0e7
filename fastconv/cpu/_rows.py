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

__all__ = ["Rows", "plan_rows", "pack_rows", "tap_offsets_rows"]


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


@njit(cache=True, nogil=True)
def _pack_rows(x, X, sy, sx, hq, wq, pt, pl, cols, t0, t1):  # pragma: no cover - numba
    """X[n, c, ry, rx, i, j] = x[n, c, ry + sy*i - pt, rx + sx*j - pl] (zero outside x and from
    padded column ``cols`` on), for the (image, channel) planes [t0, t1).

    Unit-stride rows copy through unsigned flat indices: no negative-index wrap-around test per
    element, so the copy vectorises."""
    N, C, H, W = x.shape
    xf = x.reshape(-1)
    for t in range(t0, t1):
        n = t // C
        c = t - n * C
        for ry in range(sy):
            for rx in range(sx):
                base = (((n * C + c) * sy + ry) * sx + rx) * hq * wq
                for i in range(hq):
                    iy = ry + sy * i - pt
                    d = base + i * wq
                    if iy < 0 or iy >= H:
                        X[d:d + wq] = 0
                        continue
                    if sx == 1:
                        lo = min(max(pl, 0), wq)
                        hi = min(max(min(pl + W, cols), lo), wq)
                        for j in range(lo):
                            X[d + j] = 0
                        dst = np.uint64(d + lo)
                        sb = np.uint64(t * H * W + iy * W + lo - pl)
                        for j in range(np.uint64(hi - lo)):
                            X[dst + j] = xf[sb + j]
                        for j in range(hi, wq):
                            X[d + j] = 0
                    else:  # columns rx + sx*j - pl inside the row and before padded column ``cols``
                        lo = min(max(-((rx - pl) // sx), 0), wq)
                        hi = min(max(min((W - 1 + pl - rx) // sx, (cols - 1 - rx) // sx) + 1, lo), wq)
                        for j in range(lo):
                            X[d + j] = 0
                        dst = np.uint64(d + lo)
                        sb = np.uint64(t * H * W + iy * W + rx + sx * lo - pl)
                        step = np.uint64(sx)
                        for j in range(np.uint64(hi - lo)):
                            X[dst + j] = xf[sb + step * j]
                        for j in range(hi, wq):
                            X[d + j] = 0


def pack_rows(x: np.ndarray, rows: Rows, pad_top: int, pad_left: int, cols: int, parallel,
              slot: str = "pack") -> np.ndarray:
    """The flat row-layout buffer of NCHW ``x``: padded columns from ``cols`` on are zero
    (``parallel(kernel, tasks, *args, work=...)`` runs the copy); in scratch buffer ``slot``."""
    n, c = x.shape[:2]
    X = scratch(slot, n * rows.img + rows.slack, x.dtype)
    X[n * rows.img:] = 0
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
