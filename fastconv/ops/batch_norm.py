"""``fastconv`` training-mode batch normalisation fused with its activation.

``fastconv::batch_norm_act(x, weight, bias, eps, act, slope) -> (y, mean, var)`` (and its gradient
``fastconv::batch_norm_act_backward(grad, x, weight, bias, mean, var, eps, act, slope) -> (dx, dw, db)``):
``y = act(F.batch_norm(x, None, None, weight, bias, training=True, eps=eps))`` with the batch
statistics of each channel, ``mean`` and the biased ``var`` (float64, not differentiable), for
the caller's running-statistics update.  Activations are ``'relu'``, ``'leaky_relu'`` (slope
``slope``), ``'silu'`` and ``'identity'``.

torch's eager mode runs BatchNorm and the activation as two ops: the BatchNorm reads its input
three times and writes its output, the activation reads and writes it again, and their
backward passes do the same.  The fused op reads each channel once from memory and keeps
only its input for the backward pass, which recomputes the activation's mask from it.

The backward pass is exact (see :mod:`fastconv.cpu.batch_norm`).  When a graph is being built
(double backward), it is written out in differentiable torch ops instead, with the statistics
recomputed from ``x``, so higher derivatives are exact too.

:class:`fastconv.nn.FusedConv2d` uses the op for ``Conv2d -> BatchNorm2d -> activation`` runs
in training mode; :func:`batch_norm_act` is the functional form, with torch's running-statistics
semantics.
"""
from __future__ import annotations

from typing import Optional, Protocol, Tuple

import numpy as np
import torch
from torch import Tensor

from .._backend import kernels
from ._op import define, tracing
from .fused import ACTIVATIONS, _act_grad

__all__ = ["Backend", "batch_norm_act_op", "batch_norm_act_backward_op", "batch_norm_act", "BN_ACTIVATIONS",
           "supported"]

#: Activations of the fused op: the fused conv activations and none.
BN_ACTIVATIONS = ACTIVATIONS + ("identity",)


class Backend(Protocol):
    """What a batch-norm backend module (:mod:`fastconv.cpu.batch_norm`, :mod:`fastconv.cuda.batch_norm`) provides.

    ``x`` and ``grad`` are contiguous ``(N, C, H, W)`` with ``N * H * W > 1``; ``weight`` and
    ``bias`` are ``(C,)`` tensors of ``x``'s dtype or None (1 and 0); ``act`` is one of
    :data:`BN_ACTIVATIONS`.  Each function returns new contiguous tensors.
    """

    def batch_norm_act_forward(self, x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], eps: float,
                               act: str, slope: float) -> Tuple[Tensor, Tensor, Tensor]:
        """``(act(batch_norm(x)), mean, var)``: ``mean`` and the biased ``var`` are float64 ``(C,)``."""

    def batch_norm_act_backward(self, grad: Tensor, x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
                                mean: Tensor, var: Tensor, eps: float, act: str,
                                slope: float) -> Tuple[Tensor, Tensor, Tensor]:
        """``(dx, dweight, dbias)`` for the output gradient ``grad``: ``dx`` in ``x``'s dtype, the
        others float64 ``(C,)`` (computed whether or not the parameters exist)."""


def supported(x: Tensor) -> bool:
    """Whether the fused op runs ``x``'s device and dtype (CPU float32/float64; CUDA floats)."""
    if x.device.type == "cpu":
        return x.dtype in (torch.float32, torch.float64)
    return x.device.type == "cuda" and x.dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _batch_norm_act(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], eps: float, act: str,
                    slope: float) -> Tuple[Tensor, Tensor, Tensor]:
    return kernels("batch_norm", x.device).batch_norm_act_forward(x.contiguous(), weight, bias, eps, act, slope)


def _batch_norm_act_fake(x, weight, bias, eps, act, slope):
    stats = x.new_empty((x.shape[1],), dtype=torch.float64)
    return torch.empty_like(x, memory_format=torch.contiguous_format), stats, torch.empty_like(stats)


def _setup(ctx, inputs, output):
    x, weight, bias, eps, act, slope = inputs
    _, mean, var = output
    ctx.save_for_backward(x, weight, bias, mean, var)
    ctx.args = (eps, act, slope)
    ctx.mark_non_differentiable(mean, var)
    ctx.set_materialize_grads(False)  # no zero gradients for the statistics (see pool._max_setup)


