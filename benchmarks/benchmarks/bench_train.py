"""One optimizer step (forward, loss, backward, SGD update) of each seed model.

Models from :mod:`fastconv.models`, built with ``backend='fastconv'`` (fastconv.nn
layers) or ``backend='torch'`` from the same RNG state, so both start from identical
parameters.  Small batches keep the suite quick:

* ``Classifier(in_channels=3, image_size=32)``: 32 x 3 x 32 x 32, cross-entropy;
* ``CifarNet``: 32 x 3 x 32 x 32, cross-entropy;
* ``UNet`` (base 16, depth 4): 4 x 1 x 64 x 64, BCE-with-logits vs a random mask;
* ``Denoiser``: 8 x 1 x 64 x 64, MSE vs the clean image.
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
        x, target = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))
        loss_fn = F.cross_entropy
    elif model_name == "CifarNet":
        model = models.CifarNet(backend=backend)
        x, target = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))
        loss_fn = F.cross_entropy
    elif model_name == "UNet":
        model = models.UNet(backend=backend)
        x = torch.randn(4, 1, 64, 64)
        target = (torch.rand(4, 1, 64, 64) > 0.5).float()
        loss_fn = F.binary_cross_entropy_with_logits
    elif model_name == "Denoiser":
        model = models.Denoiser(backend=backend)
        target = torch.rand(8, 1, 64, 64)
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


class TrainStepSpeedup:
    """torch step time / fastconv step time, measured in the same call (>1: fastconv faster)."""
    params = [MODELS, ["cpu", "cuda"]]
    param_names = ["model", "device"]
    unit = "ratio"

    def setup(self, model, device):
        self.fast = make_step(model, "fastconv", device)
        self.torch = make_step(model, "torch", device)

    def track_speedup_vs_torch(self, model, device):
        return speedup(self.fast, self.torch, k=3, budget=0.1)
