"""
Gaussian blur: the 15x15, sigma = 3 kernel
==========================================

The course work built a 15x15 Gaussian kernel with sigma 3, showed it as an image and as a
surface, and blurred a photograph with it.  :func:`fastconv.filters.gaussian_kernel`
builds the kernel (normalised to sum 1) and :func:`fastconv.filters.filter2d` applies it.
The kernel is an outer product of two 1-D Gaussians (rank 1), so ``filter2d`` runs it as
two 1-D passes; ``choose_method`` says so.
"""

import matplotlib.pyplot as plt
import numpy as np
import scipy.signal
from skimage import data

from fastconv import filters

kernel = filters.gaussian_kernel(15, 3.0)
print("kernel", kernel.shape, "sum", round(float(kernel.sum()), 12), "rank", np.linalg.matrix_rank(kernel))

# %%
# The kernel
# ----------

fig = plt.figure(figsize=(9, 4))
ax = fig.add_subplot(1, 2, 1)
im = ax.imshow(kernel, cmap="viridis")
ax.set_title("15x15 Gaussian, sigma = 3")
fig.colorbar(im, ax=ax, shrink=0.8)
ax3 = fig.add_subplot(1, 2, 2, projection="3d")
yy, xx = np.mgrid[-7:8, -7:8]
ax3.plot_surface(xx, yy, kernel, cmap="viridis", linewidth=0)
ax3.set_title("as a surface")
fig.tight_layout()

# %%
# Blurring a photograph
# ---------------------
# scikit-image's ``camera`` (512 x 512, greyscale), scaled to [0, 1].  ``boundary='symm'``
# mirrors the image at its edges, so the borders do not darken as they would with zero
# padding.

image = data.camera().astype(np.float64) / 255
print("filter2d picks:", filters.choose_method(image.shape, kernel))
blurred = filters.filter2d(image, kernel, mode="same", boundary="symm")
zero_padded = filters.filter2d(image, kernel, mode="same", boundary="fill")

reference = scipy.signal.convolve2d(image, kernel, mode="same", boundary="symm")
print("max |fastconv - scipy.signal.convolve2d| =", float(np.abs(blurred - reference).max()))

fig, axes = plt.subplots(1, 3, figsize=(11, 4))
for ax, img, title in zip(axes, [image, blurred, zero_padded],
                          ["original", "blurred (boundary='symm')", "blurred (zero fill: dark borders)"]):
    ax.imshow(img, cmap="gray", vmin=0, vmax=1)
    ax.set_title(title)
    ax.axis("off")
fig.tight_layout()
