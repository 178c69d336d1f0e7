"""The ``denoiser`` task: Gaussian noise of std ``--sigma`` on clean patches; MSE (+ SSIM) loss;
PSNR and SSIM of the denoised and of the noisy images."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn.functional as TF
from torch import Tensor, nn

from .. import models
from . import data as D
from .base import Forward, Task, flip_rot
from .errors import UsageError
from .plots import plot_image_grid


def quality_sums(out: Tensor, clean: Tensor, win_size: int = 11) -> Tuple[float, float]:
    """Sums over the batch of the per-image PSNR and SSIM (data range 1, Gaussian window of
    ``win_size``) of ``out`` clipped to [0, 1] against ``clean``."""
    from ..ops.ssim import psnr, ssim

    out = out.clamp(0, 1)
    return (float(psnr(out, clean, data_range=1.0, reduction="sum")),
            float(ssim(out, clean, data_range=1.0, size_average=False, win_size=win_size).sum()))


class DenoisingTask(Task):
    name = "denoiser"
    metric = "val_psnr"

    def __init__(self, args: Dict[str, Any]) -> None:
        super().__init__(args)
        self._ssim_loss: Optional[nn.Module] = None
        self.noisy: Dict[str, Tensor] = {}

    @property
    def patch(self) -> int:
        return self.args["patch_size"] or 48

    def check(self) -> None:
        if self.patch % 8:
            raise UsageError(f"denoiser needs a --patch-size divisible by 8, got {self.patch}")

    def load_data(self) -> D.Split:
        a = self.args
        n = a["limit"] or 512
        self.split = D.denoising_data(a["data"], seed=a["seed"], patch=self.patch, n_train=n,
                                      n_val=max(1, n // 4), n_test=max(1, n // 4), fractions=a["split"])
        for offset, part in ((7919, "val"), (7927, "test")):
            clean = self.split.part(part)[0]
            g = torch.Generator().manual_seed(a["seed"] + offset)
            self.noisy[part] = clean + a["sigma"] * torch.randn(clean.shape, generator=g)
        return self.split

    def to(self, device: torch.device) -> None:
        super().to(device)
        self.noisy = {k: v.to(device) for k, v in self.noisy.items()}

    def build_model(self, backend: str) -> nn.Module:
        return models.Denoiser(self.split.in_channels, backend=backend)

    def batch(self, x: Tensor, y: Tensor, g: torch.Generator) -> Tuple[Tuple[Tensor, ...], Tensor]:
        x, _ = flip_rot(x, None, g)
        noise = torch.randn(x.shape, generator=g).to(x.device)
        return (x + self.args["sigma"] * noise,), x

    def loss(self, out: Tensor, target: Tensor) -> Tensor:
        out = out.float()
        loss = TF.mse_loss(out, target)
        w = self.args["ssim_weight"]
        if w:
            if self._ssim_loss is None:
                from ..nn.ssim import SSIMLoss

                self._ssim_loss = SSIMLoss(data_range=1.0)
            loss = loss + w * self._ssim_loss(out, target)
        return loss

    @torch.no_grad()
    def evaluate(self, model: nn.Module, forward: Forward, part: str) -> Dict[str, float]:
        clean_all, noisy_all = self.split.part(part)[0], self.noisy[part]
        sums = dict.fromkeys(("loss", "psnr", "ssim", "noisy_psnr", "noisy_ssim"), 0.0)
        for clean, noisy in self.batches(clean_all, noisy_all):
            out = forward(noisy).float()
            sums["loss"] += float(self.loss(out, clean)) * len(clean)
            for prefix, image in (("", out), ("noisy_", noisy)):
                p, s = quality_sums(image, clean)
                sums[prefix + "psnr"] += p
                sums[prefix + "ssim"] += s
        # the noisy input's figures are named noisy_* on the validation set (as before) and test_noisy_*
        names = {k: (f"{part}_{k}" if part == "test" or not k.startswith("noisy") else k) for k in sums}
        return {names[k]: v / len(clean_all) for k, v in sums.items()}

    @torch.no_grad()
    def write_figures(self, model: nn.Module, forward: Forward, out: Path, final: bool) -> None:
        n = min(4, len(self.split.x_val))
        clean, noisy = self.split.x_val[:n], self.noisy["val"][:n]
        den = forward(noisy)
        plot_image_grid([("", (clean[i], noisy[i], den[i])) for i in range(n)], out / "samples.png",
                        columns=("clean", "noisy", "denoised"), size=2.2)
