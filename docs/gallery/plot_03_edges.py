"""
Edges: Sobel, Prewitt and sharpening
====================================

The course work filtered a photograph with the horizontal and vertical Sobel kernels, the
Prewitt kernel and a sharpening kernel.  The kernel builders of :mod:`fastconv.filters`
return *convolution* kernels (``scipy.signal.convolve2d``'s convention): ``sobel(0)``
differentiates along the rows, so it responds to **horizontal** edges, and ``sobel(1)``
to vertical ones.  A correlation (torch's ``conv2d``, :func:`fastconv.functional.conv2d`)
with the same kernel gives the same edges with the opposite sign.
"""

import matplotlib.pyplot as plt
import numpy as np
import torch
from skimage import color, data

import fastconv.functional as F
from fastconv import filters

image = color.rgb2gray(data.astronaut())          # 512 x 512, float64 in [0, 1]
print("sobel(0) =\n", filters.sobel(0))


def apply(kernel):
    return filters.filter2d(image, kernel, mode="same", boundary="symm")


gy, gx = apply(filters.sobel(0)), apply(filters.sobel(1))
magnitude = np.hypot(gx, gy)
py, px = apply(filters.prewitt(0)), apply(filters.prewitt(1))
sharp = np.clip(apply(filters.sharpen()), 0, 1)

# %%
# The figure
# ----------

panels = [(image, "original", "gray"), (gy, "Sobel, axis 0: horizontal edges", "RdBu_r"),
          (gx, "Sobel, axis 1: vertical edges", "RdBu_r"), (magnitude, "Sobel gradient magnitude", "gray"),
          (np.hypot(px, py), "Prewitt gradient magnitude", "gray"), (sharp, "sharpened", "gray")]
fig, axes = plt.subplots(2, 3, figsize=(11, 7.5))
for ax, (img, title, cmap) in zip(axes.ravel(), panels):
    if cmap == "RdBu_r":
        lim = np.percentile(np.abs(img), 99)      # signed: red and blue are opposite slopes
        ax.imshow(img, cmap=cmap, vmin=-lim, vmax=lim)
    else:
        ax.imshow(img, cmap=cmap, vmin=0, vmax=np.percentile(img, 99.5) if "magnitude" in title else 1)
    ax.set_title(title, fontsize=10)
    ax.axis("off")
fig.tight_layout()

# %%
# Convolution and correlation
# ---------------------------
# The same Sobel kernel through :func:`fastconv.functional.conv2d` (a cross-correlation,
# as in torch) with zero padding: the interior agrees with the convolution above up to the
# sign, because the Sobel kernel is antisymmetric along its derivative axis.

x = torch.from_numpy(image)[None, None]
w = torch.from_numpy(filters.sobel(0))[None, None]
corr = F.conv2d(x, w, padding=1)[0, 0].numpy()
interior = (slice(1, -1), slice(1, -1))
print("max |correlation + convolution| inside the border:", float(np.abs(corr[interior] + gy[interior]).max()))
