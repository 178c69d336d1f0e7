"""The four training tasks: how each builds its data and model, augments a batch,
computes its loss and evaluates on the validation set."""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn.functional as TF
from torch import Tensor, nn

from .. import models
from . import data as D

MODELS = ("classifier", "cifarnet", "unet", "denoiser")


def dice_loss(logits: Tensor, target: Tensor, eps: float = 1.0) -> Tensor:
    """Soft Dice loss ``1 - (2 sum(p t) + eps) / (sum(p) + sum(t) + eps)`` per image, batch-averaged."""
    p = torch.sigmoid(logits).flatten(1)
    t = target.flatten(1)
    return (1 - (2 * (p * t).sum(1) + eps) / (p.sum(1) + t.sum(1) + eps)).mean()


def _flip_rot(x: Tensor, y: Optional[Tensor], g: torch.Generator) -> Tuple[Tensor, Optional[Tensor]]:
    """One random rot90 and horizontal flip for the whole batch, drawn from ``g``."""
    k = int(torch.randint(4, (1,), generator=g))
    flip = bool(torch.randint(2, (1,), generator=g))
    x = torch.rot90(x, k, (2, 3))
    y = None if y is None else torch.rot90(y, k, (2, 3))
    if flip:
        x = x.flip(3)
        y = None if y is None else y.flip(3)
    return x, y


class Task:
    """Base class: subclasses fill in data, model, batch, loss and evaluate."""

    name = ""
    metric = ""  # the headline validation metric

    def __init__(self, args: Dict[str, Any]) -> None:
        self.args = args
        self.split: D.Split

    def load_data(self) -> D.Split:
        raise NotImplementedError

    def build_model(self, backend: str) -> nn.Module:
        raise NotImplementedError

    def batch(self, x: Tensor, y: Tensor, g: torch.Generator) -> Tuple[Tensor, Tensor]:
        """(model input, target) for a training batch; ``g`` drives any randomness."""
        return x, y

    def loss(self, out: Tensor, target: Tensor) -> Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, model: nn.Module, forward) -> Dict[str, float]:
        raise NotImplementedError

    def _val_batches(self, x: Tensor, y: Tensor, size: int = 128):
        for i in range(0, len(x), size):
            yield x[i:i + size], y[i:i + size]


class Classification(Task):
    metric = "val_accuracy"
    default_image_size = 8

    def load_data(self) -> D.Split:
        a = self.args
        self.split = D.classification_data(a["data"], seed=a["seed"],
                                           image_size=a["image_size"] or (None if a["data"] else
                                                                          self.default_image_size),
                                           limit=a["limit"])
        return self.split

    def loss(self, out: Tensor, target: Tensor) -> Tensor:
        return TF.cross_entropy(out.float(), target)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, forward) -> Dict[str, float]:
        s, correct, total = self.split, 0, 0.0
        for xb, yb in self._val_batches(s.x_val, s.y_val):
            out = forward(xb).float()
            total += float(TF.cross_entropy(out, yb, reduction="sum"))
            correct += int((out.argmax(1) == yb).sum())
        return {"val_loss": total / len(s.x_val), "val_accuracy": correct / len(s.x_val)}


class ClassifierTask(Classification):
    name = "classifier"

    def build_model(self, backend: str) -> nn.Module:
        s = self.split
        return models.Classifier(s.in_channels, s.num_classes, s.image_size, backend=backend)


class CifarNetTask(Classification):
    name = "cifarnet"
    default_image_size = 32

    def build_model(self, backend: str) -> nn.Module:
        s = self.split
        return models.CifarNet(s.in_channels, s.num_classes, s.image_size, backend=backend)


