"""NN layers: fastconv against torch (oneDNN on CPU, cuDNN on CUDA), forward and forward+backward.

The conv layers are the CPU-engine issue's eight (float32, bias, input and weight gradients):

* ``c3x32``   128x3x32^2 -> 32, 3x3 pad 1    (the Classifier's first layer)
* ``c32x16``  128x32x16^2 -> 64, 3x3 pad 1   (Classifier)
* ``c64x8``   128x64x8^2 -> 128, 3x3 pad 1   (Classifier)
* ``c5x32``   64x3x32^2 -> 64, 5x5           (CifarNet)
* ``c5x14``   64x64x14^2 -> 32, 5x5          (CifarNet)
* ``c16x128`` 4x16x128^2 -> 16, 3x3 pad 1    (UNet, top level)
* ``c128x16`` 4x128x16^2 -> 128, 3x3 pad 1   (UNet, bottleneck)
* ``s2x14``   128x32x14^2 -> 16, 3x3 stride 2 pad 1 (Denoiser encoder)

and the seed models' other layers (pools, transposed conv, global average pooling), and the
UNet's top ``conv -> BatchNorm2d -> ReLU`` block in training mode (``cbr16x128``; fastconv's is
the converted block, ``convert_model(fuse=True)``: the conv and one fused batch-norm + ReLU op).
``LayerRatio.track_ratio_vs_torch`` is **fastconv time / torch time** (below 1: fastconv is
faster), both timed in the same call; ``WinogradError.track_error_ratio`` is the float32
error of fastconv's convolution over torch's own float32 error, both against float64 (the
issue's bar for Winograd: at most 4).  On CUDA every timed call ends with
``torch.cuda.synchronize()``; CUDA parameters skip on machines without CUDA or CuPy.
"""
from __future__ import annotations

import torch
import torch.nn as tnn

import fastconv
import fastconv.nn as fnn

from .common import require_device, require_fastconv_device, speedup, sync, torch_seed

#: name -> (layer factory over an nn namespace, input shape with batch)
LAYERS = {
    "c3x32": (lambda nn: nn.Conv2d(3, 32, 3, padding=1), (128, 3, 32, 32)),
    "c32x16": (lambda nn: nn.Conv2d(32, 64, 3, padding=1), (128, 32, 16, 16)),
    "c64x8": (lambda nn: nn.Conv2d(64, 128, 3, padding=1), (128, 64, 8, 8)),
    "c5x32": (lambda nn: nn.Conv2d(3, 64, 5), (64, 3, 32, 32)),
    "c5x14": (lambda nn: nn.Conv2d(64, 32, 5), (64, 64, 14, 14)),
    "c16x128": (lambda nn: nn.Conv2d(16, 16, 3, padding=1), (4, 16, 128, 128)),
    "c128x16": (lambda nn: nn.Conv2d(128, 128, 3, padding=1), (4, 128, 16, 16)),
    "s2x14": (lambda nn: nn.Conv2d(32, 16, 3, stride=2, padding=1), (128, 32, 14, 14)),
    "maxpool": (lambda nn: nn.MaxPool2d(2), (128, 32, 32, 32)),
    "avgpool": (lambda nn: nn.AvgPool2d(2), (128, 32, 32, 32)),
    "up_convT": (lambda nn: nn.ConvTranspose2d(64, 32, 2, stride=2), (4, 64, 16, 16)),
    "dec_convT": (lambda nn: nn.ConvTranspose2d(16, 32, 4, stride=2, padding=1), (128, 16, 8, 8)),
    "gap": (lambda nn: nn.AdaptiveAvgPool2d(1), (128, 128, 8, 8)),
    "cbr16x128": (lambda nn: _conv_bn_relu(nn, 16), (4, 16, 128, 128)),
}


def _conv_bn_relu(nn, c: int) -> tnn.Module:
    """``Conv2d(c, c, 3, padding=1, bias=False) -> BatchNorm2d -> ReLU`` (training mode), fused for fastconv."""
    block = tnn.Sequential(tnn.Conv2d(c, c, 3, padding=1, bias=False), tnn.BatchNorm2d(c), tnn.ReLU(inplace=True))
    return fastconv.convert_model(block, fuse=True) if nn is fnn else block
CONV_LAYERS = [name for name in LAYERS if name[0] in "cs" and not name.startswith("cbr")]


def build(layer: str, backend: str, device: str, layers=LAYERS):
    """The layer (same initial parameters for both backends), an input and an output gradient."""
    require_device(device)
    if backend == "fastconv":
        require_fastconv_device(device)
    factory, shape = layers[layer]
    torch_seed(0)
    mod = factory(fnn if backend == "fastconv" else tnn).to(device)
    torch_seed(1)
    x = torch.randn(*shape, device=device)
    with torch.no_grad():
        gy = torch.randn_like(mod(x))
    return mod, x, gy


def _fwd_bwd(mod, xg, gy, device):
    for p in mod.parameters():
        p.grad = None
    xg.grad = None
    mod(xg).backward(gy)
    sync(device)


