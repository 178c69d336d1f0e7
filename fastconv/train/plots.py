"""PNG figures written by ``fastconv train``: training curves, labelled thumbnails, image grids
and mask overlays.  Every file is written atomically (see :func:`save_figure`)."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
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


def montage(rows: Sequence[Sequence[Tensor]], gap: int = 2) -> np.ndarray:
    """The images of ``rows`` (each (C, H, W) in [0, 1], all of one size) tiled into one
    (H', W') or (H', W', 3) array with ``gap`` white pixels between them."""
    first = rows[0][0]
    c, h, w = first.shape
    n_cols = max(len(r) for r in rows)
    out = np.ones(((h + gap) * len(rows) - gap, (w + gap) * n_cols - gap, c), np.float32)
    for i, images in enumerate(rows):
        for j, im in enumerate(images):
            out[i * (h + gap):i * (h + gap) + h, j * (w + gap):j * (w + gap) + w] = \
                im.detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy()
    return out[..., 0] if c == 1 else out


def plot_image_grid(rows: Sequence[Tuple[str, Sequence[Tensor]]], path: Path, columns: Sequence[str] = (),
                    title: str = "", size: float = 0.9) -> None:
    """A grid of images in [0, 1] drawn as one picture: one row per ``(label, images)``, the
    label left of the row and ``columns`` (optional) above the columns."""
    plt = _plt()
    images = [list(imgs) for _, imgs in rows]
    picture = montage(images)
    h, w = images[0][0].shape[-2:]
    n_cols = max(len(r) for r in images)
    fig, ax = plt.subplots(figsize=(size * n_cols + 1.2, size * len(rows) * h / w + 0.6))
    ax.imshow(picture, cmap="gray" if picture.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.set_yticks([(h + 2) * i + h / 2 for i in range(len(rows))], [label for label, _ in rows], fontsize=9)
    ax.set_xticks([(w + 2) * j + w / 2 for j in range(len(columns))], list(columns), fontsize=9)
    ax.tick_params(length=0)
    if columns:
        ax.xaxis.tick_top()
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_title(title, fontsize=10, pad=18 if columns else 6)
    fig.tight_layout()
    save_figure(fig, path)


__all__ = ["save_figure", "plot_curves", "plot_classification", "plot_overlays", "montage", "plot_image_grid"]
