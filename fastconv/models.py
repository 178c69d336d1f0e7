"""Seed models built on fastconv layers: ``Classifier``, ``CifarNet``, ``UNet`` and ``Denoiser``.

Every model takes ``backend='fastconv'`` (the conv/pool layers are :mod:`fastconv.nn`
twins) or ``backend='torch'`` (plain :mod:`torch.nn`).  A model is always built from
torch.nn layers first and then converted in place with :func:`fastconv.convert_model`,
so for a given RNG state both backends get bit-identical initial parameters and the
same ``state_dict`` keys.
"""
from __future__ import annotations

from typing import List

import torch
from torch import Tensor, nn

from .convert import convert_model

BACKENDS = ("fastconv", "torch")


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def _finish(model: nn.Module, backend: str) -> nn.Module:
    """Swap the conv/pool layers for fastconv twins when ``backend == 'fastconv'``."""
    if backend == "fastconv":
        convert_model(model)
    return model


class Classifier(nn.Module):
    """Three 3x3 conv blocks (32, 64, 128 channels; padding 1, ReLU, 2x2 max-pool), then
    ``Linear(., 128)``, ReLU, ``Linear(128, num_classes)``.  ``image_size`` (>= 8) is the
    side of the square input; non-square inputs of the same pooled size also work.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28,
                 backend: str = "fastconv") -> None:
        super().__init__()
        _check_backend(backend)
        if image_size < 8:
            raise ValueError(f"Classifier needs image_size >= 8 (three 2x2 max-pools), got {image_size}")
        self.backend = backend
        layers: List[nn.Module] = []
        c = in_channels
        for width in (32, 64, 128):
            layers += [nn.Conv2d(c, width, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            c = width
        self.features = nn.Sequential(*layers)
        side = image_size // 8
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(128 * side * side, 128), nn.ReLU(inplace=True),
                                  nn.Linear(128, num_classes))
        _finish(self, backend)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class CifarNet(nn.Module):
    """Two 5x5 conv blocks (64 then 32 channels, no padding, ReLU, ``MaxPool2d(2, 2)``) and
    three Linear layers (128, 64, ``num_classes``), the classic CIFAR-10 LeNet shape.
    ``image_size`` must be >= 16.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 10, image_size: int = 32,
                 backend: str = "fastconv") -> None:
        super().__init__()
        _check_backend(backend)
        side = ((image_size - 4) // 2 - 4) // 2
        if side < 1:
            raise ValueError(f"CifarNet needs image_size >= 16, got {image_size}")
        self.backend = backend
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 64, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2),
            nn.Conv2d(64, 32, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2))
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(32 * side * side, 128), nn.ReLU(inplace=True),
            nn.Linear(128, 64), nn.ReLU(inplace=True), nn.Linear(64, num_classes))
        _finish(self, backend)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    """``(conv3x3 - BatchNorm - ReLU) x 2``, the U-Net block (convs without bias: BN follows)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True))


class UNet(nn.Module):
    """U-Net: ``depth`` max-pool downsamplings with double-conv blocks of ``base * 2**i``
    channels, a bottleneck of ``base * 2**depth`` channels, ``ConvTranspose2d(2, stride=2)``
    upsampling and concatenated skip connections, then a 1x1 conv to ``out_channels``
    logits.  Input sides must be divisible by ``2**depth``.

    ``skip=False`` is the no-skip ablation: each skip tensor is replaced by zeros of the
    same shape, so the decoder (and the parameter count) is unchanged.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, base: int = 16, depth: int = 4,
                 skip: bool = True, backend: str = "fastconv") -> None:
        super().__init__()
        _check_backend(backend)
        if depth < 1 or base < 1:
            raise ValueError(f"UNet needs depth >= 1 and base >= 1, got depth={depth}, base={base}")
        self.backend, self.depth, self.skip = backend, depth, skip
        widths = [base * 2 ** i for i in range(depth + 1)]
        self.down = nn.ModuleList()
        c = in_channels
        for w in widths[:-1]:
            self.down.append(double_conv(c, w))
            c = w
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = double_conv(widths[-2], widths[-1])
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for i in reversed(range(depth)):
            self.up.append(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2))
            self.dec.append(double_conv(2 * widths[i], widths[i]))
        self.out = nn.Conv2d(widths[0], out_channels, 1)
        _finish(self, backend)

    def forward(self, x: Tensor) -> Tensor:
        f = 2 ** self.depth
        if x.shape[-1] % f or x.shape[-2] % f:
            raise ValueError(f"UNet(depth={self.depth}) needs input sides divisible by {f}, "
                             f"got {tuple(x.shape[-2:])}")
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for up, dec, s in zip(self.up, self.dec, reversed(skips)):
            x = up(x)
            if not self.skip:
                s = torch.zeros_like(s)
            x = dec(torch.cat([x, s], dim=1))
        return self.out(x)


class Denoiser(nn.Module):
    """Convolutional autoencoder: strided 3x3 encoder (``in_channels`` -> 32 -> 16 -> 8, stride 2,
    SiLU), a transposed-conv decoder (8 -> 16 -> 32 -> 32, 4x4 stride 2 padding 1, i.e. overlapping
    windows that double the size without block artefacts, SiLU) and a final 3x3
    conv back to ``in_channels``.  Output has the input's size for sides divisible by 8.
    """

    def __init__(self, in_channels: int = 1, backend: str = "fastconv") -> None:
        super().__init__()
        _check_backend(backend)
        self.backend = backend
        self.encoder = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(32, 16, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(16, 8, 3, stride=2, padding=1), nn.SiLU())
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(8, 16, 4, stride=2, padding=1), nn.SiLU(),
            nn.ConvTranspose2d(16, 32, 4, stride=2, padding=1), nn.SiLU(),
            nn.ConvTranspose2d(32, 32, 4, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(32, in_channels, 3, padding=1))
        _finish(self, backend)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] % 8 or x.shape[-2] % 8:
            raise ValueError(f"Denoiser needs input sides divisible by 8, got {tuple(x.shape[-2:])}")
        return self.decoder(self.encoder(x))


__all__ = ["BACKENDS", "Classifier", "CifarNet", "UNet", "Denoiser", "double_conv"]
