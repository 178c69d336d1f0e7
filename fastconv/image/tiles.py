"""Register-blocked direct correlation for float32/float64 kernels of 2 to 16 rows.

Same problem as :func:`fastconv.image.engine.correlate_valid_ext`: a valid cross-correlation
of the boundary extension of ``a`` (``ext[r, c] = a[r - top, c - left]``, see
:mod:`fastconv.image.boundary`) with ``k`` (reversed along both axes when ``flip``),

    out[i, j] = sum_{p, q} ext[i + p, j + q] * k[p, q],

only faster, by keeping eight output rows in registers:

* The extension is built tile by tile (``BAND`` output rows x up to ``PITCH - Q + 1``
  columns) into a buffer of the fixed row pitch ``PITCH``.  A compile-time pitch makes all
  the rows one pointer group for LLVM's alias checks, so the loops below vectorise; it is
  not a power of two, whose rows would fight over the same L1 sets.
* For each tap column ``q``, one unit-stride pass over the tile's columns loads the
  ``P + 7`` source rows once and adds each into the up to ``P`` of the eight output rows it
  feeds (the weights ``k[:, q]`` sit in registers): 0.3-0.4 loads per multiply-add
  against 0.7-1.1 for the strip kernels; 1.1-1.6x faster than them on 64-512 px images
  (20-25 GMAC/s in float64, 35-45 in float32 on the 2-vCPU znver4 machine).
* The kernel height ``P`` is a compile-time constant, so that LLVM unrolls the tap loop
  (in two parts of at most eight rows) and keeps the accumulators in registers: one
  specialisation per (P, dtype), compiled on first use (~1.5 s) and cached on disk (the
  closure captures only the integer P; Numba would not cache a closure over another
  jitted function).

Only genuine taps are multiplied, so infinities and NaNs propagate as in SciPy's direct sum;
float32 sums in float32.  Rows past the last output row of a tile are computed from the
continued extension and dropped.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional

import numpy as np
from .._numba import njit
from numba.np.unsafe.ndarray import to_fixed_tuple

from .boundary import extend_block
from .plan import tile_applies

#: Row pitch (elements) of the tile buffers: 256 plus one 64-byte line of float64, see above.
PITCH = 264
#: Output rows held in registers per pass.
ROWS = 8
#: Output rows per tile (a multiple of ROWS): the tile buffer stays under glibc's mmap
#: threshold (fresh mappings would page-fault on every call).
BAND = 32


def _make(P: int):
    S1 = min(P, 8)  # the tap loop in two unrolled parts: rows [0, S1) and [S1, P)

    @njit(cache=True, nogil=True)
    def correlate_tiles(a, k, flip, top, left, boundary, fill, out):  # pragma: no cover - numba
        OH, OW = out.shape
        Q = k.shape[1]
        TW = PITCH - Q + 1
        T = np.empty((BAND + P - 1, PITCH), dtype=out.dtype)
        A = np.empty((ROWS, PITCH), dtype=out.dtype)
        kt = np.ascontiguousarray((k[::-1, ::-1] if flip else k).T)  # kt[q] = tap column q
        for c0 in range(0, OW, TW):
            tw = min(TW, OW - c0)
            for b0 in range(0, OH, BAND):
                nb = (min(BAND, OH - b0) + ROWS - 1) // ROWS
                he, we = nb * ROWS + P - 1, tw + Q - 1
                extend_block(a, T, top - b0, left - c0, boundary, fill, he, we)
                for blk in range(nb):
                    i0 = blk * ROWS
                    for o in range(ROWS):
                        for j in range(tw):
                            A[o, j] = 0
                    for q in range(Q):
                        w = to_fixed_tuple(kt[q], P)
                        uq = np.uint64(q)
                        # unsigned column index: no negative-index wrap-around in the loop
                        for j in range(np.uint64(tw)):
                            jq = j + uq
                            a0 = A[0, j]
                            a1 = A[1, j]
                            a2 = A[2, j]
                            a3 = A[3, j]
                            a4 = A[4, j]
                            a5 = A[5, j]
                            a6 = A[6, j]
                            a7 = A[7, j]
                            for p in range(S1):
                                wp = w[p]
                                a0 += T[i0 + p, jq] * wp
                                a1 += T[i0 + p + 1, jq] * wp
                                a2 += T[i0 + p + 2, jq] * wp
                                a3 += T[i0 + p + 3, jq] * wp
                                a4 += T[i0 + p + 4, jq] * wp
                                a5 += T[i0 + p + 5, jq] * wp
                                a6 += T[i0 + p + 6, jq] * wp
                                a7 += T[i0 + p + 7, jq] * wp
                            # the same body again, written out: folded into an inline helper,
                            # LLVM no longer unrolled and vectorised it (3.5x slower at 15 rows)
                            for p in range(S1, P):
                                wp = w[p]
                                a0 += T[i0 + p, jq] * wp
                                a1 += T[i0 + p + 1, jq] * wp
                                a2 += T[i0 + p + 2, jq] * wp
                                a3 += T[i0 + p + 3, jq] * wp
                                a4 += T[i0 + p + 4, jq] * wp
                                a5 += T[i0 + p + 5, jq] * wp
                                a6 += T[i0 + p + 6, jq] * wp
                                a7 += T[i0 + p + 7, jq] * wp
                            A[0, j] = a0
                            A[1, j] = a1
                            A[2, j] = a2
                            A[3, j] = a3
                            A[4, j] = a4
                            A[5, j] = a5
                            A[6, j] = a6
                            A[7, j] = a7
                    for o in range(min(ROWS, OH - b0 - i0)):
                        dst = out[b0 + i0 + o, c0:]
                        src = A[o]
                        for j in range(tw):
                            dst[j] = src[j]

    return correlate_tiles


_kernels: Dict[int, Callable] = {}


def tile_kernel(shape, dtype) -> Optional[Callable]:
    """The register-blocked kernel for a kernel of ``shape`` (P, Q) and ``dtype``, or None where
    :func:`fastconv.image.plan.tile_applies` says the strip kernels apply.  Call it as
    ``kern(a, k, flip, top, left, boundary, fill, out)`` with C-contiguous ``a``, ``k`` and
    ``out`` of ``dtype`` and ``fill`` a scalar of it."""
    P, Q = shape
    if not tile_applies(P, Q, dtype):
        return None
    kern = _kernels.get(P)
    if kern is None:
        kern = _kernels[P] = _make(P)
    return kern
