"""Seed models built on fastconv layers: ``Classifier``, ``CifarNet``, ``UNet``, ``SegViT``,
``Denoiser``, ``VAE`` and ``CVAE``.

Every model takes ``backend='fastconv'`` (the conv/pool layers are :mod:`fastconv.nn`
twins) or ``backend='torch'`` (plain ``torch.nn``).  A model is always built from
torch.nn layers first and then converted in place with :func:`fastconv.convert_model`,
so for a given RNG state both backends get bit-identical initial parameters and the
same ``state_dict`` keys.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .convert import convert_model

BACKENDS = ("fastconv", "torch")


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def _finish(model: nn.Module, backend: str) -> nn.Module:
    """Swap the conv/pool layers for fastconv twins when ``backend == 'fastconv'``, fusing
    ``conv [-> BN] -> activation [-> max pool]`` runs (``convert_model(fuse=True)``): the
    parameters and ``state_dict`` keys stay torch's."""
    if backend == "fastconv":
        convert_model(model, fuse=True)
    return model


class Classifier(nn.Module):
    """Three 3x3 conv blocks (32, 64, 128 channels; padding 1, ReLU, 2x2 max-pool), then
    ``Linear(., 128)``, ReLU, ``Linear(128, num_classes)``.  ``image_size`` (>= 8) is the
    side of the square input; non-square inputs of the same pooled size also work.

    Parameters
    ----------
    in_channels : int, optional
        Input channels (1 for MNIST-like images).
    num_classes : int, optional
        Output logits.
    image_size : int, optional
        Side of the square input images, at least 8; it sizes the first Linear layer.
    backend : {'fastconv', 'torch'}, optional
        fastconv twins of the conv/pool layers (fused where possible) or plain torch.nn.

    Raises
    ------
    ValueError
        For an unknown backend or ``image_size < 8``.

    Examples
    --------
    >>> import torch
    >>> from fastconv.models import Classifier
    >>> Classifier(in_channels=1, num_classes=10, image_size=28)(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
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
        """Class logits ``(N, num_classes)`` of images ``x`` ``(N, in_channels, H, W)``."""
        return self.head(self.features(x))


class CifarNet(nn.Module):
    """Two 5x5 conv blocks (64 then 32 channels, no padding, ReLU, ``MaxPool2d(2, 2)``) and
    three Linear layers (128, 64, ``num_classes``), the classic CIFAR-10 LeNet shape.
    ``image_size`` must be >= 16.

    Parameters
    ----------
    in_channels : int, optional
        Input channels (3 for RGB).
    num_classes : int, optional
        Output logits.
    image_size : int, optional
        Side of the square input images, at least 16; it sizes the first Linear layer.
    backend : {'fastconv', 'torch'}, optional
        fastconv twins of the conv/pool layers (fused where possible) or plain torch.nn.

    Raises
    ------
    ValueError
        For an unknown backend or ``image_size < 16``.

    Examples
    --------
    >>> import torch
    >>> from fastconv.models import CifarNet
    >>> CifarNet()(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
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
        """Class logits ``(N, num_classes)`` of images ``x`` ``(N, in_channels, H, W)``."""
        return self.head(self.features(x))


def double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    """``(conv3x3 - BatchNorm - ReLU) x 2``, the U-Net block (convs without bias: BN follows).

    The layers are plain torch.nn ones; the models convert them with the rest.

    Parameters
    ----------
    in_channels, out_channels : int
        Channels of the block's input and output (and of its middle layer: ``out_channels``).

    Returns
    -------
    torch.nn.Sequential
        Six layers, keeping the spatial size (padding 1).

    Examples
    --------
    >>> import torch
    >>> from fastconv.models import double_conv
    >>> block = double_conv(1, 4)
    >>> len(block), block(torch.zeros(2, 1, 8, 8)).shape
    (6, torch.Size([2, 4, 8, 8]))
    """
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

    Parameters
    ----------
    in_channels : int, optional
        Input channels.
    out_channels : int, optional
        Output logit channels (classes, or 1 for a binary mask).
    base : int, optional
        Channels of the first block; each downsampling doubles them.
    depth : int, optional
        Number of 2x2 max-pool downsamplings (>= 1); input sides must be divisible by
        ``2**depth``.
    skip : bool, optional
        Concatenate the encoder's features into the decoder (``False``: zeros instead).
    backend : {'fastconv', 'torch'}, optional
        fastconv twins of the conv/pool layers (fused where possible) or plain torch.nn.

    Raises
    ------
    ValueError
        For an unknown backend, ``depth < 1`` or ``base < 1``; at the forward call, for
        input sides not divisible by ``2**depth``.

    Examples
    --------
    >>> import torch
    >>> from fastconv.models import UNet
    >>> net = UNet(in_channels=1, out_channels=3, base=4, depth=2)
    >>> net(torch.zeros(1, 1, 32, 32)).shape
    torch.Size([1, 3, 32, 32])
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
        """Per-pixel logits ``(N, out_channels, H, W)`` of images ``x`` ``(N, in_channels, H, W)``."""
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

    Parameters
    ----------
    in_channels : int, optional
        Channels of the images (input and output).
    backend : {'fastconv', 'torch'}, optional
        fastconv twins of the conv/pool layers (fused where possible) or plain torch.nn.

    Raises
    ------
    ValueError
        For an unknown backend; at the forward call, for input sides not divisible by 8.

    Examples
    --------
    >>> import torch
    >>> from fastconv.models import Denoiser
    >>> Denoiser(in_channels=3)(torch.zeros(2, 3, 32, 24)).shape
    torch.Size([2, 3, 32, 24])
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
        """The denoised images, of the shape of ``x`` ``(N, in_channels, H, W)``."""
        if x.shape[-1] % 8 or x.shape[-2] % 8:
            raise ValueError(f"Denoiser needs input sides divisible by 8, got {tuple(x.shape[-2:])}")
        return self.decoder(self.encoder(x))


class SegViT(nn.Module):
    """Segmentation vision transformer: a patch embedding, transformer blocks, and a transposed
    convolution back to the pixels.

    * the patch embedding *is* a strided convolution: a linear map of each ``patch_size``-square
      patch (a patchwise MLP layer) is ``Conv2d(in_channels, dim, patch_size, stride=patch_size)``,
      a fastconv layer under ``backend='fastconv'``; a learned position embedding (one vector per
      patch of an ``image_size`` square, bilinearly resized for other sizes) is added;
    * ``depth`` pre-norm ``torch.nn.TransformerEncoderLayer`` blocks (``heads`` heads, MLP width
      ``mlp_ratio * dim``, GELU, no dropout) and a final LayerNorm;
    * ``ConvTranspose2d(dim, out_channels, patch_size, stride=patch_size)``: each token paints
      its own patch of logits.

    Input sides must be divisible by ``patch_size``.

    Parameters
    ----------
    in_channels : int, optional
        Input channels.
    out_channels : int, optional
        Output logit channels.
    image_size : int, optional
        Side of the square images the position embedding is learned for (other sizes,
        divisible by ``patch_size``, resize it); divisible by ``patch_size``.
    patch_size : int, optional
        Side of the square patches (tokens).
    dim : int, optional
        Token width; divisible by ``heads``.
    depth : int, optional
        Number of transformer blocks.
    heads : int, optional
        Attention heads.
    mlp_ratio : float, optional
        MLP width over ``dim``.
    backend : {'fastconv', 'torch'}, optional
        fastconv twins of the conv/pool layers (fused where possible) or plain torch.nn.

    Raises
    ------
    ValueError
        For an unknown backend, ``image_size`` not divisible by ``patch_size`` or ``dim`` not
        divisible by ``heads``; at the forward call, for input sides not divisible by
        ``patch_size``.

    Examples
    --------
    >>> import torch
    >>> from fastconv.models import SegViT
    >>> net = SegViT(in_channels=1, out_channels=2, image_size=32, patch_size=4, dim=16, depth=1, heads=2)
    >>> net(torch.zeros(1, 1, 32, 32)).shape
    torch.Size([1, 2, 32, 32])
    >>> net(torch.zeros(1, 1, 16, 24)).shape                  # the position embedding is resized
    torch.Size([1, 2, 16, 24])
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, image_size: int = 32, patch_size: int = 4,
                 dim: int = 64, depth: int = 4, heads: int = 4, mlp_ratio: float = 2.0,
                 backend: str = "fastconv") -> None:
        super().__init__()
        _check_backend(backend)
        if patch_size < 1 or image_size % patch_size:
            raise ValueError(f"SegViT needs image_size divisible by patch_size, got {image_size} and {patch_size}")
        if dim % heads:
            raise ValueError(f"SegViT needs dim divisible by heads, got dim={dim}, heads={heads}")
        self.backend, self.patch_size = backend, patch_size
        grid = image_size // patch_size
        self.embed = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.pos = nn.Parameter(0.02 * torch.randn(1, dim, grid, grid))
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(dim, heads, int(mlp_ratio * dim), dropout=0.0, activation="gelu",
                                       batch_first=True, norm_first=True) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.ConvTranspose2d(dim, out_channels, patch_size, stride=patch_size)
        _finish(self, backend)

    def forward(self, x: Tensor) -> Tensor:
        """Per-pixel logits ``(N, out_channels, H, W)`` of images ``x`` ``(N, in_channels, H, W)``."""
        p = self.patch_size
        if x.shape[-1] % p or x.shape[-2] % p:
            raise ValueError(f"SegViT(patch_size={p}) needs input sides divisible by {p}, got {tuple(x.shape[-2:])}")
        t = self.embed(x)
        n, dim, gh, gw = t.shape
        pos = self.pos
        if pos.shape[-2:] != (gh, gw):
            pos = F.interpolate(pos, size=(gh, gw), mode="bilinear", align_corners=False)
        seq = (t + pos).flatten(2).transpose(1, 2)
        for block in self.blocks:
            seq = block(seq)
        t = self.norm(seq).transpose(1, 2).reshape(n, dim, gh, gw)
        return self.head(t)


class VAE(nn.Module):
    """Convolutional variational autoencoder with a Bernoulli decoder (logits out).

    * encoder: ``Conv2d(in_channels, base, 4, stride 2, padding 1)``, ReLU, ``Conv2d(base, 2 base,
      4, 2, 1)``, ReLU, flattened, then two Linear maps to the latent mean and log-variance;
    * the latent is reparameterised, ``z = mu + exp(logvar / 2) * eps`` with ``eps ~ N(0, I)``
      (``noise`` supplies ``eps``, e.g. from a seeded generator);
    * decoder: ``Linear(latent_dim, .)``, ReLU, ``ConvTranspose2d(2 base, base, 4, 2, 1)``, ReLU,
      ``ConvTranspose2d(base, in_channels, 4, 2, 1)``: pixel logits (``sigmoid`` gives images).

    With ``num_classes > 0`` (see :class:`CVAE`) the one-hot label is appended to the
    encoder's features and to the latent.  ``image_size`` (the square input's side) must be
    divisible by 4.

    Parameters
    ----------
    in_channels : int, optional
        Image channels.
    image_size : int, optional
        Side of the square images, divisible by 4.
    latent_dim : int, optional
        Size of the latent.
    base : int, optional
        Channels of the first conv layer (the second has ``2 * base``).
    num_classes : int, optional
        0 for an unconditional VAE; see :class:`CVAE`.
    backend : {'fastconv', 'torch'}, optional
        fastconv twins of the conv/pool layers (fused where possible) or plain torch.nn.

    Raises
    ------
    ValueError
        For an unknown backend, an ``image_size`` not divisible by 4, or non-positive
        ``latent_dim``/``base`` (negative ``num_classes``).

    Examples
    --------
    >>> import torch
    >>> from fastconv.models import VAE
    >>> vae = VAE(in_channels=1, image_size=28, latent_dim=8)
    >>> logits, mu, logvar = vae(torch.zeros(2, 1, 28, 28))
    >>> logits.shape, mu.shape, logvar.shape
    (torch.Size([2, 1, 28, 28]), torch.Size([2, 8]), torch.Size([2, 8]))
    >>> vae.sample(3, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([3, 1, 28, 28])
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, latent_dim: int = 8, base: int = 32,
                 num_classes: int = 0, backend: str = "fastconv") -> None:
        super().__init__()
        _check_backend(backend)
        if image_size < 4 or image_size % 4:
            raise ValueError(f"{type(self).__name__} needs image_size divisible by 4, got {image_size}")
        if latent_dim < 1 or base < 1 or num_classes < 0:
            raise ValueError(f"{type(self).__name__} needs latent_dim >= 1, base >= 1 and num_classes >= 0, got "
                             f"{latent_dim}, {base} and {num_classes}")
        self.backend, self.latent_dim, self.num_classes = backend, latent_dim, num_classes
        self.image_size, self.in_channels = image_size, in_channels
        side = image_size // 4
        features = 2 * base * side * side
        self.encoder = nn.Sequential(
            nn.Conv2d(in_channels, base, 4, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(base, 2 * base, 4, stride=2, padding=1), nn.ReLU(inplace=True), nn.Flatten())
        self.to_mu = nn.Linear(features + num_classes, latent_dim)
        self.to_logvar = nn.Linear(features + num_classes, latent_dim)
        self.from_latent = nn.Sequential(nn.Linear(latent_dim + num_classes, features), nn.ReLU(inplace=True),
                                         nn.Unflatten(1, (2 * base, side, side)))
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(2 * base, base, 4, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(base, in_channels, 4, stride=2, padding=1))
        _finish(self, backend)

    def _condition(self, h: Tensor, labels: Optional[Tensor]) -> Tensor:
        if not self.num_classes:
            return h
        if labels is None:
            raise ValueError(f"{type(self).__name__} is conditioned on the class: pass labels")
        return torch.cat([h, F.one_hot(labels.long(), self.num_classes).to(h.dtype)], 1)

    def encode(self, x: Tensor, labels: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """The latent posterior's ``(mu, logvar)`` for images ``x`` (N, C, S, S)."""
        h = self._condition(self.encoder(x), labels)
        return self.to_mu(h), self.to_logvar(h)

    def decode(self, z: Tensor, labels: Optional[Tensor] = None) -> Tensor:
        """Pixel logits for latents ``z`` (N, latent_dim)."""
        return self.decoder(self.from_latent(self._condition(z, labels)))

    def forward(self, x: Tensor, labels: Optional[Tensor] = None,
                noise: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
        """``(logits, mu, logvar)``: the reconstruction's pixel logits from a sampled latent."""
        mu, logvar = self.encode(x, labels)
        eps = torch.randn_like(mu) if noise is None else noise.to(mu.dtype)
        z = mu + torch.exp(0.5 * logvar) * eps
        return self.decode(z, labels), mu, logvar

    @torch.no_grad()
    def sample(self, n: int, labels: Optional[Tensor] = None,
               generator: Optional[torch.Generator] = None) -> Tensor:
        """``n`` images in [0, 1] decoded from ``z ~ N(0, I)`` (of class ``labels`` for a CVAE)."""
        z = torch.randn(n, self.latent_dim, generator=generator)
        dev = next(self.parameters()).device
        return torch.sigmoid(self.decode(z.to(dev), None if labels is None else labels.to(dev)))


class CVAE(VAE):
    """Conditional :class:`VAE`: the encoder and the decoder also see the one-hot class label,
    so ``CVAE.sample(n, labels)`` draws images of chosen classes.  ``forward(x, labels)``.

    Parameters
    ----------
    in_channels, image_size, latent_dim, base
        As in :class:`VAE`.
    num_classes : int, optional
        Number of classes (>= 1); labels are ints in ``[0, num_classes)``.
    backend : {'fastconv', 'torch'}, optional
        fastconv twins of the conv/pool layers (fused where possible) or plain torch.nn.

    Raises
    ------
    ValueError
        For ``num_classes < 1``, and as :class:`VAE`.

    Examples
    --------
    >>> import torch
    >>> from fastconv.models import CVAE
    >>> cvae = CVAE(num_classes=10)
    >>> labels = torch.tensor([3, 7])
    >>> logits, mu, logvar = cvae(torch.zeros(2, 1, 28, 28), labels)
    >>> logits.shape
    torch.Size([2, 1, 28, 28])
    >>> cvae.sample(2, labels, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([2, 1, 28, 28])
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, latent_dim: int = 8, base: int = 32,
                 num_classes: int = 10, backend: str = "fastconv") -> None:
        if num_classes < 1:
            raise ValueError(f"CVAE needs num_classes >= 1, got {num_classes}")
        super().__init__(in_channels, image_size, latent_dim, base, num_classes, backend)


__all__ = ["BACKENDS", "Classifier", "CifarNet", "UNet", "SegViT", "Denoiser", "VAE", "CVAE", "double_conv"]
