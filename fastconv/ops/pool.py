"""``fastconv`` pooling ops: max_pool2d, avg_pool2d and adaptive_avg_pool2d with autograd.

Ops in the ``fastconv`` namespace (see :mod:`fastconv.ops._op`; each with a fake kernel,
an autograd formula, a forward-mode derivative and a batching rule; the backward ops are
linear in the incoming gradient, so their own gradients are exact and double backward works):

* ``max_pool2d(x, kernel, stride, padding, dilation, ceil_mode) -> (out, indices)``
  and ``max_pool2d_backward(grad, indices, in_hw)``
* ``avg_pool2d(x, kernel, stride, padding, count_include_pad, divisor, ceil_mode)``
  and ``avg_pool2d_backward(grad, ..., ceil_mode, in_hw)`` (``divisor`` 0 means no override)
* ``adaptive_avg_pool2d(x, out_hw)`` and ``adaptive_avg_pool2d_backward(grad, in_hw)``

Padding is implicit: max pooling treats it as -inf, average pooling as zeros.
"""
from __future__ import annotations

import functools
from typing import Callable, List, Optional, Protocol, Sequence, Tuple, Union

import torch
from torch import Tensor

from .. import _shapes as S
from .._backend import kernels
from . import _batching as B
from ._op import define
from .conv2d import unbatched


class Backend(Protocol):
    """What a pooling backend module (:mod:`fastconv.cpu.pool`, :mod:`fastconv.cuda.pool`) provides.

    Tensors are contiguous NCHW; sizes are pairs; the output (forward) or input (backward)
    spatial size comes last, already validated, so no backend sees ``ceil_mode``.  Each
    function returns new contiguous tensors.
    """

    def max_pool2d_forward(self, x: Tensor, kernel: Tuple[int, int], stride: Tuple[int, int],
                           padding: Tuple[int, int], dilation: Tuple[int, int],
                           out_hw: Tuple[int, int]) -> Tuple[Tensor, Tensor]:
        """(values, int64 flat ``h*W + w`` argmax indices within each plane); padding is -inf."""

    def max_pool2d_values_for(self, shape: Tuple[int, int, int, int], dtype: torch.dtype,
                              kernel: Tuple[int, int], stride: Tuple[int, int], padding: Tuple[int, int],
                              dilation: Tuple[int, int], out_hw: Tuple[int, int]) -> Callable[[Tensor], Tensor]:
        """The function ``x -> values`` of :meth:`max_pool2d_forward` alone (no indices) for inputs of
        ``shape`` and ``dtype`` (any strides), for calls no gradient flows through; public
        functions build it once per call signature."""

    def max_pool2d_backward(self, grad_out: Tensor, indices: Tensor, in_hw: Tuple[int, int]) -> Tensor:
        """``grad_out`` routed back to ``indices`` (summed where windows share an argmax)."""

    def avg_pool2d_forward(self, x: Tensor, kernel: Tuple[int, int], stride: Tuple[int, int],
                           padding: Tuple[int, int], count_include_pad: bool, divisor: int,
                           out_hw: Tuple[int, int]) -> Tensor:
        """Window means (zero padding; ``divisor`` 0 = torch's divisor rule, else the override)."""

    def avg_pool2d_forward_for(self, shape: Tuple[int, int, int, int], dtype: torch.dtype,
                               kernel: Tuple[int, int], stride: Tuple[int, int], padding: Tuple[int, int],
                               count_include_pad: bool, divisor: int,
                               out_hw: Tuple[int, int]) -> Callable[[Tensor], Tensor]:
        """The function ``x -> out`` of :meth:`avg_pool2d_forward` for inputs of ``shape`` and ``dtype``
        (any strides), built once per call signature."""

    def avg_pool2d_backward(self, grad_out: Tensor, kernel: Tuple[int, int], stride: Tuple[int, int],
                            padding: Tuple[int, int], count_include_pad: bool, divisor: int,
                            in_hw: Tuple[int, int]) -> Tensor:
        """The adjoint of :meth:`avg_pool2d_forward`."""

    def adaptive_avg_pool2d_forward(self, x: Tensor, out_hw: Tuple[int, int]) -> Tensor:
        """Means over windows ``[floor(o*H/OH), ceil((o+1)*H/OH))``."""

    def adaptive_avg_pool2d_backward(self, grad_out: Tensor, in_hw: Tuple[int, int]) -> Tensor:
        """The adjoint of :meth:`adaptive_avg_pool2d_forward`."""


