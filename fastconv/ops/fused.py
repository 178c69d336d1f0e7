"""Fused layers: ``conv2d -> activation`` and ``conv2d -> activation -> max_pool2d`` as single ops.

torch's eager mode runs these as two or three ops, each keeping its whole output alive for
the backward pass.  The fused ops keep only what their exact backward needs:

* ``fastconv::conv2d_act(x, w, b, stride, padding4, dilation, groups, act, slope) -> (y, z)``:
  ``y = act(conv2d(x, w, b))``.  ReLU and LeakyReLU (``slope >= 0``) differentiate from ``y``
  alone; SiLU (and LeakyReLU with a negative slope) also returns the pre-activation ``z``
  (otherwise ``z`` is an empty tensor).
* ``fastconv::conv2d_act_pool(x, w, b, ..., act, slope, kernel, stride, padding, dilation,
  ceil_mode) -> (p, indices, zp)``: ``p, indices = max_pool2d(act(conv2d(x, w, b)))``; the
  full-size convolution and activation outputs are scratch, freed when the op returns.  ``zp``
  is the pre-activation at each window's argmax when the activation needs it (SiLU, negative
  slopes), else empty.

* ``fastconv::act_conv2d(x, w, b, stride, padding4, dilation, groups, act, slope) -> y``:
  ``y = conv2d(act(x), w, b)``, keeping only ``x``: ``act(x)`` is recomputed for the weight
  gradient (the activation in front of a convolution, where its derivative needs its input).
* ``fastconv::act_conv_transpose2d(x, w, b, stride, padding, output_padding, dilation, groups, act,
  slope) -> y``: the same in front of a transposed convolution.

Backward passes are exact: ``dz = dy * act'(z)`` (the same formulas torch's activation
backward uses; for the pooled op, nonzero only at the argmax positions), then conv2d's
gradient ops.  They are built from differentiable ops, so double backward works (SiLU's
second derivative recomputes ``z`` through the graph when a graph is being built).
Each op also has a forward-mode derivative (``torch.func.jvp``, ``jacfwd``) and a batching rule.
Activation names are ``'relu'``, ``'leaky_relu'`` and ``'silu'``.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import Tensor

from ..memory import output_like
from . import _batching as B
from . import conv_transpose2d as T
from ._op import define
from .conv2d import (_conv2d, conv2d_backward_input, conv2d_backward_weight, conv2d_bias_grad, conv2d_op,
                     conv_grads, conv_tangent, linear_tangent, out_hw)
from .pool import _gather, _max_pool2d, _pool_hw, max_pool2d_backward

__all__ = ["ACTIVATIONS", "conv2d_act_op", "conv2d_act_pool_op", "act_conv2d_op", "act_conv_transpose2d_op",
           "keeps_preactivation"]

#: Activations the fused ops support.
ACTIVATIONS = ("relu", "leaky_relu", "silu")


def keeps_preactivation(act: str, slope: float) -> bool:
    """Whether ``act``'s derivative needs the pre-activation (it cannot be read off the output)."""
    if act not in ACTIVATIONS:
        raise ValueError(f"fastconv: unsupported fused activation {act!r}; supported are {ACTIVATIONS}")
    return act == "silu" or (act == "leaky_relu" and slope < 0)


def _activate(z: Tensor, act: str, slope: float) -> Tensor:
    """act(z) with torch's own elementwise kernels (the same values as the unfused layer); in place
    on the convolution's fresh output ``z`` when the backward does not need ``z`` itself."""
    if act == "relu":
        return torch.relu_(z)
    if act == "leaky_relu":
        return torch.nn.functional.leaky_relu(z, slope, inplace=slope >= 0)
    return torch.nn.functional.silu(z)


