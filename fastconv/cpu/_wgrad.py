"""Weight gradients by register-blocked dot products (:func:`fastconv.cpu._simd.dot_tile`).

``dW[o, k] = sum_s sum_l G[o, s, l] * X[k, s, l]``: the output gradient of channel ``o`` and
the input seen by tap ``k = (c, ky, kx)``, both laid out so that one reduction step ``s`` is
one vector of lanes at a constant offset per channel (``G``) or per tap (``X``).  The steps
come in chunks small enough for the input they read to stay in L2 while every tile of
``dW`` takes its share; a task is one block of ``MRW`` output channels (all taps, all
chunks, in a fixed order), so the result does not depend on how tasks are spread over
threads.  Channels and taps are padded to
whole tiles (zero gradient rows; tap offsets repeated), and the caller crops.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ._simd import dot_tile, lane_sums

__all__ = ["MRW", "NRW", "weight_tiles", "pad_offsets"]

#: Output channels per weight-gradient tile.
MRW = 4
#: Taps per weight-gradient tile.
NRW = 6
#: Reduction steps (vectors of lanes) per chunk: the o-block's gradient rows of a chunk,
#: MRW x CHUNK vectors, stay in L1 while the chunk's taps stream past them.
CHUNK = 64
_DOT = dot_tile(MRW, NRW)


def pad_offsets(offs: np.ndarray, groups: int, k: int) -> np.ndarray:
    """Tap offsets [g, k] padded to [g, whole NRW tiles] by repeating the last tap."""
    kp = -(-k // NRW) * NRW
    out = np.empty((groups, kp), dtype=np.int64)
    o = offs.reshape(groups, k)
    out[:, :k] = o
    out[:, k:] = o[:, -1:]
    return out.reshape(-1)


@njit(cache=True, nogil=True)
def weight_tiles(G, gstride, X, offs, sg, sx, chunk, out, ogp, kp, t0, t1):  # pragma: no cover - numba
    """out[(g*ogp + o) * kp + k] = the reduction above, for the o-blocks [t0, t1) = (g, o-block) pairs.

    ``G``'s channel ``g*ogp + o`` starts at ``(g*ogp + o) * gstride``; ``offs`` is flat [g, kp];
    ``sg``/``sx`` are the steps (offsets added to G's channel start and to the tap offset),
    taken ``chunk`` at a time: the o-block's gradient rows for a chunk stay in L1 while every
    k-block passes over them.  Lane accumulators live in a per-task buffer until the end.
    """
    L = 64 // G.itemsize
    obs = ogp // MRW
    kbs = kp // NRW
    S = sg.shape[0]
    acc = np.empty(kbs * MRW * NRW * L, dtype=G.dtype)
    tile = np.empty(MRW * NRW, dtype=G.dtype)
    for task in range(t0, t1):
        g = task // obs
        o = g * ogp + (task - g * obs) * MRW
        acc[:] = 0
        for s0 in range(0, S, chunk):
            s1 = min(S, s0 + chunk)
            a = sg[s0:s1]
            b = sx[s0:s1]
            for kb in range(kbs):
                _DOT(G, o * gstride, gstride, X, 0, offs, g * kp + kb * NRW, a, b, s1 - s0, acc,
                     kb * MRW * NRW * L)
        for kb in range(kbs):
            tile[:] = 0
            lane_sums(acc[kb * MRW * NRW * L:(kb + 1) * MRW * NRW * L], tile)
            for m in range(MRW):
                for r in range(NRW):
                    out[(o + m) * kp + kb * NRW + r] = tile[m * NRW + r]
