"""Fused Numba kernels for SSIM statistics and their gradient (CPU backend).

Backend contract
----------------
:class:`fastconv.ops.ssim.Backend`: ``ssim_stats_forward`` and ``ssim_stats_backward``, shared
with :mod:`fastconv.cuda.ssim`.  The window is :func:`fastconv._window.gaussian_window`.

Algorithm
---------
Each (n, c) plane is streamed row by row through ring buffers of ``win_size`` rows
(so the working set stays in cache); ranges of planes run on threads through
:mod:`fastconv._threads` (``nogil`` kernels, no ``prange``: see there why).
The forward pass filters the five maps ``x, y, x*x, y*y, x*y`` horizontally in one
sweep per row (five accumulators per column), then vertically, and evaluates the
SSIM/cs maps on the fly, accumulating them per column in float64 (a per-column vector sum keeps the
loops vectorisable without fastmath).  The backward pass recomputes the moments,
forms ``dL/d(mu_x, mu_y, E[x^2]=E[y^2] coefficient, E[xy])`` at every valid
position, applies the transposed separable filter (vertical scatter then
horizontal scatter) and combines the four maps into ``grad_x`` and ``grad_y``.
Moments accumulate in the input dtype (as pytorch-msssim's float convolutions).
"""
from __future__ import annotations

from typing import Tuple

import numpy as np
import torch
from .._numba import njit

from .._threads import num_threads, parallel_ranges
from .._window import gaussian_window
from . import _outputs
from ._numpy import view as _np

#: The backend contract (:class:`fastconv.ops.ssim.Backend`); everything else here is private.
__all__ = ["ssim_stats_forward", "ssim_stats_backward"]


@njit(cache=True, nogil=True, inline="always")
def _hrow(xr, yr, g, hb, slot):  # pragma: no cover - numba
    """Horizontal pass of one image row into ring slot ``slot`` of ``hb`` (5, R, Wv)."""
    Wv = hb.shape[2]
    h0 = hb[0, slot]
    h1 = hb[1, slot]
    h2 = hb[2, slot]
    h3 = hb[3, slot]
    h4 = hb[4, slot]
    h0[:] = 0
    h1[:] = 0
    h2[:] = 0
    h3[:] = 0
    h4[:] = 0
    for t in range(g.shape[0]):
        wt = g[t]
        xs = xr[t:]
        ys = yr[t:]
        for j in range(Wv):
            xv = xs[j]
            yv = ys[j]
            h0[j] += wt * xv
            h1[j] += wt * yv
            h2[j] += wt * (xv * xv)
            h3[j] += wt * (yv * yv)
            h4[j] += wt * (xv * yv)


@njit(cache=True, nogil=True, inline="always")
def _vrow(hb, g, i, m):  # pragma: no cover - numba
    """Vertical pass: moments m (5, Wv) of valid row ``i`` from ring rows i .. i+win-1 of ``hb``."""
    R = hb.shape[1]
    Wv = hb.shape[2]
    m0 = m[0]
    m1 = m[1]
    m2 = m[2]
    m3 = m[3]
    m4 = m[4]
    m[:] = 0
    for t in range(g.shape[0]):
        wt = g[t]
        slot = (i + t) % R
        b0 = hb[0, slot]
        b1 = hb[1, slot]
        b2 = hb[2, slot]
        b3 = hb[3, slot]
        b4 = hb[4, slot]
        for j in range(Wv):
            m0[j] += wt * b0[j]
            m1[j] += wt * b1[j]
            m2[j] += wt * b2[j]
            m3[j] += wt * b3[j]
            m4[j] += wt * b4[j]


