"""CUDA launchers for fused SSIM statistics and their gradient (``kernels/ssim.cu``).

Same contract as :mod:`fastconv.cpu.ssim` (:class:`fastconv.ops.ssim.Backend`): ``ssim_stats_forward``
and ``ssim_stats_backward`` over tensors on a CUDA device (or CPU tensors under the
emulator runtime).  float32 and float64 compute in their own precision, exactly as the CPU
backend; float16 and bfloat16 are accepted as storage types and compute in float32.

Forward: ``ssim_stats_forward`` (one block per (tile of valid positions, plane)) writes a float64
partial sum of the SSIM and cs maps per block, ``ssim_stats_reduce`` adds each plane's partials in
a fixed order, so results are bitwise reproducible.  Backward: ``ssim_stats_backward_maps`` writes
dL/d(moments) at every valid position into a scratch buffer (4 maps per plane, accumulation
dtype, at most :data:`SCRATCH_BYTES` per launch: more planes run in chunks), ``ssim_stats_backward``
gathers them through the transposed Gaussian.  The grid, block and
shared-memory sizes computed here are the launch contracts stated in ``ssim.cu``.
"""
from __future__ import annotations

from typing import Tuple

import torch

from .._window import gaussian_window
from . import _runtime as rt
from . import _source

FAMILY = "ssim"
REDUCE_THREADS = _source.constant(FAMILY, "FC_SSIM_REDUCE_THREADS")
MAX_GRID_Y = 65535
MAX_GRID_X = 65535 * 32

#: The backend contract (:class:`fastconv.ops.ssim.Backend`); everything else here is private.
__all__ = ["ssim_stats_forward", "ssim_stats_backward"]

#: Candidate (TH, TW) block shapes, best first: 256 threads, then smaller ones when shared memory is short.
_SHAPES = ((8, 32), (16, 16), (4, 32), (8, 16), (2, 32), (4, 16), (8, 8), (1, 32), (2, 16), (4, 8), (8, 4),
           (16, 2), (32, 1))


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Arithmetic dtype of the kernels (``Acc<T>::type``): float64 for float64, float32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


#: Static shared memory of ssim_stats_forward (``double red[32]``), kept out of the dynamic budget.
STATIC_SHARED = 32 * 8


def instantiations() -> Tuple[str, ...]:
    """Every name expression these launchers use: each kernel of ``ssim.cu`` for each dtype."""
    return rt.dtype_instantiations(FAMILY)
#: Upper bound on the dL/d(moments) scratch of one backward launch; more planes run in chunks.
SCRATCH_BYTES = 256 << 20


def _smem(kind: str, th: int, tw: int, win: int, asz: int) -> int:
    name = "FC_SSIM_FWD_SMEM" if kind == "forward" else "FC_SSIM_BWD_SMEM"
    return _source.macro(FAMILY, name, TH=th, TW=tw, WIN=win) * asz