def _c(t: Tensor) -> Tensor:
    return t.contiguous()


@functools.lru_cache(maxsize=S.CACHE_ENTRIES)
def _pool_hw_of(op: str, shape, kernel, stride, padding, dilation, ceil_mode) -> Tuple[int, int]:
    return S.pool2d_output_hw(op, shape, kernel, stride, padding, dilation, ceil_mode)


def _pool_hw(x: Tensor, kernel, stride, padding, dilation, ceil_mode, op) -> Tuple[int, int]:
    """Validated output size of a pooling (cached per shape and arguments; errors are not cached;
    symbolic shapes, when tracing with dynamic shapes, are not cached either)."""
    args = (op, tuple(x.shape), tuple(kernel), tuple(stride), tuple(padding), tuple(dilation), bool(ceil_mode))
    if _concrete(args[1]) is not None:
        return _pool_hw_of(*args)
    return S.pool2d_output_hw(*args)


def _new(x: Tensor, hw: Sequence[int], dtype: Optional[torch.dtype] = None) -> Tensor:
    return x.new_empty((x.shape[0], x.shape[1], hw[0], hw[1]), dtype=dtype)


def _per_plane_vmap(op):
    """Batching rule of a pooling op: every tensor argument folds its vmapped dimension into N."""
    def rule(info, in_dims, *args):
        n = info.batch_size
        args = tuple(B.fold(a, d, n) if isinstance(a, Tensor) else a for a, d in zip(args, in_dims))
        out = op(*args)
        if isinstance(out, tuple):
            return tuple(B.unfold(o, n) for o in out), (0,) * len(out)
        return B.unfold(out, n), 0
    return rule


# --------------------------------------------------------------------------- max pooling


def _max_pool2d(x: Tensor, kernel: List[int], stride: List[int], padding: List[int], dilation: List[int],
                ceil_mode: bool) -> Tuple[Tensor, Tensor]:
    hw = _pool_hw(x, kernel, stride, padding, dilation, ceil_mode, "max_pool2d")
    return _max_forward(x, tuple(kernel), tuple(stride), tuple(padding), tuple(dilation), hw)


def _max_forward(x: Tensor, kernel: Tuple[int, int], stride: Tuple[int, int], padding: Tuple[int, int],
                 dilation: Tuple[int, int], hw: Tuple[int, int]) -> Tuple[Tensor, Tensor]:
    return kernels("pool", x.device).max_pool2d_forward(_c(x), kernel, stride, padding, dilation, hw)


def _max_pool2d_fake(x, kernel, stride, padding, dilation, ceil_mode):
    hw = _pool_hw(x, kernel, stride, padding, dilation, ceil_mode, "max_pool2d")
    return _new(x, hw), _new(x, hw, torch.int64)


def _max_setup(ctx, inputs, output):
    ctx.in_hw = list(inputs[0].shape[2:])
    ctx.save_for_backward(output[1])
    ctx.save_for_forward(output[1])
    ctx.mark_non_differentiable(output[1])
    # autograd would hand backward a gradient of zeros for the indices (a fill of the output's
    # size per call); the values' gradient is always defined when backward runs
    ctx.set_materialize_grads(False)


def _max_backward(ctx, grad, _grad_indices):
    if grad is None:  # gradients are not materialised (see _max_setup)
        return (None,) * 6
    (indices,) = ctx.saved_tensors
    return max_pool2d_backward(grad, indices, ctx.in_hw), None, None, None, None, None


