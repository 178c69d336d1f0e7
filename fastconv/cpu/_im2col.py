"""im2col + GEMM convolution: the engine's exact fallback and the planner's choice where BLAS wins.

Layout: NCHW input, OIHW weight (``(out, in/groups, kH, kW)``), contiguous.  The
kernels lower the convolution onto matrix products: :func:`_unfold` (im2col) gathers
the receptive fields of a chunk of the batch into a column matrix of shape
``(C*kH*kW, L)``, ``L = samples * rows * W_out``; the per-group products run
through torch's BLAS, on the OpenMP team the engine's own kernels use (NumPy's OpenBLAS
would bring a second pool of spinning threads; nothing here sets process-wide BLAS state); its adjoint (col2im, ``fold=True``) scatters columns back (the gradient w.r.t. the
input, and conv_transpose2d's forward).  Chunks bound the column buffer to
:data:`COLS_BUDGET` elements, splitting a single huge image by output rows.

Padding is ``(top, left)`` plus explicit output sizes, so asymmetric padding
(``'same'`` with even kernels) needs no copy.  All index arithmetic is int64.
The kernels are ``nogil`` loops over a task range, split across threads by
:func:`fastconv._threads.parallel_for` (see there why not ``prange``).
"""
from __future__ import annotations

from typing import Iterator, Optional, Tuple

import numpy as np
import torch
from .._numba import njit

from .._threads import parallel_for
from . import _outputs
from ._numpy import view as _np
from ._scratch import scratch

__all__ = ["forward", "backward_input", "backward_weight"]

#: Largest column buffer (in elements) one chunk may allocate.
COLS_BUDGET = 1 << 24


@njit(cache=True)
def _valid_range(off, stride, size, n_out):  # pragma: no cover - numba
    """Output positions [lo, hi) whose tap ``o*stride + off`` lands inside [0, size)."""
    lo = 0 if off >= 0 else (-off + stride - 1) // stride
    hi = 0 if size - 1 - off < 0 else (size - 1 - off) // stride + 1
    if hi > n_out:
        hi = n_out
    if lo > hi:
        lo = hi
    return lo, hi


@njit(cache=True, nogil=True)
def _unfold(x, cols, fold, n0, nb, y0, ny, sh, sw, pt, pl, dh, dw, kh, kw, ow, t0, t1):  # pragma: no cover
    """im2col, or with ``fold`` its adjoint col2im, for the (sample, channel) tasks [t0, t1).

    im2col: ``cols[(c*kh+i)*kw+j, (n-n0)*ny*ow + (y-y0)*ow + xo] = x[n, c, y*sh-pt+i*dh, xo*sw-pl+j*dw]``
    (0 where the tap falls in the padding).  col2im: ``x[n, c, iy, ix] += cols[...]``
    for every tap that read ``(iy, ix)``; tasks own whole planes, so nothing races.
    """
    C = x.shape[1]
    H = x.shape[2]
    W = x.shape[3]
    span = ny * ow
    for task in range(t0, t1):
        nl = task // C
        c = task - nl * C
        n = n0 + nl
        for i in range(kh):
            for j in range(kw):
                row = cols[(c * kh + i) * kw + j]
                off = j * dw - pl
                lo, hi = _valid_range(off, sw, W, ow)
                for yl in range(ny):
                    iy = (y0 + yl) * sh - pt + i * dh
                    base = nl * span + yl * ow
                    inside = 0 <= iy < H
                    if fold:
                        if not inside:
                            continue
                        dst = x[n, c, iy]
                        if sw == 1:
                            for xo in range(lo, hi):
                                dst[xo + off] += row[base + xo]
                        else:
                            for xo in range(lo, hi):
                                dst[xo * sw + off] += row[base + xo]
                    elif not inside:
                        row[base:base + ow] = 0
                    else:
                        src = x[n, c, iy]
                        row[base:base + lo] = 0
                        if sw == 1:
                            row[base + lo:base + hi] = src[lo + off:hi + off]
                        else:
                            for xo in range(lo, hi):
                                row[base + xo] = src[xo * sw + off]
                        row[base + hi:base + ow] = 0


@njit(cache=True, nogil=True)
def _scatter_rows(src, bias, out, n0, nb, y0, ny, t0, t1):  # pragma: no cover - numba
    """out[n, o, y, :] = src[o, (n-n0)*ny*ow + (y-y0)*ow + :] + bias[o]  (chunk -> NCHW)."""
    ow = out.shape[3]
    span = ny * ow
    for task in range(t0, t1):
        o = task // nb
        nl = task - o * nb
        b = bias[o]
        srow = src[o]
        for yl in range(ny):
            base = nl * span + yl * ow
            drow = out[n0 + nl, o, y0 + yl]
            for xo in range(ow):
                drow[xo] = srow[base + xo] + b


@njit(cache=True, nogil=True)
def _gather_rows(src, dst, n0, nb, y0, ny, t0, t1):  # pragma: no cover - numba
    """Inverse of :func:`_scatter_rows` without bias: dst[o, col] = src[n, o, y, x] (NCHW -> chunk)."""
    ow = src.shape[3]
    span = ny * ow
    for task in range(t0, t1):
        o = task // nb
        nl = task - o * nb
        drow = dst[o]
        for yl in range(ny):
            base = nl * span + yl * ow
            srow = src[n0 + nl, o, y0 + yl]
            for xo in range(ow):
                drow[base + xo] = srow[xo]


# --------------------------------------------------------------------------- helpers


def _t(a: np.ndarray) -> torch.Tensor:
    """``a`` as a torch tensor sharing its memory (for torch's BLAS)."""
    return torch.from_numpy(a)


