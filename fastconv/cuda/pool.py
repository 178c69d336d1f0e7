"""CUDA launchers for max / average / adaptive-average pooling (``kernels/pool.cu``).

Same entry points, arguments and results as :mod:`fastconv.cpu.pool`, over tensors
on a CUDA device (or CPU tensors under the emulator runtime).  The grid and block
sizes computed here are the launch contracts stated in ``pool.cu``.
"""
from __future__ import annotations

from typing import Tuple

import torch

from . import _runtime as rt
from . import _source

#: The backend contract (:class:`fastconv.ops.pool.Backend`); everything else here is private.
__all__ = ["max_pool2d_forward", "max_pool2d_backward", "avg_pool2d_forward", "avg_pool2d_backward",
           "adaptive_avg_pool2d_forward", "adaptive_avg_pool2d_backward"]

FAMILY = "pool"
THREADS = _source.constant(FAMILY, "FC_POOL_THREADS")
BWD_MAX_THREADS = _source.constant(FAMILY, "FC_POOL_BWD_MAX_THREADS")
MAX_BLOCKS = 65535 * 32


def instantiations() -> Tuple[str, ...]:
    """Every name expression these launchers use: each kernel of ``pool.cu`` for each dtype."""
    return tuple(decl.expression(dt) for decl in _source.kernels(FAMILY).values() for dt in _source.CTYPES)


def elementwise_grid(total: int) -> Tuple[int, int, int]:
    """Grid of a grid-stride kernel over ``total`` elements with :data:`THREADS` threads per block."""
    return (max(1, min(-(-total // THREADS), MAX_BLOCKS)), 1, 1)


def _launch(name: str, dtype: torch.dtype, total: int, **args) -> None:
    rt.launch(FAMILY, name, (dtype,), elementwise_grid(total), (THREADS, 1, 1), 0, **args)


def max_pool2d_forward(x: torch.Tensor, kernel: Tuple[int, int], stride: Tuple[int, int],
                       padding: Tuple[int, int], dilation: Tuple[int, int],
                       out_hw: Tuple[int, int]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Max pooling of contiguous NCHW ``x``: (values, int64 flat ``h*W+w`` indices within each plane)."""
    n, c, h, w = x.shape
    oh, ow = out_hw
    y = torch.empty((n, c, oh, ow), dtype=x.dtype, device=x.device)
    idx = torch.empty((n, c, oh, ow), dtype=torch.int64, device=x.device)
    if y.numel():
        _launch("max_pool2d_forward", x.dtype, y.numel(), x=x, y=y, idx=idx, NC=n * c, H=h, W=w, OH=oh, OW=ow,
                kh=kernel[0], kw=kernel[1], sh=stride[0], sw=stride[1], ph=padding[0], pw=padding[1],
                dh=dilation[0], dw=dilation[1])
    return y, idx


def max_pool2d_backward(grad_out: torch.Tensor, indices: torch.Tensor, in_hw: Tuple[int, int]) -> torch.Tensor:
    """Route ``grad_out`` back to the argmax positions ``indices`` (summing where windows share one)."""
    n, c, oh, ow = grad_out.shape
    h, w = in_hw
    gx = torch.zeros((n, c, h, w), dtype=grad_out.dtype, device=grad_out.device)
    if gx.numel() and grad_out.numel():
        warps = BWD_MAX_THREADS // 32
        grid = (max(1, min(-(-(n * c) // warps), MAX_BLOCKS)), 1, 1)
        rt.launch(FAMILY, "max_pool2d_backward", (grad_out.dtype,), grid, (BWD_MAX_THREADS, 1, 1), 0,
                  gy=grad_out, idx=indices, gx=gx, NC=n * c, HW=h * w, OHW=oh * ow)
    return gx


def avg_pool2d_forward(x: torch.Tensor, kernel: Tuple[int, int], stride: Tuple[int, int], padding: Tuple[int, int],
                       count_include_pad: bool, divisor: int, out_hw: Tuple[int, int]) -> torch.Tensor:
    """Average pooling with torch's divisor rules (``divisor`` 0 means no override)."""
    n, c, h, w = x.shape
    oh, ow = out_hw
    y = torch.empty((n, c, oh, ow), dtype=x.dtype, device=x.device)
    if y.numel():
        _launch("avg_pool2d_forward", x.dtype, y.numel(), x=x, y=y, NC=n * c, H=h, W=w, OH=oh, OW=ow,
                kh=kernel[0], kw=kernel[1], sh=stride[0], sw=stride[1], ph=padding[0], pw=padding[1],
                count_include_pad=bool(count_include_pad), divisor_override=divisor or 0)
    return y


def avg_pool2d_backward(grad_out: torch.Tensor, kernel: Tuple[int, int], stride: Tuple[int, int],
                        padding: Tuple[int, int], count_include_pad: bool, divisor: int,
                        in_hw: Tuple[int, int]) -> torch.Tensor:
    """Gradient of :func:`avg_pool2d_forward` w.r.t. its input (a gather over covering windows)."""
    n, c, oh, ow = grad_out.shape
    h, w = in_hw
    gx = torch.empty((n, c, h, w), dtype=grad_out.dtype, device=grad_out.device)
    if gx.numel():
        _launch("avg_pool2d_backward", grad_out.dtype, gx.numel(), gy=grad_out, gx=gx, NC=n * c, H=h, W=w,
                OH=oh, OW=ow, kh=kernel[0], kw=kernel[1], sh=stride[0], sw=stride[1], ph=padding[0],
                pw=padding[1], count_include_pad=bool(count_include_pad), divisor_override=divisor or 0)
    return gx


def adaptive_avg_pool2d_forward(x: torch.Tensor, out_hw: Tuple[int, int]) -> torch.Tensor:
    """Adaptive average pooling to ``out_hw`` (windows floor(o*H/OH) .. ceil((o+1)*H/OH))."""
    n, c, h, w = x.shape
    oh, ow = out_hw
    y = torch.empty((n, c, oh, ow), dtype=x.dtype, device=x.device)
    if y.numel():
        _launch("adaptive_avg_pool2d_forward", x.dtype, y.numel(), x=x, y=y, NC=n * c, H=h, W=w, OH=oh, OW=ow)
    return y


def adaptive_avg_pool2d_backward(grad_out: torch.Tensor, in_hw: Tuple[int, int]) -> torch.Tensor:
    """Gradient of :func:`adaptive_avg_pool2d_forward` w.r.t. its input."""
    n, c, oh, ow = grad_out.shape
    h, w = in_hw
    gx = torch.empty((n, c, h, w), dtype=grad_out.dtype, device=grad_out.device)
    if gx.numel():
        _launch("adaptive_avg_pool2d_backward", grad_out.dtype, gx.numel(), gy=grad_out, gx=gx, NC=n * c, H=h,
                W=w, OH=oh, OW=ow)
    return gx
