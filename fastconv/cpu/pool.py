"""Numba kernels for 2D max, average and adaptive-average pooling and their gradients.

Every kernel loops over a range of (sample, channel) planes and releases the GIL;
:func:`fastconv._threads.parallel_for` splits the planes across threads, so the
backward scatters never race.  Semantics are torch's, bit for bit where torch is exact:

* max: windows start at ``o*stride - pad``, taps step by ``dilation``; padding
  never wins; the first maximum wins ties; NaN propagates (a NaN tap always
  replaces the running max).  Indices are flat ``h*W + w`` within the plane.
* avg: ``hend = min(hstart + kH, H + pad)``; the window area before clipping to
  the input is the divisor when ``count_include_pad``, else the clipped area;
  ``divisor_override`` (0 = none, negative allowed as in torch) replaces both.
* adaptive avg: window ``[floor(o*H/OH), ceil((o+1)*H/OH))``.
"""
from __future__ import annotations

import functools
from typing import Callable, Tuple

import numpy as np
import torch
from numba import carray

from .._numba import njit
from .._threads import PARALLEL_MIN_WORK, parallel_for
from . import _outputs
from ._address import NO_INDEX, WITNESS, pointer_like
from ._numpy import view as _np

#: The backend contract (:class:`fastconv.ops.pool.Backend`); everything else here is private.
__all__ = ["max_pool2d_forward", "max_pool2d_values_for", "max_pool2d_backward", "avg_pool2d_forward",
           "avg_pool2d_forward_for", "avg_pool2d_backward",
           "adaptive_avg_pool2d_forward", "adaptive_avg_pool2d_backward"]


@njit(cache=True, nogil=True)
def _max_pool2d_forward(x, out, idx, kh, kw, sh, sw, ph, pw, dh, dw, t0, t1):  # pragma: no cover - numba
    N, C, H, W = x.shape
    OH = out.shape[2]
    OW = out.shape[3]
    want = idx.shape[0] != 0  # else values only (see max_pool2d_values_for)
    for task in range(t0, t1):
        n = task // C
        c = task - n * C
        for oy in range(OH):
            y0 = oy * sh - ph
            y1 = min(y0 + (kh - 1) * dh + 1, H)
            while y0 < 0:
                y0 += dh
            for ox in range(OW):
                x0 = ox * sw - pw
                x1 = min(x0 + (kw - 1) * dw + 1, W)
                while x0 < 0:
                    x0 += dw
                best = -np.inf
                arg = y0 * W + x0
                for iy in range(y0, y1, dh):
                    for ix in range(x0, x1, dw):
                        v = x[n, c, iy, ix]
                        if v > best or np.isnan(v):
                            best = v
                            arg = iy * W + ix
                out[n, c, oy, ox] = best
                if want:
                    idx[n, c, oy, ox] = arg