def _act_grad(dy: Tensor, y: Tensor, z: Optional[Tensor], act: str, slope: float,
              out: Optional[Tensor] = None) -> Tensor:
    """``dy * act'(z)`` by torch's own activation-backward kernels (``y = act(z)``): one pass, and the
    values of the unfused layer bit for bit, into ``out`` (``dy`` itself may be given: the kernels
    are elementwise) or a new tensor.  When a graph is being built (double backward), SiLU's
    derivative is written out in differentiable ops instead (``silu_backward`` has no derivative),
    and ``out`` is not used.  ``z`` may stand for ``y`` (``z > 0`` exactly where ``y > 0``)."""
    if torch.is_grad_enabled():  # differentiable forms
        if act == "relu":
            return torch.ops.aten.threshold_backward(dy, y, 0)
        if act == "leaky_relu":
            return (torch.ops.aten.leaky_relu_backward(dy, z, slope, False) if slope < 0
                    else torch.ops.aten.leaky_relu_backward(dy, y, slope, True))
        s = torch.sigmoid(z)
        return dy * s * (1 + z * (1 - s))
    if out is None:
        out = output_like(dy)  # (on the CPU, pages already mapped: no faults in the kernel)
    if act == "relu":
        return torch.ops.aten.threshold_backward.grad_input(dy, y, 0, grad_input=out)
    if act == "leaky_relu":
        if slope < 0:
            return torch.ops.aten.leaky_relu_backward.grad_input(dy, z, slope, False, grad_input=out)
        return torch.ops.aten.leaky_relu_backward.grad_input(dy, y, slope, True, grad_input=out)  # y > 0 where z > 0
    return torch.ops.aten.silu_backward.grad_input(dy, z, grad_input=out)


def _empty_like(x: Tensor) -> Tensor:
    return x.new_empty((0,))


# --------------------------------------------------------------------------- conv2d -> activation


def _conv2d_act(x: Tensor, weight: Tensor, bias: Optional[Tensor], stride: List[int], padding: List[int],
                dilation: List[int], groups: int, act: str, slope: float) -> Tuple[Tensor, Tensor]:
    z = _conv2d(x, weight, bias, stride, padding, dilation, groups)
    y = _activate(z, act, slope)
    return y, (z if keeps_preactivation(act, slope) else _empty_like(z))


def _conv2d_act_fake(x, weight, bias, stride, padding, dilation, groups, act, slope):
    oh, ow = out_hw(x.shape[2:], weight.shape[2:], stride, padding, dilation)
    y = x.new_empty((x.shape[0], weight.shape[0], oh, ow))
    return y, (torch.empty_like(y) if keeps_preactivation(act, slope) else _empty_like(x))


def _conv2d_act_setup(ctx, inputs, output):
    x, weight, bias, stride, padding, dilation, groups, act, slope = inputs
    y, z = output
    ctx.save_for_backward(x, weight, bias, y, z)
    ctx.save_for_forward(x, weight, bias, y, z)
    ctx.geo = (stride, padding, dilation, groups)
    ctx.act = (act, slope)
    ctx.has_bias = bias is not None
    ctx.mark_non_differentiable(z)
    ctx.set_materialize_grads(False)  # no zero gradient for z (see pool._max_setup)


def _preactivation(ctx, x, weight, bias, z):
    """``z`` for the activation derivative: recomputed through the graph when building one (double backward)."""
    if torch.is_grad_enabled() and keeps_preactivation(*ctx.act):
        return conv2d_op(x, weight, bias, *ctx.geo)
    return z


def _conv2d_act_backward(ctx, dy, _dz):
    if dy is None:  # gradients are not materialised (see _conv2d_act_setup)
        return (None,) * 9
    x, weight, bias, y, z = ctx.saved_tensors
    dz = _act_grad(dy, y, _preactivation(ctx, x, weight, bias, z), *ctx.act)
    return conv_grads(ctx, dz, x, weight, 6)


def _conv2d_act_jvp(ctx, x_t, w_t, b_t, *_):
    """``act'(z)`` times the convolution's tangent; none for the pre-activation output (not differentiable)."""
    x, weight, _, y, z = ctx.saved_tensors
    return _act_grad(conv_tangent(x, weight, x_t, w_t, b_t, ctx.geo), y, z, *ctx.act), None


def _conv2d_act_vmap(info, in_dims, *args):
    return B.conv_vmap(conv2d_act_op, info, in_dims, args, groups_at=6)