def tile_shape(kind: str, rows: int, cols: int, win: int, dtype: torch.dtype) -> Tuple[int, int, int]:
    """(TH, TW, shared bytes) of a ``kind`` ('forward' or 'backward') block over a ``rows`` x ``cols`` area.

    Among the shapes of :data:`_SHAPES` that fit :data:`~fastconv.cuda._runtime.MAX_DYNAMIC_SHARED`, takes
    the one that stages the fewest tile elements in all (tiles x (TH + win - 1) x (TW + win - 1)): that
    weighs the halo of small tiles against the idle threads of tiles larger than the area.  Every
    shape has a multiple of 32 threads, as the kernels' block reductions need.
    """
    asz = 8 if acc_dtype(dtype) == torch.float64 else 4
    budget = rt.MAX_DYNAMIC_SHARED - (STATIC_SHARED if kind == "forward" else 0)
    fitting = [(th, tw) for th, tw in _SHAPES if _smem(kind, th, tw, win, asz) <= budget]
    if not fitting:
        raise ValueError(f"fastconv CUDA ssim: win_size={win} needs more than {rt.MAX_DYNAMIC_SHARED} bytes of "
                         f"shared memory per block")

    def staged(s: Tuple[int, int]) -> int:
        th, tw = s
        return -(-rows // th) * -(-cols // tw) * (th + win - 1) * (tw + win - 1)

    th, tw = min(fitting, key=lambda s: (staged(s), fitting.index(s)))
    return th, tw, _smem(kind, th, tw, win, asz)


def _check_plane(h: int, w: int) -> None:
    if 4 * h * w >= 2 ** 31:
        raise ValueError(f"fastconv CUDA ssim: a {h}x{w} plane exceeds the kernels' 32-bit in-plane indices")


def _window(win_size: int, win_sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return gaussian_window(win_size, win_sigma, acc_dtype(dtype)).to(device)


def _grid(rows: int, cols: int, th: int, tw: int, planes: int) -> Tuple[Tuple[int, int, int], int]:
    tiles_w = -(-cols // tw)
    return (tiles_w * -(-rows // th), min(planes, MAX_GRID_Y), 1), tiles_w


def ssim_stats_forward(x: torch.Tensor, y: torch.Tensor, win_size: int, win_sigma: float, c1: float,
                       c2: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-(n, c) mean SSIM and mean cs over valid positions; see :mod:`fastconv.cpu.ssim`."""
    n, c, h, w = x.shape
    _check_plane(h, w)
    s = torch.empty((n, c), dtype=x.dtype, device=x.device)
    cs = torch.empty((n, c), dtype=x.dtype, device=x.device)
    planes = n * c
    if planes == 0:
        return s, cs
    hv, wv = h - win_size + 1, w - win_size + 1
    th, tw, shared = tile_shape("forward", hv, wv, win_size, x.dtype)
    grid, tiles_w = _grid(hv, wv, th, tw, planes)
    partials = torch.empty((planes, grid[0], 2), dtype=torch.float64, device=x.device)
    g = _window(win_size, win_sigma, x.dtype, x.device)
    rt.launch(FAMILY, "ssim_stats_forward", (x.dtype,), grid, (tw, th, 1), shared, x=x, y=y, g=g, partials=partials,
              P=planes, H=h, W=w, win=win_size, c1=c1, c2=c2, tiles_w=tiles_w)
    rt.launch(FAMILY, "ssim_stats_reduce", (x.dtype,), (min(planes, MAX_GRID_X), 1, 1), (REDUCE_THREADS, 1, 1), 0,
              partials=partials, ssim_out=s, cs_out=cs, P=planes, ntiles=grid[0], count=float(hv * wv))
    return s, cs


def ssim_stats_backward(g_ssim: torch.Tensor, g_cs: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                        win_size: int, win_sigma: float, c1: float, c2: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Gradients of :func:`ssim_stats_forward` w.r.t. ``x`` and ``y`` given upstream ``(N, C)`` gradients."""
    n, c, h, w = x.shape
    _check_plane(h, w)
    gx = torch.empty_like(x, memory_format=torch.contiguous_format)
    gy = torch.empty_like(y, memory_format=torch.contiguous_format)
    planes = n * c
    if gx.numel() == 0:
        return gx, gy
    hv, wv = h - win_size + 1, w - win_size + 1
    g_ssim = g_ssim.to(x.dtype).contiguous().view(planes)
    g_cs = g_cs.to(x.dtype).contiguous().view(planes)
    g = _window(win_size, win_sigma, x.dtype, x.device)
    adt = acc_dtype(x.dtype)
    chunk = max(1, min(planes, SCRATCH_BYTES // (4 * hv * wv * (8 if adt == torch.float64 else 4))))
    d = torch.empty((chunk, 4, hv, wv), dtype=adt, device=x.device)
    th, tw, shared = tile_shape("forward", hv, wv, win_size, x.dtype)
    bth, btw, bshared = tile_shape("backward", h, w, win_size, x.dtype)
    xp, yp = x.view(planes, h, w), y.view(planes, h, w)
    gxp, gyp = gx.view(planes, h, w), gy.view(planes, h, w)
    for p0 in range(0, planes, chunk):  # contiguous plane slices: zero-copy views of the same memory
        p1 = min(planes, p0 + chunk)
        grid, tiles_w = _grid(hv, wv, th, tw, p1 - p0)
        rt.launch(FAMILY, "ssim_stats_backward_maps", (x.dtype,), grid, (tw, th, 1), shared, x=xp[p0:p1],
                  y=yp[p0:p1], g=g, g_ssim=g_ssim[p0:p1], g_cs=g_cs[p0:p1], d=d, P=p1 - p0, H=h, W=w, win=win_size,
                  c1=c1, c2=c2, tiles_w=tiles_w)
        grid, tiles_w = _grid(h, w, bth, btw, p1 - p0)
        rt.launch(FAMILY, "ssim_stats_backward", (x.dtype,), grid, (btw, bth, 1), bshared, x=xp[p0:p1], y=yp[p0:p1],
                  g=g, d=d, gx=gxp[p0:p1], gy=gyp[p0:p1], P=p1 - p0, H=h, W=w, win=win_size, tiles_w=tiles_w)
    return gx, gy
