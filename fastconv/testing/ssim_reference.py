"""An independent pure-torch SSIM, the reference the tests compare every SSIM kernel with.

Written with ``torch.nn.functional.conv2d`` (grouped, separable Gaussian at valid positions)
and plain tensor arithmetic, so torch autograd differentiates it: gradients of the fused
kernels are checked against this reference's autograd gradients.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as TF

from .._window import gaussian_window

__all__ = ["ssim_stats_reference"]


def ssim_stats_reference(x: torch.Tensor, y: torch.Tensor, win_size: int = 11, win_sigma: float = 1.5,
                         c1: float = 0.01 ** 2, c2: float = 0.03 ** 2) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-(n, c) means over valid positions of the SSIM map and of the contrast-structure map.

    Parameters
    ----------
    x, y : Tensor
        (N, C, H, W) images of one float dtype and device; the computation runs in their dtype.
    win_size, win_sigma : int, float
        The Gaussian window (:func:`fastconv._window.gaussian_window`).
    c1, c2 : float
        ``(K1 * data_range)**2`` and ``(K2 * data_range)**2``.

    Returns
    -------
    (Tensor, Tensor)
        Two (N, C) tensors: SSIM and cs, with population (biased) variances.
    """
    c = x.shape[1]
    g = gaussian_window(win_size, win_sigma, x.dtype).to(x.device)
    gh = g.view(1, 1, 1, -1).expand(c, 1, 1, win_size)
    gv = g.view(1, 1, -1, 1).expand(c, 1, win_size, 1)

    def blur(t):
        return TF.conv2d(TF.conv2d(t, gh, groups=c), gv, groups=c)

    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    cs = (2 * sxy + c2) / (sxx + syy + c2)
    s = (2 * mx * my + c1) / (mx * mx + my * my + c1) * cs
    return s.flatten(2).mean(-1), cs.flatten(2).mean(-1)
