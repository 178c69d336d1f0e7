"""``fastconv.conv2d``: torch-facing 2D cross-correlation with autograd.

Custom ops registered in the ``fastconv`` namespace:

* ``fastconv::conv2d(x, w, b, stride, padding4, dilation, groups)``
* ``fastconv::conv2d_backward_input(grad_out, w, b, stride, padding4, dilation, groups, in_hw)``
  (also conv_transpose2d's forward)
* ``fastconv::conv2d_backward_weight(x, grad_out, stride, padding4, dilation, groups, kernel_hw)``
* ``fastconv::conv2d_bias_grad(grad_out)``

Every one of them has a fake (meta) kernel and an autograd formula; the
backward ops are linear in their tensor inputs, so their own gradients are
again these ops and double backward is exact.

``padding4`` is ``(top, bottom, left, right)``.  The kernels only read top/left
and the output size; bottom/right fix the output size and may be negative
(cropping), which conv_transpose2d's gradient uses for ``output_padding``.
"""
from __future__ import annotations

from typing import List, Optional, Protocol, Sequence, Tuple, Union

import torch
from torch import Tensor

from .. import _shapes as S
from .._backend import kernels


class Backend(Protocol):
    """What a conv2d backend module (:mod:`fastconv.cpu.conv2d`, :mod:`fastconv.cuda.conv2d`) provides.

    Tensors are contiguous NCHW / OIHW of one dtype on the backend's device; ``stride`` and
    ``dilation`` are pairs, ``padding`` is ``(top, bottom, left, right)`` (the kernels read
    top/left; the explicit size fixes the rest), and the size argument comes last.  Each
    function returns a new contiguous tensor.
    """

    def conv2d_forward(self, x: Tensor, weight: Tensor, bias: Optional[Tensor], stride: Sequence[int],
                       padding: Sequence[int], dilation: Sequence[int], groups: int,
                       out_hw: Tuple[int, int]) -> Tensor:
        """``y = conv2d(x, weight) + bias`` of spatial size ``out_hw``."""

    def conv2d_backward_input(self, grad_out: Tensor, weight: Tensor, bias: Optional[Tensor],
                              stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int],
                              groups: int, in_hw: Tuple[int, int]) -> Tensor:
        """Gradient w.r.t. the input, of spatial size ``in_hw``, plus ``bias`` per channel (conv_transpose2d)."""

    def conv2d_backward_weight(self, x: Tensor, grad_out: Tensor, stride: Sequence[int], padding: Sequence[int],
                               dilation: Sequence[int], groups: int, kernel_hw: Tuple[int, int]) -> Tensor:
        """Gradient w.r.t. the OIHW weight of spatial size ``kernel_hw``."""

    def conv2d_bias_grad(self, grad_out: Tensor) -> Tensor:
        """Sum of ``grad_out`` over batch and space: the bias gradient."""


def _out_hw(x_hw: Sequence[int], k_hw: Sequence[int], stride: Sequence[int], padding: Sequence[int],
            dilation: Sequence[int]) -> Tuple[int, int]:
    return (S.conv_out_size(x_hw[0], k_hw[0], stride[0], padding[0] + padding[1], dilation[0]),
            S.conv_out_size(x_hw[1], k_hw[1], stride[1], padding[2] + padding[3], dilation[1]))


def _be(t: Tensor):
    return kernels("conv2d", t.device)


def _opt(t: Optional[Tensor]) -> Optional[Tensor]:
    return None if t is None else t.contiguous()


# --------------------------------------------------------------------------- custom ops


@torch.library.custom_op("fastconv::conv2d", mutates_args=())
def conv2d_op(x: Tensor, weight: Tensor, bias: Optional[Tensor], stride: List[int], padding: List[int],
              dilation: List[int], groups: int) -> Tensor:
    out_hw = _out_hw(x.shape[2:], weight.shape[2:], stride, padding, dilation)
    return _be(x).conv2d_forward(x.contiguous(), weight.contiguous(), _opt(bias), stride, padding, dilation, groups,
                                 out_hw)


