"""CUDA launchers for 2D cross-correlation and its gradients (``kernels/conv2d.cu``): implicit GEMM.

Same entry points, arguments and results as :mod:`fastconv.cpu.conv2d`, over tensors on a CUDA
device (or CPU tensors under the emulator runtime).  Forward, backward-data and backward-weight
are one tiled GEMM each (see the top of ``conv2d.cu``); :func:`plan` picks, per layer, the
multiply (tensor cores or exact FMA), the tile shape and, for backward-weight, the split-K
factor.  Plans are plain data: ``plan(...)`` can be called and printed without a GPU.

Tensor cores: float16 and bfloat16 always (fp32 accumulation); float32 uses TF32 exactly when
``torch.backends.cudnn.allow_tf32`` is true (read at each call, as cuDNN does), otherwise the
exact float32 path; float64 is always exact.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence, Tuple

import torch

from . import _rowsum, _source
from . import _runtime as rt

#: The backend contract (:class:`fastconv.ops.conv2d.Backend`); everything else here is private.
__all__ = ["conv2d_forward", "conv2d_backward_input", "conv2d_backward_weight", "conv2d_bias_grad"]

FAMILY = "conv2d"
GEMM_KERNELS = ("conv2d_forward", "conv2d_backward_input", "conv2d_backward_weight")
#: (dtype, tensor cores) pairs the GEMM kernels are built for.
PATHS = ((torch.float32, 0), (torch.float32, 1), (torch.float64, 0), (torch.float16, 1), (torch.bfloat16, 1))
#: Block tiles (BM, BN): square for wide layers, flat for layers with at most 16 rows (few channels).
TILES = ((64, 64), (16, 128))
#: Blocks the backward-weight split-K aims at (about two waves on a 132-SM GPU) and its least K per split.
TARGET_BLOCKS = 264
MIN_SPLIT_K = 1024
SPLIT_ALIGN = 64  # a multiple of every BK
MAX_GRID_YZ = 65535
INT32 = 2 ** 31


def instantiations() -> Tuple[str, ...]:
    """Every name expression these launchers use: the GEMM kernels for each path and tile, the rest per dtype."""
    decls = _source.kernels(FAMILY)
    out = [decls[k].expression(dt, tc, bm, bn) for k in GEMM_KERNELS for dt, tc in PATHS for bm, bn in TILES]
    for name, decl in decls.items():
        if name not in GEMM_KERNELS:
            out += [decl.expression(dt) for dt in _source.CTYPES]
    return tuple(out)


@dataclass(frozen=True)
class ConvPlan:
    """How one GEMM launch runs: kernel, multiply, tile, GEMM sizes, split-K and the launch shape."""

    kernel: str
    dtype: torch.dtype
    tensor_cores: bool
    tile: Tuple[int, int]
    m: int
    n: int
    k: int
    groups: int
    splits: int = 1
    kchunk: int = 0

    @property
    def threads(self) -> int:
        return _source.constant(FAMILY, "FC_CONV_TC_THREADS" if self.tensor_cores else "FC_CONV_EXACT_THREADS")

    @property
    def grid(self) -> Tuple[int, int, int]:
        bm, bn = self.tile
        return -(-self.n // bn), -(-self.m // bm), self.groups * self.splits

    @property
    def targs(self) -> Tuple[Any, ...]:
        return (self.dtype, int(self.tensor_cores), *self.tile)

    @property
    def expression(self) -> str:
        return _source.kernels(FAMILY)[self.kernel].expression(*self.targs)


def use_tensor_cores(dtype: torch.dtype) -> bool:
    """Whether ``dtype`` convolutions run on tensor cores now (float32: ``torch.backends.cudnn.allow_tf32``)."""
    if dtype in (torch.float16, torch.bfloat16):
        return True
    return dtype == torch.float32 and bool(torch.backends.cudnn.allow_tf32)


def plan(kernel: str, dtype: torch.dtype, m: int, n: int, k: int, groups: int,
         device: Optional[torch.device] = None) -> ConvPlan:
    """Pick the multiply, tile and split-K of GEMM ``kernel`` (C[m x n] = A[m x k] B[k x n], per group)."""
    if dtype not in _source.CTYPES:
        raise TypeError(f"fastconv CUDA kernels support float32, float64, float16 and bfloat16, got {dtype}")
    tc = use_tensor_cores(dtype)
    if tc and device is not None and not rt.current().tensor_cores(device):
        if dtype != torch.float32:
            raise RuntimeError(f"fastconv CUDA conv2d: {dtype} needs tensor cores of compute capability 8.0 or newer")
        tc = False
    if n >= INT32 or k >= INT32 or m >= INT32:
        raise ValueError(f"fastconv CUDA conv2d: GEMM of {m} x {n} x {k} exceeds the kernels' 32-bit tile indices")
    tile = TILES[1] if m <= 16 else TILES[0]
    p = ConvPlan(kernel, dtype, tc, tile, m, n, k, groups)
    if p.grid[1] > MAX_GRID_YZ or groups > MAX_GRID_YZ:
        raise ValueError(f"fastconv CUDA conv2d: {m} channels x {groups} groups exceed the grid limits")
    if kernel == "conv2d_backward_weight":
        tiles = p.grid[0] * p.grid[1] * groups
        splits = max(1, min(-(-TARGET_BLOCKS // tiles), -(-k // MIN_SPLIT_K), MAX_GRID_YZ // groups))
        kchunk = -(-(-(-k // splits)) // SPLIT_ALIGN) * SPLIT_ALIGN
        p = ConvPlan(kernel, dtype, tc, tile, m, n, k, groups, -(-k // kchunk), kchunk)
    return p


def _check_sizes(*sizes: int) -> None:
    if max(sizes) >= INT32:
        raise ValueError("fastconv CUDA conv2d: a per-image tensor size exceeds the kernels' 32-bit indices")


def _geometry(n: int, c: int, hw: Sequence[int], o: int, ohw: Sequence[int], khw: Sequence[int], stride, padding,
              dilation, groups: int) -> dict:
    _check_sizes(c * hw[0] * hw[1], o * ohw[0] * ohw[1])
    return dict(N=n, C=c, H=hw[0], W=hw[1], O=o, OH=ohw[0], OW=ohw[1], KH=khw[0], KW=khw[1], sh=stride[0],
                sw=stride[1], ph=padding[0], pw=padding[2], dh=dilation[0], dw=dilation[1], groups=groups)


def _launch(p: ConvPlan, **args: Any) -> None:
    rt.launch(FAMILY, p.kernel, p.targs, p.grid, (p.threads,), 0, **args)


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
    p = plan("conv2d_forward", x.dtype, o // groups, n * oh * ow, cg * kh * kw, groups, x.device)
    _launch(p, x=x, w=weight, bias=bias if bias is not None else weight, y=y, has_bias=bias is not None,
            **_geometry(n, c, (h, w), o, (oh, ow), (kh, kw), stride, padding, dilation, groups))
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
    if o == 0 or kh == 0 or kw == 0 or oh == 0 or ow == 0:
        gx.zero_()
        return gx if bias is None else gx.add_(bias.reshape(1, c, 1, 1))
    p = plan("conv2d_backward_input", grad_out.dtype, cg, n * h * w, (o // groups) * kh * kw, groups,
             grad_out.device)
    _launch(p, g=grad_out, w=weight, bias=bias if bias is not None else weight, gx=gx, has_bias=bias is not None,
            **_geometry(n, c, (h, w), o, (oh, ow), (kh, kw), stride, padding, dilation, groups))
    return gx


def conv2d_backward_weight(x: torch.Tensor, grad_out: torch.Tensor, stride, padding, dilation, groups: int,
                           kernel_hw: Tuple[int, int]) -> torch.Tensor:
    """Gradient of conv2d w.r.t. its OIHW weight of spatial size ``kernel_hw``: split-K GEMM, fixed-order reduce."""
    n, c, h, w = x.shape
    _, o, oh, ow = grad_out.shape
    kh, kw = kernel_hw
    cg = c // groups
    gw = torch.empty((o, cg, kh, kw), dtype=x.dtype, device=x.device)
    if gw.numel() == 0:
        return gw
    if n * oh * ow == 0:
        return gw.zero_()
    p = plan("conv2d_backward_weight", x.dtype, o // groups, cg * kh * kw, n * oh * ow, groups, x.device)
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    ws = torch.empty((p.splits, gw.numel()), dtype=acc, device=x.device)
    _launch(p, x=x, g=grad_out, ws=ws, kchunk=p.kchunk,
            **_geometry(n, c, (h, w), o, (oh, ow), (kh, kw), stride, padding, dilation, groups))
    threads = _source.constant(FAMILY, "FC_CONV_REDUCE_THREADS")
    rt.launch(FAMILY, "conv2d_backward_weight_reduce", (x.dtype,), (min(-(-gw.numel() // threads), 65535 * 32),),
              (threads,), 0, ws=ws, gw=gw, total=gw.numel(), splits=p.splits)
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
