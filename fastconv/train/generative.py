"""Generative tasks: ``vae`` and ``cvae`` on digit-like images.

The loss is the negative ELBO per image, ``recon + beta * KL``: ``recon`` is the Bernoulli
negative log-likelihood (binary cross-entropy of the pixel logits, summed over the pixels)
and ``KL`` the divergence of the posterior ``N(mu, exp(logvar))`` from ``N(0, I)``.  The
latent noise of training batches comes from the epoch's generator.  Validation records both
terms, and the SSIM and PSNR (:func:`fastconv.ssim`, :func:`fastconv.psnr`) of the mean
reconstructions, ``sigmoid(decode(mu))``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as TF
from torch import Tensor, nn

from .. import models
from . import data as D
from .base import Forward, Task
from .denoising import quality_sums
from .errors import UsageError
from .plots import plot_image_grid

#: samples per class in the CVAE's digit grid, and steps of the VAE's latent traversal
GRID_SAMPLES = 5
TRAVERSAL_STEPS = 9


def elbo_terms(out: Tuple[Tensor, Tensor, Tensor], target: Tensor) -> Tuple[Tensor, Tensor]:
    """Per-image reconstruction term (Bernoulli NLL, summed over pixels) and KL divergence."""
    logits, mu, logvar = (t.float() for t in out)
    recon = TF.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(1).sum(1)
    kl = -0.5 * (1 + logvar - mu * mu - logvar.exp()).sum(1)
    return recon, kl


class VAETask(Task):
    name = "vae"
    metric = "val_ssim"
    conditional = False
    default_image_size = 16

    @property
    def win_size(self) -> int:
        """The SSIM window: 11, or the largest odd size the images allow."""
        return min(11, self.split.image_size - 1)

    def check(self) -> None:
        size = self.args["image_size"]
        if size is not None and size % 4:
            raise UsageError(f"{self.name} needs an --image-size divisible by 4, got {size}")

    def load_data(self) -> D.Split:
        a = self.args
        size = a["image_size"] or (None if a["data"] else self.default_image_size)
        self.split = D.classification_data(a["data"], seed=a["seed"], fractions=a["split"], image_size=size,
                                           limit=a["limit"])
        if self.split.image_size % 4 or self.split.x_train.shape[-2] != self.split.image_size:
            raise UsageError(f"{self.name} needs square images with a side divisible by 4, got "
                             f"{tuple(self.split.x_train.shape[-2:])}; pass --image-size")
        return self.split

    def build_model(self, backend: str) -> nn.Module:
        s, a = self.split, self.args
        cls = models.CVAE if self.conditional else models.VAE
        extra = {"num_classes": s.num_classes} if self.conditional else {}
        return cls(s.in_channels, s.image_size, latent_dim=a["latent_dim"], base=a["base"], backend=backend, **extra)

    def _inputs(self, x: Tensor, y: Tensor, noise: Tensor) -> Tuple[Tensor, ...]:
        return (x, y, noise) if self.conditional else (x, None, noise)

    def batch(self, x: Tensor, y: Tensor, g: torch.Generator) -> Tuple[Tuple[Tensor, ...], Tensor]:
        noise = torch.randn(len(x), self.args["latent_dim"], generator=g).to(x.device)
        return self._inputs(x, y, noise), x

    def loss(self, out: Tuple[Tensor, Tensor, Tensor], target: Tensor) -> Tensor:
        recon, kl = elbo_terms(out, target)
        return (recon + self.args["beta"] * kl).mean()

    def loss_terms(self, out: Tuple[Tensor, Tensor, Tensor], target: Tensor) -> Dict[str, Tensor]:
        recon, kl = elbo_terms(out, target)
        return {"recon": recon.mean(), "kl": kl.mean()}

    def _labels(self, y: Tensor):
        return y if self.conditional else None

    @torch.no_grad()
    def evaluate(self, model: nn.Module, forward: Forward, part: str) -> Dict[str, float]:
        x, y = self.split.part(part)
        g = torch.Generator().manual_seed(self.args["seed"] + (104729 if part == "val" else 104723))
        noise = torch.randn(len(x), self.args["latent_dim"], generator=g).to(x.device)
        sums = dict.fromkeys(("recon", "kl", "psnr", "ssim"), 0.0)
        for i in range(0, len(x), 128):
            xb, yb, nb = x[i:i + 128], y[i:i + 128], noise[i:i + 128]
            recon, kl = elbo_terms(forward(*self._inputs(xb, yb, nb)), xb)
            sums["recon"] += float(recon.sum())
            sums["kl"] += float(kl.sum())
            mean_image = torch.sigmoid(model.decode(model.encode(xb, self._labels(yb))[0], self._labels(yb)))
            p, s = quality_sums(mean_image.float(), xb, self.win_size)
            sums["psnr"] += p
            sums["ssim"] += s
        m = {f"{part}_{k}": v / len(x) for k, v in sums.items()}
        m[f"{part}_loss"] = m[f"{part}_recon"] + self.args["beta"] * m[f"{part}_kl"]
        return m

    @torch.no_grad()
    def write_figures(self, model: nn.Module, forward: Forward, out: Path, final: bool) -> None:
        n = min(10, len(self.split.x_val))
        x, y = self.split.x_val[:n], self.split.y_val[:n]
        recon = torch.sigmoid(model.decode(model.encode(x, self._labels(y))[0], self._labels(y)))
        plot_image_grid([("original", list(x)), ("reconstruction", list(recon))], out / "samples.png",
                        title=f"{self.name}: validation images and their mean reconstructions")
        self.write_generated(model, out)

    def write_generated(self, model: nn.Module, out: Path) -> None:
        """The VAE's latent traversal: each row varies one latent coordinate (the most used ones,
        by their mean KL on the validation set) from -3 to 3 with the others at 0."""
        x = self.split.x_val
        mu, logvar = model.encode(x[:512])
        kl_per_dim = (-0.5 * (1 + logvar - mu * mu - logvar.exp())).mean(0)
        dims = torch.argsort(kl_per_dim, descending=True)[:min(8, model.latent_dim)].tolist()
        steps = torch.linspace(-3, 3, TRAVERSAL_STEPS)
        rows: List[Tuple[str, List[Tensor]]] = []
        for d in dims:
            z = torch.zeros(TRAVERSAL_STEPS, model.latent_dim)
            z[:, d] = steps
            rows.append((f"z[{d}]", list(torch.sigmoid(model.decode(z.to(x.device))))))
        plot_image_grid(rows, out / "traversal.png", columns=[f"{v:+.1f}" for v in steps.tolist()],
                        title="vae: latent traversal (rows: latent coordinates by KL; columns: value)")


class CVAETask(VAETask):
    name = "cvae"
    conditional = True

    def load_data(self) -> D.Split:
        split = super().load_data()
        digits = self.args["digits"]
        bad = [d for d in digits or () if d >= split.num_classes]
        if bad:
            raise UsageError(f"--digits {' '.join(map(str, bad))}: the data have {split.num_classes} classes "
                             f"(0 to {split.num_classes - 1})")
        return split

    def write_generated(self, model: nn.Module, out: Path) -> None:
        """The CVAE's grid: for each chosen class (``--digits``, default all), GRID_SAMPLES images
        decoded from ``z ~ N(0, I)`` (a fixed generator, so the grid is the same every epoch)."""
        digits = self.args["digits"] or list(range(self.split.num_classes))
        g = torch.Generator().manual_seed(self.args["seed"])
        names = self.split.classes
        rows = [(names[d] if d < len(names) else str(d),
                 list(model.sample(GRID_SAMPLES, torch.full((GRID_SAMPLES,), d), generator=g)))
                for d in digits]
        plot_image_grid(rows, out / "digits.png", title=f"cvae: {GRID_SAMPLES} samples of each chosen class")
