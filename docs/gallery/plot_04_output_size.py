"""
Padding, stride and dilation: the output size
=============================================

A convolution's output size along each axis is

``out = (size + 2 * padding - dilation * (k - 1) - 1) // stride + 1``

(see :doc:`../user_guide/geometry`).  This example convolves a 64 x 64 crop of the
``coins`` image with a 5 x 5 edge kernel under different paddings, strides and dilations,
using :func:`fastconv.functional.conv2d`, and draws every output **at pixel scale** on the
input's 64 x 64 canvas, so a smaller output really looks smaller.  Each output's shape is
checked against the formula and against ``torch.nn.functional.conv2d``.
"""

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as TF
from skimage import data, transform

import fastconv.functional as F

image = transform.resize(data.coins()[40:240, 60:260].astype(np.float32) / 255, (64, 64), anti_aliasing=True)
x = torch.from_numpy(image.astype(np.float32))[None, None]
# a 5 x 5 Laplacian-of-box kernel: responds to the coins' edges
w = -torch.ones(1, 1, 5, 5) / 24
w[0, 0, 2, 2] = 1.0


def out_size(size, k, stride=1, padding=0, dilation=1):
    return (size + 2 * padding - dilation * (k - 1) - 1) // stride + 1


settings = [dict(padding=0), dict(padding=2), dict(padding=6),
            dict(stride=2), dict(stride=3, padding=2), dict(stride=4),
            dict(dilation=2), dict(dilation=4), dict(dilation=3, padding=6)]

# %%
# The outputs, at pixel scale
# ---------------------------

fig, axes = plt.subplots(3, 3, figsize=(9, 9.4))
for ax, kw in zip(axes.ravel(), settings):
    y = F.conv2d(x, w, **kw)
    expected = out_size(64, 5, **kw)
    assert y.shape[-2:] == (expected, expected) == TF.conv2d(x, w, **kw).shape[-2:]
    assert torch.allclose(y, TF.conv2d(x, w, **kw), atol=1e-5)
    img = y[0, 0].numpy()
    ax.imshow(img, cmap="gray", extent=(0, expected, expected, 0))
    ax.add_patch(plt.Rectangle((0, 0), 64, 64, fill=False, edgecolor="tab:orange", linestyle="--"))
    ax.set_xlim(-1, max(65, expected + 1))
    ax.set_ylim(max(65, expected + 1), -1)
    args = ", ".join(f"{k}={v}" for k, v in kw.items())
    ax.set_title(f"{args}\n64x64 -> {expected}x{expected}", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
fig.suptitle("5x5 kernel on a 64x64 image (dashed: the input's extent)")
fig.tight_layout()

# %%
# Output size against each parameter
# ----------------------------------
# The formula (lines) and fastconv's actual output sizes (dots) for a 64-pixel side and a
# 5-tap kernel, varying one parameter at a time.  ``padding='same'`` is the padding line's
# value at ``padding = 2`` (= ``(k - 1) / 2``), where the output keeps the input's size.

fig, axes = plt.subplots(1, 3, figsize=(11, 3.4), sharey=True)
sweeps = [("padding", range(0, 9)), ("stride", range(1, 9)), ("dilation", range(1, 9))]
for ax, (name, values) in zip(axes, sweeps):
    values = list(values)
    ax.plot(values, [out_size(64, 5, **{name: v}) for v in values], color="0.6")
    ax.plot(values, [F.conv2d(x, w, **{name: v}).shape[-1] for v in values], "o", color="tab:blue")
    ax.axhline(64, color="tab:orange", linestyle="--", linewidth=0.8)
    ax.set_xlabel(name)
    ax.grid(True, alpha=0.3)
axes[0].set_ylabel("output side (px)")
fig.tight_layout()

print("padding='same' keeps the size:", tuple(F.conv2d(x, w, padding="same").shape[-2:]))
