"""Small convolutions in one Numba call each: plain loops, no packing, no planning.

Below a few tens of thousands of multiply-adds the engine's set-up (packing, offset tables,
thread hand-offs: tens of microseconds of Python) costs more than the arithmetic, so the
planner sends such calls here.  Each pass is a direct sum over the taps that fall inside
the image (padding contributes nothing), accumulated in the tensor's dtype.
"""
from __future__ import annotations

from numba import carray

from .._numba import njit
from ._address import pointer_like

__all__ = ["forward", "forward_at", "backward_input", "backward_input_at", "backward_weight", "backward_weight_at"]


@njit(cache=True, nogil=True)
def forward(x, w, b, has_bias, sy, sx, pt, pl, dy, dx, groups, out):  # pragma: no cover - numba
    """out[n, o, oy, ox] = b[o] + sum w[o, c, ky, kx] * x[n, g*cg + c, oy*sy - pt + ky*dy, ox*sx - pl + kx*dx]."""
    N, C, H, W = x.shape
    O, cg, kh, kw = w.shape
    OH, OW = out.shape[2], out.shape[3]
    og = O // groups
    for n in range(N):
        for o in range(O):
            c0 = (o // og) * cg
            b0 = b[o] if has_bias else 0.0
            for oy in range(OH):
                for ox in range(OW):
                    acc = out.dtype.type(b0)
                    for c in range(cg):
                        for ky in range(kh):
                            iy = oy * sy - pt + ky * dy
                            if iy < 0 or iy >= H:
                                continue
                            for kx in range(kw):
                                ix = ox * sx - pl + kx * dx
                                if 0 <= ix < W:
                                    acc += x[n, c0 + c, iy, ix] * w[o, c, ky, kx]
                    out[n, o, oy, ox] = acc


@njit(cache=True, nogil=True)
def forward_at(xa, wa, ba, oa, wit, N, C, H, W, O, cg, kh, kw, OH, OW, has_bias, sy, sx, pt, pl, dy, dx,
               groups):  # pragma: no cover - numba
    """:func:`forward` on contiguous arrays at addresses (:mod:`fastconv.cpu._address`); ``ba`` is
    read only ``has_bias``."""
    x = carray(pointer_like(xa, wit), (N, C, H, W))
    w = carray(pointer_like(wa, wit), (O, cg, kh, kw))
    b = carray(pointer_like(ba, wit), (O if has_bias else 0,))
    out = carray(pointer_like(oa, wit), (N, O, OH, OW))
    forward(x, w, b, has_bias, sy, sx, pt, pl, dy, dx, groups, out)


@njit(cache=True, nogil=True)
def backward_input(g, w, b, has_bias, sy, sx, pt, pl, dy, dx, groups, dx_out):  # pragma: no cover - numba
    """dx_out = the adjoint of :func:`forward` applied to ``g`` (plus ``b`` per input channel)."""
    N, C, H, W = dx_out.shape
    O, cg, kh, kw = w.shape
    OH, OW = g.shape[2], g.shape[3]
    og = O // groups
    for n in range(N):
        for c in range(C):
            b0 = b[c] if has_bias else 0.0
            for iy in range(H):
                for ix in range(W):
                    dx_out[n, c, iy, ix] = b0
    for n in range(N):
        for o in range(O):
            c0 = (o // og) * cg
            for oy in range(OH):
                for ox in range(OW):
                    v = g[n, o, oy, ox]
                    for c in range(cg):
                        for ky in range(kh):
                            iy = oy * sy - pt + ky * dy
                            if iy < 0 or iy >= H:
                                continue
                            for kx in range(kw):
                                ix = ox * sx - pl + kx * dx
                                if 0 <= ix < W:
                                    dx_out[n, c0 + c, iy, ix] += v * w[o, c, ky, kx]


@njit(cache=True, nogil=True)
def backward_input_at(ga, wa, ba, da, wit, N, C, H, W, O, cg, kh, kw, OH, OW, has_bias, sy, sx, pt, pl, dy, dx,
                      groups):  # pragma: no cover - numba
    """:func:`backward_input` on contiguous arrays at addresses (``da``: the ``(N, C, H, W)`` input
    gradient; ``ba`` read only ``has_bias``)."""
    g = carray(pointer_like(ga, wit), (N, O, OH, OW))
    w = carray(pointer_like(wa, wit), (O, cg, kh, kw))
    b = carray(pointer_like(ba, wit), (C if has_bias else 0,))
    backward_input(g, w, b, has_bias, sy, sx, pt, pl, dy, dx, groups, carray(pointer_like(da, wit), (N, C, H, W)))


@njit(cache=True, nogil=True)
def backward_weight(x, g, sy, sx, pt, pl, dy, dx, groups, dw):  # pragma: no cover - numba
    """dw[o, c, ky, kx] = sum over n, oy, ox of g[n, o, oy, ox] * x[n, g*cg + c, oy*sy - pt + ky*dy, ...]."""
    N, C, H, W = x.shape
    O, cg, kh, kw = dw.shape
    OH, OW = g.shape[2], g.shape[3]
    og = O // groups
    for o in range(O):
        c0 = (o // og) * cg
        for c in range(cg):
            for ky in range(kh):
                for kx in range(kw):
                    acc = dw.dtype.type(0)
                    for n in range(N):
                        for oy in range(OH):
                            iy = oy * sy - pt + ky * dy
                            if iy < 0 or iy >= H:
                                continue
                            for ox in range(OW):
                                ix = ox * sx - pl + kx * dx
                                if 0 <= ix < W:
                                    acc += g[n, o, oy, ox] * x[n, c0 + c, iy, ix]
                    dw[o, c, ky, kx] = acc


@njit(cache=True, nogil=True)
def backward_weight_at(xa, ga, da, wit, N, C, H, W, O, cg, kh, kw, OH, OW, sy, sx, pt, pl, dy, dx,
                       groups):  # pragma: no cover - numba
    """:func:`backward_weight` on contiguous arrays at addresses (``da``: the ``(O, cg, kh, kw)`` gradient)."""
    x = carray(pointer_like(xa, wit), (N, C, H, W))
    g = carray(pointer_like(ga, wit), (N, O, OH, OW))
    backward_weight(x, g, sy, sx, pt, pl, dy, dx, groups, carray(pointer_like(da, wit), (O, cg, kh, kw)))
