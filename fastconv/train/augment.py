"""Batch augmentation for the classifiers (``fastconv train classifier --augment``), on tensors.

Every random number comes from the generator passed in (the training loop's per-epoch
generator, whose state a checkpoint keeps), drawn per sample in a fixed order, so an
augmented run is reproducible, resumes bit-identically and does not depend on the number
of processes.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .options import AUGMENTATIONS


def _uniform(n: int, lo: float, hi: float, g: torch.Generator, device: torch.device) -> Tensor:
    return (lo + (hi - lo) * torch.rand(n, generator=g)).to(device)


def random_flips(x: Tensor, g: torch.Generator) -> Tensor:
    """Flip each image left-right with probability 1/2, then up-down with probability 1/2."""
    n = len(x)
    lr = torch.rand(n, generator=g).lt(0.5).to(x.device).view(-1, 1, 1, 1)
    ud = torch.rand(n, generator=g).lt(0.5).to(x.device).view(-1, 1, 1, 1)
    x = torch.where(lr, x.flip(3), x)
    return torch.where(ud, x.flip(2), x)


def random_rot90(x: Tensor, g: torch.Generator) -> Tensor:
    """Rotate each image by a random multiple of 90 degrees (of 180 degrees when not square)."""
    square = x.shape[-1] == x.shape[-2]
    k = torch.randint(4 if square else 2, (len(x),), generator=g) * (1 if square else 2)
    out = x.clone()
    for turns in (1, 2, 3):
        sel = (k == turns).nonzero().flatten().to(x.device)
        if len(sel):
            out[sel] = torch.rot90(x[sel], turns, (2, 3))
    return out


def random_shift(x: Tensor, g: torch.Generator, fraction: float = 0.125) -> Tensor:
    """Shift each image by up to ``fraction`` of its side (at least one pixel) in each direction,
    filling with zeros: a random crop of the zero-padded image, of the image's size."""
    n, c, h, w = x.shape
    s = max(1, int(round(fraction * min(h, w))))
    dy = torch.randint(2 * s + 1, (n,), generator=g).to(x.device)
    dx = torch.randint(2 * s + 1, (n,), generator=g).to(x.device)
    padded = F.pad(x, (s, s, s, s))
    rows = (dy[:, None] + torch.arange(h, device=x.device)).view(n, 1, h, 1).expand(n, c, h, w + 2 * s)
    out = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w, device=x.device)).view(n, 1, 1, w).expand(n, c, h, w)
    return out.gather(3, cols)


def random_jitter(x: Tensor, g: torch.Generator, brightness: float = 0.1, contrast: float = 0.2) -> Tensor:
    """Scale each image's contrast about its mean by a factor in ``1 +- contrast`` and shift its
    brightness by up to ``+- brightness``, clipped to [0, 1]."""
    n = len(x)
    c = _uniform(n, 1 - contrast, 1 + contrast, g, x.device).view(-1, 1, 1, 1)
    b = _uniform(n, -brightness, brightness, g, x.device).view(-1, 1, 1, 1)
    mean = x.mean((1, 2, 3), keepdim=True)
    return ((x - mean) * c + mean + b).clamp(0, 1)


_STEPS = {"flip": random_flips, "rot90": random_rot90, "shift": random_shift, "jitter": random_jitter}


def augment(x: Tensor, kinds: Sequence[str], g: torch.Generator) -> Tensor:
    """Apply the augmentations named in ``kinds`` (a subset of :data:`AUGMENTATIONS`, applied in
    that canonical order whatever the order given) to the batch ``x`` (N, C, H, W)."""
    unknown = set(kinds) - set(AUGMENTATIONS)
    if unknown:
        raise ValueError(f"unknown augmentation(s) {sorted(unknown)}; choose from {AUGMENTATIONS}")
    for kind in AUGMENTATIONS:
        if kind in kinds:
            x = _STEPS[kind](x, g)
    return x


__all__ = ["augment", "random_flips", "random_rot90", "random_shift", "random_jitter"]
