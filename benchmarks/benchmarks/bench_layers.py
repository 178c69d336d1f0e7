"""NN layers of the seed models: fastconv against torch (oneDNN on CPU, cuDNN on CUDA).

Layers (batch 128, float32), as they appear in ``fastconv.models``:

* ``conv1``/``conv2``/``conv3``: the Classifier's 3x3 convolutions 3->32 @ 32x32,
  32->64 @ 16x16 and 64->128 @ 8x8 (padding 1);
* ``cifar_conv5``: CifarNet's 5x5 convolution 3->64 @ 32x32;
* ``maxpool``: ``MaxPool2d(2)`` on 32 channels @ 32x32;
* ``avgpool``: ``AvgPool2d(2)`` on 32 channels @ 32x32;
* ``up_convT``: the UNet's ``ConvTranspose2d(64, 32, 2, stride=2)`` @ 16x16;
* ``gap``: ``AdaptiveAvgPool2d(1)`` on 128 channels @ 8x8.

``backend='fastconv'`` uses the :mod:`fastconv.nn` twin of the same torch layer (same
parameters); ``backend='torch'`` the torch layer.  On CUDA both sides end every timed
call with ``torch.cuda.synchronize()``, so asv's wall-clock timer sees the whole kernel
time; ``track_cuda_event_ms`` additionally reports CUDA-event times.  CUDA parameters
skip (NotImplementedError) on machines without CUDA or without CuPy.
"""
from __future__ import annotations

import torch
import torch.nn as tnn

import fastconv.nn as fnn

from .common import require_device, require_fastconv_device, speedup, sync, torch_seed

BATCH = 128  # the measurement: the seed classifier at batch 128, 32x32 input

#: name -> (torch layer factory, input shape without batch)
LAYERS = {
    "conv1": (lambda nn: nn.Conv2d(3, 32, 3, padding=1), (3, 32, 32)),
    "conv2": (lambda nn: nn.Conv2d(32, 64, 3, padding=1), (32, 16, 16)),
    "conv3": (lambda nn: nn.Conv2d(64, 128, 3, padding=1), (64, 8, 8)),
    "cifar_conv5": (lambda nn: nn.Conv2d(3, 64, 5), (3, 32, 32)),
    "maxpool": (lambda nn: nn.MaxPool2d(2), (32, 32, 32)),
    "avgpool": (lambda nn: nn.AvgPool2d(2), (32, 32, 32)),
    "up_convT": (lambda nn: nn.ConvTranspose2d(64, 32, 2, stride=2), (64, 16, 16)),
    "gap": (lambda nn: nn.AdaptiveAvgPool2d(1), (128, 8, 8)),
}


def build(layer: str, backend: str, device: str, batch: int = BATCH):
    """The layer (same initial parameters for both backends), an input and an output gradient."""
    require_device(device)
    if backend == "fastconv":
        require_fastconv_device(device)
    factory, shape = LAYERS[layer]
    torch_seed(0)
    mod = factory(fnn if backend == "fastconv" else tnn).to(device)
    torch_seed(1)
    x = torch.randn(batch, *shape, device=device)
    with torch.no_grad():
        gy = torch.randn_like(mod(x))
    return mod, x, gy


class _LayerBase:
    params = [list(LAYERS), ["fastconv", "torch"], ["cpu", "cuda"]]
    param_names = ["layer", "backend", "device"]
    repeat = (1, 5, 2.0)
    warmup_time = 0.1

    def setup(self, layer, backend, device):
        self.device = device
        self.mod, self.x, self.gy = build(layer, backend, device)
        self.xg = self.x.clone().requires_grad_(True)


class Forward(_LayerBase):
    """Forward pass of one layer (no autograd graph)."""

    def time_forward(self, layer, backend, device):
        with torch.no_grad():
            self.mod(self.x)
        sync(self.device)


def _fwd_bwd(mod, xg, gy, device):
    for p in mod.parameters():
        p.grad = None
    xg.grad = None
    mod(xg).backward(gy)
    sync(device)


class ForwardBackward(_LayerBase):
    """Forward and backward (input and parameter gradients) of one layer."""

    def time_forward_backward(self, layer, backend, device):
        _fwd_bwd(self.mod, self.xg, self.gy, self.device)


class CudaEvents(_LayerBase):
    """Forward+backward time measured with CUDA events (ms, median of 20), GPU only."""
    params = [list(LAYERS), ["fastconv", "torch"], ["cuda"]]
    unit = "ms"

    def track_cuda_event_ms(self, layer, backend, device):
        for _ in range(3):
            _fwd_bwd(self.mod, self.xg, self.gy, device)
        times = []
        for _ in range(20):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for p in self.mod.parameters():
                p.grad = None
            self.xg.grad = None
            self.mod(self.xg).backward(self.gy)
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        return sorted(times)[len(times) // 2]


class LayerSpeedup:
    """torch time / fastconv time for the same layer and pass, measured in one call (>1: fastconv faster)."""
    params = [list(LAYERS), ["forward", "forward_backward"], ["cpu", "cuda"]]
    param_names = ["layer", "pass", "device"]
    unit = "ratio"

    def setup(self, layer, pass_, device):
        self.fns = {}
        for backend in ("fastconv", "torch"):
            mod, x, gy = build(layer, backend, device)
            if pass_ == "forward":
                def fn(mod=mod, x=x):
                    with torch.no_grad():
                        mod(x)
                    sync(device)
            else:
                xg = x.clone().requires_grad_(True)

                def fn(mod=mod, xg=xg, gy=gy):
                    _fwd_bwd(mod, xg, gy, device)
            self.fns[backend] = fn

    def track_speedup_vs_torch(self, layer, pass_, device):
        return speedup(self.fns["fastconv"], self.fns["torch"], k=3)


class PeakMemConv:
    """Peak RSS of a forward+backward of the Classifier's first conv at batch 128 (CPU)."""
    params = [["fastconv", "torch"]]
    param_names = ["backend"]

    def setup(self, backend):
        self.mod, self.x, self.gy = build("conv1", backend, "cpu", batch=128)
        self.xg = self.x.clone().requires_grad_(True)

    def peakmem_conv1_forward_backward(self, backend):
        _fwd_bwd(self.mod, self.xg, self.gy, "cpu")
