"""Fused Numba kernels for SSIM statistics and their gradient (CPU backend).

Backend contract (shared with ``fastconv.cuda.ssim``)
-----------------------------------------------------
Both backends expose the same three functions over torch tensors:

``gaussian_window(win_size, win_sigma, dtype) -> Tensor``
    The normalised 1-D Gaussian, ``g[t] ∝ exp(-(t - win_size//2)**2 / (2 sigma**2))``,
    computed in float64 and cast to ``dtype`` (on the CPU; move it if needed).

``stats(x, y, win_size, win_sigma, c1, c2) -> (ssim_pc, cs_pc)``
    ``x``, ``y``: contiguous NCHW tensors of one float dtype (float32/float64),
    same shape, ``H >= win_size`` and ``W >= win_size`` (validated by the caller).
    ``c1 = (K1 * data_range)**2`` and ``c2 = (K2 * data_range)**2`` are Python floats.
    Returns two ``(N, C)`` tensors of the input dtype: the mean over the valid
    positions (those whose whole window lies inside the image; no padding) of the
    SSIM map and of the contrast-structure map ``cs``.  Local moments use the
    separable Gaussian above and population (biased) variances, as
    pytorch-msssim and ``skimage.metrics.structural_similarity(gaussian_weights=True,
    use_sample_covariance=False)``.

``stats_backward(g_ssim, g_cs, x, y, win_size, win_sigma, c1, c2) -> (grad_x, grad_y)``
    ``g_ssim``, ``g_cs``: contiguous ``(N, C)`` upstream gradients of the two outputs
    of ``stats`` (same dtype as ``x``).  Returns the gradients w.r.t. ``x`` and ``y``
    (contiguous, shape and dtype of ``x``).

Algorithm
---------
Each (n, c) plane is one parallel task.  The forward pass filters the five maps
``x, y, x*x, y*y, x*y`` horizontally in one sweep over the plane (five
accumulators per column), then vertically, and evaluates the SSIM/cs maps on the
fly, accumulating them per column in float64 (a per-column vector sum keeps the
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
from numba import njit, prange


@njit(cache=True)
def _moments(xp, yp, g, hb, out):  # pragma: no cover - numba
    """Valid-position local moments of one plane: out[k, i, j] for k = mu_x, mu_y, E[xx], E[yy], E[xy].

    ``hb`` is (5, H, Wv) scratch for the horizontal pass.
    """
    H, W = xp.shape
    win = g.shape[0]
    Wv = W - win + 1
    Hv = H - win + 1
    for r in range(H):
        for k in range(5):
            for j in range(Wv):
                hb[k, r, j] = 0
        for t in range(win):
            wt = g[t]
            for j in range(Wv):
                xv = xp[r, j + t]
                yv = yp[r, j + t]
                hb[0, r, j] += wt * xv
                hb[1, r, j] += wt * yv
                hb[2, r, j] += wt * (xv * xv)
                hb[3, r, j] += wt * (yv * yv)
                hb[4, r, j] += wt * (xv * yv)
    for i in range(Hv):
        for k in range(5):
            for j in range(Wv):
                out[k, i, j] = 0
        for t in range(win):
            wt = g[t]
            for k in range(5):
                for j in range(Wv):
                    out[k, i, j] += wt * hb[k, i + t, j]


@njit(parallel=True, cache=True)
def _ssim_stats(x, y, g, c1, c2, ssim_out, cs_out):  # pragma: no cover - numba
    """ssim_out[p], cs_out[p] = mean over valid positions of the SSIM and cs maps of plane p."""
    P, H, W = x.shape
    win = g.shape[0]
    Hv = H - win + 1
    Wv = W - win + 1
    C1 = x.dtype.type(c1)
    C2 = x.dtype.type(c2)
    two = x.dtype.type(2)
    for p in prange(P):
        hb = np.empty((5, H, Wv), dtype=x.dtype)
        m = np.empty((5, Hv, Wv), dtype=x.dtype)
        _moments(x[p], y[p], g, hb, m)
        s_col = np.zeros(Wv, dtype=np.float64)
        c_col = np.zeros(Wv, dtype=np.float64)
        for i in range(Hv):
            for j in range(Wv):
                mx = m[0, i, j]
                my = m[1, i, j]
                mxx = mx * mx
                myy = my * my
                mxy = mx * my
                sxx = m[2, i, j] - mxx
                syy = m[3, i, j] - myy
                sxy = m[4, i, j] - mxy
                cs = (two * sxy + C2) / (sxx + syy + C2)
                lum = (two * mxy + C1) / (mxx + myy + C1)
                s_col[j] += lum * cs
                c_col[j] += cs
        count = Hv * Wv
        ssim_out[p] = s_col.sum() / count
        cs_out[p] = c_col.sum() / count


@njit(parallel=True, cache=True)
def _ssim_stats_backward(x, y, g, c1, c2, g_ssim, g_cs, gx, gy):  # pragma: no cover - numba
    """gx, gy = d/dx, d/dy of sum_p g_ssim[p] * ssim[p] + g_cs[p] * cs[p] (means over valid positions)."""
    P, H, W = x.shape
    win = g.shape[0]
    Hv = H - win + 1
    Wv = W - win + 1
    C1 = x.dtype.type(c1)
    C2 = x.dtype.type(c2)
    one = x.dtype.type(1)
    two = x.dtype.type(2)
    count = Hv * Wv
    for p in prange(P):
        xp = x[p]
        yp = y[p]
        a = x.dtype.type(g_ssim[p] / count)
        b = x.dtype.type(g_cs[p] / count)
        hb = np.empty((5, H, Wv), dtype=x.dtype)
        m = np.empty((5, Hv, Wv), dtype=x.dtype)
        _moments(xp, yp, g, hb, m)
        # dL/d(moments) at valid positions, overwriting m[0..3]:
        # 0: d/d mu_x, 1: d/d mu_y, 2: d/d E[xx] (= d/d E[yy]), 3: d/d E[xy]
        for i in range(Hv):
            for j in range(Wv):
                mx = m[0, i, j]
                my = m[1, i, j]
                mxx = mx * mx
                myy = my * my
                mxy = mx * my
                sxx = m[2, i, j] - mxx
                syy = m[3, i, j] - myy
                sxy = m[4, i, j] - mxy
                ib1 = one / (mxx + myy + C1)
                ib2 = one / (sxx + syy + C2)
                lum = (two * mxy + C1) * ib1
                cs = (two * sxy + C2) * ib2
                wl = a * cs * two * ib1           # weight on dl/d(.) times B1/2 factored
                wc = (a * lum + b) * ib2          # weight on dcs/d(.) over B2
                m[0, i, j] = wl * (my - lum * mx) + two * wc * (cs * mx - my)
                m[1, i, j] = wl * (mx - lum * my) + two * wc * (cs * my - mx)
                m[2, i, j] = -wc * cs
                m[3, i, j] = two * wc
        # transposed vertical filter: hb[k, r, j] = sum_t m[k, r - t, j] * g[t]
        for r in range(H):
            for k in range(4):
                for j in range(Wv):
                    hb[k, r, j] = 0
        for i in range(Hv):
            for t in range(win):
                wt = g[t]
                for k in range(4):
                    for j in range(Wv):
                        hb[k, i + t, j] += wt * m[k, i, j]
        # transposed horizontal filter, then combine into the input gradients
        acc = np.empty((4, W), dtype=x.dtype)
        for r in range(H):
            for k in range(4):
                for q in range(W):
                    acc[k, q] = 0
            for t in range(win):
                wt = g[t]
                for k in range(4):
                    for j in range(Wv):
                        acc[k, j + t] += wt * hb[k, r, j]
            for q in range(W):
                xv = xp[r, q]
                yv = yp[r, q]
                gx[p, r, q] = acc[0, q] + two * xv * acc[2, q] + yv * acc[3, q]
                gy[p, r, q] = acc[1, q] + two * yv * acc[2, q] + xv * acc[3, q]


# --------------------------------------------------------------------------- entry points


def gaussian_window(win_size: int, win_sigma: float, dtype: torch.dtype) -> torch.Tensor:
    """Normalised 1-D Gaussian of ``win_size`` taps centred on ``win_size // 2`` (float64 math)."""
    t = np.arange(win_size, dtype=np.float64) - win_size // 2
    g = np.exp(-(t * t) / (2.0 * float(win_sigma) ** 2))
    g /= g.sum()
    return torch.from_numpy(g).to(dtype)


