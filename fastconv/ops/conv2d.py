"""``fastconv.conv2d``: torch-facing 2D cross-correlation with autograd.

Ops in the ``fastconv`` namespace (see :mod:`fastconv.ops._op`: each is a ``torch.library``
custom op for tracing and an ``autograd.Function`` for eager calls, from one implementation):

* ``fastconv::conv2d(x, w, b, stride, padding4, dilation, groups)``
* ``fastconv::conv2d_backward_input(grad_out, w, b, stride, padding4, dilation, groups, in_hw)``
  (also conv_transpose2d's forward)
* ``fastconv::conv2d_backward_weight(x, grad_out, stride, padding4, dilation, groups, kernel_hw)``
* ``fastconv::conv2d_bias_grad(grad_out)``

Every one of them has a fake (meta) kernel, an autograd formula, a forward-mode derivative
and a batching rule; the backward ops are linear in their tensor inputs, so their own
gradients are again these ops and double backward is exact.

``padding4`` is ``(top, bottom, left, right)``.  The kernels only read top/left and the
output size; bottom/right fix the output size and may be negative (cropping), which
conv_transpose2d's gradient uses for ``output_padding``.
"""
from __future__ import annotations

from typing import List, Optional, Protocol, Sequence, Tuple, Union

from torch import Tensor

from .. import _shapes as S
from .._backend import kernels
from . import _batching as B
from ._op import define

__all__ = ["conv2d", "Backend"]


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


def out_hw(x_hw: Sequence[int], k_hw: Sequence[int], stride: Sequence[int], padding: Sequence[int],
           dilation: Sequence[int]) -> Tuple[int, int]:
    """Output (H, W) of a cross-correlation with ``padding`` as (top, bottom, left, right)."""
    return (S.conv_out_size(x_hw[0], k_hw[0], stride[0], padding[0] + padding[1], dilation[0]),
            S.conv_out_size(x_hw[1], k_hw[1], stride[1], padding[2] + padding[3], dilation[1]))


def _opt(t: Optional[Tensor]) -> Optional[Tensor]:
    return None if t is None else t.contiguous()


# --------------------------------------------------------------------------- conv2d