conv2d_act_op = define("conv2d_act", _conv2d_act, _conv2d_act_fake, setup_context=_conv2d_act_setup,
                       backward=_conv2d_act_backward, jvp=_conv2d_act_jvp, vmap=_conv2d_act_vmap)


# --------------------------------------------------------------------------- activation -> conv2d


def _activated(x: Tensor, act: str, slope: float) -> Tensor:
    """``act(x)`` in a new tensor (``x`` is an op's input and stays as it is) by torch's own kernels;
    through differentiable ops when a graph is being built (double backward)."""
    if torch.is_grad_enabled():
        if act == "relu":
            return torch.relu(x)
        if act == "leaky_relu":
            return torch.nn.functional.leaky_relu(x, slope)
        return torch.nn.functional.silu(x)
    out = output_like(x)  # (the pooled storage of the previous call's: pages mapped)
    if act == "relu":
        return torch.clamp_min(x, 0, out=out)  # (torch.relu is clamp_min(x, 0): NaN stays NaN)
    if act == "leaky_relu":
        return torch.ops.aten.leaky_relu.out(x, slope, out=out)
    return torch.ops.aten.silu.out(x, out=out)


def _act_conv2d(x: Tensor, weight: Tensor, bias: Optional[Tensor], stride: List[int], padding: List[int],
                dilation: List[int], groups: int, act: str, slope: float) -> Tensor:
    return _conv2d(_activated(x, act, slope), weight, bias, stride, padding, dilation, groups)


def _act_conv2d_fake(x, weight, bias, stride, padding, dilation, groups, act, slope):
    oh, ow = out_hw(x.shape[2:], weight.shape[2:], stride, padding, dilation)
    return x.new_empty((x.shape[0], weight.shape[0], oh, ow))


def _preact_setup(ctx, x: Tensor, weight: Tensor, bias: Optional[Tensor], geo: tuple, act: str, slope: float) -> None:
    """What the backward of ``conv(act(x))`` keeps: ``x`` and the weight (``geo``: the conv2d
    geometry of the convolution or, transposed, of its adjoint)."""
    ctx.save_for_backward(x, weight)
    ctx.save_for_forward(x, weight)
    ctx.geo = geo
    ctx.act = (act, slope)
    ctx.has_bias = bias is not None


def _preact_jvp(ctx, x_t: Optional[Tensor], w_t: Optional[Tensor], b_t: Optional[Tensor], conv) -> Tensor:
    """The forward-mode derivative of ``conv(act(x), w, b)`` (``conv`` linear in its input and in its
    weight, the bias added): ``conv(act'(x) x_t, w) + conv(act(x), w_t) + b_t``."""
    x, weight = ctx.saved_tensors
    a = _activated(x, *ctx.act) if w_t is not None else x  # (only its shape is read otherwise)
    return linear_tangent(conv, a, weight, None if x_t is None else _act_grad(x_t, x, x, *ctx.act), w_t, b_t)


def _preact_grads(ctx, grad: Tensor, weight_grad, input_grad, n_extra: int) -> tuple:
    """The gradients of ``conv(act(x))`` from its output's, as ``ctx.needs_input_grad`` asks, then
    ``n_extra`` Nones.  ``weight_grad(a, grad)`` and ``input_grad(grad)`` are the convolution's own.
    The weight gradient comes first, on ``act(x)`` recomputed and freed, then the input gradient,
    turned into ``x``'s in place: at most two tensors of ``x``'s size are alive at once."""
    x, weight = ctx.saved_tensors
    grad = grad.contiguous()
    gx = gw = gb = None
    if ctx.needs_input_grad[1]:
        gw = weight_grad(_activated(x, *ctx.act), grad)
    if ctx.has_bias and ctx.needs_input_grad[2]:
        gb = conv2d_bias_grad(grad)
    if ctx.needs_input_grad[0]:
        da = input_grad(grad)
        gx = _act_grad(da, x, x, *ctx.act, out=da)
    return (gx, gw, gb) + (None,) * n_extra


def _act_conv2d_setup(ctx, inputs, output):
    x, weight, bias, stride, padding, dilation, groups, act, slope = inputs
    _preact_setup(ctx, x, weight, bias, (stride, padding, dilation, groups), act, slope)