def _gather(t: Tensor, indices: Tensor) -> Tensor:
    """``t`` (N, C, H, W) read at the flat in-plane ``indices`` (N, C, OH, OW); 0 where an index
    lies outside the plane (a window entirely in the padding)."""
    hw = t.shape[2] * t.shape[3]
    inside = (indices >= 0) & (indices < hw)
    got = t.flatten(2).gather(2, indices.clamp(0, max(hw - 1, 0)).flatten(2)).view_as(indices)
    return torch.where(inside, got, torch.zeros((), dtype=t.dtype, device=t.device))


def _max_jvp(ctx, x_t, *_):
    (indices,) = ctx.saved_tensors
    return _gather(x_t, indices), None


max_pool2d_op = define("max_pool2d", _max_pool2d, _max_pool2d_fake, setup_context=_max_setup,
                       backward=_max_backward, jvp=_max_jvp, vmap=_per_plane_vmap(lambda *a: max_pool2d_op(*a)))


def _max_pool2d_backward(grad: Tensor, indices: Tensor, in_hw: List[int]) -> Tensor:
    if indices.shape != grad.shape or indices.dtype != torch.int64:
        raise RuntimeError(f"fastconv.max_pool2d_backward: expected int64 indices of the gradient's shape "
                           f"{list(grad.shape)}, got {indices.dtype} {list(indices.shape)}")
    # Indices outside the plane (torch's, and ours, for a window entirely in the padding of a
    # dilated pooling, whose output is -inf) receive no gradient: every backend skips them.
    return kernels("pool", grad.device).max_pool2d_backward(_c(grad), _c(indices), tuple(in_hw))


def _max_bwd_fake(grad, indices, in_hw):
    return _new(grad, in_hw)


def _max_bwd_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[1])
    ctx.save_for_forward(inputs[1])
    ctx.in_hw = list(inputs[2])


def _max_bwd_backward(ctx, gg):
    (indices,) = ctx.saved_tensors
    return _gather(gg, indices), None, None


def _max_bwd_jvp(ctx, g_t, *_):
    (indices,) = ctx.saved_tensors
    return max_pool2d_backward(g_t, indices, ctx.in_hw)


max_pool2d_backward = define("max_pool2d_backward", _max_pool2d_backward, _max_bwd_fake,
                             setup_context=_max_bwd_setup, backward=_max_bwd_backward, jvp=_max_bwd_jvp,
                             vmap=_per_plane_vmap(lambda *a: max_pool2d_backward(*a)))


# --------------------------------------------------------------------------- average pooling


def _avg_pool2d(x: Tensor, kernel: List[int], stride: List[int], padding: List[int], count_include_pad: bool,
                divisor: int, ceil_mode: bool) -> Tensor:
    hw = _pool_hw(x, kernel, stride, padding, (1, 1), ceil_mode, "avg_pool2d")
    return _avg_forward(x, tuple(kernel), tuple(stride), tuple(padding), count_include_pad, divisor, hw)


def _avg_forward(x: Tensor, kernel: Tuple[int, int], stride: Tuple[int, int], padding: Tuple[int, int],
                 count_include_pad: bool, divisor: int, hw: Tuple[int, int]) -> Tensor:
    return kernels("pool", x.device).avg_pool2d_forward(_c(x), kernel, stride, padding, count_include_pad, divisor,
                                                        hw)


def _avg_fake(x, kernel, stride, padding, count_include_pad, divisor, ceil_mode):
    return _new(x, _pool_hw(x, kernel, stride, padding, (1, 1), ceil_mode, "avg_pool2d"))


def _avg_setup(ctx, inputs, output):
    x, *ctx.args = inputs
    ctx.in_hw = list(x.shape[2:])


def _avg_backward(ctx, grad):
    return (avg_pool2d_backward(grad, *ctx.args, ctx.in_hw),) + (None,) * 6


def _avg_jvp(ctx, x_t, *_):
    return avg_pool2d_op(x_t, *ctx.args)


