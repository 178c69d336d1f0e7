"""PNG figures written by ``fastconv train``: training curves and sample predictions."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List

import torch
from torch import Tensor

_LOSS_KEYS = ("train_loss", "val_loss")
_SKIP_KEYS = {"epoch", "time", "samples_per_s", "lr"}


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_curves(history: List[Dict[str, Any]], path: Path, title: str) -> None:
    """Loss curves (left) and validation metrics (right) per epoch."""
    plt = _plt()
    epochs = [h["epoch"] for h in history]
    fig, (ax_l, ax_m) = plt.subplots(1, 2, figsize=(10, 4))
    for k in _LOSS_KEYS:
        if k in history[0]:
            ax_l.plot(epochs, [h[k] for h in history], marker="o", label=k)
    ax_l.set_xlabel("epoch"), ax_l.set_ylabel("loss"), ax_l.legend(), ax_l.set_title("loss")
    metrics = [k for k in history[0] if k not in _SKIP_KEYS and k not in _LOSS_KEYS]
    psnr_keys = [k for k in metrics if "psnr" in k]
    other = [k for k in metrics if k not in psnr_keys]
    for k in other:
        ax_m.plot(epochs, [h[k] for h in history], marker="o", label=k)
    ax_m.set_xlabel("epoch"), ax_m.set_title("validation")
    if psnr_keys:
        ax_p = ax_m.twinx() if other else ax_m
        for k in psnr_keys:
            ax_p.plot(epochs, [h[k] for h in history], marker="s", linestyle="--", label=k)
        ax_p.set_ylabel("PSNR (dB)")
        ax_p.legend(loc="lower right")
    if other:
        ax_m.legend(loc="upper left" if psnr_keys else "best")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _img(t: Tensor):
    t = t.detach().float().cpu().clamp(0, 1)
    return t[0].numpy() if t.shape[0] == 1 else t.permute(1, 2, 0).numpy()


def plot_samples(task_name: str, split, forward: Callable[[Tensor], Tensor], path: Path,
                 noisy_val: Tensor | None = None, classes: List[str] | None = None, count: int = 4) -> None:
    """Sample predictions on the first validation images: labelled thumbnails (classification),
    image / truth / prediction overlays (segmentation) or clean / noisy / denoised triplets."""
    plt = _plt()
    cmap = "gray" if split.x_val.shape[1] == 1 else None
    with torch.no_grad():
        if task_name in ("classifier", "cifarnet"):
            n = min(16, len(split.x_val))
            pred = forward(split.x_val[:n]).argmax(1).cpu()
            cols = min(n, 8)
            rows = (n + cols - 1) // cols
            fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.9 * rows), squeeze=False)
            for i, ax in enumerate(axes.flat):
                ax.axis("off")
                if i < n:
                    ax.imshow(_img(split.x_val[i]), cmap=cmap)
                    t, p = int(split.y_val[i]), int(pred[i])
                    name = (lambda k: classes[k] if classes and k < len(classes) else str(k))
                    ax.set_title(f"{name(p)} ({name(t)})", color="green" if p == t else "red", fontsize=9)
            fig.suptitle("predicted (true)")
        elif task_name == "unet":
            n = min(count, len(split.x_val))
            pred = (forward(split.x_val[:n]) > 0).float().cpu()
            fig, axes = plt.subplots(n, 3, figsize=(7.5, 2.6 * n), squeeze=False)
            for i in range(n):
                img = _img(split.x_val[i])
                for j, (title, mask) in enumerate((("image", None), ("truth", split.y_val[i]), ("prediction", pred[i]))):
                    ax = axes[i, j]
                    ax.imshow(img, cmap=cmap)
                    if mask is not None:
                        m = mask[0].cpu().numpy()
                        ax.imshow(m, cmap="autumn", alpha=0.45 * m, vmin=0, vmax=1)
                    ax.set_title(title, fontsize=9)
                    ax.axis("off")
        else:
            n = min(count, len(split.x_val))
            noisy = noisy_val[:n]
            den = forward(noisy).cpu()
            fig, axes = plt.subplots(n, 3, figsize=(7.5, 2.6 * n), squeeze=False)
            for i in range(n):
                for j, (title, im) in enumerate((("clean", split.x_val[i]), ("noisy", noisy[i]),
                                                  ("denoised", den[i]))):
                    axes[i, j].imshow(_img(im), cmap=cmap, vmin=0, vmax=1)
                    axes[i, j].set_title(title, fontsize=9)
                    axes[i, j].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