def _act_conv2d_backward(ctx, grad):
    x, weight = ctx.saved_tensors
    return _preact_grads(ctx, grad, lambda a, g: conv2d_backward_weight(a, g, *ctx.geo, list(weight.shape[2:])),
                         lambda g: conv2d_backward_input(g, weight, None, *ctx.geo, list(x.shape[2:])), 6)


def _act_conv2d_jvp(ctx, x_t, w_t, b_t, *_):
    return _preact_jvp(ctx, x_t, w_t, b_t, lambda a, w, b: conv2d_op(a, w, b, *ctx.geo))


def _act_conv2d_vmap(info, in_dims, *args):
    return B.conv_vmap(act_conv2d_op, info, in_dims, args, groups_at=6)


act_conv2d_op = define("act_conv2d", _act_conv2d, _act_conv2d_fake, setup_context=_act_conv2d_setup,
                       backward=_act_conv2d_backward, jvp=_act_conv2d_jvp, vmap=_act_conv2d_vmap)


def _act_conv_transpose2d(x: Tensor, weight: Tensor, bias: Optional[Tensor], stride: List[int],
                          padding: List[int], output_padding: List[int], dilation: List[int], groups: int, act: str,
                          slope: float) -> Tensor:
    return T._conv_transpose2d(_activated(x, act, slope), weight, bias, stride, padding, output_padding, dilation,
                               groups)


def _act_conv_transpose2d_fake(x, weight, bias, stride, padding, output_padding, dilation, groups, act, slope):
    return T._fake(x, weight, bias, stride, padding, output_padding, dilation, groups)


def _act_conv_transpose2d_setup(ctx, inputs, output):
    x, weight, bias, stride, padding, output_padding, dilation, groups, act, slope = inputs
    _preact_setup(ctx, x, weight, bias, (stride, T._pad4(padding, output_padding), dilation, groups), act, slope)
    ctx.out_hw = list(output.shape[2:])


def _act_conv_transpose2d_backward(ctx, grad):
    """The transposed convolution's gradients: its input gradient is conv2d's forward, its weight
    gradient conv2d's with the roles of input and output swapped."""
    weight = ctx.saved_tensors[1]
    return _preact_grads(ctx, grad, lambda a, g: conv2d_backward_weight(g, a, *ctx.geo, list(weight.shape[2:])),
                         lambda g: conv2d_op(g, weight, None, *ctx.geo), 7)


def _act_conv_transpose2d_jvp(ctx, x_t, w_t, b_t, *_):
    return _preact_jvp(ctx, x_t, w_t, b_t, lambda a, w, b: conv2d_backward_input(a, w, b, *ctx.geo, ctx.out_hw))


def _act_conv_transpose2d_vmap(info, in_dims, *args):
    return B.conv_vmap(act_conv_transpose2d_op, info, in_dims, args, groups_at=7)


act_conv_transpose2d_op = define("act_conv_transpose2d", _act_conv_transpose2d, _act_conv_transpose2d_fake,
                                 setup_context=_act_conv_transpose2d_setup, backward=_act_conv_transpose2d_backward,
                                 jvp=_act_conv_transpose2d_jvp, vmap=_act_conv_transpose2d_vmap)


# --------------------------------------------------------------------------- conv2d -> activation -> max_pool2d


def _conv2d_act_pool(x: Tensor, weight: Tensor, bias: Optional[Tensor], stride: List[int], padding: List[int],
                     dilation: List[int], groups: int, act: str, slope: float, pool_kernel: List[int],
                     pool_stride: List[int], pool_padding: List[int], pool_dilation: List[int],
                     ceil_mode: bool) -> Tuple[Tensor, Tensor, Tensor]:
    z = _conv2d(x, weight, bias, stride, padding, dilation, groups)
    a = _activate(z, act, slope)
    p, idx = _max_pool2d(a, pool_kernel, pool_stride, pool_padding, pool_dilation, ceil_mode)
    zp = _gather(z, idx) if keeps_preactivation(act, slope) else _empty_like(z)
    return p, idx, zp