avg_pool2d_op = define("avg_pool2d", _avg_pool2d, _avg_fake, setup_context=_avg_setup, backward=_avg_backward,
                       jvp=_avg_jvp, vmap=_per_plane_vmap(lambda *a: avg_pool2d_op(*a)))


def _avg_pool2d_backward(grad: Tensor, kernel: List[int], stride: List[int], padding: List[int],
                         count_include_pad: bool, divisor: int, ceil_mode: bool, in_hw: List[int]) -> Tensor:
    return kernels("pool", grad.device).avg_pool2d_backward(_c(grad), tuple(kernel), tuple(stride), tuple(padding),
                                                            count_include_pad, divisor, tuple(in_hw))


def _avg_bwd_fake(grad, kernel, stride, padding, count_include_pad, divisor, ceil_mode, in_hw):
    return _new(grad, in_hw)


def _avg_bwd_setup(ctx, inputs, output):
    ctx.args = inputs[1:-1]
    ctx.in_hw = list(inputs[-1])


def _avg_bwd_backward(ctx, gg):
    return (avg_pool2d_op(gg, *ctx.args),) + (None,) * 7


def _avg_bwd_jvp(ctx, g_t, *_):
    return avg_pool2d_backward(g_t, *ctx.args, ctx.in_hw)


avg_pool2d_backward = define("avg_pool2d_backward", _avg_pool2d_backward, _avg_bwd_fake,
                             setup_context=_avg_bwd_setup, backward=_avg_bwd_backward, jvp=_avg_bwd_jvp,
                             vmap=_per_plane_vmap(lambda *a: avg_pool2d_backward(*a)))


# --------------------------------------------------------------------------- adaptive average pooling


def _adaptive_avg_pool2d(x: Tensor, out_hw: List[int]) -> Tensor:
    return kernels("pool", x.device).adaptive_avg_pool2d_forward(_c(x), tuple(out_hw))


def _adaptive_fake(x, out_hw):
    return _new(x, out_hw)


def _adaptive_backward_impl(grad: Tensor, in_hw: List[int]) -> Tensor:
    return kernels("pool", grad.device).adaptive_avg_pool2d_backward(_c(grad), tuple(in_hw))


def _adaptive_bwd_fake(grad, in_hw):
    return _new(grad, in_hw)


def _adaptive_setup(ctx, inputs, output):
    ctx.hw = list(inputs[0].shape[2:])
    ctx.other_hw = list(inputs[1])


def _adaptive_backward(ctx, grad):
    return adaptive_avg_pool2d_backward(grad, ctx.hw), None


def _adaptive_bwd_backward(ctx, gg):
    return adaptive_avg_pool2d_op(gg, ctx.hw), None


adaptive_avg_pool2d_op = define(
    "adaptive_avg_pool2d", _adaptive_avg_pool2d, _adaptive_fake, setup_context=_adaptive_setup,
    backward=_adaptive_backward, jvp=lambda ctx, x_t, *_: adaptive_avg_pool2d_op(x_t, ctx.other_hw),
    vmap=_per_plane_vmap(lambda *a: adaptive_avg_pool2d_op(*a)))
adaptive_avg_pool2d_backward = define(
    "adaptive_avg_pool2d_backward", _adaptive_backward_impl, _adaptive_bwd_fake, setup_context=_adaptive_setup,
    backward=_adaptive_bwd_backward, jvp=lambda ctx, g_t, *_: adaptive_avg_pool2d_backward(g_t, ctx.other_hw),
    vmap=_per_plane_vmap(lambda *a: adaptive_avg_pool2d_backward(*a)))


# --------------------------------------------------------------------------- public functions


def _check_input(op: str, x: Tensor, empty_channels: bool = False) -> bool:
    """Validate a pooling input; only the batch (and, with ``empty_channels``, the channels) may be empty."""
    squeeze = unbatched(op, x)
    S.check_dtype(op, x)
    if any(s == 0 for s in x.shape[-3 + empty_channels:]):
        what = "spatial sizes (only the batch and channels" if empty_channels else \
            "channel and spatial sizes (only the batch"
        raise RuntimeError(f"fastconv.{op}: expected 3D or 4D input with non-zero {what} may be empty), "
                           f"but got input of size {list(x.shape)}")
    return squeeze


