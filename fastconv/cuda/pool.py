"""CUDA launchers for max / average / adaptive-average pooling (``kernels/pool.cu``).

Same entry points, arguments and results as :mod:`fastconv.cpu.pool`, over tensors
on a CUDA device (or CPU tensors under the emulator runtime).  The grid and block
sizes computed here are the launch contracts stated in ``pool.cu``.
"""
from __future__ import annotations

from typing import Callable, Tuple

import torch

from . import _runtime as rt
from . import _rowsum, _source

#: The backend contract (:class:`fastconv.ops.pool.Backend`); everything else here is private.
__all__ = ["max_pool2d_forward", "max_pool2d_values_for", "max_pool2d_backward", "avg_pool2d_forward",
           "avg_pool2d_forward_for", "avg_pool2d_backward", "adaptive_avg_pool2d_forward",
           "adaptive_avg_pool2d_backward"]

FAMILY = "pool"
THREADS = _source.constant(FAMILY, "FC_POOL_THREADS")
BOUNDS_ROWS = _source.constant(FAMILY, "FC_POOL_BOUNDS_ROWS")
MAX_BLOCKS = 65535 * 32
MAX_GRID_Y = 65535


def instantiations() -> Tuple[str, ...]:
    """Every name expression these launchers use: each kernel of ``pool.cu`` for each dtype."""
    return rt.dtype_instantiations(FAMILY)


