"""One optimizer step (forward, loss, backward, SGD update) of each seed model.

Models from :mod:`fastconv.models`, built with ``backend='fastconv'`` (fastconv.nn
layers, fused) or ``backend='torch'`` from the same RNG state, so both start from identical
parameters.  The batches are the CPU-engine issue's:

* ``Classifier(in_channels=3, image_size=32)``: 128 x 3 x 32 x 32, cross-entropy;
* ``CifarNet``: 64 x 3 x 32 x 32, cross-entropy;
* ``UNet`` (base 16, depth 4, 3 input channels): 4 x 3 x 128 x 128, BCE-with-logits vs a mask;
* ``Denoiser``: 128 x 1 x 32 x 32, MSE vs the clean image (sides must be divisible by 8,
  so 32 rather than the 28 of MNIST).

``TrainStepRatio.track_ratio_vs_torch`` is fastconv step time / torch step time (below 1:
fastconv trains faster), both timed in the same call.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .common import fastconv_models, require_device, require_fastconv_device, speedup, sync, torch_seed

MODELS = ["Classifier", "CifarNet", "UNet", "Denoiser"]


def make_step(model_name: str, backend: str, device: str):
    """A zero-argument callable running one SGD train step."""
    require_device(device)
    if backend == "fastconv":
        require_fastconv_device(device)
    models = fastconv_models()
    torch_seed(0)
    if model_name == "Classifier":
        model = models.Classifier(in_channels=3, image_size=32, backend=backend)
        x, target = torch.randn(128, 3, 32, 32), torch.randint(0, 10, (128,))
        loss_fn = F.cross_entropy
    elif model_name == "CifarNet":
        model = models.CifarNet(backend=backend)
        x, target = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))
        loss_fn = F.cross_entropy
    elif model_name == "UNet":
        model = models.UNet(in_channels=3, base=16, backend=backend)
        x = torch.randn(4, 3, 128, 128)
        target = (torch.rand(4, 1, 128, 128) > 0.5).float()
        loss_fn = F.binary_cross_entropy_with_logits
    elif model_name == "Denoiser":
        model = models.Denoiser(backend=backend)
        target = torch.rand(128, 1, 32, 32)
        x = target + 0.1 * torch.randn_like(target)
        loss_fn = F.mse_loss
    else:
        raise ValueError(model_name)
    model = model.to(device).train()
    x, target = x.to(device), target.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), target)
        loss.backward()
        opt.step()
        sync(device)
        return loss
    return step


class TrainStep:
    params = [MODELS, ["fastconv", "torch"], ["cpu", "cuda"]]
    param_names = ["model", "backend", "device"]
    repeat = (1, 5, 4.0)
    warmup_time = 0.2

    def setup(self, model, backend, device):
        self.step = make_step(model, backend, device)

    def time_train_step(self, model, backend, device):
        self.step()


class TrainStepRatio:
    """fastconv step time / torch step time, measured in the same call (below 1: fastconv faster)."""
    params = [MODELS, ["cpu", "cuda"]]
    param_names = ["model", "device"]
    unit = "ratio"

    def setup(self, model, device):
        self.fast = make_step(model, "fastconv", device)
        self.torch = make_step(model, "torch", device)

    def track_ratio_vs_torch(self, model, device):
        return 1.0 / speedup(self.fast, self.torch, k=3, budget=0.1)


class PeakMemTrain:
    """Peak RSS of a process running one train step (CPU; includes importing torch)."""
    params = [MODELS, ["fastconv", "torch"]]
    param_names = ["model", "backend"]

    def setup(self, model, backend):
        self.step = make_step(model, backend, "cpu")

    def peakmem_train_step(self, model, backend):
        self.step()