def _pass_fn(mod, x, gy, pass_, device):
    if pass_ == "forward":
        def fn():
            with torch.no_grad():
                mod(x)
            sync(device)
        return fn
    xg = x.clone().requires_grad_(True)
    return lambda: _fwd_bwd(mod, xg, gy, device)


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


class LayerRatio:
    """fastconv time / torch time for the same layer and pass, both timed in one call (below 1: faster)."""
    params = [list(LAYERS), ["forward", "forward_backward"], ["cpu", "cuda"]]
    param_names = ["layer", "pass", "device"]
    unit = "ratio"

    def setup(self, layer, pass_, device):
        self.fns = {b: _pass_fn(*build(layer, b, device), pass_, device) for b in ("fastconv", "torch")}

    def track_ratio_vs_torch(self, layer, pass_, device):
        return 1.0 / speedup(self.fns["fastconv"], self.fns["torch"], k=3)


#: Common layers beyond the issue's eight (float32, bias; name -> layer factory, input shape):
#: ResNet's 3x3 body (also one image: inference), downsampling and stem, a bottleneck's 1x1,
#: ResNeXt's grouped 3x3 and the depthwise layers of MobileNet (stride 1 and 2), ConvNeXt (7x7)
#: and EfficientNet's last stage (7x7 planes).
COMMON_LAYERS = {
    "rn3x56": (lambda nn: nn.Conv2d(64, 64, 3, padding=1), (8, 64, 56, 56)),
    "rn3x56s2": (lambda nn: nn.Conv2d(64, 128, 3, stride=2, padding=1), (8, 64, 56, 56)),
    "stem7x224": (lambda nn: nn.Conv2d(3, 64, 7, stride=2, padding=3), (8, 3, 224, 224)),
    "pw256x56": (lambda nn: nn.Conv2d(256, 64, 1), (8, 256, 56, 56)),
    "g32x28": (lambda nn: nn.Conv2d(128, 128, 3, padding=1, groups=32), (8, 128, 28, 28)),
    "dw3x112": (lambda nn: nn.Conv2d(32, 32, 3, padding=1, groups=32), (8, 32, 112, 112)),
    "dw3x56s2": (lambda nn: nn.Conv2d(144, 144, 3, stride=2, padding=1, groups=144), (8, 144, 56, 56)),
    "dw7x56": (lambda nn: nn.Conv2d(96, 96, 7, padding=3, groups=96), (8, 96, 56, 56)),
    "dw3x14": (lambda nn: nn.Conv2d(512, 512, 3, padding=1, groups=512), (8, 512, 14, 14)),
    "dw3x7": (lambda nn: nn.Conv2d(960, 960, 3, padding=1, groups=960), (32, 960, 7, 7)),
    "rn3x56b1": (lambda nn: nn.Conv2d(64, 64, 3, padding=1), (1, 64, 56, 56)),
}


class CommonLayerRatio:
    """fastconv time / torch time of the common layers (:data:`COMMON_LAYERS`), forward and
    forward+backward, both timed in one call (below 1: faster)."""
    params = [list(COMMON_LAYERS), ["forward", "forward_backward"], ["cpu", "cuda"]]
    param_names = ["layer", "pass", "device"]
    unit = "ratio"

    def setup(self, layer, pass_, device):
        self.fns = {b: _pass_fn(*build(layer, b, device, COMMON_LAYERS), pass_, device) for b in ("fastconv", "torch")}

    def track_ratio_vs_torch(self, layer, pass_, device):
        return 1.0 / speedup(self.fns["fastconv"], self.fns["torch"], k=3)


class WinogradError:
    """float32 error of fastconv's conv over torch's own float32 error, both against a float64 result."""
    params = [CONV_LAYERS]
    param_names = ["layer"]
    unit = "ratio"

    def setup(self, layer):
        factory, shape = LAYERS[layer]
        torch_seed(0)
        self.w = factory(tnn).weight.detach()
        torch_seed(1)
        self.x = torch.randn(*shape)
        conv = factory(tnn)
        self.kw = dict(stride=conv.stride, padding=conv.padding)

    def track_error_ratio(self, layer):
        import fastconv.functional as F
        ref = torch.nn.functional.conv2d(self.x.double(), self.w.double(), **self.kw)
        ours = (F.conv2d(self.x, self.w, **self.kw).double() - ref).abs().max()
        theirs = (torch.nn.functional.conv2d(self.x, self.w, **self.kw).double() - ref).abs().max()
        return float(ours / theirs)


class PeakMemConv:
    """Peak RSS of a forward+backward of the Classifier's first conv at batch 128 (CPU)."""
    params = [["fastconv", "torch"]]
    param_names = ["backend"]

    def setup(self, backend):
        self.mod, self.x, self.gy = build("c3x32", backend, "cpu")
        self.xg = self.x.clone().requires_grad_(True)

    def peakmem_conv1_forward_backward(self, backend):
        _fwd_bwd(self.mod, self.xg, self.gy, "cpu")
