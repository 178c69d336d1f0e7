"""Build-time pictures of padding, stride and dilation for the user guide (plot directive)."""
from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.patches import Rectangle


def out_size(size: int, k: int, stride: int, pad_total: int, dilation: int) -> int:
    """torch's output length along one axis."""
    return (size + pad_total - dilation * (k - 1) - 1) // stride + 1


def _panel(ax, title: str, size: int, k: int, stride: int = 1, pad=(0, 0), dilation: int = 1) -> None:
    """One axis drawn in 2-D: ``size`` input cells, ``pad = (before, after)``, a ``k`` x ``k`` window."""
    before, after = pad
    full = size + before + after
    n_out = out_size(size, k, stride, before + after, dilation)
    for r in range(full):
        for c in range(full):
            inside = before <= r < before + size and before <= c < before + size
            ax.add_patch(Rectangle((c, r), 1, 1, facecolor="white" if inside else "0.82",
                                   edgecolor="0.55", linewidth=0.6))
    for i in range(k):                      # the first window's taps
        for j in range(k):
            ax.add_patch(Rectangle((j * dilation + 0.12, i * dilation + 0.12), 0.76, 0.76,
                                   facecolor="tab:blue", alpha=0.75, linewidth=0))
    for oy in range(n_out):                  # where each window's top-left tap lands
        for ox in range(n_out):
            ax.add_patch(Rectangle((ox * stride + 0.05, oy * stride + 0.05), 0.9, 0.9, fill=False,
                                   edgecolor="tab:orange", linewidth=1.6))
    ax.set_xlim(-0.2, full + 0.2)
    ax.set_ylim(full + 0.2, -0.2)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(f"{title}\ninput {size}x{size} -> output {n_out}x{n_out}", fontsize=9)


def draw_geometry():
    fig, axes = plt.subplots(2, 2, figsize=(7, 7.4))
    _panel(axes[0, 0], "k=3, padding=1", 5, 3, pad=(1, 1))
    _panel(axes[0, 1], "k=3, stride=2", 7, 3, stride=2)
    _panel(axes[1, 0], "k=3, dilation=2", 7, 3, dilation=2)
    _panel(axes[1, 1], "k=2, padding='same' (extra pad bottom/right)", 5, 2, pad=(0, 1))
    fig.tight_layout()
    return fig
