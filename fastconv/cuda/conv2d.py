"""CUDA launchers for 2D cross-correlation and its gradients (``kernels/conv2d.cu``).

Same entry points, arguments and results as :mod:`fastconv.cpu.conv2d`, over
tensors on a CUDA device (or CPU tensors under the emulator runtime).  The grid,
block and shared-memory sizes computed here are the launch contracts stated in
``conv2d.cu``.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch

from . import _runtime as rt
from . import _rowsum, _source

#: The backend contract (:class:`fastconv.ops.conv2d.Backend`); everything else here is private.
__all__ = ["conv2d_forward", "conv2d_backward_input", "conv2d_backward_weight", "conv2d_bias_grad"]

FAMILY = "conv2d"
OB = _source.constant(FAMILY, "FC_CONV_OB")
REDUCE_THREADS = _source.constant(FAMILY, "FC_CONV_REDUCE_THREADS")
MAX_GRID_YZ = 65535


def instantiations() -> Tuple[str, ...]:
    """Every name expression these launchers use: each kernel of ``conv2d.cu`` for each dtype."""
    return rt.dtype_instantiations(FAMILY)


def _acc_size(dtype: torch.dtype) -> int:
    return 8 if dtype == torch.float64 else 4


def _pow2_at_least(v: int, cap: int) -> int:
    p = 1
    while p < v and p < cap:
        p *= 2
    return p


def tile_shape(rows: int, cols: int) -> Tuple[int, int]:
    """(TH, TW) of a block covering a 2D output: up to 32 wide, 256 threads, no wider/taller than needed."""
    tw = _pow2_at_least(cols, 32)
    th = _pow2_at_least(rows, max(1, 256 // tw))
    return th, tw


def forward_launch(n: int, c: int, o: int, out_hw: Tuple[int, int], kernel_hw: Tuple[int, int], stride: Sequence[int],
                   dilation: Sequence[int], groups: int, dtype: torch.dtype):
    """(grid, block, shared_mem, tiles_w, obc) for ``conv2d_forward``; shrinks the tile to fit shared memory."""
    oh, ow = out_hw
    kh, kw = kernel_hw
    th, tw = tile_shape(oh, ow)
    asz = _acc_size(dtype)

    def smem(th_: int, tw_: int) -> int:
        return _source.macro(FAMILY, "FC_CONV_FWD_SMEM", TH=th_, TW=tw_, KW=kw, SW=stride[1], DW=dilation[1]) * asz

    while smem(th, tw) > rt.MAX_DYNAMIC_SHARED and (th > 1 or tw > 1):
        if tw > 1:
            tw //= 2
        else:
            th //= 2
    if smem(th, tw) > rt.MAX_DYNAMIC_SHARED:
        raise ValueError(f"fastconv CUDA conv2d: kernel width {kw} with dilation {dilation[1]} needs more than "
                         f"{rt.MAX_DYNAMIC_SHARED} bytes of shared memory")
    opg = o // groups
    obc = min(OB, opg)
    tiles_w = -(-ow // tw)
    gy = groups * (-(-opg // obc))
    if gy > MAX_GRID_YZ:
        raise ValueError(f"fastconv CUDA conv2d: {o} output channels exceed the grid limit")
    grid = (tiles_w * -(-oh // th), gy, min(n, MAX_GRID_YZ))
    return grid, (tw, th, 1), smem(th, tw), tiles_w, obc


def conv2d_forward(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], stride, padding, dilation,
                   groups: int, out_hw: Tuple[int, int]) -> torch.Tensor:
    """y = conv2d(x, weight) + bias for contiguous NCHW ``x`` and OIHW ``weight``."""
    n, c, h, w = x.shape
    o, cg, kh, kw = weight.shape
    oh, ow = out_hw
    y = torch.empty((n, o, oh, ow), dtype=x.dtype, device=x.device)
    if y.numel() == 0:
        return y
    if c == 0 or kh == 0 or kw == 0:  # empty reduction: the bias alone
        y.zero_()
        return y if bias is None else y.add_(bias.reshape(1, o, 1, 1))
    grid, block, shared, tiles_w, obc = forward_launch(n, c, o, (oh, ow), (kh, kw), stride, dilation, groups, x.dtype)
    b = bias if bias is not None else weight
    rt.launch(FAMILY, "conv2d_forward", (x.dtype,), grid, block, shared, x=x, w=weight, bias=b, y=y, N=n, C=c, H=h,
              W=w, O=o, OH=oh, OW=ow, KH=kh, KW=kw, sh=stride[0], sw=stride[1], ph=padding[0], pw=padding[2],
              dh=dilation[0], dw=dilation[1], groups=groups, tiles_w=tiles_w, obc=obc, has_bias=bias is not None)
    return y


def conv2d_backward_input(grad_out: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], stride,
                          padding, dilation, groups: int, in_hw: Tuple[int, int]) -> torch.Tensor:
    """Gradient of conv2d w.r.t. its input, of spatial size ``in_hw`` (+ ``bias`` per channel, for conv_transpose2d)."""
    n, o, oh, ow = grad_out.shape
    _, cg, kh, kw = weight.shape
    c = cg * groups
    h, w = in_hw
    gx = torch.empty((n, c, h, w), dtype=grad_out.dtype, device=grad_out.device)
    if gx.numel() == 0:
        return gx
    th, tw = tile_shape(h, w)
    kk = kh * kw
    asz = _acc_size(grad_out.dtype)
    opg = o // groups
    if kk * asz > rt.MAX_DYNAMIC_SHARED:
        raise ValueError(f"fastconv CUDA conv2d: a {kh}x{kw} kernel exceeds the shared-memory budget")
    occ = max(1, min(opg, (rt.MAX_DYNAMIC_SHARED // 2) // max(1, kk * asz)))
    if c > MAX_GRID_YZ:
        raise ValueError(f"fastconv CUDA conv2d: {c} input channels exceed the grid limit")
    tiles_w = -(-w // tw)
    grid = (tiles_w * -(-h // th), c, min(n, MAX_GRID_YZ))
    b = bias if bias is not None else weight
    rt.launch(FAMILY, "conv2d_backward_input", (grad_out.dtype,), grid, (tw, th, 1), occ * kk * asz, g=grad_out,
              w=weight, bias=b, gx=gx, N=n, C=c, H=h, W=w, O=o, OH=oh, OW=ow, KH=kh, KW=kw, sh=stride[0],
              sw=stride[1], ph=padding[0], pw=padding[2], dh=dilation[0], dw=dilation[1], groups=groups,
              tiles_w=tiles_w, occ=occ, has_bias=bias is not None)
    return gx


def conv2d_backward_weight(x: torch.Tensor, grad_out: torch.Tensor, stride, padding, dilation, groups: int,
                           kernel_hw: Tuple[int, int]) -> torch.Tensor:
    """Gradient of conv2d w.r.t. its OIHW weight of spatial size ``kernel_hw``."""
    n, c, h, w = x.shape
    _, o, oh, ow = grad_out.shape
    kh, kw = kernel_hw
    cg = c // groups
    gw = torch.empty((o, cg, kh, kw), dtype=x.dtype, device=x.device)
    if gw.numel() == 0:
        return gw
    grid = (o * cg * -(-(kh * kw) // _source.constant(FAMILY, "FC_CONV_TAPS")), 1, 1)
    rt.launch(FAMILY, "conv2d_backward_weight", (x.dtype,), grid, (REDUCE_THREADS, 1, 1), 0, x=x, g=grad_out, gw=gw,
              N=n, C=c, H=h, W=w, O=o, OH=oh, OW=ow, KH=kh, KW=kw, sh=stride[0], sw=stride[1], ph=padding[0],
              pw=padding[2], dh=dilation[0], dw=dilation[1], groups=groups)
    return gw


def conv2d_bias_grad(grad_out: torch.Tensor) -> torch.Tensor:
    """Sum of ``grad_out`` over batch and space: the gradient of a per-channel bias."""
    n, o = grad_out.shape[:2]
    hw = grad_out.shape[2] * grad_out.shape[3]
    out = torch.empty((o,), dtype=grad_out.dtype, device=grad_out.device)
    if o == 0:
        return out
    if n * hw == 0:
        return out.zero_()
    _rowsum.row_sum(FAMILY, "conv2d_bias_grad", "conv2d_bias_grad_finish", grad_out.dtype, grad_out, out, o, n * hw,
                    dict(g=grad_out, N=n, O=o, HW=hw), dict(out=out, O=o))
    return out