@conv2d_op.register_fake
def _(x, weight, bias, stride, padding, dilation, groups):
    oh, ow = _out_hw(x.shape[2:], weight.shape[2:], stride, padding, dilation)
    return x.new_empty((x.shape[0], weight.shape[0], oh, ow))


@torch.library.custom_op("fastconv::conv2d_backward_input", mutates_args=())
def conv2d_backward_input(grad_out: Tensor, weight: Tensor, bias: Optional[Tensor], stride: List[int],
                          padding: List[int], dilation: List[int], groups: int, in_hw: List[int]) -> Tensor:
    return _be(grad_out).conv2d_backward_input(grad_out.contiguous(), weight.contiguous(), _opt(bias), stride,
                                               padding, dilation, groups, tuple(in_hw))


@conv2d_backward_input.register_fake
def _(grad_out, weight, bias, stride, padding, dilation, groups, in_hw):
    return grad_out.new_empty((grad_out.shape[0], weight.shape[1] * groups, in_hw[0], in_hw[1]))


@torch.library.custom_op("fastconv::conv2d_backward_weight", mutates_args=())
def conv2d_backward_weight(x: Tensor, grad_out: Tensor, stride: List[int], padding: List[int],
                           dilation: List[int], groups: int, kernel_hw: List[int]) -> Tensor:
    return _be(x).conv2d_backward_weight(x.contiguous(), grad_out.contiguous(), stride, padding, dilation, groups,
                                         tuple(kernel_hw))