def _conv2d_act_pool_fake(x, weight, bias, stride, padding, dilation, groups, act, slope, pool_kernel, pool_stride,
                          pool_padding, pool_dilation, ceil_mode):
    oh, ow = out_hw(x.shape[2:], weight.shape[2:], stride, padding, dilation)
    z = x.new_empty((x.shape[0], weight.shape[0], oh, ow))
    hw = _pool_hw(z, pool_kernel, pool_stride, pool_padding, pool_dilation, ceil_mode, "max_pool2d")
    p = x.new_empty((z.shape[0], z.shape[1], hw[0], hw[1]))
    return p, torch.empty_like(p, dtype=torch.int64), (torch.empty_like(p) if keeps_preactivation(act, slope)
                                                       else _empty_like(x))


def _conv2d_act_pool_setup(ctx, inputs, output):
    x, weight, bias, stride, padding, dilation, groups, act, slope = inputs[:9]
    p, idx, zp = output
    ctx.save_for_backward(x, weight, bias, p, idx, zp)
    ctx.save_for_forward(x, weight, bias, p, idx, zp)
    ctx.geo = (stride, padding, dilation, groups)
    ctx.act = (act, slope)
    ctx.pool = inputs[9:]
    ctx.has_bias = bias is not None
    ctx.z_hw = list(out_hw(x.shape[2:], weight.shape[2:], stride, padding, dilation))
    ctx.mark_non_differentiable(idx, zp)
    ctx.set_materialize_grads(False)  # no zero gradients for idx and zp (see pool._max_setup)


def _conv2d_act_pool_backward(ctx, dp, _didx, _dzp):
    if dp is None:  # gradients are not materialised (see _conv2d_act_pool_setup)
        return (None,) * 14
    x, weight, bias, p, idx, zp = ctx.saved_tensors
    if torch.is_grad_enabled() and keeps_preactivation(*ctx.act):
        zp = _gather(conv2d_op(x, weight, bias, *ctx.geo), idx)
    dz = max_pool2d_backward(_act_grad(dp, p, zp, *ctx.act), idx, ctx.z_hw)
    return conv_grads(ctx, dz, x, weight, 11)


def _conv2d_act_pool_jvp(ctx, x_t, w_t, b_t, *_):
    """The convolution's tangent read at each window's argmax, times ``act'`` there (from the pooled
    value, or the kept pre-activation); none for the indices and the pre-activations."""
    x, weight, _, p, idx, zp = ctx.saved_tensors
    return _act_grad(_gather(conv_tangent(x, weight, x_t, w_t, b_t, ctx.geo), idx), p, zp, *ctx.act), None, None


def _conv2d_act_pool_vmap(info, in_dims, *args):
    return B.conv_vmap(conv2d_act_pool_op, info, in_dims, args, groups_at=6)


conv2d_act_pool_op = define("conv2d_act_pool", _conv2d_act_pool, _conv2d_act_pool_fake,
                            setup_context=_conv2d_act_pool_setup, backward=_conv2d_act_pool_backward,
                            jvp=_conv2d_act_pool_jvp, vmap=_conv2d_act_pool_vmap)


# --------------------------------------------------------------------------- public functions


def _act_args(activation: str, negative_slope: float) -> Tuple[str, float]:
    keeps_preactivation(activation, negative_slope)  # validates the name
    return activation, float(negative_slope) if activation == "leaky_relu" else 0.0


def _call(op, input: Tensor, weight: Tensor, bias: Optional[Tensor], stride, padding, dilation, groups: int,
          activation: str, negative_slope: float) -> Tensor:
    """``op(x, weight, bias, stride, padding4, dilation, groups, act, slope)`` (its first output) after
    conv2d's validation, on a batched or unbatched ``input``."""
    from .conv2d import _no_input_channels, _prepare
    squeeze, s, p, d, g = _prepare(input, weight, bias, stride, padding, dilation, groups)
    act, slope = _act_args(activation, negative_slope)
    x = input.unsqueeze(0) if squeeze else input
    if x.shape[1] == 0:  # torch's empty answer, whatever the activation
        y = _no_input_channels(x, weight, bias, s, p, d)
    else:
        y = op(x, weight, bias, s, p, d, g, act, slope)
        y = y[0] if isinstance(y, tuple) else y
    return y.squeeze(0) if squeeze else y


