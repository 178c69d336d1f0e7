"""Classification tasks: ``classifier`` and ``cifarnet`` (cross-entropy, accuracy)."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Tuple

import torch
import torch.nn.functional as TF
from torch import Tensor, nn

from .. import models
from . import data as D
from .augment import augment
from .base import Forward, Task
from .plots import plot_classification


class Classification(Task):
    """Images and integer labels; the model returns class logits."""

    metric = "val_accuracy"
    default_image_size = 8

    def load_data(self) -> D.Split:
        a = self.args
        size = a["image_size"] or (None if a["data"] else self.default_image_size)
        self.split = D.classification_data(a["data"], seed=a["seed"], fractions=a["split"], image_size=size,
                                           limit=a["limit"])
        return self.split

    def batch(self, x: Tensor, y: Tensor, g: torch.Generator) -> Tuple[Tuple[Tensor, ...], Tensor]:
        kinds = self.args.get("augment") or ()
        return ((augment(x, kinds, g) if kinds else x),), y

    def loss(self, out: Tensor, target: Tensor) -> Tensor:
        return TF.cross_entropy(out.float(), target)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, forward: Forward, part: str) -> Dict[str, float]:
        x, y = self.split.part(part)
        correct, total = 0, 0.0
        for xb, yb in self.batches(x, y):
            out = forward(xb).float()
            total += float(TF.cross_entropy(out, yb, reduction="sum"))
            correct += int((out.argmax(1) == yb).sum())
        return {f"{part}_loss": total / len(x), f"{part}_accuracy": correct / len(x)}

    @torch.no_grad()
    def write_figures(self, model: nn.Module, forward: Forward, out: Path, final: bool) -> None:
        n = min(16, len(self.split.x_val))
        x, y = self.split.x_val[:n], self.split.y_val[:n]
        plot_classification(x, y, forward(x).argmax(1).cpu(), self.split.classes, out / "samples.png")


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
