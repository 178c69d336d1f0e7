"""Segmentation tasks: ``unet`` and ``segvit`` on the same image/mask patches
(BCE + Dice loss; Dice and IoU of the thresholded logits)."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as TF
from torch import Tensor, nn

from .. import models
from . import data as D
from .base import Forward, Task, flip_rot
from .errors import UsageError
from .plots import plot_overlays


def dice_loss(logits: Tensor, target: Tensor, eps: float = 1.0) -> Tensor:
    """Soft Dice loss ``1 - (2 sum(p t) + eps) / (sum(p) + sum(t) + eps)`` per image, batch-averaged."""
    p = torch.sigmoid(logits).flatten(1)
    t = target.flatten(1)
    return (1 - (2 * (p * t).sum(1) + eps) / (p.sum(1) + t.sum(1) + eps)).mean()


def dice_per_image(pred: Tensor, truth: Tensor) -> Tensor:
    """Dice ``2 |P and T| / (|P| + |T|)`` of boolean masks, per image (1 where both are empty)."""
    p, t = pred.flatten(1).float(), truth.flatten(1).float()
    denom = p.sum(1) + t.sum(1)
    return torch.where(denom > 0, 2 * (p * t).sum(1) / denom.clamp_min(1), torch.ones_like(denom))


def pick_cases(dice: Tensor, has_object: Tensor) -> List[Tuple[str, int]]:
    """``[('worked', i), ('partly worked', j), ('missed', k)]``: the test images with the best, the
    median and the worst Dice, among those whose truth has foreground (all when none has)."""
    pool = has_object.nonzero().flatten()
    if len(pool) == 0:
        pool = torch.arange(len(dice))
    order = pool[torch.argsort(dice[pool], descending=True, stable=True)]
    return [("worked", int(order[0])), ("partly worked", int(order[len(order) // 2])), ("missed", int(order[-1]))]


class SegmentationTask(Task):
    """Shared data, loss and metrics of the segmentation models."""

    metric = "val_dice"
    default_patch = 32

    @property
    def patch(self) -> int:
        return self.args["patch_size"] or self.default_patch

    def load_data(self) -> D.Split:
        a = self.args
        n = a["limit"] or 256
        self.split = D.segmentation_data(a["data"], seed=a["seed"], patch=self.patch, n_train=n,
                                         n_val=max(1, n // 4), n_test=max(1, n // 4), fractions=a["split"])
        return self.split

    def batch(self, x: Tensor, y: Tensor, g: torch.Generator) -> Tuple[Tuple[Tensor, ...], Tensor]:
        x, y = flip_rot(x, y, g)
        return (x,), y

    def loss(self, out: Tensor, target: Tensor) -> Tensor:
        out = out.float()
        return TF.binary_cross_entropy_with_logits(out, target) + self.args["dice_weight"] * dice_loss(out, target)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, forward: Forward, part: str) -> Dict[str, float]:
        x, y = self.split.part(part)
        tp = fp = fn = total = 0.0
        for xb, yb in self.batches(x, y, 32):
            out = forward(xb).float()
            total += float(self.loss(out, yb)) * len(xb)
            pred, truth = out > 0, yb > 0.5
            tp += float((pred & truth).sum())
            fp += float((pred & ~truth).sum())
            fn += float((~pred & truth).sum())
        denom = 2 * tp + fp + fn
        return {f"{part}_loss": total / len(x), f"{part}_dice": 2 * tp / denom if denom else 1.0,
                f"{part}_iou": tp / (tp + fp + fn) if denom else 1.0}

    @torch.no_grad()
    def write_figures(self, model: nn.Module, forward: Forward, out: Path, final: bool) -> None:
        s = self.split
        n = min(4, len(s.x_val))
        pred = forward(s.x_val[:n]) > 0
        plot_overlays([("", s.x_val[i], s.y_val[i], pred[i]) for i in range(n)], out / "samples.png")
        if final:
            pred = torch.cat([forward(xb) > 0 for xb, _ in self.batches(s.x_test, s.y_test, 32)])
            truth = s.y_test > 0.5
            dice = dice_per_image(pred, truth).cpu()
            cases = pick_cases(dice, truth.flatten(1).any(1).cpu())
            plot_overlays([(f"{label} (Dice {float(dice[i]):.2f})", s.x_test[i], s.y_test[i], pred[i])
                           for label, i in cases], out / "test_cases.png",
                          title=f"{self.name}: test patches where the model worked, partly worked and missed")


class UNetTask(SegmentationTask):
    name = "unet"

    def check(self) -> None:
        f = 2 ** self.args["depth"]
        if self.patch % f:
            raise UsageError(f"unet with --depth {self.args['depth']} needs a --patch-size divisible by {f}, "
                             f"got {self.patch}")

    def build_model(self, backend: str) -> nn.Module:
        a = self.args
        return models.UNet(self.split.in_channels, 1, base=a["base"], depth=a["depth"], skip=not a["no_skip"],
                           backend=backend)


class SegViTTask(SegmentationTask):
    name = "segvit"

    def check(self) -> None:
        a = self.args
        if self.patch % a["vit_patch"]:
            raise UsageError(f"segvit needs a --patch-size divisible by --vit-patch {a['vit_patch']}, "
                             f"got {self.patch}")
        if a["embed_dim"] % a["heads"]:
            raise UsageError(f"segvit needs --embed-dim divisible by --heads, got {a['embed_dim']} and "
                             f"{a['heads']}")

    def build_model(self, backend: str) -> nn.Module:
        a = self.args
        return models.SegViT(self.split.in_channels, 1, image_size=self.patch, patch_size=a["vit_patch"],
                             dim=a["embed_dim"], depth=a["depth"], heads=a["heads"], backend=backend)
