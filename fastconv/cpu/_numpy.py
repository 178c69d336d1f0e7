"""NumPy views of the CPU tensors the kernels read and write."""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["view"]


def view(t: torch.Tensor) -> np.ndarray:
    """The NumPy view of CPU tensor ``t`` (no copy; detached first when it requires grad, which
    costs a tensor allocation on every small call otherwise).  A lazily negated view
    (``t.is_neg()``, e.g. from ``torch._neg_view``) is resolved into a copy first: its memory holds
    the values' negatives."""
    if t.is_neg():
        t = t.resolve_neg()
    return t.detach().numpy() if t.requires_grad else t.numpy()