@njit(cache=True, nogil=True)
def _ssim_stats_forward(x, y, g, c1, c2, ssim_out, cs_out, p0, p1):  # pragma: no cover - numba
    """ssim_out[p], cs_out[p] = mean over valid positions of the SSIM and cs maps of plane p, p0 <= p < p1.

    Streams the plane row by row: horizontal moments go to a ring of ``win`` rows, each
    valid output row is filtered vertically from the ring and reduced at once, so the
    working set stays in cache.
    """
    P, H, W = x.shape
    win = g.shape[0]
    Hv = H - win + 1
    Wv = W - win + 1
    C1 = x.dtype.type(c1)
    C2 = x.dtype.type(c2)
    two = x.dtype.type(2)
    hb = np.empty((5, win, Wv), dtype=x.dtype)
    m = np.empty((5, Wv), dtype=x.dtype)
    s_col = np.empty(Wv, dtype=np.float64)
    c_col = np.empty(Wv, dtype=np.float64)
    for p in range(p0, p1):
        s_col[:] = 0
        c_col[:] = 0
        for r in range(H):
            _hrow(x[p, r], y[p, r], g, hb, r % win)
            if r < win - 1:
                continue
            _vrow(hb, g, r - win + 1, m)
            mx_ = m[0]
            my_ = m[1]
            exx = m[2]
            eyy = m[3]
            exy = m[4]
            for j in range(Wv):
                mx = mx_[j]
                my = my_[j]
                mxx = mx * mx
                myy = my * my
                mxy = mx * my
                cs = (two * (exy[j] - mxy) + C2) / ((exx[j] - mxx) + (eyy[j] - myy) + C2)
                lum = (two * mxy + C1) / (mxx + myy + C1)
                s_col[j] += lum * cs
                c_col[j] += cs
        count = Hv * Wv
        ssim_out[p] = s_col.sum() / count
        cs_out[p] = c_col.sum() / count


@njit(cache=True, nogil=True)
def _ssim_stats_backward(x, y, g, c1, c2, g_ssim, g_cs, gx, gy, p0, p1):  # pragma: no cover - numba
    """gx, gy = d/dx, d/dy of sum_p g_ssim[p] * ssim[p] + g_cs[p] * cs[p] (means over valid positions),
    for planes p0 <= p < p1.

    One streaming sweep per plane: moments of valid row i (as in the forward pass) give
    the four maps G = dL/d(mu_x, mu_y, E[x^2] (= dL/dE[y^2]), E[xy]) of row i, scattered at
    once through the transposed vertical filter into a ring U of ``win`` rows; U's row i is
    then complete, goes through the transposed horizontal filter, and yields rows i of
    grad_x = A_mx + 2 x A_e + y A_xy and grad_y = A_my + 2 y A_e + x A_xy.
    """
    P, H, W = x.shape
    win = g.shape[0]
    Hv = H - win + 1
    Wv = W - win + 1
    C1 = x.dtype.type(c1)
    C2 = x.dtype.type(c2)
    one = x.dtype.type(1)
    two = x.dtype.type(2)
    count = Hv * Wv
    hb = np.empty((5, win, Wv), dtype=x.dtype)
    m = np.empty((5, Wv), dtype=x.dtype)
    G = np.empty((4, Wv), dtype=x.dtype)
    U = np.zeros((4, win, Wv), dtype=x.dtype)
    A = np.empty((4, W), dtype=x.dtype)
    for p in range(p0, p1):
        a = x.dtype.type(g_ssim[p] / count)
        b = x.dtype.type(g_cs[p] / count)
        U[:] = 0
        for r in range(H + win - 1):
            if r < H:
                _hrow(x[p, r], y[p, r], g, hb, r % win)
            i = r - win + 1          # U row i becomes complete at this step
            if i < 0:
                continue
            if i < Hv:
                _vrow(hb, g, i, m)
                mx_ = m[0]
                my_ = m[1]
                exx = m[2]
                eyy = m[3]
                exy = m[4]
                g0 = G[0]
                g1 = G[1]
                g2 = G[2]
                g3 = G[3]
                for j in range(Wv):
                    mx = mx_[j]
                    my = my_[j]
                    mxx = mx * mx
                    myy = my * my
                    mxy = mx * my
                    ib1 = one / (mxx + myy + C1)
                    ib2 = one / ((exx[j] - mxx) + (eyy[j] - myy) + C2)
                    lum = (two * mxy + C1) * ib1
                    cs = (two * (exy[j] - mxy) + C2) * ib2
                    wl = a * cs * two * ib1          # weight of d(lum): a * cs, times 2 / B1
                    wc = (a * lum + b) * ib2         # weight of d(cs): a * lum + b, over B2
                    g0[j] = wl * (my - lum * mx) + two * wc * (cs * mx - my)
                    g1[j] = wl * (mx - lum * my) + two * wc * (cs * my - mx)
                    g2[j] = -wc * cs
                    g3[j] = two * wc
                for t in range(win):
                    wt = g[t]
                    slot = (i + t) % win
                    for k in range(4):
                        u = U[k, slot]
                        gk = G[k]
                        for j in range(Wv):
                            u[j] += wt * gk[j]
            if i >= H:
                continue
            # row i of U is final: transposed horizontal filter, combine, recycle the slot
            slot = i % win
            A[:] = 0
            for k in range(4):
                ak = A[k]
                u = U[k, slot]
                for t in range(win):
                    wt = g[t]
                    at = ak[t:]
                    for j in range(Wv):
                        at[j] += wt * u[j]
                u[:] = 0
            xr = x[p, i]
            yr = y[p, i]
            gxr = gx[p, i]
            gyr = gy[p, i]
            a0 = A[0]
            a1 = A[1]
            a2 = A[2]
            a3 = A[3]
            for q in range(W):
                xv = xr[q]
                yv = yr[q]
                gxr[q] = a0[q] + two * xv * a2[q] + yv * a3[q]
                gyr[q] = a1[q] + two * yv * a2[q] + xv * a3[q]