class SegmentationTask(Task):
    name = "unet"
    metric = "val_dice"

    def load_data(self) -> D.Split:
        a = self.args
        self.split = D.segmentation_data(a["data"], seed=a["seed"], patch=a["patch_size"] or 32,
                                         n_train=a["limit"] or 256, n_val=max(1, (a["limit"] or 256) // 4))
        return self.split

    def build_model(self, backend: str) -> nn.Module:
        a = self.args
        return models.UNet(self.split.in_channels, 1, base=a["base"], depth=a["depth"], skip=not a["no_skip"],
                           backend=backend)

    def batch(self, x: Tensor, y: Tensor, g: torch.Generator) -> Tuple[Tensor, Tensor]:
        x, y = _flip_rot(x, y, g)
        return x, y

    def loss(self, out: Tensor, target: Tensor) -> Tensor:
        out = out.float()
        return TF.binary_cross_entropy_with_logits(out, target) + self.args["dice_weight"] * dice_loss(out, target)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, forward) -> Dict[str, float]:
        s = self.split
        tp = fp = fn = 0.0
        total = 0.0
        for xb, yb in self._val_batches(s.x_val, s.y_val, 32):
            out = forward(xb).float()
            total += float(self.loss(out, yb)) * len(xb)
            pred = out > 0
            truth = yb > 0.5
            tp += float((pred & truth).sum())
            fp += float((pred & ~truth).sum())
            fn += float((~pred & truth).sum())
        denom = 2 * tp + fp + fn
        return {"val_loss": total / len(s.x_val),
                "val_dice": 2 * tp / denom if denom else 1.0,
                "val_iou": tp / (tp + fp + fn) if denom else 1.0}


class DenoisingTask(Task):
    name = "denoiser"
    metric = "val_psnr"

    def __init__(self, args: Dict[str, Any]) -> None:
        super().__init__(args)
        self._ssim_loss: Optional[nn.Module] = None

    def load_data(self) -> D.Split:
        a = self.args
        self.split = D.denoising_data(a["data"], seed=a["seed"], patch=a["patch_size"] or 48,
                                      n_train=a["limit"] or 512, n_val=max(1, (a["limit"] or 512) // 4))
        g = torch.Generator().manual_seed(a["seed"] + 7919)
        self.noisy_val = self.split.x_val + a["sigma"] * torch.randn(self.split.x_val.shape, generator=g)
        return self.split

    def to(self, device: torch.device) -> None:
        self.noisy_val = self.noisy_val.to(device)

    def build_model(self, backend: str) -> nn.Module:
        return models.Denoiser(self.split.in_channels, backend=backend)

    def batch(self, x: Tensor, y: Tensor, g: torch.Generator) -> Tuple[Tensor, Tensor]:
        x, _ = _flip_rot(x, None, g)
        noise = torch.randn(x.shape, generator=g).to(x.device)
        return x + self.args["sigma"] * noise, x

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
    def evaluate(self, model: nn.Module, forward) -> Dict[str, float]:
        from ..ops.ssim import psnr, ssim

        s = self.split
        sums = {"val_loss": 0.0, "val_psnr": 0.0, "val_ssim": 0.0, "noisy_psnr": 0.0, "noisy_ssim": 0.0}
        for i in range(0, len(s.x_val), 128):
            clean, noisy = s.x_val[i:i + 128], self.noisy_val[i:i + 128]
            out = forward(noisy).float()
            n = len(clean)
            sums["val_loss"] += float(self.loss(out, clean)) * n
            den, noisy_c = out.clamp(0, 1), noisy.clamp(0, 1)
            sums["val_psnr"] += float(psnr(den, clean, data_range=1.0, reduction="sum"))
            sums["noisy_psnr"] += float(psnr(noisy_c, clean, data_range=1.0, reduction="sum"))
            sums["val_ssim"] += float(ssim(den, clean, data_range=1.0, size_average=False).sum())
            sums["noisy_ssim"] += float(ssim(noisy_c, clean, data_range=1.0, size_average=False).sum())
        return {k: v / len(s.x_val) for k, v in sums.items()}


TASKS = {"classifier": ClassifierTask, "cifarnet": CifarNetTask, "unet": SegmentationTask,
         "denoiser": DenoisingTask}


def make_task(name: str, args: Dict[str, Any]) -> Task:
    """The :class:`Task` for model ``name`` configured by the resolved CLI ``args``."""
    return TASKS[name](args)