@conv2d_backward_weight.register_fake
def _(x, grad_out, stride, padding, dilation, groups, kernel_hw):
    return x.new_empty((grad_out.shape[1], x.shape[1] // groups, kernel_hw[0], kernel_hw[1]))


@torch.library.custom_op("fastconv::conv2d_bias_grad", mutates_args=())
def conv2d_bias_grad(grad_out: Tensor) -> Tensor:
    return _be(grad_out).conv2d_bias_grad(grad_out.contiguous())


@conv2d_bias_grad.register_fake
def _(grad_out):
    return grad_out.new_empty((grad_out.shape[1],))


# --------------------------------------------------------------------------- autograd


def _save_geometry(ctx, stride, padding, dilation, groups):
    ctx.stride, ctx.padding, ctx.dilation, ctx.groups = stride, padding, dilation, groups


def _geometry(ctx):
    return ctx.stride, ctx.padding, ctx.dilation, ctx.groups


def _conv2d_setup(ctx, inputs, output):
    x, weight, bias, stride, padding, dilation, groups = inputs
    ctx.save_for_backward(x, weight)
    ctx.has_bias = bias is not None
    _save_geometry(ctx, stride, padding, dilation, groups)


def _conv2d_backward(ctx, grad):
    x, weight = ctx.saved_tensors
    geo = _geometry(ctx)
    gx = gw = gb = None
    if ctx.needs_input_grad[0]:
        gx = conv2d_backward_input(grad, weight, None, *geo, list(x.shape[2:]))
    if ctx.needs_input_grad[1]:
        gw = conv2d_backward_weight(x, grad, *geo, list(weight.shape[2:]))
    if ctx.has_bias and ctx.needs_input_grad[2]:
        gb = conv2d_bias_grad(grad)
    return gx, gw, gb, None, None, None, None


conv2d_op.register_autograd(_conv2d_backward, setup_context=_conv2d_setup)


def _bwd_input_setup(ctx, inputs, output):
    grad_out, weight, bias, stride, padding, dilation, groups, in_hw = inputs
    ctx.save_for_backward(grad_out, weight)
    ctx.has_bias = bias is not None
    _save_geometry(ctx, stride, padding, dilation, groups)


def _bwd_input_backward(ctx, gg):
    grad_out, weight = ctx.saved_tensors
    geo = _geometry(ctx)
    g_go = g_w = g_b = None
    if ctx.needs_input_grad[0]:
        g_go = conv2d_op(gg, weight, None, *geo)
    if ctx.needs_input_grad[1]:
        g_w = conv2d_backward_weight(gg, grad_out, *geo, list(weight.shape[2:]))
    if ctx.has_bias and ctx.needs_input_grad[2]:
        g_b = conv2d_bias_grad(gg)
    return g_go, g_w, g_b, None, None, None, None, None


conv2d_backward_input.register_autograd(_bwd_input_backward, setup_context=_bwd_input_setup)


def _bwd_weight_setup(ctx, inputs, output):
    x, grad_out, stride, padding, dilation, groups, kernel_hw = inputs
    ctx.save_for_backward(x, grad_out)
    _save_geometry(ctx, stride, padding, dilation, groups)


def _bwd_weight_backward(ctx, gg):
    x, grad_out = ctx.saved_tensors
    geo = _geometry(ctx)
    g_x = g_go = None
    if ctx.needs_input_grad[0]:
        g_x = conv2d_backward_input(grad_out, gg, None, *geo, list(x.shape[2:]))
    if ctx.needs_input_grad[1]:
        g_go = conv2d_op(x, gg, None, *geo)
    return g_x, g_go, None, None, None, None, None


conv2d_backward_weight.register_autograd(_bwd_weight_backward, setup_context=_bwd_weight_setup)


def _bias_grad_setup(ctx, inputs, output):
    ctx.shape = inputs[0].shape


def _bias_grad_backward(ctx, gg):
    return gg.reshape(1, -1, 1, 1).expand(ctx.shape)


conv2d_bias_grad.register_autograd(_bias_grad_backward, setup_context=_bias_grad_setup)


# --------------------------------------------------------------------------- public function


def unbatched(op: str, x: Tensor) -> bool:
    """Validate the rank of ``x`` and say whether it is unbatched (3-D)."""
    S.check_rank(op, x)
    return x.dim() == 3


def conv2d(input: Tensor, weight: Tensor, bias: Optional[Tensor] = None, stride: S.IntPair = 1,
           padding: Union[str, S.IntPair] = 0, dilation: S.IntPair = 1, groups: int = 1) -> Tensor:
    """2D cross-correlation with the signature and semantics of ``torch.nn.functional.conv2d``.

    ``out[n, o] = bias[o] + sum_{c in group(o), i, j} weight[o, c, i, j] * x_pad[n, c, y*s + i*d, x*s + j*d]``
    (cross-correlation: the kernel is not flipped).  ``padding`` is an int, a pair,
    ``'valid'`` (none) or ``'same'`` (stride 1 only; an odd total goes bottom/right),
    zero-filled.  Input is ``(N, C, H, W)`` or unbatched ``(C, H, W)``; float32 or float64.
    """
    squeeze = unbatched("conv2d", input)
    S.check_dtype("conv2d", input, weight, bias)
    x = input.unsqueeze(0) if squeeze else input
    s, d = S.pair(stride, "stride"), S.pair(dilation, "dilation")
    if weight.dim() != 4:
        raise ValueError(f"fastconv.conv2d: expected 4D weight (out_channels, in_channels/groups, kH, kW), "
                         f"but got weight of size {list(weight.shape)}")
    p = S.conv_padding(padding, tuple(weight.shape[2:]), s, d)
    S.conv2d_output_hw("conv2d", x.shape, weight.shape, s, p, d, groups)
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != weight.shape[0]):
        raise RuntimeError(f"fastconv.conv2d: expected bias of shape [{weight.shape[0]}], got {list(bias.shape)}")
    out = conv2d_op(x, weight, bias, list(s), list(p), list(d), int(groups))
    return out.squeeze(0) if squeeze else out