#: Validated arguments of recent calls, by :func:`fastconv._shapes.call_key`.
_prepared: dict = {}


def _concrete(shape: Sequence) -> Optional[Tuple[int, ...]]:
    """``shape`` as a tuple of ints, or None when it is symbolic (a trace with dynamic shapes, which
    never takes the per-signature functions)."""
    return tuple(shape) if all(type(v) is int for v in shape) else None


def _stride(stride: Optional[S.IntPair], kernel: Tuple[int, int]) -> Tuple[int, int]:
    if stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0):
        return kernel
    return S.pair(stride, "stride")


def max_pool2d(input: Tensor, kernel_size: S.IntPair, stride: Optional[S.IntPair] = None,
               padding: S.IntPair = 0, dilation: S.IntPair = 1, ceil_mode: bool = False,
               return_indices: bool = False) -> Union[Tensor, Tuple[Tensor, Tensor]]:
    """2D max pooling, as ``torch.nn.functional.max_pool2d``.

    ``out[n, c, y, x] = max_{i, j} x_pad[n, c, y*sH + i*dH, x*sW + j*dW]`` over the
    ``kH x kW`` window; the implicit padding is -inf, so it never wins, and a NaN in a window
    propagates.  The gradient goes to each window's maximum (the first one in row-major window
    order on ties), summed where windows share it.

    Parameters
    ----------
    input : Tensor
        ``(N, C, H, W)`` or unbatched ``(C, H, W)``, float32 or float64 (and float16/bfloat16
        storage on CUDA).  Any strides, channels_last included.
    kernel_size : int or (int, int)
        Window size ``(kH, kW)``.
    stride : int or (int, int), optional
        Step of the window; ``None`` (or ``()``) means ``kernel_size``, as torch.
    padding : int or (int, int), optional
        Implicit -inf padding on both sides; at most half the kernel size.
    dilation : int or (int, int), optional
        Spacing between window taps.
    ceil_mode : bool, optional
        Round the output size up instead of down (a last window may start in the bottom/right
        padding but not past it), as torch.
    return_indices : bool, optional
        Also return where each maximum is.

    Returns
    -------
    Tensor or (Tensor, Tensor)
        ``(N, C, H_out, W_out)`` (or ``(C, H_out, W_out)``), contiguous, with
        ``H_out = (H + 2 * padding - dilation * (kH - 1) - 1) // stride + 1`` (rounded up with
        ``ceil_mode``); with ``return_indices``, also the int64 flat indices ``h * W + w`` of
        the maxima within each input plane, as torch's (usable with ``torch.nn.MaxUnpool2d``).

    Raises
    ------
    TypeError
        For non-tensor input, unsupported dtypes or malformed sizes.
    ValueError, RuntimeError
        For bad ranks, empty channel or spatial sizes, too much padding or an empty output,
        with torch's wording.

    Examples
    --------
    >>> import torch
    >>> import fastconv.functional as F
    >>> x = torch.arange(16.0).reshape(1, 1, 4, 4)
    >>> F.max_pool2d(x, 2)
    tensor([[[[ 5.,  7.],
              [13., 15.]]]])
    >>> out, idx = F.max_pool2d(x, 3, stride=1, padding=1, return_indices=True)
    >>> idx[0, 0, 0]
    tensor([5, 6, 7, 7])
    """
    try:  # the validation-cache key, built inline (see conv2d)
        key = (input.shape, input.dtype, input.device, type(kernel_size), kernel_size, type(stride), stride,
               type(padding), padding, type(dilation), dilation, type(ceil_mode), ceil_mode)
        prep = _prepared.get(key)
    except (AttributeError, TypeError):
        key = S.call_key(input, kernel_size, stride, padding, dilation, ceil_mode)
        prep = _prepared.get(key)
    if prep is None:
        squeeze = _check_input("max_pool2d", input)
        k = S.pair(kernel_size, "kernel_size")
        s, p, d = _stride(stride, k), S.pair(padding, "padding"), S.pair(dilation, "dilation")
        hw = S.pool2d_output_hw("max_pool2d", (1, *input.shape) if squeeze else input.shape, k, s, p, d,
                                bool(ceil_mode))
        shape = _concrete((1, *input.shape) if squeeze else input.shape)
        prep = (squeeze, (list(k), list(s), list(p), list(d), bool(ceil_mode)), (k, s, p, d, hw),
                shape and kernels("pool", input.device).max_pool2d_values_for(shape, input.dtype, k, s, p, d, hw))
        S.remember(_prepared, key, prep)
    squeeze, args, direct, values = prep
    x = input.unsqueeze(0) if squeeze else input
    if max_pool2d_op.plain(x):
        if values and not return_indices:  # no gradient can flow and no indices are wanted: the values alone
            out = values(x)
            return out.squeeze(0) if squeeze else out
        out, idx = _max_forward(x, *direct)
    else:
        out, idx = max_pool2d_op(x, *args)
    if squeeze:
        out, idx = out.squeeze(0), idx.squeeze(0)
    return (out, idx) if return_indices else out