def _batch_chunks(n: int, rows_out: int, ow: int, k_rows: int) -> Iterator[Tuple[int, int, int, int]]:
    """Yield (n0, nb, y0, ny) chunks whose column matrix stays within COLS_BUDGET elements."""
    per_sample = k_rows * rows_out * ow
    if per_sample <= COLS_BUDGET:
        nb = max(1, COLS_BUDGET // max(per_sample, 1))
        for n0 in range(0, n, nb):
            yield n0, min(nb, n - n0), 0, rows_out
    else:
        ny = max(1, COLS_BUDGET // max(k_rows * ow, 1))
        for n0 in range(n):
            for y0 in range(0, rows_out, ny):
                yield n0, 1, y0, min(ny, rows_out - y0)


def _geom(stride, padding, dilation, kernel):
    """Flatten conv geometry into the kernels' scalar arguments (top/left padding only)."""
    return (int(stride[0]), int(stride[1]), int(padding[0]), int(padding[2]),
            int(dilation[0]), int(dilation[1]), int(kernel[0]), int(kernel[1]))


# --------------------------------------------------------------------------- entry points


def forward(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], stride, padding, dilation,
            groups: int, out_hw: Tuple[int, int]) -> torch.Tensor:
    """y = conv2d(x, weight) + bias for contiguous NCHW ``x`` and OIHW ``weight``."""
    n, c, _, _ = x.shape
    o, cg, kh, kw = weight.shape
    oh, ow = out_hw
    out = _outputs.new(x, (n, o, oh, ow), n * o * oh * ow)
    if out.numel() == 0:
        return out
    xa, wa, outa = _np(x), _np(weight).reshape(groups, o // groups, cg * kh * kw), _np(out)
    ba = _np(bias) if bias is not None else np.zeros(o, dtype=xa.dtype)
    geom = _geom(stride, padding, dilation, (kh, kw))
    for n0, nb, y0, ny in _batch_chunks(n, oh, ow, c * kh * kw):
        cols = scratch("im2col.cols", (c * kh * kw, nb * ny * ow), xa.dtype)
        parallel_for(_unfold, nb * c, xa, cols, False, n0, nb, y0, ny, *geom, ow, work=cols.size)
        prod = scratch("im2col.prod", (o, nb * ny * ow), xa.dtype)
        torch.matmul(_t(wa), _t(cols.reshape(groups, cg * kh * kw, -1)), out=_t(prod.reshape(groups, o // groups, -1)))
        parallel_for(_scatter_rows, nb * o, prod, ba, outa, n0, nb, y0, ny, work=prod.size)
    return out


def backward_input(grad_out: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], stride,
                   padding, dilation, groups: int, in_hw: Tuple[int, int]) -> torch.Tensor:
    """Gradient of conv2d w.r.t. its input, of spatial size ``in_hw`` (+ ``bias`` per channel, for conv_transpose2d)."""
    n, o, oh, ow = grad_out.shape
    _, cg, kh, kw = weight.shape
    c = cg * groups
    if bias is None:
        gx = _outputs.new(grad_out, (n, c, in_hw[0], in_hw[1]), n * c * in_hw[0] * in_hw[1]).zero_()
    else:
        gx = bias.detach().reshape(1, c, 1, 1).expand(n, c, in_hw[0], in_hw[1]).contiguous()
    if gx.numel() == 0 or grad_out.numel() == 0:
        return gx
    ga, gxa = _np(grad_out), _np(gx)
    wt = np.ascontiguousarray(_np(weight).reshape(groups, o // groups, cg * kh * kw).transpose(0, 2, 1))
    geom = _geom(stride, padding, dilation, (kh, kw))
    for n0, nb, y0, ny in _batch_chunks(n, oh, ow, max(c * kh * kw, o)):
        g = scratch("im2col.grad", (o, nb * ny * ow), ga.dtype)
        parallel_for(_gather_rows, nb * o, ga, g, n0, nb, y0, ny, work=g.size)
        cols = scratch("im2col.cols", (c * kh * kw, nb * ny * ow), ga.dtype)
        torch.matmul(_t(wt), _t(g.reshape(groups, o // groups, -1)), out=_t(cols.reshape(groups, cg * kh * kw, -1)))
        parallel_for(_unfold, nb * c, gxa, cols, True, n0, nb, y0, ny, *geom, ow, work=cols.size)
    return gx


def backward_weight(x: torch.Tensor, grad_out: torch.Tensor, stride, padding, dilation, groups: int,
                    kernel_hw: Tuple[int, int]) -> torch.Tensor:
    """Gradient of conv2d w.r.t. its OIHW weight of spatial size ``kernel_hw``."""
    n, c, _, _ = x.shape
    _, o, oh, ow = grad_out.shape
    kh, kw = kernel_hw
    cg = c // groups
    gw = np.zeros((groups, o // groups, cg * kh * kw), dtype=_np(x).dtype)
    if grad_out.numel() and x.numel():
        xa, ga = _np(x), _np(grad_out)
        geom = _geom(stride, padding, dilation, (kh, kw))
        for n0, nb, y0, ny in _batch_chunks(n, oh, ow, max(c * kh * kw, o)):
            cols = scratch("im2col.cols", (c * kh * kw, nb * ny * ow), xa.dtype)
            parallel_for(_unfold, nb * c, xa, cols, False, n0, nb, y0, ny, *geom, ow, work=cols.size)
            g = scratch("im2col.grad", (o, nb * ny * ow), ga.dtype)
            parallel_for(_gather_rows, nb * o, ga, g, n0, nb, y0, ny, work=g.size)
            _t(gw).baddbmm_(_t(g.reshape(groups, o // groups, -1)), _t(cols.reshape(groups, cg * kh * kw, -1)).mT)
    return torch.from_numpy(gw.reshape(o, cg, kh, kw))