def _activate(z: Tensor, act: str, slope: float) -> Tensor:
    if act == "relu":
        return torch.relu(z)
    if act == "leaky_relu":
        return torch.nn.functional.leaky_relu(z, slope)
    if act == "silu":
        return torch.nn.functional.silu(z)
    return z


def _differentiable_backward(dy: Tensor, x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], eps: float,
                             act: str, slope: float) -> Tuple[Tensor, Tensor, Tensor]:
    """The gradient in torch ops, differentiable in ``dy``, ``x`` and the parameters (double backward)."""
    dims = (0, 2, 3)
    shape = (1, -1, 1, 1)
    invstd = torch.rsqrt(x.var(dims, unbiased=False, keepdim=True) + eps)
    xhat = (x - x.mean(dims, keepdim=True)) * invstd
    z = xhat if weight is None else xhat * weight.view(shape)
    z = z if bias is None else z + bias.view(shape)
    g = dy if act == "identity" else _act_grad(dy, _activate(z, act, slope), z, act, slope)
    gw = g if weight is None else g * weight.view(shape)
    dx = invstd * (gw - gw.mean(dims, keepdim=True) - xhat * (gw * xhat).mean(dims, keepdim=True))
    return dx, (g * xhat).sum(dims), g.sum(dims)


def _batch_norm_act_backward(grad: Tensor, x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], mean: Tensor,
                             var: Tensor, eps: float, act: str, slope: float) -> Tuple[Tensor, Tensor, Tensor]:
    return kernels("batch_norm", x.device).batch_norm_act_backward(grad.contiguous(), x.contiguous(), weight, bias,
                                                                   mean, var, eps, act, slope)


def _batch_norm_act_backward_fake(grad, x, weight, bias, mean, var, eps, act, slope):
    return torch.empty_like(x, memory_format=torch.contiguous_format), torch.empty_like(mean), torch.empty_like(mean)


#: The gradient as an op of its own (not differentiable: double backward takes the torch-ops path).
batch_norm_act_backward_op = define("batch_norm_act_backward", _batch_norm_act_backward,
                                    _batch_norm_act_backward_fake)


def _backward(ctx, dy, _dmean, _dvar):
    if dy is None:  # gradients are not materialised (see _setup)
        return (None,) * 6
    x, weight, bias, mean, var = ctx.saved_tensors
    eps, act, slope = ctx.args
    if torch.is_grad_enabled():
        dx, dw, db = _differentiable_backward(dy, x, weight, bias, eps, act, slope)
    else:
        dx, dw, db = batch_norm_act_backward_op(dy, x, weight, bias, mean, var, eps, act, slope)
    need = ctx.needs_input_grad
    dw = dw.to(weight.dtype) if weight is not None and need[1] else None
    db = db.to(bias.dtype) if bias is not None and need[2] else None
    return (dx if need[0] else None), dw, db, None, None, None


batch_norm_act_op = define("batch_norm_act", _batch_norm_act, _batch_norm_act_fake, setup_context=_setup,
                           backward=_backward)


def _check(input: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], activation: str) -> None:
    if not isinstance(input, Tensor):
        raise TypeError(f"batch_norm_act(): input must be a Tensor, not {type(input).__name__}")
    if input.dim() != 4:
        raise ValueError(f"expected 4D input (got {input.dim()}D input)")
    if activation not in BN_ACTIVATIONS:
        raise ValueError(f"fastconv: unsupported activation {activation!r}; supported are {BN_ACTIVATIONS}")
    if not supported(input):
        raise TypeError(f"batch_norm_act(): fastconv runs CPU float32/float64 and CUDA float tensors, "
                        f"got a {input.dtype} tensor on {input.device}")
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and (p.shape != (input.shape[1],) or p.dtype != input.dtype or p.device != input.device):
            raise ValueError(f"batch_norm_act(): {name} must be a ({input.shape[1]},) {input.dtype} tensor on "
                             f"{input.device}, got {tuple(p.shape)} {p.dtype} on {p.device}")
    torch.nn.functional._verify_batch_size(input.size())