def avg_pool2d(input: Tensor, kernel_size: S.IntPair, stride: Optional[S.IntPair] = None,
               padding: S.IntPair = 0, ceil_mode: bool = False, count_include_pad: bool = True,
               divisor_override: Optional[int] = None) -> Tensor:
    """2D average pooling, as ``torch.nn.functional.avg_pool2d``.

    Each output is the sum over its ``kH x kW`` window of the zero-padded input, divided by
    the divisor: ``divisor_override`` if given; else the window size ``kH * kW`` with
    ``count_include_pad``, or the number of window taps inside the unpadded input without it.
    With ``ceil_mode``, a window reaching past the padding counts only up to the padded edge,
    as torch.

    Parameters
    ----------
    input : Tensor
        ``(N, C, H, W)`` or unbatched ``(C, H, W)``, float32 or float64 (and float16/bfloat16
        storage on CUDA).  Any strides, channels_last included.
    kernel_size : int or (int, int)
        Window size ``(kH, kW)``.
    stride : int or (int, int), optional
        Step of the window; ``None`` (or ``()``) means ``kernel_size``, as torch.
    padding : int or (int, int), optional
        Implicit zero padding on both sides; at most half the kernel size.
    ceil_mode : bool, optional
        Round the output size up instead of down, as torch.
    count_include_pad : bool, optional
        Whether padded zeros count in the divisor.
    divisor_override : int, optional
        A fixed, nonzero divisor for every window.

    Returns
    -------
    Tensor
        ``(N, C, H_out, W_out)`` (or ``(C, H_out, W_out)``), contiguous, with
        ``H_out = (H + 2 * padding - kH) // stride + 1`` (rounded up with ``ceil_mode``).

    Raises
    ------
    TypeError
        For non-tensor input, unsupported dtypes or malformed sizes.
    ValueError, RuntimeError
        For bad ranks, empty channel or spatial sizes, too much padding, an empty output or
        ``divisor_override=0``, with torch's wording.

    Examples
    --------
    >>> import torch
    >>> import fastconv.functional as F
    >>> x = torch.arange(16.0).reshape(1, 1, 4, 4)
    >>> F.avg_pool2d(x, 2)
    tensor([[[[ 2.5000,  4.5000],
              [10.5000, 12.5000]]]])
    >>> F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
    tensor([[[[ 2.5000,  4.0000],
              [ 8.5000, 10.0000]]]])
    """
    try:  # the validation-cache key, built inline (see conv2d)
        key = (input.shape, input.dtype, input.device, type(kernel_size), kernel_size, type(stride), stride,
               type(padding), padding, type(ceil_mode), ceil_mode, type(count_include_pad), count_include_pad,
               type(divisor_override), divisor_override, "avg")
        prep = _prepared.get(key)
    except (AttributeError, TypeError):
        key = S.call_key(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override, "avg")
        prep = _prepared.get(key)
    if prep is None:
        squeeze = _check_input("avg_pool2d", input)
        k = S.pair(kernel_size, "kernel_size")
        s, p = _stride(stride, k), S.pair(padding, "padding")
        if divisor_override is not None and int(divisor_override) == 0:
            raise RuntimeError("fastconv.avg_pool2d: divisor must be not zero")
        hw = S.pool2d_output_hw("avg_pool2d", (1, *input.shape) if squeeze else input.shape, k, s, p, (1, 1),
                                bool(ceil_mode))
        include, divisor = bool(count_include_pad), int(divisor_override or 0)
        shape = _concrete((1, *input.shape) if squeeze else input.shape)
        prep = (squeeze, (list(k), list(s), list(p), include, divisor, bool(ceil_mode)),
                shape and kernels("pool", input.device).avg_pool2d_forward_for(shape, input.dtype, k, s, p, include,
                                                                               divisor, hw))
        S.remember(_prepared, key, prep)
    squeeze, args, forward = prep
    x = input.unsqueeze(0) if squeeze else input
    out = forward(x) if forward and avg_pool2d_op.plain(x) else avg_pool2d_op(x, *args)
    return out.squeeze(0) if squeeze else out


