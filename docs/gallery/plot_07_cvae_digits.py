"""
A conditional VAE draws chosen digits
=====================================

The image-generation exercise of the course work trained a conditional variational
autoencoder on handwritten digits and drew a grid: for each digit, several samples decoded
from random latent vectors.  :class:`fastconv.models.CVAE` is that model: a convolutional
encoder, a reparameterised 8-dimensional latent and a ``ConvTranspose2d`` decoder, with the
one-hot label appended to the encoder's features and to the latent.  Its convolutions and
transposed convolutions run on fastconv's kernels.

The data are scikit-learn's bundled 8 x 8 digits, resized to 16 x 16 as ``fastconv train
cvae`` does (:func:`fastconv.train.data.classification_data`).  The loss is the negative
ELBO, ``Bernoulli reconstruction + KL`` (:func:`fastconv.train.generative.elbo_terms`).
Twelve epochs take well under a minute on two CPU cores; ``fastconv train cvae`` trains
longer (20 epochs) and also records the validation SSIM and PSNR every epoch.
"""

import time

import matplotlib.pyplot as plt
import torch

import fastconv
from fastconv.models import CVAE
from fastconv.train.data import classification_data
from fastconv.train.generative import elbo_terms

split = classification_data(None, seed=0, image_size=16)
x, y = split.x_train, split.y_train
print(f"{len(x)} training images of {tuple(x.shape[1:])}, {len(split.x_val)} validation images")

torch.manual_seed(0)
model = CVAE(in_channels=1, image_size=16, latent_dim=8, base=32, num_classes=10)
opt = torch.optim.Adam(model.parameters(), lr=2e-3)
g = torch.Generator().manual_seed(0)
t0 = time.perf_counter()
for epoch in range(12):
    order = torch.randperm(len(x), generator=g)
    total = 0.0
    for i in range(0, len(x), 32):
        idx = order[i:i + 32]
        noise = torch.randn(len(idx), model.latent_dim, generator=g)
        recon, kl = elbo_terms(model(x[idx], y[idx], noise), x[idx])
        loss = (recon + kl).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        total += loss.item() * len(idx)
    if epoch % 3 == 2:
        print(f"epoch {epoch + 1:2d}: negative ELBO {total / len(x):.1f} nats per image")
print(f"trained in {time.perf_counter() - t0:.1f} s")

# %%
# Reconstruction quality
# ----------------------
# The mean reconstructions ``sigmoid(decode(mu))`` of the validation images, scored with
# :func:`fastconv.ssim` (an 11-pixel window fits the 16-pixel images) and
# :func:`fastconv.psnr`.

model.eval()
with torch.no_grad():
    xv, yv = split.x_val, split.y_val
    mean_recon = torch.sigmoid(model.decode(model.encode(xv, yv)[0], yv))
    print(f"validation SSIM {float(fastconv.ssim(mean_recon, xv)):.3f}, "
          f"PSNR {float(fastconv.psnr(mean_recon, xv)):.1f} dB")

fig, axes = plt.subplots(2, 10, figsize=(10, 2.3))
for j in range(10):
    axes[0, j].imshow(xv[j, 0], cmap="gray_r", vmin=0, vmax=1)
    axes[1, j].imshow(mean_recon[j, 0], cmap="gray_r", vmin=0, vmax=1)
for ax in axes.ravel():
    ax.axis("off")
fig.suptitle("validation images (top) and their mean reconstructions (bottom)", fontsize=10)
fig.subplots_adjust(left=0.01, right=0.99, top=0.86, bottom=0.01, wspace=0.05, hspace=0.05)

# %%
# The digit grid
# --------------
# Each row asks the decoder for one digit, each column is a fresh ``z ~ N(0, I)``: the label
# fixes *which* digit, the latent its style (slant, thickness, size).

samples_per_digit = 5
gen = torch.Generator().manual_seed(1)
fig, axes = plt.subplots(10, samples_per_digit, figsize=(5.2, 10))
for d in range(10):
    imgs = model.sample(samples_per_digit, torch.full((samples_per_digit,), d), generator=gen)
    for j in range(samples_per_digit):
        axes[d, j].imshow(imgs[j, 0], cmap="gray_r", vmin=0, vmax=1)
        axes[d, j].set_xticks([])
        axes[d, j].set_yticks([])
    axes[d, 0].set_ylabel(str(d), rotation=0, labelpad=12, fontsize=12, va="center")
fig.suptitle("CVAE: 5 samples of each digit")
fig.subplots_adjust(left=0.1, right=0.98, top=0.94, bottom=0.02, wspace=0.06, hspace=0.08)