@njit(cache=True, nogil=True)
def _max_pool2d_backward(g, idx, gin, t0, t1):  # pragma: no cover - numba
    N, C, OH, OW = g.shape
    W = gin.shape[3]
    HW = gin.shape[2] * W
    for task in range(t0, t1):
        n = task // C
        c = task - n * C
        for oy in range(OH):
            for ox in range(OW):
                k = idx[n, c, oy, ox]
                if 0 <= k < HW:  # else a window entirely in the padding (output -inf): no gradient
                    gin[n, c, k // W, k % W] += g[n, c, oy, ox]


@njit(cache=True, nogil=True)
def _max_pool2d_backward_blocks(g, idx, gin, ok, t0, t1):  # pragma: no cover - numba
    """:func:`_max_pool2d_backward` into an uninitialised ``gin`` when every index lies in its own
    2x2 block (output ``(oy, ox)`` -> input rows ``2oy, 2oy+1``, columns ``2ox, 2ox+1``, as a 2x2
    stride-2 pooling's do): each block's four pixels are written once -- the gradient at the
    index, zeros elsewhere -- and rows and columns past the blocks are zeroed.  Blocks are
    disjoint, so this is the scatter-add exactly; a plane with an index outside its block gets
    ``ok[plane] = 0`` (the caller then runs the scatter-add)."""
    N, C, OH, OW = g.shape
    H, W = gin.shape[2], gin.shape[3]
    for task in range(t0, t1):
        n = task // C
        c = task - n * C
        gp = g[n, c]
        ip = idx[n, c]
        dst = gin[n, c]
        inside = True
        for oy in range(OH):
            r0 = dst[2 * oy]
            r1 = dst[2 * oy + 1]
            base = 2 * oy * W
            for ox in range(OW):
                k = ip[oy, ox] - base - 2 * ox  # 0, 1 (first row), W, W + 1 (second row)
                inside &= k == 0 or k == 1 or k == W or k == W + 1
                v = gp[oy, ox]
                r0[2 * ox] = v if k == 0 else 0
                r0[2 * ox + 1] = v if k == 1 else 0
                r1[2 * ox] = v if k == W else 0
                r1[2 * ox + 1] = v if k == W + 1 else 0
            for x in range(2 * OW, W):
                r0[x] = 0
                r1[x] = 0
        for y in range(2 * OH, H):
            for x in range(W):
                dst[y, x] = 0
        ok[task] = inside


@njit(cache=True, nogil=True)
def _avg_window(o, s, p, k, size):  # pragma: no cover - numba
    """(clipped start, clipped end, unclipped length) of one avg-pool window along an axis."""
    start = o * s - p
    end = min(start + k, size + p)
    length = end - start
    return max(start, 0), min(end, size), length


@njit(cache=True, nogil=True)
def _avg_pool2d(x, out, kh, kw, sh, sw, ph, pw, include_pad, divisor, backward, t0, t1):  # pragma: no cover - numba
    """Average pooling of planes [t0, t1): out = window means of x, or with ``backward``
    x += out[o] / divisor over each window (x is then the input gradient)."""
    H = x.shape[2]
    W = x.shape[3]
    C = x.shape[1]
    OH = out.shape[2]
    OW = out.shape[3]
    for task in range(t0, t1):
        n = task // C
        c = task - n * C
        for oy in range(OH):
            y0, y1, ly = _avg_window(oy, sh, ph, kh, H)
            for ox in range(OW):
                x0, x1, lx = _avg_window(ox, sw, pw, kw, W)
                if divisor != 0:
                    d = divisor
                elif include_pad:
                    d = ly * lx
                else:
                    d = (y1 - y0) * (x1 - x0)
                if backward:
                    v = out[n, c, oy, ox] / d
                    for iy in range(y0, y1):
                        for ix in range(x0, x1):
                            x[n, c, iy, ix] += v
                else:
                    acc = 0.0
                    for iy in range(y0, y1):
                        for ix in range(x0, x1):
                            acc += x[n, c, iy, ix]
                    out[n, c, oy, ox] = acc / d


@njit(cache=True, nogil=True)
def _adaptive_avg_pool2d(x, out, backward, t0, t1):  # pragma: no cover - numba
    """Forward (backward=False): out = mean over windows of x.  Backward: x += out[o]/area over each window."""
    C = x.shape[1]
    H, W = x.shape[2], x.shape[3]
    OH, OW = out.shape[2], out.shape[3]
    for task in range(t0, t1):
        n = task // C
        c = task - n * C
        for oy in range(OH):
            y0 = (oy * H) // OH
            y1 = ((oy + 1) * H + OH - 1) // OH
            for ox in range(OW):
                x0 = (ox * W) // OW
                x1 = ((ox + 1) * W + OW - 1) // OW
                if backward:
                    v = out[n, c, oy, ox] / (y1 - y0) / (x1 - x0)
                    for iy in range(y0, y1):
                        for ix in range(x0, x1):
                            x[n, c, iy, ix] += v
                else:
                    acc = 0.0
                    for iy in range(y0, y1):
                        for ix in range(x0, x1):
                            acc += x[n, c, iy, ix]
                    out[n, c, oy, ox] = acc / (y1 - y0) / (x1 - x0)


@njit(cache=True, nogil=True)
def _max_pool2d_forward_2x2(x, out, idx, t0, t1):  # pragma: no cover - numba
    """:func:`_max_pool2d_forward` for 2x2 windows at stride 2 that all lie inside the plane:
    flat planes, one unit-stride pass per output row (LLVM vectorises the even/odd loads).
    Tie and NaN rules as the generic kernel: the taps in row-major order, a later tap wins
    when greater or NaN."""
    N, C, H, W = x.shape
    OH, OW = out.shape[2], out.shape[3]
    want = idx.shape[0] != 0  # else values only
    for task in range(t0, t1):
        n = task // C
        c = task - n * C
        xp = x[n, c]
        op = out[n, c]
        for oy in range(OH):
            r0 = xp[2 * oy]
            r1 = xp[2 * oy + 1]
            orow = op[oy]
            base = 2 * oy * W
            for ox in range(OW):
                a = r0[2 * ox]
                b = r0[2 * ox + 1]
                c2 = r1[2 * ox]
                d = r1[2 * ox + 1]
                best = a
                arg = 0
                if b > best or b != b:
                    best = b
                    arg = 1
                if c2 > best or c2 != c2:
                    best = c2
                    arg = W
                if d > best or d != d:
                    best = d
                    arg = W + 1
                orow[ox] = best
                if want:
                    idx[n, c, oy, ox] = base + 2 * ox + arg


@njit(cache=True, nogil=True)
def _avg_pool2d_2x2(x, out, t0, t1):  # pragma: no cover - numba
    """:func:`_avg_pool2d` forward for 2x2 windows at stride 2 inside the plane (divisor 4):
    ``((a + b) + c + d) / 4`` summed in torch's order."""
    N, C, H, W = x.shape
    OH, OW = out.shape[2], out.shape[3]
    for task in range(t0, t1):
        n = task // C
        c = task - n * C
        for oy in range(OH):
            r0 = x[n, c, 2 * oy]
            r1 = x[n, c, 2 * oy + 1]
            orow = out[n, c, oy]
            for ox in range(OW):
                orow[ox] = (((r0[2 * ox] + r0[2 * ox + 1]) + r1[2 * ox]) + r1[2 * ox + 1]) / 4


@njit(cache=True, nogil=True)
def _avg_pool2d_backward_2x2(g, gin, t0, t1):  # pragma: no cover - numba
    """The adjoint of :func:`_avg_pool2d_2x2`: every input pixel of a window gets ``g / 4``
    (rows and columns past the last whole window get zero)."""
    N, C, H, W = gin.shape
    OH, OW = g.shape[2], g.shape[3]
    for task in range(t0, t1):
        n = task // C
        c = task - n * C
        for oy in range(OH):
            grow = g[n, c, oy]
            r0 = gin[n, c, 2 * oy]
            r1 = gin[n, c, 2 * oy + 1]
            for ox in range(OW):
                v = grow[ox] / 4
                r0[2 * ox] = v
                r0[2 * ox + 1] = v
                r1[2 * ox] = v
                r1[2 * ox + 1] = v
            for ix in range(2 * OW, W):
                r0[ix] = 0
                r1[ix] = 0
        for iy in range(2 * OH, H):
            gin[n, c, iy, :] = 0


@njit(cache=True, nogil=True)
def _max_small(xa, oa, wit, N, C, H, W, OH, OW, kh, kw, sh, sw, ph, pw, dh, dw, two):  # pragma: no cover
    """Max pooling values (no indices) of all planes, from addresses (see :mod:`._address`)."""
    x = carray(pointer_like(xa, wit), (N, C, H, W))
    out = carray(pointer_like(oa, wit), (N, C, OH, OW))
    none = carray(pointer_like(0, NO_INDEX), (0, 0, 0, 0))
    if two:
        _max_pool2d_forward_2x2(x, out, none, 0, N * C)
    else:
        _max_pool2d_forward(x, out, none, kh, kw, sh, sw, ph, pw, dh, dw, 0, N * C)


@njit(cache=True, nogil=True)
def _avg_small(xa, oa, wit, N, C, H, W, OH, OW, kh, kw, sh, sw, ph, pw, include_pad, divisor,
               two):  # pragma: no cover - numba
    """Average pooling of all planes, from addresses (see :mod:`._address`)."""
    x = carray(pointer_like(xa, wit), (N, C, H, W))
    out = carray(pointer_like(oa, wit), (N, C, OH, OW))
    if two:
        _avg_pool2d_2x2(x, out, 0, N * C)
    else:
        _avg_pool2d(x, out, kh, kw, sh, sw, ph, pw, include_pad, divisor, False, 0, N * C)


# --------------------------------------------------------------------------- entry points


def _route(shape, out_hw, kernel, stride, padding, dilation=(1, 1), divisor: int = 0) -> Tuple[bool, int]:
    """Whether a pooling of an NCHW ``shape`` runs the whole-2x2 kernels, and its work (for
    :func:`fastconv._threads.parallel_for`): every input read once, or every window tap."""
    n, c, h, w = shape
    if _whole_2x2(kernel, stride, padding, shape, out_hw, dilation) and divisor in (0, 4):
        return True, n * c * h * w
    return False, n * c * out_hw[0] * out_hw[1] * kernel[0] * kernel[1]


def _small(dtype: torch.dtype, work: int) -> bool:
    """Whether a pooling runs on one thread from addresses (:func:`_from_address`): a non-empty call
    with little work (see :func:`fastconv._threads.parallel_for`) in a dtype with a witness."""
    return 0 < work < PARALLEL_MIN_WORK and dtype in WITNESS


def _from_address(kernel, out_shape: Tuple[int, ...], dtype: torch.dtype, geometry: tuple,
                  x: torch.Tensor) -> torch.Tensor:
    """``kernel(x address, out address, *geometry)`` into a new ``out_shape`` tensor: the smallest
    calls' path, which skips NumPy views (see :mod:`._address`)."""
    x = x.resolve_neg().contiguous() if x.is_neg() else x.contiguous()  # (a negated view holds -x)
    out = torch.empty(*out_shape, dtype=dtype)
    kernel(x.data_ptr(), out.data_ptr(), *geometry)
    return out


def _whole_2x2(kernel, stride, padding, in_hw, out_hw, dilation=(1, 1)) -> bool:
    """Whether a pooling is 2x2 at stride 2 without padding or dilation, every window inside the input
    (``in_hw`` may be the whole NCHW shape: its last two sizes count)."""
    return (tuple(kernel) == _TWO and tuple(stride) == _TWO and tuple(padding) == _ZERO
            and tuple(dilation) == _ONE and 2 * out_hw[0] <= in_hw[-2] and 2 * out_hw[1] <= in_hw[-1])


_TWO, _ONE, _ZERO = (2, 2), (1, 1), (0, 0)


def _plane_count(t: torch.Tensor) -> int:
    return t.shape[0] * t.shape[1]


def _empty(x: torch.Tensor, hw: Tuple[int, int], dtype=None) -> torch.Tensor:
    dtype = dtype or x.dtype
    numel = x.shape[0] * x.shape[1] * hw[0] * hw[1]
    if numel * dtype.itemsize >= _outputs.POOL_MIN_BYTES:
        return _outputs.empty((x.shape[0], x.shape[1], hw[0], hw[1]), dtype)
    # torch.empty's varargs form parses faster than a size tuple (tiny calls count)
    return torch.empty(x.shape[0], x.shape[1], hw[0], hw[1], dtype=dtype)


def _zeros(g: torch.Tensor, hw: Tuple[int, int]) -> torch.Tensor:
    return _empty(g, hw).zero_()


def max_pool2d_forward(x: torch.Tensor, kernel, stride, padding, dilation, out_hw):
    """Max pooling; returns ``(out, indices)`` with int64 flat in-plane indices."""
    out, idx = _empty(x, out_hw), _empty(x, out_hw, torch.int64)
    if out.numel():
        _max_pool(_np(x), out.numpy(), idx.numpy(), kernel, stride, padding, dilation)
    return out, idx


def _max_pool(xa: np.ndarray, outa: np.ndarray, idxa: np.ndarray, kernel, stride, padding, dilation) -> None:
    """Max pooling of the planes of ``xa`` into ``outa``, and ``idxa`` unless it is empty (:data:`_NO_INDICES`)."""
    two, work = _route(xa.shape, outa.shape[2:], kernel, stride, padding, dilation)
    if two:
        parallel_for(_max_pool2d_forward_2x2, xa.shape[0] * xa.shape[1], xa, outa, idxa, work=work)
    else:
        parallel_for(_max_pool2d_forward, xa.shape[0] * xa.shape[1], xa, outa, idxa, *kernel, *stride, *padding,
                     *dilation, work=work)


def max_pool2d_values_for(shape: Tuple[int, int, int, int], dtype: torch.dtype, kernel, stride, padding, dilation,
                          out_hw) -> Callable[[torch.Tensor], torch.Tensor]:
    """The function computing max pooling values alone (no indices) of inputs of ``shape`` and
    ``dtype``, for calls no gradient can flow through; built once per call signature."""
    two, work = _route(shape, out_hw, kernel, stride, padding, dilation)
    if _small(dtype, work):
        geometry = (WITNESS[dtype], *shape, *out_hw, *kernel, *stride, *padding, *dilation, two)
        return functools.partial(_from_address, _max_small, (*shape[:2], *out_hw), dtype, geometry)

    def values(x: torch.Tensor) -> torch.Tensor:
        x, out = x.contiguous(), _empty(x, out_hw)
        if out.numel():
            _max_pool(_np(x), out.numpy(), _NO_INDICES, kernel, stride, padding, dilation)
        return out
    return values


#: The index array of a values-only max pooling (the kernels write indices only into a non-empty one).
_NO_INDICES = np.empty((0, 0, 0, 0), dtype=np.int64)


def max_pool2d_backward(grad_out: torch.Tensor, indices: torch.Tensor, in_hw) -> torch.Tensor:
    oh, ow = grad_out.shape[2:]
    if grad_out.numel() and 2 * oh <= in_hw[0] and 2 * ow <= in_hw[1]:  # maybe a 2x2, stride-2 pooling's
        gin = _empty(grad_out, in_hw)
        ok = np.empty(_plane_count(gin), dtype=np.uint8)
        parallel_for(_max_pool2d_backward_blocks, ok.size, _np(grad_out), _np(indices), _np(gin), ok,
                     work=gin.numel())
        if ok.all():
            return gin
    gin = _zeros(grad_out, in_hw)
    if grad_out.numel():
        parallel_for(_max_pool2d_backward, _plane_count(gin), _np(grad_out), _np(indices), _np(gin), work=grad_out.numel())
    return gin


def avg_pool2d_forward(x: torch.Tensor, kernel, stride, padding, count_include_pad: bool, divisor: int,
                       out_hw) -> torch.Tensor:
    out = _empty(x, out_hw)
    if out.numel():
        two, work = _route(x.shape, out_hw, kernel, stride, padding, divisor=divisor)
        if two:
            parallel_for(_avg_pool2d_2x2, _plane_count(x), _np(x), out.numpy(), work=work)
        else:
            parallel_for(_avg_pool2d, _plane_count(x), _np(x), out.numpy(), *kernel, *stride, *padding,
                         bool(count_include_pad), int(divisor), False, work=work)
    return out


def avg_pool2d_forward_for(shape: Tuple[int, int, int, int], dtype: torch.dtype, kernel, stride, padding,
                           count_include_pad: bool, divisor: int, out_hw) -> Callable[[torch.Tensor], torch.Tensor]:
    """:func:`avg_pool2d_forward` for inputs of ``shape`` and ``dtype``, built once per call signature
    (the smallest calls run from addresses)."""
    two, work = _route(shape, out_hw, kernel, stride, padding, divisor=divisor)
    if _small(dtype, work):
        geometry = (WITNESS[dtype], *shape, *out_hw, *kernel, *stride, *padding, bool(count_include_pad),
                    int(divisor), two)
        return functools.partial(_from_address, _avg_small, (*shape[:2], *out_hw), dtype, geometry)
    return lambda x: avg_pool2d_forward(x.contiguous(), kernel, stride, padding, count_include_pad, divisor, out_hw)


def avg_pool2d_backward(grad_out: torch.Tensor, kernel, stride, padding, count_include_pad: bool, divisor: int,
                        in_hw) -> torch.Tensor:
    if grad_out.numel() and _whole_2x2(kernel, stride, padding, in_hw, grad_out.shape[2:]) and divisor in (0, 4):
        gin = _empty(grad_out, in_hw)
        parallel_for(_avg_pool2d_backward_2x2, _plane_count(gin), _np(grad_out), _np(gin), work=gin.numel())
        return gin
    gin = _zeros(grad_out, in_hw)
    if grad_out.numel():
        parallel_for(_avg_pool2d, _plane_count(gin), _np(gin), _np(grad_out), *kernel, *stride, *padding,
                     bool(count_include_pad), int(divisor), True, work=grad_out.numel() * kernel[0] * kernel[1])
    return gin


def adaptive_avg_pool2d_forward(x: torch.Tensor, out_hw) -> torch.Tensor:
    out = _empty(x, out_hw)
    if out.numel():
        parallel_for(_adaptive_avg_pool2d, _plane_count(x), _np(x), _np(out), False, work=x.numel())
    return out


def adaptive_avg_pool2d_backward(grad_out: torch.Tensor, in_hw) -> torch.Tensor:
    gin = _zeros(grad_out, in_hw)
    if grad_out.numel():
        parallel_for(_adaptive_avg_pool2d, _plane_count(gin), _np(gin), _np(grad_out), True, work=gin.numel())
    return gin