def adaptive_avg_pool2d(input: Tensor, output_size: Union[int, None, Sequence[Optional[int]]]) -> Tensor:
    """Adaptive average pooling, as ``torch.nn.functional.adaptive_avg_pool2d``.

    Output row ``o`` of ``OH`` averages input rows ``floor(o * H / OH)`` to
    ``ceil((o + 1) * H / OH) - 1`` (likewise for columns), so the windows cover the input and
    may overlap or differ in size by one; no padding.

    Parameters
    ----------
    input : Tensor
        ``(N, C, H, W)`` or unbatched ``(C, H, W)``, float32 or float64 (and float16/bfloat16
        storage on CUDA); the batch and channels may be empty.
    output_size : int, None or (int or None, int or None)
        ``(OH, OW)``; an int gives a square output and ``None`` keeps that input size.
        ``1`` is global average pooling.

    Returns
    -------
    Tensor
        ``(N, C, OH, OW)`` (or ``(C, OH, OW)``), contiguous.

    Raises
    ------
    TypeError
        For non-tensor input or unsupported dtypes.
    ValueError, RuntimeError
        For bad ranks, empty spatial sizes, or an ``output_size`` that is not an int or a pair
        of non-negative ints.

    Examples
    --------
    >>> import torch
    >>> import fastconv.functional as F
    >>> x = torch.arange(16.0).reshape(1, 1, 4, 4)
    >>> F.adaptive_avg_pool2d(x, 1)
    tensor([[[[7.5000]]]])
    >>> F.adaptive_avg_pool2d(x, (2, 3))
    tensor([[[[ 2.5000,  3.5000,  4.5000],
              [10.5000, 11.5000, 12.5000]]]])
    >>> F.adaptive_avg_pool2d(x, (2, None)).shape
    torch.Size([1, 1, 2, 4])
    """
    squeeze = _check_input("adaptive_avg_pool2d", input, empty_channels=True)
    x = input.unsqueeze(0) if squeeze else input
    if isinstance(output_size, (list, tuple)):
        if len(output_size) != 2:
            raise ValueError(f"fastconv.adaptive_avg_pool2d: output_size must be an int or a pair, "
                             f"got {output_size!r}")
        hw = tuple(x.shape[2 + i] if v is None else v for i, v in enumerate(output_size))
    else:
        hw = (x.shape[2], x.shape[3]) if output_size is None else (output_size, output_size)
    hw = S.pair(tuple(int(v) for v in hw), "output_size")
    if any(v < 0 for v in hw):
        raise ValueError(f"fastconv.adaptive_avg_pool2d: output_size must be non-negative, got {hw}")
    out = adaptive_avg_pool2d_op(x, list(hw))
    return out.squeeze(0) if squeeze else out