def conv2d_act(input: Tensor, weight: Tensor, bias: Optional[Tensor] = None, stride=1, padding=0, dilation=1,
               groups: int = 1, activation: str = "relu", negative_slope: float = 0.01) -> Tensor:
    """``activation(conv2d(input, weight, bias, ...))`` as one fused op.

    Parameters
    ----------
    input, weight, bias, stride, padding, dilation, groups
        As :func:`fastconv.functional.conv2d`.
    activation : {'relu', 'leaky_relu', 'silu'}, optional
        The activation, with torch's definitions.
    negative_slope : float, optional
        LeakyReLU's slope (ignored by the others).

    Returns
    -------
    Tensor
        The activated convolution; values and gradients equal the unfused torch layers'.
        Only the output (and, for SiLU, the pre-activation) is kept for the backward pass.

    Raises
    ------
    TypeError, ValueError, RuntimeError
        As :func:`fastconv.functional.conv2d` for bad tensors or geometry; ``ValueError`` also
        for an unknown activation.

    Examples
    --------
    >>> import torch
    >>> import fastconv.functional as F
    >>> x, w = torch.randn(2, 3, 8, 8), torch.randn(4, 3, 3, 3)
    >>> y = F.conv2d_act(x, w, padding=1)
    >>> torch.equal(y, torch.relu(F.conv2d(x, w, padding=1)))
    True
    """
    return _call(conv2d_act_op, input, weight, bias, stride, padding, dilation, groups, activation, negative_slope)


def act_conv2d(input: Tensor, weight: Tensor, bias: Optional[Tensor] = None, stride=1, padding=0, dilation=1,
               groups: int = 1, activation: str = "silu", negative_slope: float = 0.01) -> Tensor:
    """``conv2d(activation(input), weight, bias, ...)`` as one op that keeps only ``input`` for backward.

    torch's eager mode keeps both the activation's input (for its derivative) and its output
    (for the convolution's weight gradient).  This op keeps ``input`` alone and recomputes
    ``activation(input)`` in the backward pass, where it is alive only while the weight gradient
    is computed: one tensor of the input's size less between forward and backward, for one more
    elementwise pass.  It pays for activations whose derivative needs their input (SiLU,
    LeakyReLU with a negative slope), which :func:`fastconv.convert_model` (``fuse=True``)
    fuses this way.

    Parameters
    ----------
    input, weight, bias, stride, padding, dilation, groups
        As :func:`fastconv.functional.conv2d` (zero padding commutes with the activations:
        each maps 0 to 0).
    activation : {'relu', 'leaky_relu', 'silu'}, optional
        The activation applied to ``input``, with torch's definitions.
    negative_slope : float, optional
        LeakyReLU's slope (ignored by the others).

    Returns
    -------
    Tensor
        The convolution of the activated input; values and gradients equal the unfused torch
        layers' (the same elementwise kernels).

    Raises
    ------
    TypeError, ValueError, RuntimeError
        As :func:`fastconv.functional.conv2d` for bad tensors or geometry; ``ValueError`` also
        for an unknown activation.

    Examples
    --------
    >>> import torch
    >>> import fastconv.functional as F
    >>> x, w = torch.randn(2, 3, 8, 8), torch.randn(4, 3, 3, 3)
    >>> y = F.act_conv2d(x, w, padding=1)
    >>> torch.equal(y, F.conv2d(torch.nn.functional.silu(x), w, padding=1))
    True
    """
    return _call(act_conv2d_op, input, weight, bias, stride, padding, dilation, groups, activation, negative_slope)


