"""NumPy views of the CPU tensors the kernels read and write."""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["view"]


def view(t: torch.Tensor) -> np.ndarray:
    """The NumPy view of CPU tensor ``t`` (no copy; detached first when it requires grad, which
    costs a tensor allocation on every small call otherwise)."""
    return t.detach().numpy() if t.requires_grad else t.numpy()
