"""``fastconv.conv_transpose2d``: the adjoint of conv2d, built on conv2d's kernels.

``fastconv::conv_transpose2d(x, w, b, stride, padding, output_padding, dilation, groups)`` is an
op (see :mod:`fastconv.ops._op`) whose forward is conv2d's input-gradient kernel (scatter of
``w^T x`` into the output, plus bias), and whose gradients are conv2d's forward (w.r.t. ``x``),
conv2d's weight gradient with the roles of input and output swapped (w.r.t. ``w``) and
conv2d's bias gradient (w.r.t. ``b``).  Weight layout is torch's
``(in_channels, out_channels/groups, kH, kW)``.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

from torch import Tensor

from .. import _shapes as S
from . import _batching as B
from ._op import define
from .conv2d import (conv2d_backward_input, conv2d_backward_weight, conv2d_bias_grad, conv2d_op, linear_tangent,
                     unbatched)

__all__ = ["conv_transpose2d"]


def _pad4(padding: List[int], output_padding: List[int]) -> List[int]:
    """Equivalent conv2d padding (top, bottom, left, right): the output_padding rows are cropped from the far side."""
    return [padding[0], padding[0] - output_padding[0], padding[1], padding[1] - output_padding[1]]


def _out_hw(x: Tensor, weight: Tensor, stride, padding, output_padding, dilation, groups):
    return S.conv_transpose2d_output_hw("conv_transpose2d", x.shape, weight.shape, tuple(stride), tuple(padding),
                                        tuple(output_padding), tuple(dilation), groups)


def _conv_transpose2d(x: Tensor, weight: Tensor, bias: Optional[Tensor], stride: List[int], padding: List[int],
                      output_padding: List[int], dilation: List[int], groups: int) -> Tensor:
    hw = _out_hw(x, weight, stride, padding, output_padding, dilation, groups)
    return conv2d_backward_input.impl(x, weight, bias, stride, _pad4(padding, output_padding), dilation, groups,
                                      list(hw))


def _fake(x, weight, bias, stride, padding, output_padding, dilation, groups):
    oh, ow = _out_hw(x, weight, stride, padding, output_padding, dilation, groups)
    return x.new_empty((x.shape[0], weight.shape[1] * groups, oh, ow))


def _setup(ctx, inputs, output):
    x, weight, bias, stride, padding, output_padding, dilation, groups = inputs
    ctx.save_for_backward(x, weight)
    ctx.save_for_forward(x, weight)
    ctx.has_bias = bias is not None
    ctx.geo = (stride, _pad4(padding, output_padding), dilation, groups)
    ctx.out_hw = list(output.shape[2:])


def _backward(ctx, grad):
    x, weight = ctx.saved_tensors
    grad = grad.contiguous()  # once for every gradient (a torch.cat input's is strided)
    gx = gw = gb = None
    if ctx.needs_input_grad[0]:
        gx = conv2d_op(grad, weight, None, *ctx.geo)
    if ctx.needs_input_grad[1]:
        gw = conv2d_backward_weight(grad, x, *ctx.geo, list(weight.shape[2:]))
    if ctx.has_bias and ctx.needs_input_grad[2]:
        gb = conv2d_bias_grad(grad)
    return gx, gw, gb, None, None, None, None, None


def _jvp(ctx, x_t, w_t, b_t, *_):
    x, weight = ctx.saved_tensors
    return linear_tangent(lambda a, w, b: conv2d_backward_input(a, w, b, *ctx.geo, ctx.out_hw), x, weight, x_t, w_t,
                          b_t)


def _vmap(info, in_dims, *args):
    return B.conv_vmap(conv_transpose2d_op, info, in_dims, args, groups_at=7)


conv_transpose2d_op = define("conv_transpose2d", _conv_transpose2d, _fake, setup_context=_setup, backward=_backward,
                             jvp=_jvp, vmap=_vmap)


def conv_transpose2d(input: Tensor, weight: Tensor, bias: Optional[Tensor] = None, stride: S.IntPair = 1,
                     padding: S.IntPair = 0, output_padding: S.IntPair = 0, groups: int = 1,
                     dilation: S.IntPair = 1) -> Tensor:
    """Transposed 2D convolution, as ``torch.nn.functional.conv_transpose2d``.

    It is the gradient of :func:`fastconv.functional.conv2d` w.r.t. its input.

    Parameters
    ----------
    input : Tensor
        ``(N, C_in, H, W)`` or unbatched ``(C_in, H, W)``.
    weight : Tensor
        ``(C_in, C_out / groups, kH, kW)`` (torch's transposed layout).
    bias : Tensor, optional
        ``(C_out,)``.
    stride, padding, output_padding, dilation : int or (int, int), optional
        ``padding`` removes rows/columns from both sides of the full output;
        ``output_padding`` (smaller than stride or dilation) adds them back at the bottom/right.
    groups : int, optional
        Channel groups.

    Returns
    -------
    Tensor
        ``(N, C_out, H_out, W_out)`` with
        ``H_out = (H - 1) * stride - 2 * padding + dilation * (kH - 1) + output_padding + 1``.

    Raises
    ------
    TypeError, ValueError, RuntimeError
        As torch, for bad arguments, dtypes or shapes.

    Examples
    --------
    >>> import torch
    >>> import fastconv.functional as F
    >>> x = torch.ones(1, 1, 2, 2)
    >>> F.conv_transpose2d(x, torch.ones(1, 1, 2, 2), stride=2)
    tensor([[[[1., 1., 1., 1.],
              [1., 1., 1., 1.],
              [1., 1., 1., 1.],
              [1., 1., 1., 1.]]]])
    """
    squeeze, x, geo = prepare(input, weight, bias, stride, padding, output_padding, groups, dilation)
    out = conv_transpose2d_op(x, weight, bias, *geo)
    return out.squeeze(0) if squeeze else out


def prepare(input: Tensor, weight: Tensor, bias: Optional[Tensor], stride, padding, output_padding, groups,
            dilation) -> Tuple[bool, Tensor, list]:
    """Validate :func:`conv_transpose2d`'s arguments as torch does: (whether ``input`` is unbatched,
    the batched input, the op's geometry ``[stride, padding, output_padding, dilation, groups]``)."""
    squeeze = unbatched("conv_transpose2d", input)
    S.check_tensor("conv_transpose2d", "weight", weight)
    S.check_dtype("conv_transpose2d", input, weight, bias)
    x = input.unsqueeze(0) if squeeze else input
    s, p = S.pair(stride, "stride"), S.pair(padding, "padding")
    op, d = S.pair(output_padding, "output_padding"), S.pair(dilation, "dilation")
    S.conv_transpose2d_output_hw("conv_transpose2d", x.shape, weight.shape, s, p, op, d, groups)
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != weight.shape[1] * groups):
        raise RuntimeError(f"fastconv.conv_transpose2d: expected bias of shape [{weight.shape[1] * groups}], "
                           f"got {list(bias.shape)}")
    return squeeze, x, [list(s), list(p), list(op), list(d), int(groups)]
