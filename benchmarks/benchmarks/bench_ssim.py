"""SSIM and MS-SSIM: fastconv against pytorch-msssim and scikit-image.

Images: 16 x 1 x 256 x 256 float32 in [0, 1], ``y`` a noisy copy of ``x``; 11-tap
Gaussian window, sigma 1.5, data_range 1.0 -- the defaults every implementation shares.
scikit-image (``structural_similarity(..., gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=1.0)``) is NumPy and forward-only and loops over
the 16 images; it has no MS-SSIM.  ``setup`` checks each peer's value against fastconv's.
"""
from __future__ import annotations

import numpy as np
import torch

from fastconv.ops.ssim import ms_ssim as fc_ms_ssim
from fastconv.ops.ssim import ssim as fc_ssim

from .common import require_device, require_fastconv_device, require_module, require_msssim, speedup, sync, torch_seed

SHAPE = (16, 1, 256, 256)


def images(device: str = "cpu"):
    torch_seed(3)
    x = torch.rand(*SHAPE)
    y = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    return x.to(device), y.to(device)


def metric_fn(impl: str, metric: str, device: str):
    """``f(x, y) -> scalar tensor or float`` for an implementation; NotImplementedError if unavailable."""
    require_device(device)
    if impl == "fastconv":
        require_fastconv_device(device)
        f = fc_ssim if metric == "ssim" else fc_ms_ssim
        return lambda x, y: f(x, y, data_range=1.0)
    if impl == "pytorch_msssim":
        pm = require_msssim()
        f = pm.ssim if metric == "ssim" else pm.ms_ssim
        return lambda x, y: f(x, y, data_range=1.0)
    if impl == "skimage":
        if device != "cpu" or metric != "ssim":
            raise NotImplementedError("scikit-image computes single-scale SSIM on NumPy arrays only")
        sm = require_module("skimage.metrics")

        def f(x, y):
            xs, ys = x.numpy(), y.numpy()
            return float(np.mean([sm.structural_similarity(
                xs[i, 0], ys[i, 0], gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                data_range=1.0) for i in range(xs.shape[0])]))
        return f
    raise ValueError(impl)


class _SSIMBase:
    param_names = ["impl", "metric", "device"]
    repeat = (1, 5, 4.0)
    warmup_time = 0.1

    def setup(self, impl, metric, device):
        self.device = device
        self.f = metric_fn(impl, metric, device)
        self.x, self.y = images(device)
        self.f(self.x, self.y)  # warm: Numba kernels load from the on-disk cache on first call
        if impl != "fastconv":  # same value as fastconv (float32 round-off)
            ref = float(metric_fn("fastconv", metric, "cpu")(*images("cpu")))
            got = float(self.f(self.x, self.y))
            if abs(got - ref) > 1e-4:
                raise AssertionError(f"{impl} {metric} = {got}, fastconv = {ref}")


class SSIMForward(_SSIMBase):
    params = [["fastconv", "pytorch_msssim", "skimage"], ["ssim", "ms_ssim"], ["cpu", "cuda"]]

    def time_forward(self, impl, metric, device):
        with torch.no_grad():
            self.f(self.x, self.y)
        sync(self.device)


class SSIMForwardBackward(_SSIMBase):
    """Loss use: gradient of the metric w.r.t. the first image."""
    params = [["fastconv", "pytorch_msssim"], ["ssim", "ms_ssim"], ["cpu", "cuda"]]

    def time_forward_backward(self, impl, metric, device):
        xg = self.x.detach().requires_grad_(True)
        self.f(xg, self.y).backward()
        sync(self.device)


class SSIMSpeedup:
    """peer time / fastconv time, both measured in the same call (>1: fastconv faster)."""
    params = [["pytorch_msssim", "skimage"], ["forward", "forward_backward"], ["ssim", "ms_ssim"]]
    param_names = ["peer", "pass", "metric"]
    unit = "ratio"
    timeout = 180

    def setup(self, peer, pass_, metric):
        if peer == "skimage" and pass_ != "forward":
            raise NotImplementedError("scikit-image has no gradient")
        x, y = images("cpu")
        fns = {}
        for impl in ("fastconv", peer):
            f = metric_fn(impl, metric, "cpu")
            if pass_ == "forward":
                def fn(f=f):
                    with torch.no_grad():
                        f(x, y)
            else:
                def fn(f=f):
                    f(x.detach().requires_grad_(True), y).backward()
            fns[impl] = fn
        self.fast, self.peer = fns["fastconv"], fns[peer]

    def track_speedup(self, peer, pass_, metric):
        return speedup(self.fast, self.peer, k=3, budget=0.1)


class PeakMemSSIM:
    """Peak RSS of SSIM forward+backward on 16x1x256x256 (CPU)."""
    params = [["fastconv", "pytorch_msssim"]]
    param_names = ["impl"]

    def setup(self, impl):
        self.f = metric_fn(impl, "ssim", "cpu")
        self.x, self.y = images("cpu")

    def peakmem_ssim_forward_backward(self, impl):
        self.f(self.x.detach().requires_grad_(True), self.y).backward()
