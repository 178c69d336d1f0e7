"""Numba kernels for training-mode ``BatchNorm2d -> activation``: batch statistics, the normalised
and activated output, and the exact gradient, one channel per task.

Semantics are torch's (``F.batch_norm(x, None, None, w, b, training=True, eps=eps)`` then the
activation):

* per channel ``c``, over the ``N * H * W`` elements, in one pass of float64 sums shifted by
  the channel's first element ``k`` (so that they do not cancel): ``mean = k + sum(x - k) / n``
  and the biased ``var = sum((x - k)**2) / n - (sum(x - k) / n)**2``;
* ``z = x * alpha + beta`` with ``alpha = w / sqrt(var + eps)`` and ``beta = b - mean * alpha``
  rounded to the input's dtype, as torch's transform does; ``y = act(z)``;
* backward: ``g = dy * act'(z)`` (``z`` recomputed bit for bit), ``db = sum(g)``,
  ``dw = sum(g * (x - mean)) / sqrt(var + eps)`` and
  ``dx = (g - db / n - (x - mean) * dw / (sqrt(var + eps) * n)) * w / sqrt(var + eps)``.

Activations: ``'relu'`` (``z < 0 -> 0``, NaN passes; torch's threshold backward passes the
gradient where ``z`` is not ``<= 0``) and ``'leaky_relu'`` (``z > 0 ? z : z * slope``) run inside
the kernels; ``'silu'`` runs torch's own vectorised ``silu_`` and ``silu_backward`` on the
kernels' ``z`` (Numba has no vectorised ``exp`` without SVML: a scalar one was 7x slower), and
``'identity'`` is the plain BatchNorm.

A channel's ``N`` planes are read once from memory: the output pass finds them in the cache,
so a channel's elements should fit in L2 (``N * H * W * itemsize`` up to about 1 MiB).
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch

from .._numba import njit
from .._threads import parallel_for
from . import _outputs
from ._numpy import view as _np
from ._reduce import channel_moments as _channel_moments

#: The backend contract (:class:`fastconv.ops.batch_norm.Backend`); everything else here is private.
__all__ = ["batch_norm_act_forward", "batch_norm_act_backward"]

#: Activation codes of the kernels ('silu' runs as the identity, then torch's SiLU kernels).
_RELU, _LEAKY, _IDENTITY = 0, 1, 2
_ACT = {"relu": _RELU, "leaky_relu": _LEAKY, "identity": _IDENTITY, "silu": _IDENTITY}


@njit(cache=True, nogil=True)
def _affine(w, b, mean, var, eps, c, coef):  # pragma: no cover - numba
    """Channel ``c``'s ``alpha`` and ``beta`` rounded into ``coef[0:2]`` (the input's dtype); returns
    ``1 / sqrt(var + eps)`` in float64."""
    invstd = 1.0 / np.sqrt(var[c] + eps)
    coef[0] = invstd * w[c]
    coef[1] = b[c] - mean[c] * (invstd * w[c])
    return invstd


@njit(cache=True, nogil=True)
def _constants(x, slope):  # pragma: no cover - numba
    """Scratch for the per-channel constants in ``x``'s dtype -- ``[alpha, beta, slope, 0, ...]``
    -- and the float64 lane accumulators of :func:`_channel_moments`."""
    coef = np.empty(8, x.dtype)
    coef[2] = slope
    coef[3] = 0.0
    return coef, np.empty(2 * (64 // x.itemsize), np.float64)


@njit(cache=True, nogil=True)
def _activate(xp, yp, alpha, beta, act, ns, zero):  # pragma: no cover - numba
    """``yp = act(xp * alpha + beta)`` over one plane."""
    if act == _RELU:
        for i in range(xp.shape[0]):
            z = xp[i] * alpha + beta
            yp[i] = zero if z < zero else z
    elif act == _LEAKY:
        for i in range(xp.shape[0]):
            z = xp[i] * alpha + beta
            yp[i] = z if z > zero else z * ns
    else:
        for i in range(xp.shape[0]):
            yp[i] = xp[i] * alpha + beta


@njit(cache=True, nogil=True)
def _act_grad(dyp, xp, gp, alpha, beta, act, ns, zero):  # pragma: no cover - numba
    """``gp = dyp * act'(xp * alpha + beta)`` over one plane (torch's activation-backward formulas);
    nothing for the identity (``gp`` already holds the gradient)."""
    if act == _RELU:
        for i in range(xp.shape[0]):
            z = xp[i] * alpha + beta
            d = dyp[i]  # loaded unconditionally, so that the loop vectorises
            gp[i] = zero if z <= zero else d
    elif act == _LEAKY:
        for i in range(xp.shape[0]):
            z = xp[i] * alpha + beta
            d = dyp[i]
            gp[i] = d if z > zero else d * ns


@njit(cache=True, nogil=True)
def _forward(x, w, b, eps, act, slope, y, mean, var, lo, hi):  # pragma: no cover - numba
    N, _, HW = x.shape
    coef, acc = _constants(x, slope)
    cnt = N * HW
    for c in range(lo, hi):
        k = np.float64(x[0, c, 0]) if N * HW > 0 else 0.0  # a shift near the data: one pass, both moments
        d, q = _channel_moments(x, x, c, k, k, acc)
        m = k + d / cnt
        v = q / cnt - (d / cnt) * (d / cnt)
        mean[c] = m
        var[c] = 0.0 if v < 0.0 else v  # rounding below 0 clamps; NaN (inf inputs) propagates
        _affine(w, b, mean, var, eps, c, coef)
        for n in range(N):
            _activate(x[n, c], y[n, c], coef[0], coef[1], act, coef[2], coef[3])


@njit(cache=True, nogil=True)
def _preactivation(x, w, b, eps, mean, var, z, lo, hi):  # pragma: no cover - numba
    """``z = x * alpha + beta`` of channels ``lo:hi`` from the saved statistics (bit for bit the forward's)."""
    N = x.shape[0]
    coef, _ = _constants(x, 0.0)
    for c in range(lo, hi):
        _affine(w, b, mean, var, eps, c, coef)
        for n in range(N):
            _activate(x[n, c], z[n, c], coef[0], coef[1], _IDENTITY, coef[2], coef[3])


@njit(cache=True, nogil=True)
def _backward(dy, x, w, b, eps, act, slope, mean, var, dx, dw, db, lo, hi):  # pragma: no cover - numba
    N, _, HW = x.shape
    coef, acc = _constants(x, slope)
    cnt = N * HW
    for c in range(lo, hi):
        invstd = _affine(w, b, mean, var, eps, c, coef)
        for n in range(N):  # g = dy * act'(z), into dx
            _act_grad(dy[n, c], x[n, c], dx[n, c], coef[0], coef[1], act, coef[2], coef[3])
        sg, sgx = _channel_moments(dx, x, c, 0.0, mean[c], acc)
        db[c] = sg
        dw[c] = sgx * invstd
        coef[5] = sgx * invstd * invstd / cnt
        coef[6] = sg / cnt
        coef[7] = mean[c]
        k, gm, scale, mc = coef[5], coef[6], coef[0], coef[7]
        for n in range(N):
            gp = dx[n, c]
            xp = x[n, c]
            for i in range(HW):
                gp[i] = (gp[i] - gm - (xp[i] - mc) * k) * scale


def _params(weight: Optional[torch.Tensor], bias: Optional[torch.Tensor], c: int, dtype) -> Tuple[np.ndarray, np.ndarray]:
    w = np.ones(c, dtype) if weight is None else _np(weight.contiguous())
    b = np.zeros(c, dtype) if bias is None else _np(bias.contiguous())
    return w, b


def _planes(t: torch.Tensor) -> np.ndarray:
    n, c, h, w = t.shape
    return _np(t).reshape(n, c, h * w)


def batch_norm_act_forward(x: torch.Tensor, weight: Optional[torch.Tensor], bias: Optional[torch.Tensor],
                           eps: float, act: str, slope: float) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(act(batch_norm(x)), mean, var)``; see :class:`fastconv.ops.batch_norm.Backend`."""
    C = x.shape[1]
    xs = _planes(x)
    w, b = _params(weight, bias, C, xs.dtype)
    y = _outputs.new(x, x.shape, x.numel())
    mean = torch.empty(C, dtype=torch.float64)
    var = torch.empty(C, dtype=torch.float64)
    parallel_for(_forward, C, xs, w, b, float(eps), _ACT[act], float(slope), _planes(y), mean.numpy(), var.numpy(),
                 work=4 * x.numel())
    if act == "silu":
        torch.nn.functional.silu(y, inplace=True)
    return y, mean, var


def batch_norm_act_backward(grad: torch.Tensor, x: torch.Tensor, weight: Optional[torch.Tensor],
                            bias: Optional[torch.Tensor], mean: torch.Tensor, var: torch.Tensor, eps: float, act: str,
                            slope: float) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(dx, dweight, dbias)``; see :class:`fastconv.ops.batch_norm.Backend`."""
    C = x.shape[1]
    xs = _planes(x)
    w, b = _params(weight, bias, C, xs.dtype)
    m, v = _np(mean), _np(var)
    if act == "identity":
        dx = grad.clone()  # the kernel turns the gradient in dx into dx in place
    elif act == "silu":
        z = _outputs.new(x, x.shape, x.numel())
        parallel_for(_preactivation, C, xs, w, b, float(eps), m, v, _planes(z), work=2 * x.numel())
        dx = torch.ops.aten.silu_backward(grad, z)
    else:
        dx = _outputs.new(x, x.shape, x.numel())
    dw = torch.empty(C, dtype=torch.float64)
    db = torch.empty(C, dtype=torch.float64)
    parallel_for(_backward, C, _planes(grad), xs, w, b, float(eps), _ACT[act], float(slope), m, v, _planes(dx),
                 dw.numpy(), db.numpy(), work=5 * x.numel())
    return dx, dw, db
