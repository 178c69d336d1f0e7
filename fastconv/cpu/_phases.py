"""Stride phases of a strided convolution's input gradient (a transposed convolution's forward).

Input pixel ``iy = a * sy + ry - pt`` of a convolution with stride ``sy`` receives the taps
``ky`` with ``ky * dy = ry (mod sy)``, from output rows ``a - e`` where ``e = (ky * dy - ry) / sy``
(likewise for columns).  So the input gradient splits into ``sy x sx`` *phases*, each a
stride-1 correlation of the output gradient with a subset of the taps.  The engine computes
every phase from one padded copy of the output gradient (:func:`axis_phases` gives the
geometry) into a contiguous result, then :func:`scatter` interleaves the phase results into
the NCHW gradient, one plane at a time, so each cache line of the gradient is filled while it
is in L1.
"""
from __future__ import annotations

from typing import List, NamedTuple

import numpy as np
from .._numba import njit

__all__ = ["AxisPhase", "axis_phases", "axis_padding", "scatter"]


class AxisPhase(NamedTuple):
    """One axis of stride phase ``r``: input positions ``first + i * stride`` for ``i < count``,
    reached by ``taps`` (kernel indices) from output-gradient positions ``a0 + i - e[j]``."""

    r: int
    first: int
    a0: int
    count: int
    taps: List[int]
    e: List[int]


def axis_phases(s: int, d: int, p: int, k: int, size: int) -> List[AxisPhase]:
    """The ``s`` phases of one axis: stride ``s``, dilation ``d``, leading padding ``p``, ``k`` taps,
    input length ``size``."""
    out = []
    for r in range(s):
        a0 = -(-(p - r) // s)
        count = max(0, (size - 1 + p - r) // s - a0 + 1)
        taps = [t for t in range(k) if (t * d - r) % s == 0]
        out.append(AxisPhase(r, a0 * s + r - p, a0, count, taps, [(t * d - r) // s for t in taps]))
    return out


def axis_padding(phases: List[AxisPhase], length: int):
    """Zero padding (before, after) of an output-gradient axis of ``length`` that every phase with
    taps reads inside."""
    live = [ph for ph in phases if ph.count > 0 and ph.taps]
    if not live:
        return 0, 0
    lo = min(ph.a0 - max(ph.e) for ph in live)
    hi = max(ph.a0 + ph.count - 1 - min(ph.e) for ph in live)
    return max(0, -lo), max(0, hi - (length - 1))


@njit(cache=True, nogil=True)
def scatter(Z, meta, dx, H, W, sy, sx, t0, t1):  # pragma: no cover - numba
    """Planes [t0, t1) (``n * C + c``) of the flat NCHW ``dx`` (H x W planes) from phase results.

    Row ``i`` of a phase holds the values of ``dx`` row ``y0 + i * sy`` at columns
    ``x0 + j * sx``; each row of ``meta`` (int64) is one phase, or two column phases written
    together: ``(zoff, plane, pitch, y0, x0, rows, cols, zoff2)`` -- plane ``t`` of the phase
    starts at ``Z[zoff + t * plane]``, its rows ``pitch`` apart; ``zoff2 >= 0`` names the phase of
    columns ``x0 + 1 + j * 2`` (``sx == 2``, same layout), interleaved with the first.  Unsigned
    indices (no wrap-around tests), so the interleave vectorises."""
    HW = H * W
    for t in range(t0, t1):
        for g in range(meta.shape[0]):
            zoff, plane, pitch, y0, x0, rows, cols, zoff2 = meta[g]
            cnt = np.uint64(cols)
            for i in range(rows):
                d = np.uint64(t * HW + (y0 + i * sy) * W + x0)
                s = np.uint64(zoff + t * plane + i * pitch)
                if zoff2 >= 0:
                    s2 = np.uint64(zoff2 + t * plane + i * pitch)
                    for j in range(cnt):
                        dx[d + 2 * j] = Z[s + j]
                        dx[d + 2 * j + 1] = Z[s2 + j]
                else:
                    step = np.uint64(sx)
                    for j in range(cnt):
                        dx[d + j * step] = Z[s + j]