def _planes(t: torch.Tensor) -> np.ndarray:
    n, c, h, w = t.shape
    return t.detach().numpy().reshape(n * c, h, w)


def stats(x: torch.Tensor, y: torch.Tensor, win_size: int, win_sigma: float, c1: float,
          c2: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-(n, c) mean SSIM and mean cs over valid positions; see the module contract."""
    n, c = x.shape[0], x.shape[1]
    s = torch.empty((n, c), dtype=x.dtype)
    cs = torch.empty((n, c), dtype=x.dtype)
    if n * c:
        g = gaussian_window(win_size, win_sigma, x.dtype).numpy()
        _ssim_stats(_planes(x), _planes(y), g, float(c1), float(c2),
                    s.numpy().reshape(-1), cs.numpy().reshape(-1))
    return s, cs


def stats_backward(g_ssim: torch.Tensor, g_cs: torch.Tensor, x: torch.Tensor, y: torch.Tensor, win_size: int,
                   win_sigma: float, c1: float, c2: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Gradients of ``stats`` w.r.t. ``x`` and ``y`` given upstream ``(N, C)`` gradients."""
    gx = torch.empty_like(x, memory_format=torch.contiguous_format)
    gy = torch.empty_like(y, memory_format=torch.contiguous_format)
    if x.numel():
        g = gaussian_window(win_size, win_sigma, x.dtype).numpy()
        _ssim_stats_backward(_planes(x), _planes(y), g, float(c1), float(c2),
                             g_ssim.detach().numpy().reshape(-1).astype(np.float64),
                             g_cs.detach().numpy().reshape(-1).astype(np.float64),
                             _planes(gx), _planes(gy))
    return gx, gy
