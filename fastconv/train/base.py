"""The :class:`Task` interface of ``fastconv train``: how a model's data are loaded, its batches
drawn, its loss computed and its validation/test metrics and figures made."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import torch
from torch import Tensor, nn

from . import data as D

#: ``forward(*inputs) -> output``: the model (under autocast when ``--amp``) in evaluation mode
Forward = Callable[..., Any]


def flip_rot(x: Tensor, y: Optional[Tensor], g: torch.Generator) -> Tuple[Tensor, Optional[Tensor]]:
    """One random rot90 and horizontal flip for the whole batch, drawn from ``g``."""
    k = int(torch.randint(4, (1,), generator=g))
    flip = bool(torch.randint(2, (1,), generator=g))
    x = torch.rot90(x, k, (2, 3))
    y = None if y is None else torch.rot90(y, k, (2, 3))
    if flip:
        x = x.flip(3)
        y = None if y is None else y.flip(3)
    return x, y


class Task:
    """Base class of the training tasks; subclasses fill in data, model, loss and metrics.

    The training loop draws a *global* batch ``split.x_train[idx], split.y_train[idx]``, passes
    it through :meth:`batch` (augmentation and noise come from the epoch's generator ``g``, so
    they do not depend on the number of processes), cuts the result into one piece per process,
    and calls ``model(*inputs)`` and :meth:`loss` on each piece.  :meth:`loss` must be a mean
    over the samples of its piece, so that the pieces' means weighted by their sizes give the
    global batch's loss.
    """

    name = ""
    #: the headline validation metric (a key :meth:`evaluate` returns for ``part='val'``)
    metric = ""

    def __init__(self, args: Dict[str, Any]) -> None:
        self.args = args
        self.split: D.Split

    def check(self) -> None:
        """Raise :class:`~fastconv.train.errors.UsageError` for options this task cannot use."""

    def load_data(self) -> D.Split:
        raise NotImplementedError

    def build_model(self, backend: str) -> nn.Module:
        raise NotImplementedError

    def to(self, device: torch.device) -> None:
        """Move the data (and any fixed evaluation noise) to ``device``."""
        self.split.to(device)

    def batch(self, x: Tensor, y: Tensor, g: torch.Generator) -> Tuple[Tuple[Tensor, ...], Tensor]:
        """``(model inputs, target)`` for a global training batch; ``g`` drives any randomness."""
        return (x,), y

    def loss(self, out: Any, target: Tensor) -> Tensor:
        """The training loss: a mean over the batch's samples."""
        raise NotImplementedError

    def loss_terms(self, out: Any, target: Tensor) -> Dict[str, Tensor]:
        """Parts of the loss worth a curve of their own (batch means), e.g. a VAE's KL term."""
        return {}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, forward: Forward, part: str) -> Dict[str, float]:
        """Metrics of ``model`` on the ``'val'`` or ``'test'`` part, keys prefixed with the part's
        name; ``forward`` is ``model`` itself, under autocast with ``--amp``."""
        raise NotImplementedError

    def write_figures(self, model: nn.Module, forward: Forward, out: Path, final: bool) -> None:
        """Write the task's PNGs to ``out`` (``final``: after the last epoch, with the test set)."""

    def batches(self, x: Tensor, y: Tensor, size: int = 128) -> Iterator[Tuple[Tensor, Tensor]]:
        """``(x, y)`` in chunks of ``size`` samples, for evaluation."""
        for i in range(0, len(x), size):
            yield x[i:i + size], y[i:i + size]