def batch_norm_act(input: Tensor, running_mean: Optional[Tensor], running_var: Optional[Tensor],
                   weight: Optional[Tensor] = None, bias: Optional[Tensor] = None, momentum: float = 0.1,
                   eps: float = 1e-5, activation: str = "relu", negative_slope: float = 0.01) -> Tensor:
    """``activation(F.batch_norm(input, running_mean, running_var, weight, bias, training=True, ...))`` as one op.

    Normalises each channel of ``input`` with its batch statistics, as torch's training mode
    does, and updates the running statistics in place when given:
    ``running = (1 - momentum) * running + momentum * batch`` (the variance unbiased).

    Parameters
    ----------
    input : Tensor
        ``(N, C, H, W)``, CPU float32/float64 or a CUDA float dtype, with ``N * H * W > 1``.
    running_mean, running_var : Tensor or None
        ``(C,)`` running statistics, updated in place (both or neither).
    weight, bias : Tensor, optional
        The affine parameters (``(C,)``, ``input``'s dtype); None means 1 and 0.
    momentum : float, optional
        The running-statistics factor (torch's ``exponential_average_factor``).
    eps : float, optional
        Added to the variance.
    activation : {'relu', 'leaky_relu', 'silu', 'identity'}, optional
        The activation, with torch's definitions.
    negative_slope : float, optional
        LeakyReLU's slope (ignored by the others).

    Returns
    -------
    Tensor
        The activated, normalised ``input``; values and gradients equal torch's unfused layers'
        to float rounding.

    Raises
    ------
    ValueError
        For a non-4D input, one value per channel (torch's message), mismatched parameters or
        an unknown activation.
    TypeError
        For a device or dtype the fused op does not run.

    Examples
    --------
    >>> import torch
    >>> from fastconv.ops.batch_norm import batch_norm_act
    >>> x = torch.randn(4, 3, 5, 5)
    >>> rm, rv = torch.zeros(3), torch.ones(3)
    >>> y = batch_norm_act(x, rm, rv)
    >>> ref = torch.relu(torch.nn.functional.batch_norm(x, torch.zeros(3), torch.ones(3), training=True))
    >>> torch.allclose(y, ref, atol=1e-6), torch.allclose(rm, 0.1 * x.mean((0, 2, 3)))
    (True, True)
    """
    _check(input, weight, bias, activation)
    slope = float(negative_slope) if activation == "leaky_relu" else 0.0
    if input.numel() == 0:  # torch's answer: an empty output, zero parameter gradients, no statistics update
        return _activate(torch.nn.functional.batch_norm(input, None, None, weight, bias, True, 0.0, eps), activation,
                         slope)
    y, mean, var = batch_norm_act_op(input, weight, bias, float(eps), activation, slope)
    if running_mean is not None or running_var is not None:
        _update_running(running_mean, running_var, mean, var, input.numel() // input.shape[1], momentum)
    return y


def _update_running(running_mean: Optional[Tensor], running_var: Optional[Tensor], mean: Tensor, var: Tensor,
                    n: int, momentum: float) -> None:
    """torch's update, in float64 like its CPU kernel: ``momentum * batch + (1 - momentum) * running``.

    Eagerly on CPU it runs in NumPy on the buffers (eight torch calls cost 40-140 us, more than a
    small layer's kernel); when tracing, or on other devices, in torch ops."""
    stats = [t for t in (running_mean, running_var) if t is not None]
    if mean.device.type == "cpu" and not tracing(stats + [mean, var]) and all(t.device.type == "cpu" for t in stats):
        unbiased = n / (n - 1)
        for run, batch, scale in ((running_mean, mean, 1.0), (running_var, var, unbiased)):
            if run is not None:
                r = run.detach().numpy()
                r[...] = batch.numpy() * (momentum * scale) + r.astype(np.float64) * (1.0 - momentum)
        return
    with torch.no_grad():
        if running_mean is not None:
            running_mean.copy_(mean * momentum + running_mean.double() * (1.0 - momentum))
        if running_var is not None:
            running_var.copy_(var * (momentum * n / (n - 1)) + running_var.double() * (1.0 - momentum))