def act_conv_transpose2d(input: Tensor, weight: Tensor, bias: Optional[Tensor] = None, stride=1, padding=0,
                         output_padding=0, groups: int = 1, dilation=1, activation: str = "silu",
                         negative_slope: float = 0.01) -> Tensor:
    """``conv_transpose2d(activation(input), weight, bias, ...)`` as one op that keeps only ``input``.

    The transposed-convolution twin of :func:`act_conv2d` (the activation in front of a
    decoder's upsampling layer), with the same memory trade.

    Parameters
    ----------
    input, weight, bias, stride, padding, output_padding, groups, dilation
        As :func:`fastconv.functional.conv_transpose2d` (argument order included).
    activation : {'relu', 'leaky_relu', 'silu'}, optional
        The activation applied to ``input``, with torch's definitions.
    negative_slope : float, optional
        LeakyReLU's slope (ignored by the others).

    Returns
    -------
    Tensor
        The transposed convolution of the activated input; values and gradients equal the
        unfused torch layers'.

    Raises
    ------
    TypeError, ValueError, RuntimeError
        As :func:`fastconv.functional.conv_transpose2d`; ``ValueError`` also for an unknown
        activation.

    Examples
    --------
    >>> import torch
    >>> import fastconv.functional as F
    >>> x, w = torch.randn(2, 3, 4, 4), torch.randn(3, 5, 4, 4)
    >>> y = F.act_conv_transpose2d(x, w, stride=2, padding=1)
    >>> torch.equal(y, F.conv_transpose2d(torch.nn.functional.silu(x), w, stride=2, padding=1))
    True
    """
    act, slope = _act_args(activation, negative_slope)
    squeeze, x, geo = T.prepare(input, weight, bias, stride, padding, output_padding, groups, dilation)
    y = act_conv_transpose2d_op(x, weight, bias, *geo, act, slope)
    return y.squeeze(0) if squeeze else y


def conv2d_act_max_pool(input: Tensor, weight: Tensor, bias: Optional[Tensor] = None, stride=1, padding=0,
                        dilation=1, groups: int = 1, activation: str = "relu", negative_slope: float = 0.01,
                        pool_kernel_size=2, pool_stride=None, pool_padding=0, pool_dilation=1,
                        ceil_mode: bool = False) -> Tensor:
    """``max_pool2d(activation(conv2d(input, weight, bias, ...)))`` as one fused op.

    Parameters
    ----------
    input, weight, bias, stride, padding, dilation, groups, activation, negative_slope
        As :func:`conv2d_act`.
    pool_kernel_size, pool_stride, pool_padding, pool_dilation, ceil_mode
        The max pooling, as :func:`fastconv.functional.max_pool2d` (``pool_stride`` defaults
        to the kernel size).

    Returns
    -------
    Tensor
        The pooled activations.  The full-size convolution output is never kept: the
        backward pass needs only the pooled values and their argmax indices.

    Raises
    ------
    TypeError, ValueError, RuntimeError
        As :func:`conv2d_act` and :func:`fastconv.functional.max_pool2d` (too much pooling
        padding, an empty pooled output).

    Examples
    --------
    >>> import torch
    >>> import fastconv.functional as F
    >>> x, w = torch.randn(2, 3, 8, 8), torch.randn(4, 3, 3, 3)
    >>> y = F.conv2d_act_max_pool(x, w, padding=1)
    >>> torch.equal(y, torch.max_pool2d(torch.relu(F.conv2d(x, w, padding=1)), 2))
    True
    """
    from .. import _shapes as S
    from .conv2d import _prepare
    from .pool import _stride
    squeeze, s, p, d, g = _prepare(input, weight, bias, stride, padding, dilation, groups)
    act, slope = _act_args(activation, negative_slope)
    k = S.pair(pool_kernel_size, "kernel_size")
    ps, pp, pd = _stride(pool_stride, k), S.pair(pool_padding, "padding"), S.pair(pool_dilation, "dilation")
    x = input.unsqueeze(0) if squeeze else input
    z_hw = out_hw(x.shape[2:], weight.shape[2:], s, p, d)
    S.pool2d_output_hw("max_pool2d", (x.shape[0], weight.shape[0], *z_hw), k, ps, pp, pd, bool(ceil_mode))
    y, _, _ = conv2d_act_pool_op(x, weight, bias, s, p, d, g, act, slope, list(k), list(ps), list(pp), list(pd),
                                 bool(ceil_mode))
    return y.squeeze(0) if squeeze else y
