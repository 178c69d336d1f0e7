"""Memory the CPU kernels keep between calls, and how to give it back."""
from __future__ import annotations

import torch

from .cpu import _outputs, _scratch

__all__ = ["empty_cache", "output_like"]


def output_like(t: torch.Tensor) -> torch.Tensor:
    """An uninitialised contiguous tensor of ``t``'s shape, dtype and device for an op to write its
    result into: on the CPU from the pool of storages whose pages stay mapped
    (:mod:`fastconv.cpu._outputs`), elsewhere -- and for tensor subclasses, such as the fake
    tensors of a trace -- from torch."""
    if type(t) is torch.Tensor and t.device.type == "cpu":
        return _outputs.new(t, t.shape, t.numel())
    return torch.empty(t.shape, dtype=t.dtype, device=t.device)


def empty_cache() -> None:
    """Free the memory fastconv's CPU kernels keep for their next calls.

    Two kinds are kept: the calling thread's scratch buffers (the packed operands of the
    convolution engine, :mod:`fastconv.cpu._scratch`, with the recorded passes that run on them,
    :mod:`fastconv._programs`) and the pool of output storages whose pages stay mapped
    (:mod:`fastconv.cpu._outputs`; sized by ``FASTCONV_OUTPUT_POOL_MB``).
    Storages of tensors still alive stay pooled until a later call finds them free; like
    :func:`torch.cuda.empty_cache`, this never invalidates a tensor.

    Examples
    --------
    >>> import torch, fastconv
    >>> y = fastconv.functional.conv2d(torch.ones(2, 8, 64, 64), torch.ones(8, 8, 3, 3))
    >>> fastconv.empty_cache()
    >>> float(y[0, 0, 1, 1])
    72.0
    """
    _outputs.release()
    _scratch.release()
