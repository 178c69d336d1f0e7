"""Helpers for the ops' ``vmap`` batching rules.

Every fastconv op treats the images of a batch independently, so a vmapped dimension folds
into the batch dimension N (:func:`fold`/:func:`unfold`).  When a *weight* is vmapped, the
convolution ops fold the vmapped dimension into the channels instead and multiply
``groups`` by the vmap size (:func:`fold_channels`): each vmapped slice is then a group of
its own, which is exact.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

__all__ = ["front", "fold", "unfold", "fold_channels", "conv_vmap"]


def front(t: Tensor, bdim: Optional[int], size: int) -> Tensor:
    """``t`` with its vmapped dimension first (expanded to ``size`` when ``t`` is not vmapped)."""
    if bdim is None:
        return t.unsqueeze(0).expand(size, *t.shape)
    return t.movedim(bdim, 0)


def fold(t: Tensor, bdim: Optional[int], size: int) -> Tensor:
    """(B, N, ...) -> (B*N, ...): the vmapped dimension folded into the batch dimension."""
    t = front(t, bdim, size)
    return t.reshape(t.shape[0] * t.shape[1], *t.shape[2:])


def unfold(t: Tensor, size: int) -> Tensor:
    """Inverse of :func:`fold` on an op's output: (B*N, ...) -> (B, N, ...)."""
    return t.reshape(size, t.shape[0] // size, *t.shape[1:])


def fold_channels(t: Tensor, bdim: Optional[int], size: int) -> Tensor:
    """(B, N, C, ...) -> (N, B*C, ...): the vmapped dimension folded into the channels."""
    t = front(t, bdim, size).transpose(0, 1)
    return t.reshape(t.shape[0], t.shape[1] * t.shape[2], *t.shape[3:])


def fold_params(t: Optional[Tensor], bdim: Optional[int], size: int) -> Optional[Tensor]:
    """(B, O, ...) -> (B*O, ...) for a weight or bias (None stays None)."""
    if t is None:
        return None
    t = front(t, bdim, size)
    return t.reshape(t.shape[0] * t.shape[1], *t.shape[2:])


def any_batched(*dims: Optional[int]) -> bool:
    """Whether any of ``dims`` is vmapped."""
    return any(d is not None for d in dims)


def split_channels(t: Tensor, size: int) -> Tensor:
    """(N, B*C, ...) -> (N, B, C, ...): inverse of :func:`fold_channels` (vmapped dimension 1)."""
    return t.reshape(t.shape[0], size, t.shape[1] // size, *t.shape[2:])


def zeros_like_or(t: Optional[Tensor], like: Tensor) -> Tensor:
    """``t``, or zeros shaped like ``like`` when ``t`` is None (an absent tangent)."""
    return torch.zeros_like(like) if t is None else t


def conv_vmap(op, info, in_dims, args, groups_at: int):
    """The batching rule of a convolution-like op ``op(x, weight, bias, *rest)`` whose
    ``args[groups_at]`` is ``groups``.

    A vmapped input (only) folds into the batch; a vmapped weight or bias folds into the
    channels, one group per vmapped slice.  For ops with several outputs, empty placeholder
    outputs stay unbatched.
    """
    x, weight, bias = args[:3]
    xd, wd, bd = in_dims[:3]
    n = info.batch_size
    if not any_batched(wd, bd):
        return _batched(op(fold(x, xd, n), weight, bias, *args[3:]), lambda o: unfold(o, n), 0)
    rest = list(args[3:])
    rest[groups_at - 3] *= n
    out = op(fold_channels(x, xd, n), fold_params(weight, wd, n), fold_params(bias, bd, n), *rest)
    return _batched(out, lambda o: split_channels(o, n), 1)


def _batched(out, unfold_fn, dim: int):
    if isinstance(out, Tensor):
        return unfold_fn(out), dim
    return (tuple(unfold_fn(o) if o.numel() else o for o in out),
            tuple(dim if o.numel() else None for o in out))