def plane_grid(per_plane: int, planes: int) -> Tuple[int, int, int]:
    """Grid of the elementwise kernels: blocks over a plane's ``per_plane`` elements x the planes."""
    return (max(1, min(-(-per_plane // THREADS), MAX_BLOCKS)), max(1, min(planes, MAX_GRID_Y)), 1)


def _launch(name: str, dtype: torch.dtype, per_plane: int, planes: int, plane_hw: Tuple[int, int], **args) -> None:
    _check_plane(*plane_hw)
    rt.launch(FAMILY, name, (dtype,), plane_grid(per_plane, planes), (THREADS, 1, 1), 0, **args)


def max_pool2d_forward(x: torch.Tensor, kernel: Tuple[int, int], stride: Tuple[int, int],
                       padding: Tuple[int, int], dilation: Tuple[int, int],
                       out_hw: Tuple[int, int]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Max pooling of contiguous NCHW ``x``: (values, int64 flat ``h*W+w`` indices within each plane)."""
    n, c, h, w = x.shape
    oh, ow = out_hw
    y = torch.empty((n, c, oh, ow), dtype=x.dtype, device=x.device)
    idx = torch.empty((n, c, oh, ow), dtype=torch.int64, device=x.device)
    if y.numel():
        _launch("max_pool2d_forward", x.dtype, oh * ow, n * c, (h, w), x=x, y=y, idx=idx, NC=n * c, H=h, W=w, OH=oh, OW=ow,
                kh=kernel[0], kw=kernel[1], sh=stride[0], sw=stride[1], ph=padding[0], pw=padding[1],
                dh=dilation[0], dw=dilation[1])
    return y, idx


def max_pool2d_values_for(shape: Tuple[int, int, int, int], dtype: torch.dtype, kernel: Tuple[int, int],
                          stride: Tuple[int, int], padding: Tuple[int, int], dilation: Tuple[int, int],
                          out_hw: Tuple[int, int]) -> Callable[[torch.Tensor], torch.Tensor]:
    """The values of :func:`max_pool2d_forward` for inputs of ``shape`` (the kernel writes its indices
    to a discarded array: on the GPU that costs one cached allocation, not a second kernel)."""
    return lambda x: max_pool2d_forward(x.contiguous(), kernel, stride, padding, dilation, out_hw)[0]


def avg_pool2d_forward_for(shape: Tuple[int, int, int, int], dtype: torch.dtype, kernel: Tuple[int, int],
                           stride: Tuple[int, int], padding: Tuple[int, int], count_include_pad: bool, divisor: int,
                           out_hw: Tuple[int, int]) -> Callable[[torch.Tensor], torch.Tensor]:
    """:func:`avg_pool2d_forward` for inputs of ``shape``."""
    return lambda x: avg_pool2d_forward(x.contiguous(), kernel, stride, padding, count_include_pad, divisor, out_hw)


def _check_plane(h: int, w: int) -> None:
    if h * w >= 2 ** 31:
        raise ValueError(f"fastconv CUDA pooling: a {h}x{w} plane exceeds the kernels' 32-bit in-plane indices")


def max_pool2d_backward(grad_out: torch.Tensor, indices: torch.Tensor, in_hw: Tuple[int, int]) -> torch.Tensor:
    """Route ``grad_out`` back to the argmax positions ``indices`` (summing where windows share one).

    A gather in three launches (``max_pool2d_backward_bounds``, ``_ranges``, ``max_pool2d_backward``;
    see ``pool.cu``): the row / column bounds of the indices tell each input pixel which outputs
    may point at it, and it sums those that do in ascending order.  Deterministic, no atomics.
    """
    n, c, oh, ow = grad_out.shape
    h, w = in_hw
    gx = torch.empty((n, c, h, w), dtype=grad_out.dtype, device=grad_out.device)
    if gx.numel() == 0:
        return gx
    if grad_out.numel() == 0:
        return gx.zero_()
    _check_plane(h, w)
    _check_plane(oh, ow)
    nc = n * c
    rows = BOUNDS_ROWS
    groups = min(nc, 64)
    pc = -(-nc // groups)
    groups = -(-nc // pc)
    tiles_x = -(-ow // 32)
    dev = grad_out.device
    rows_part = torch.empty((groups * tiles_x * oh * 2,), dtype=torch.int32, device=dev)
    cols_part = torch.empty((groups * ow * 2,), dtype=torch.int32, device=dev)
    bounds = torch.empty(((oh + ow) * 2,), dtype=torch.int32, device=dev)
    rt.launch(FAMILY, "max_pool2d_backward_bounds", (), (tiles_x, groups), (32, rows), 0, idx=indices,
              rows_part=rows_part, cols_part=cols_part, NC=nc, PC=pc, H=h, W=w, OH=oh, OW=ow)
    rt.launch(FAMILY, "max_pool2d_backward_ranges", (), (-(-(oh + ow) // THREADS),), (THREADS,), 0,
              rows_part=rows_part, cols_part=cols_part, bounds=bounds, G=groups, tiles_x=tiles_x, OH=oh, OW=ow)
    tiles_w = -(-w // 32)
    rt.launch(FAMILY, "max_pool2d_backward", (grad_out.dtype,), (tiles_w * -(-h // rows), min(nc, MAX_GRID_Y)),
              (32, rows), 0, gy=grad_out, idx=indices, bounds=bounds, gx=gx, NC=nc, H=h, W=w, OH=oh, OW=ow,
              tiles_w=tiles_w)
    return gx


def avg_pool2d_forward(x: torch.Tensor, kernel: Tuple[int, int], stride: Tuple[int, int], padding: Tuple[int, int],
                       count_include_pad: bool, divisor: int, out_hw: Tuple[int, int]) -> torch.Tensor:
    """Average pooling with torch's divisor rules (``divisor`` 0 means no override)."""
    n, c, h, w = x.shape
    oh, ow = out_hw
    y = torch.empty((n, c, oh, ow), dtype=x.dtype, device=x.device)
    if y.numel():
        _launch("avg_pool2d_forward", x.dtype, oh * ow, n * c, (h, w), x=x, y=y, NC=n * c, H=h, W=w, OH=oh, OW=ow,
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
        _launch("avg_pool2d_backward", grad_out.dtype, h * w, n * c, (h, w), gy=grad_out, gx=gx, NC=n * c, H=h, W=w,
                OH=oh, OW=ow, kh=kernel[0], kw=kernel[1], sh=stride[0], sw=stride[1], ph=padding[0],
                pw=padding[1], count_include_pad=bool(count_include_pad), divisor_override=divisor or 0)
    return gx


def adaptive_avg_pool2d_forward(x: torch.Tensor, out_hw: Tuple[int, int]) -> torch.Tensor:
    """Adaptive average pooling to ``out_hw`` (windows floor(o*H/OH) .. ceil((o+1)*H/OH))."""
    n, c, h, w = x.shape
    oh, ow = out_hw
    y = torch.empty((n, c, oh, ow), dtype=x.dtype, device=x.device)
    if y.numel() == 0:
        return y
    if (oh, ow) == (1, 1):  # global average pooling: a two-pass row sum over the planes, not a thread per plane
        _check_plane(h, w)
        _rowsum.row_sum(FAMILY, "adaptive_avg_pool2d_forward_global", "adaptive_avg_pool2d_forward_global_finish",
                        x.dtype, x, y, n * c, h * w, dict(x=x, NC=n * c, HW=h * w), dict(y=y, NC=n * c, count=h * w))
    else:
        _launch("adaptive_avg_pool2d_forward", x.dtype, oh * ow, n * c, (h, w), x=x, y=y, NC=n * c, H=h, W=w, OH=oh, OW=ow)
    return y


def adaptive_avg_pool2d_backward(grad_out: torch.Tensor, in_hw: Tuple[int, int]) -> torch.Tensor:
    """Gradient of :func:`adaptive_avg_pool2d_forward` w.r.t. its input."""
    n, c, oh, ow = grad_out.shape
    h, w = in_hw
    gx = torch.empty((n, c, h, w), dtype=grad_out.dtype, device=grad_out.device)
    if gx.numel():
        _launch("adaptive_avg_pool2d_backward", grad_out.dtype, h * w, n * c, (h, w), gy=grad_out, gx=gx, NC=n * c, H=h,
                W=w, OH=oh, OW=ow)
    return gx
