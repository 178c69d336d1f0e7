"""PNG figures written by ``fastconv train``: training curves, labelled thumbnails, image grids
and mask overlays.  Every file is written atomically (see :func:`save_figure`)."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from torch import Tensor

from .checkpoint import atomic_write

_SKIP_KEYS = {"epoch", "time", "samples_per_s", "lr"}
#: history keys drawn in the loss panel (besides every ``train_*`` key)
_LOSS_SUFFIXES = ("_loss", "_recon", "_kl")


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path, dpi: int = 90) -> None:
    """Render ``fig`` as PNG and write it to ``path`` all or nothing; closes ``fig``."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    _plt().close(fig)
    atomic_write(Path(path), lambda fh: fh.write(buf.getvalue()))


def _is_loss(key: str) -> bool:
    return key.startswith("train_") or key.endswith(_LOSS_SUFFIXES)


def plot_curves(history: List[Dict[str, Any]], path: Path, title: str) -> None:
    """Loss curves (left: training and validation losses and loss terms) and validation
    metrics (right; PSNR on its own axis) per epoch."""
    plt = _plt()
    epochs = [h["epoch"] for h in history]
    keys = [k for k in history[0] if k not in _SKIP_KEYS]
    fig, (ax_l, ax_m) = plt.subplots(1, 2, figsize=(10, 4))
    for k in (k for k in keys if _is_loss(k)):
        ax_l.plot(epochs, [h[k] for h in history], marker="o", label=k)
    ax_l.set_xlabel("epoch"), ax_l.set_ylabel("loss"), ax_l.legend(), ax_l.set_title("loss")
    metrics = [k for k in keys if not _is_loss(k)]
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
    save_figure(fig, path)


def _img(t: Tensor):
    t = t.detach().float().cpu().clamp(0, 1)
    return t[0].numpy() if t.shape[0] == 1 else t.permute(1, 2, 0).numpy()


def _cmap(t: Tensor) -> Optional[str]:
    return "gray" if t.shape[-3] == 1 else None


def plot_classification(x: Tensor, truth: Tensor, pred: Tensor, classes: Sequence[str], path: Path) -> None:
    """Thumbnails titled ``predicted (true)``, green when right and red when wrong."""
    plt = _plt()
    n = len(x)
    cols = min(n, 8)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.9 * rows), squeeze=False)

    def name(k: int) -> str:
        return classes[k] if k < len(classes) else str(k)

    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(_img(x[i]), cmap=_cmap(x))
            t, p = int(truth[i]), int(pred[i])
            ax.set_title(f"{name(p)} ({name(t)})", color="green" if p == t else "red", fontsize=9)
    fig.suptitle("predicted (true)")
    fig.tight_layout()
    save_figure(fig, path)


def plot_overlays(rows: Sequence[Tuple[str, Tensor, Tensor, Tensor]], path: Path, title: str = "") -> None:
    """One row per ``(label, image, truth mask, predicted mask)``: the image, then each mask
    drawn over it; ``label`` heads the row."""
    plt = _plt()
    fig, axes = plt.subplots(len(rows), 3, figsize=(7.5, 2.6 * len(rows)), squeeze=False)
    for i, (label, image, truth, pred) in enumerate(rows):
        for j, (head, mask) in enumerate((("image", None), ("truth", truth), ("prediction", pred))):
            ax = axes[i, j]
            ax.imshow(_img(image), cmap=_cmap(image))
            if mask is not None:
                m = mask.detach().float().cpu()[0].numpy()
                ax.imshow(m, cmap="autumn", alpha=0.45 * m, vmin=0, vmax=1)
            ax.set_title(f"{label}: {head}" if label and j == 0 else head, fontsize=9)
            ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)


def plot_image_grid(rows: Sequence[Tuple[str, Sequence[Tensor]]], path: Path, columns: Sequence[str] = (),
                    title: str = "", size: float = 1.3) -> None:
    """A grid of images in [0, 1]: one row per ``(label, images)``, the label left of the row and
    ``columns`` (optional) above the first row."""
    plt = _plt()
    n_cols = max(len(images) for _, images in rows)
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(size * n_cols + 0.8, size * len(rows) + 0.4),
                             squeeze=False)
    for i, (label, images) in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i, j]
            ax.set_xticks([]), ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if j < len(images):
                ax.imshow(_img(images[j]), cmap=_cmap(images[j]), vmin=0, vmax=1)
            if i == 0 and j < len(columns):
                ax.set_title(columns[j], fontsize=9)
        axes[i, 0].set_ylabel(label, fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)


__all__ = ["save_figure", "plot_curves", "plot_classification", "plot_overlays", "plot_image_grid"]
