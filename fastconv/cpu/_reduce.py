"""Per-channel reductions shared by the CPU kernels: float64 sums over the ``N`` planes of one
channel of ``(N, C, HW)`` arrays, vectorised (:func:`fastconv.cpu._simd.moments`) and in a fixed
order, so that they do not depend on the threads."""
from __future__ import annotations

from .._numba import njit
from ._simd import moments

__all__ = ["channel_moments", "finite", "finite_chunks"]

_moments = moments()


@njit(cache=True, nogil=True)
def channel_moments(a, b, c, sa, sb, acc):  # pragma: no cover - numba
    """``(sum(a - sa), sum((a - sa) * (b - sb)))`` over channel ``c`` of the ``(N, C, HW)`` arrays
    ``a`` and ``b``, in float64, in a fixed order."""
    L = acc.shape[0] // 2
    N, _, HW = a.shape
    nv = HW // L
    acc[:] = 0.0
    t0 = 0.0
    t1 = 0.0
    for n in range(N):
        ap = a[n, c]
        bp = b[n, c]
        _moments(ap, 0, bp, 0, nv, sa, sb, acc)
        for i in range(nv * L, HW):
            d = ap[i] - sa
            t0 += d
            t1 += d * (bp[i] - sb)
    s0 = 0.0
    s1 = 0.0
    for l in range(L):
        s0 += acc[l]
        s1 += acc[L + l]
    return s0 + t0, s1 + t1


@njit(cache=True, nogil=True)
def finite(a):  # pragma: no cover - numba
    """Whether every element of the flat array ``a`` is finite (one vectorised pass; float32
    magnitudes up to 3.4e38, float64 up to 1.7e308)."""
    ok = True
    for i in range(a.shape[0]):
        v = a[i]
        ok &= abs(v) <= 3.4e38 if a.itemsize == 4 else abs(v) <= 1.7e308
    return ok


@njit(cache=True, nogil=True)
def finite_chunks(a, chunk, ok, t0, t1):  # pragma: no cover - numba
    """``ok[t] = finite(a[t * chunk:(t + 1) * chunk])`` for the chunks [t0, t1) of the flat ``a``."""
    for t in range(t0, t1):
        ok[t] = finite(a[t * chunk:(t + 1) * chunk])
