"""CUDA launchers for training-mode BatchNorm fused with its activation (``kernels/batch_norm.cu``).

Same contract as :mod:`fastconv.cpu.batch_norm` (:class:`fastconv.ops.batch_norm.Backend`), over tensors
on a CUDA device (or CPU tensors under the emulator runtime).  One block per channel reduces it in
float64 in a fixed order, so results are bitwise reproducible; float16 and bfloat16 are storage
types computing in float32.  The grid and block computed here are the launch contract stated in
``batch_norm.cu``.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from . import _runtime as rt
from . import _source

#: The backend contract (:class:`fastconv.ops.batch_norm.Backend`); everything else here is private.
__all__ = ["batch_norm_act_forward", "batch_norm_act_backward"]

FAMILY = "batch_norm"
THREADS = _source.constant(FAMILY, "FC_BN_THREADS")
MAX_BLOCKS = 65535 * 32
_ACT = {name: _source.constant(FAMILY, macro) for name, macro in
        (("relu", "FC_BN_RELU"), ("leaky_relu", "FC_BN_LEAKY"), ("identity", "FC_BN_IDENTITY"), ("silu", "FC_BN_SILU"))}


def instantiations() -> Tuple[str, ...]:
    """Every name expression these launchers use: each kernel of ``batch_norm.cu`` for each dtype."""
    return rt.dtype_instantiations(FAMILY)


def _launch(name: str, x: torch.Tensor, weight: Optional[torch.Tensor], bias: Optional[torch.Tensor], eps: float,
            act: str, slope: float, **args) -> None:
    n, c, h, w = x.shape
    rt.launch(FAMILY, name, (x.dtype,), (min(c, MAX_BLOCKS), 1, 1), (THREADS, 1, 1), 0, x=x,
              w=weight if weight is not None else x, b=bias if bias is not None else x, N=n, C=c, HW=h * w,
              eps=float(eps), act=_ACT[act], slope=float(slope), has_w=weight is not None, has_b=bias is not None,
              **args)


def batch_norm_act_forward(x: torch.Tensor, weight: Optional[torch.Tensor], bias: Optional[torch.Tensor],
                           eps: float, act: str, slope: float) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(act(batch_norm(x)), mean, var)``; see :class:`fastconv.ops.batch_norm.Backend`."""
    c = x.shape[1]
    y = torch.empty_like(x)
    mean = torch.empty(c, dtype=torch.float64, device=x.device)
    var = torch.empty(c, dtype=torch.float64, device=x.device)
    if x.numel():
        _launch("batch_norm_act_forward", x, weight, bias, eps, act, slope, y=y, mean=mean, var=var)
    return y, mean, var


def batch_norm_act_backward(grad: torch.Tensor, x: torch.Tensor, weight: Optional[torch.Tensor],
                            bias: Optional[torch.Tensor], mean: torch.Tensor, var: torch.Tensor, eps: float, act: str,
                            slope: float) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(dx, dweight, dbias)``; see :class:`fastconv.ops.batch_norm.Backend`."""
    c = x.shape[1]
    dx = torch.empty_like(x)
    dw = torch.empty(c, dtype=torch.float64, device=x.device)
    db = torch.empty(c, dtype=torch.float64, device=x.device)
    if x.numel():
        _launch("batch_norm_act_backward", x, weight, bias, eps, act, slope, grad=grad, mean=mean, var=var, dx=dx,
                dw=dw, db=db)
    return dx, dw, db