def _conv2d(x: Tensor, weight: Tensor, bias: Optional[Tensor], stride: List[int], padding: List[int],
            dilation: List[int], groups: int) -> Tensor:
    (_, _, h, w), (_, _, kh, kw) = x.shape, weight.shape
    hw = ((h + padding[0] + padding[1] - dilation[0] * (kh - 1) - 1) // stride[0] + 1,  # out_hw, inline:
          (w + padding[2] + padding[3] - dilation[1] * (kw - 1) - 1) // stride[1] + 1)  # tiny calls count
    return kernels("conv2d", x.device).conv2d_forward(x.contiguous(), weight.contiguous(),
                                                      None if bias is None else bias.contiguous(), stride,
                                                      padding, dilation, groups, hw)




def _conv2d_fake(x, weight, bias, stride, padding, dilation, groups):
    oh, ow = out_hw(x.shape[2:], weight.shape[2:], stride, padding, dilation)
    return x.new_empty((x.shape[0], weight.shape[0], oh, ow))


def _save(ctx, tensors, geometry):
    ctx.save_for_backward(*tensors)
    ctx.save_for_forward(*tensors)
    ctx.geo = geometry


def _conv2d_setup(ctx, inputs, output):
    x, weight, bias, stride, padding, dilation, groups = inputs
    _save(ctx, (x, weight), (stride, padding, dilation, groups))
    ctx.has_bias = bias is not None


def conv_grads(ctx, grad: Tensor, x: Tensor, weight: Tensor, n_extra: int) -> tuple:
    """The input, weight and bias gradients of a convolution (geometry ``ctx.geo``) from the
    gradient of its output, as ``ctx.needs_input_grad`` asks, then ``n_extra`` Nones.  A strided
    gradient (a ``torch.cat`` input's) is made contiguous once for all three."""
    grad = grad.contiguous()
    gx = gw = gb = None
    if ctx.needs_input_grad[0]:
        gx = conv2d_backward_input(grad, weight, None, *ctx.geo, list(x.shape[2:]))
    if ctx.needs_input_grad[1]:
        gw = conv2d_backward_weight(x, grad, *ctx.geo, list(weight.shape[2:]))
    if ctx.has_bias and ctx.needs_input_grad[2]:
        gb = conv2d_bias_grad(grad)
    return (gx, gw, gb) + (None,) * n_extra


def _conv2d_backward(ctx, grad):
    x, weight = ctx.saved_tensors
    return conv_grads(ctx, grad, x, weight, 4)


def linear_tangent(conv, x: Tensor, weight: Tensor, x_t: Optional[Tensor], w_t: Optional[Tensor],
                   b_t: Optional[Tensor]) -> Tensor:
    """The forward-mode derivative of ``conv(x, weight, bias)`` -- linear in ``x`` and in ``weight``,
    ``bias`` added -- for the tangents ``x_t``, ``w_t`` and ``b_t`` (each None where it does not
    move)."""
    out = None
    if x_t is not None:
        out = conv(x_t, weight, b_t)
        b_t = None
    if w_t is not None:
        term = conv(x, w_t, b_t)
        out = term if out is None else out + term
        b_t = None
    if out is None:  # only the bias moves
        out = conv(x.new_zeros(x.shape), weight, b_t)
    return out


def conv_tangent(x: Tensor, weight: Tensor, x_t: Optional[Tensor], w_t: Optional[Tensor], b_t: Optional[Tensor],
                 geo: tuple) -> Tensor:
    """:func:`linear_tangent` of ``conv2d(x, weight, bias, *geo)``."""
    return linear_tangent(lambda a, w, b: conv2d_op(a, w, b, *geo), x, weight, x_t, w_t, b_t)


def _conv2d_jvp(ctx, x_t, w_t, b_t, *_):
    x, weight = ctx.saved_tensors
    return conv_tangent(x, weight, x_t, w_t, b_t, ctx.geo)


def _conv2d_vmap(info, in_dims, *args):
    return B.conv_vmap(conv2d_op, info, in_dims, args, groups_at=6)


conv2d_op = define("conv2d", _conv2d, _conv2d_fake, setup_context=_conv2d_setup, backward=_conv2d_backward,
                   jvp=_conv2d_jvp, vmap=_conv2d_vmap)


# --------------------------------------------------------------------------- gradient w.r.t. the input


def _backward_input(grad_out: Tensor, weight: Tensor, bias: Optional[Tensor], stride: List[int],
                    padding: List[int], dilation: List[int], groups: int, in_hw: List[int]) -> Tensor:
    return kernels("conv2d", grad_out.device).conv2d_backward_input(
        grad_out.contiguous(), weight.contiguous(), _opt(bias), stride, padding, dilation, groups, tuple(in_hw))


def _backward_input_fake(grad_out, weight, bias, stride, padding, dilation, groups, in_hw):
    return grad_out.new_empty((grad_out.shape[0], weight.shape[1] * groups, in_hw[0], in_hw[1]))


def _backward_input_setup(ctx, inputs, output):
    grad_out, weight, bias, stride, padding, dilation, groups, in_hw = inputs
    _save(ctx, (grad_out, weight), (stride, padding, dilation, groups))
    ctx.has_bias = bias is not None
    ctx.in_hw = list(in_hw)


def _backward_input_backward(ctx, gg):
    grad_out, weight = ctx.saved_tensors
    g_go = g_w = g_b = None
    if ctx.needs_input_grad[0]:
        g_go = conv2d_op(gg, weight, None, *ctx.geo)
    if ctx.needs_input_grad[1]:
        g_w = conv2d_backward_weight(gg, grad_out, *ctx.geo, list(weight.shape[2:]))
    if ctx.has_bias and ctx.needs_input_grad[2]:
        g_b = conv2d_bias_grad(gg)
    return g_go, g_w, g_b, None, None, None, None, None


def _backward_input_jvp(ctx, go_t, w_t, b_t, *_):
    grad_out, weight = ctx.saved_tensors
    in_hw = ctx.in_hw
    out = None
    if go_t is not None:
        out = conv2d_backward_input(go_t, weight, b_t, *ctx.geo, in_hw)
        b_t = None
    if w_t is not None:
        term = conv2d_backward_input(grad_out, w_t, b_t, *ctx.geo, in_hw)
        out = term if out is None else out + term
        b_t = None
    if out is None:
        out = conv2d_backward_input(grad_out.new_zeros(grad_out.shape), weight, b_t, *ctx.geo, in_hw)
    return out


def _backward_input_vmap(info, in_dims, *args):
    return B.conv_vmap(conv2d_backward_input, info, in_dims, args, groups_at=6)


conv2d_backward_input = define("conv2d_backward_input", _backward_input, _backward_input_fake,
                               setup_context=_backward_input_setup, backward=_backward_input_backward,
                               jvp=_backward_input_jvp, vmap=_backward_input_vmap)


# --------------------------------------------------------------------------- gradient w.r.t. the weight


def _backward_weight(x: Tensor, grad_out: Tensor, stride: List[int], padding: List[int], dilation: List[int],
                     groups: int, kernel_hw: List[int]) -> Tensor:
    return kernels("conv2d", x.device).conv2d_backward_weight(x.contiguous(), grad_out.contiguous(), stride,
                                                              padding, dilation, groups, tuple(kernel_hw))


def _backward_weight_fake(x, grad_out, stride, padding, dilation, groups, kernel_hw):
    return x.new_empty((grad_out.shape[1], x.shape[1] // groups, kernel_hw[0], kernel_hw[1]))


def _backward_weight_setup(ctx, inputs, output):
    x, grad_out, stride, padding, dilation, groups, kernel_hw = inputs
    _save(ctx, (x, grad_out), (stride, padding, dilation, groups))
    ctx.kernel_hw = list(kernel_hw)


def _backward_weight_backward(ctx, gg):
    x, grad_out = ctx.saved_tensors
    g_x = g_go = None
    if ctx.needs_input_grad[0]:
        g_x = conv2d_backward_input(grad_out, gg, None, *ctx.geo, list(x.shape[2:]))
    if ctx.needs_input_grad[1]:
        g_go = conv2d_op(x, gg, None, *ctx.geo)
    return g_x, g_go, None, None, None, None, None


def _backward_weight_jvp(ctx, x_t, go_t, *_):
    x, grad_out = ctx.saved_tensors
    out = None
    if x_t is not None:
        out = conv2d_backward_weight(x_t, grad_out, *ctx.geo, ctx.kernel_hw)
    if go_t is not None:
        term = conv2d_backward_weight(x, go_t, *ctx.geo, ctx.kernel_hw)
        out = term if out is None else out + term
    return out if out is not None else x.new_zeros(
        _backward_weight_fake(x, grad_out, *ctx.geo, ctx.kernel_hw).shape)


def _backward_weight_vmap(info, in_dims, x, grad_out, stride, padding, dilation, groups, kernel_hw):
    xd, gd = in_dims[:2]
    n = info.batch_size
    out = conv2d_backward_weight(B.fold_channels(x, xd, n), B.fold_channels(grad_out, gd, n), stride, padding,
                                 dilation, groups * n, kernel_hw)
    return B.unfold(out, n), 0


conv2d_backward_weight = define("conv2d_backward_weight", _backward_weight, _backward_weight_fake,
                                setup_context=_backward_weight_setup, backward=_backward_weight_backward,
                                jvp=_backward_weight_jvp, vmap=_backward_weight_vmap)


# --------------------------------------------------------------------------- bias gradient


def _bias_grad(grad_out: Tensor) -> Tensor:
    return kernels("conv2d", grad_out.device).conv2d_bias_grad(grad_out.contiguous())


def _bias_grad_fake(grad_out):
    return grad_out.new_empty((grad_out.shape[1],))


def _bias_grad_setup(ctx, inputs, output):
    ctx.shape = inputs[0].shape


def _bias_grad_backward(ctx, gg):
    return gg.reshape(1, -1, 1, 1).expand(ctx.shape)


def _bias_grad_jvp(ctx, g_t):
    return conv2d_bias_grad(g_t)


def _bias_grad_vmap(info, in_dims, grad_out):
    n = info.batch_size
    return conv2d_bias_grad(B.fold_channels(grad_out, in_dims[0], n)).reshape(n, -1), 0


conv2d_bias_grad = define("conv2d_bias_grad", _bias_grad, _bias_grad_fake, setup_context=_bias_grad_setup,
                          backward=_bias_grad_backward, jvp=_bias_grad_jvp, vmap=_bias_grad_vmap)


# --------------------------------------------------------------------------- public function


def unbatched(op: str, x: Tensor) -> bool:
    """Validate the rank of ``x`` and say whether it is unbatched (3-D)."""
    S.check_tensor(op, "input", x)
    S.check_rank(op, x)
    return x.dim() == 3


def conv2d(input: Tensor, weight: Tensor, bias: Optional[Tensor] = None, stride: S.IntPair = 1,
           padding: Union[str, S.IntPair] = 0, dilation: S.IntPair = 1, groups: int = 1) -> Tensor:
    """2D cross-correlation, as ``torch.nn.functional.conv2d``.

    ``out[n, o, y, x] = bias[o] + sum_{c in group(o), i, j} weight[o, c, i, j] *
    x_pad[n, c, y*sH + i*dH, x*sW + j*dW]`` -- a cross-correlation: the kernel is not flipped.

    Parameters
    ----------
    input : Tensor
        ``(N, C, H, W)`` or unbatched ``(C, H, W)``, float32 or float64 (and float16/bfloat16
        storage on CUDA).  Any strides, channels_last included.
    weight : Tensor
        ``(O, C / groups, kH, kW)``.
    bias : Tensor, optional
        ``(O,)``.
    stride : int or (int, int), optional
        Step of the kernel over the input.
    padding : int, (int, int), 'valid' or 'same', optional
        Implicit zero padding on both sides; ``'same'`` (stride 1 only) keeps the input size,
        putting the extra row/column of an even (dilated) kernel at the bottom/right as torch does.
    dilation : int or (int, int), optional
        Spacing between kernel taps.
    groups : int, optional
        Channel groups; ``C`` and ``O`` must be divisible by it.

    Returns
    -------
    Tensor
        ``(N, O, H_out, W_out)`` (or ``(O, H_out, W_out)``), contiguous, with
        ``H_out = (H + 2 * padding - dilation * (kH - 1) - 1) // stride + 1``.

    Raises
    ------
    TypeError
        For non-tensor arguments, unsupported dtypes or mixed dtypes.
    ValueError, RuntimeError
        For bad shapes or geometry, with torch's wording.

    Examples
    --------
    >>> import torch
    >>> import fastconv.functional as F
    >>> x = torch.arange(16.0).reshape(1, 1, 4, 4)
    >>> w = torch.ones(1, 1, 2, 2)
    >>> F.conv2d(x, w)
    tensor([[[[10., 14., 18.],
              [26., 30., 34.],
              [42., 46., 50.]]]])
    >>> F.conv2d(x, w, padding="same").shape
    torch.Size([1, 1, 4, 4])
    """
    try:  # the validation-cache key of plain tensor arguments and hashable geometry, built inline
        key = (input.shape, input.dtype, input.device, weight.shape, weight.dtype, weight.device,
               None if bias is None else (bias.shape, bias.dtype, bias.device), type(stride), stride, type(padding),
               padding, type(dilation), dilation, type(groups), groups)
        prep = _prepared.get(key)
    except (AttributeError, TypeError):  # a non-tensor (an error to report) or a list: the general key
        key = S.call_key(input, weight, bias, stride, padding, dilation, groups)
        prep = _prepared.get(key)
    if prep is None:
        prep = _prepare(input, weight, bias, stride, padding, dilation, groups)
        S.remember(_prepared, key, prep)
    squeeze, s, p, d, groups = prep
    if input.shape[-3] == 0:
        out = _no_input_channels(input.unsqueeze(0) if squeeze else input, weight, bias, s, p, d)
        return out.squeeze(0) if squeeze else out
    out = conv2d_op(input.unsqueeze(0) if squeeze else input, weight, bias, s, p, d, groups)
    return out.squeeze(0) if squeeze else out


def _no_input_channels(x: Tensor, weight: Tensor, bias: Optional[Tensor], stride, padding, dilation) -> Tensor:
    """torch's answer for ``in_channels == 0``: an empty ``(N, 0, H_out, W_out)`` output.

    It stays connected to weight and bias, whose gradients are therefore zeros (as torch's).
    """
    hw = [S.conv_out_size(x.shape[2 + i], weight.shape[2 + i], stride[i], padding[2 * i] + padding[2 * i + 1],
                          dilation[i]) for i in range(2)]
    link = x.sum() + weight.sum() + (bias.sum() if bias is not None else 0)
    return x.new_zeros((x.shape[0], 0, *hw)) + 0 * link


#: Validated arguments of recent calls, by :func:`fastconv._shapes.call_key`.
_prepared: dict = {}


def _prepare(input, weight, bias, stride, padding, dilation, groups):
    """Validate a conv2d call; returns (unbatched, stride, padding4, dilation, groups) as the op takes them."""
    squeeze = unbatched("conv2d", input)
    S.check_tensor("conv2d", "weight", weight)
    S.check_dtype("conv2d", input, weight, bias)
    x_shape = (1, *input.shape) if squeeze else tuple(input.shape)
    s, d = S.pair(stride, "stride"), S.pair(dilation, "dilation")
    if weight.dim() != 4:
        raise ValueError(f"fastconv.conv2d: expected 4D weight (out_channels, in_channels/groups, kH, kW), "
                         f"but got weight of size {list(weight.shape)}")
    p = S.conv_padding(padding, tuple(weight.shape[2:]), s, d)
    S.conv2d_output_hw("conv2d", x_shape, weight.shape, s, p, d, groups)
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != weight.shape[0]):
        raise RuntimeError(f"fastconv.conv2d: expected bias of shape [{weight.shape[0]}], got {list(bias.shape)}")
    return squeeze, list(s), list(p), list(d), int(groups)