# --------------------------------------------------------------------------- entry points


#: Planes x pixels below which a call stays on one thread (thread hand-off costs ~0.1 ms).
PARALLEL_MIN_PIXELS = 1 << 16


def _thread_count(x: torch.Tensor) -> int:
    return num_threads() if x.numel() >= PARALLEL_MIN_PIXELS else 1


def _plane_views(t: torch.Tensor) -> np.ndarray:
    n, c, h, w = t.shape
    return _np(t).reshape(n * c, h, w)


def ssim_stats_forward(x: torch.Tensor, y: torch.Tensor, win_size: int, win_sigma: float, c1: float,
                       c2: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-(n, c) mean SSIM and mean cs over valid positions; see the module contract."""
    n, c = x.shape[0], x.shape[1]
    s = torch.empty((n, c), dtype=x.dtype)
    cs = torch.empty((n, c), dtype=x.dtype)
    if n * c:
        g = gaussian_window(win_size, win_sigma, x.dtype).numpy()
        xa, ya, sa, ca = _plane_views(x), _plane_views(y), s.numpy().reshape(-1), cs.numpy().reshape(-1)
        parallel_ranges(lambda p0, p1: _ssim_stats_forward(xa, ya, g, float(c1), float(c2), sa, ca, p0, p1),
                        n * c, _thread_count(x))
    return s, cs


def ssim_stats_backward(g_ssim: torch.Tensor, g_cs: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                        win_size: int, win_sigma: float, c1: float, c2: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Gradients of :func:`ssim_stats_forward` w.r.t. ``x`` and ``y`` given upstream ``(N, C)`` gradients."""
    gx = _outputs.new(x, x.shape, x.numel())
    gy = _outputs.new(y, y.shape, y.numel())
    if x.numel():
        g = gaussian_window(win_size, win_sigma, x.dtype).numpy()
        xa, ya, gxa, gya = _plane_views(x), _plane_views(y), _plane_views(gx), _plane_views(gy)
        gs = _np(g_ssim).reshape(-1).astype(np.float64)
        gc = _np(g_cs).reshape(-1).astype(np.float64)
        parallel_ranges(lambda p0, p1: _ssim_stats_backward(xa, ya, g, float(c1), float(c2), gs, gc, gxa, gya,
                                                            p0, p1),
                        xa.shape[0], _thread_count(x))
    return gx, gy
