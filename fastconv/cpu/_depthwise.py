"""Depthwise convolutions: each input channel read by its own output channels only.

A depthwise layer (``groups == C``, one input channel per group, ``m`` output channels per
group) does ``kh * kw`` multiply-adds per output, so it is bound by memory, not arithmetic:
the row and flat layouts first copy the whole input into their padded layout (a pass over
memory as long as the convolution itself), then read it back.  Here each task takes one
(image, channel) plane and does all of it while the plane is in cache:

1. the plane is copied into a per-task buffer in the flat layout of ``direct/flat`` -- padded,
   split into stride phases (:func:`fastconv.cpu._rows.pack_plane`), so every tap is a constant
   offset from an output position ``oy * wq + ox``;
2. the ``m`` output planes are computed over the whole flattened plane, tile by tile, by the
   register-blocked micro-kernel of :mod:`fastconv.cpu._direct` (the ``wq - ow`` padding
   columns of each row are computed too: 28 of 29 useful at 56x56, stride 2);
3. the rows are cropped into the NCHW output.

The input is read from memory once and the output written once.  The gradients work the same
way: :func:`weight` packs each input plane likewise and reduces it against the output-gradient
planes (a task per channel, over all images, in a fixed order); :func:`backward_input` splits
each plane's input gradient into stride phases, each a stride-1 correlation of the padded
output-gradient planes.  The sums multiply the zero padding like the other direct layouts (a
non-finite weight leaves a NaN there: see :func:`fastconv.cpu.conv2d._padding_mismatch`).

Measured (two threads, float32, against torch/oneDNN, forward / forward+backward): 8 x 144 x
56^2 3x3/2 0.79 / 1.16 (before, in the row layout: 1.88 / 2.02), 8 x 96 x 56^2 7x7 1.71 / 0.24,
8 x 512 x 14^2 3x3 1.35 / 1.36 (1.63 / 2.62; since, with the short rows cropped as vectors,
1.17 / 1.12-1.17); see ``benchmarks/CALIBRATION.md``.  Small planes (and large ones of 7x7 kernels)
run with a channel in each lane instead (:mod:`fastconv.cpu._depthwise_lanes`; the planner's
``DEPTHWISE_LANES_MAX_PIXELS``).
"""
from __future__ import annotations

import numpy as np

from .._numba import njit
from ._direct import _GEMM, _GEMM1, _GEMM4
from ._rows import pack_plane
from ._simd import copy_short, copy_vector, lane_sums
from ._wgrad import _DOT1, NRW

__all__ = ["forward", "backward_input", "weight"]

_COPY = copy_short()
_VEC = copy_vector()


@njit(cache=True, nogil=True)
def forward(x, Wp, offs, Bp, out, m, obs, mr, sy, sx, hq, wq, pt, pl, cols, t0, t1):  # pragma: no cover - numba
    """Planes [t0, t1) (``n * C + c``) of a depthwise convolution into NCHW ``out``.

    ``Wp``/``Bp`` are the weights and bias packed [c, o-block, tap, mr] / [c, o-block, mr]
    (:func:`fastconv.cpu._direct.pack_weights` with ``groups == C``; ``mr`` 8, 4 or 1);
    ``offs`` the taps' offsets in one plane's flat layout of ``sy x sx`` phases of ``hq x wq``.
    Output channel ``c * m + j`` reads input channel ``c``."""
    N, C, H, W = x.shape
    O, OH, OW = out.shape[1], out.shape[2], out.shape[3]
    K = offs.size
    L = 16 if x.itemsize == 4 else 8
    nv = 2 if mr == 8 else (4 if mr == 4 else 8)
    TW = nv * L
    flat = OH * wq
    span = -(-flat // TW) * TW
    img = sy * sx * hq * wq
    P = np.zeros(img + span + wq, dtype=x.dtype)  # slack: the last tile's lanes read past the plane
    Z = np.empty(mr * span, dtype=x.dtype)
    R = np.empty(2 * wq, dtype=x.dtype)
    xf = x.reshape(-1)
    of = out.reshape(-1)
    for t in range(t0, t1):
        n = t // C
        c = t - n * C
        pack_plane(xf, t * H * W, H, W, P, 0, sy, sx, hq, wq, pt, pl, cols, R)
        for ob in range(obs):
            gob = c * obs + ob
            mv = min(mr, m - ob * mr)
            for p0 in range(0, flat, TW):
                tv = min(TW, flat - p0)
                if mr == 8:
                    _GEMM(P, p0, Wp, gob * K * mr, offs, 0, K, Bp, gob * mr, Z, p0, span, mv, tv, 0)
                elif mr == 4:
                    _GEMM4(P, p0, Wp, gob * K * mr, offs, 0, K, Bp, gob * mr, Z, p0, span, mv, tv, 0)
                else:
                    _GEMM1(P, p0, Wp, gob * K * mr, offs, 0, K, Bp, gob * mr, Z, p0, span, mv, tv, 0)
            for j in range(mv):
                crop(Z, j * span, wq, span, of, ((n * O + c * m + ob * mr + j) * OH) * OW, OH, OW, L)


@njit(cache=True, nogil=True, inline="always")
def crop(Z, src, wq, span, of, dst, OH, OW, L):  # pragma: no cover - numba
    """of[dst + oy * OW + ox] = Z[src + oy * wq + ox] (``Z[src:src + span]`` one output plane at
    pitch ``wq``).  Rows of at least ``L``: loops of ``L`` element copies, then the rest of the row
    (compiled to scalar copies; whole-vector copies measured no faster there -- 8 x 32 x 112^2
    3x3 forward kernel 1.42-1.52 ms with the loops, 1.55-1.62 with vectors).  Shorter rows as one
    vector each (:func:`fastconv.cpu._simd.copy_vector`) that runs on into the next rows'
    first elements, which their copies (later, in order) overwrite, where it stays inside the plane
    and reads inside ``Z``'s plane; else one masked copy.  (8 x 512 x 14x14 3x3, forward kernel on
    two threads, runs alternating: 0.51-0.54 ms with the rows copied element by element, 0.45-0.54
    so -- a few percent.  The same vectors in the packing's rows measured slower than the
    compiler's loop there, which vectorises rows of runtime length.)"""
    if OW >= L:
        whole = OW - OW % L
        for oy in range(OH):
            d = np.uint64(dst + oy * OW)
            s = np.uint64(src + oy * wq)
            for v in range(0, whole, L):
                for l in range(L):
                    of[d + np.uint64(v + l)] = Z[s + np.uint64(v + l)]
            for ox in range(whole, OW):
                of[d + np.uint64(ox)] = Z[s + np.uint64(ox)]
        return
    for oy in range(OH):
        if oy * OW + L <= OH * OW and oy * wq + L <= span:
            _VEC(Z, src + oy * wq, of, dst + oy * OW)
        else:
            _COPY(Z, src + oy * wq, of, dst + oy * OW, OW)


@njit(cache=True, nogil=True)
def weight(x, g, offs, steps, dw, m, sy, sx, hq, wq, pt, pl, cols, t0, t1):  # pragma: no cover - numba
    """The weight gradient of a depthwise convolution for input channels [t0, t1) (each with its
    ``m`` output channels): dw[c*m + j, 0, ky, kx] = sum over images n and output pixels p of
    g[n, c*m + j, p] * (the padded input plane (n, c) at p's tap (ky, kx)).

    Per image the input plane is packed as in :func:`forward` and each output-gradient plane
    copied to the same flat positions (``oy * wq + ox``, zeros in the padding columns and past
    the plane); :func:`fastconv.cpu._wgrad` 's ``1 x NRW`` dot-product tile then adds every tap's
    products to vector accumulators (``offs``: the taps, padded to whole tiles by repeating the
    last; ``steps``: the vectors of positions).  Lanes and images are added in a fixed order, so
    the result does not depend on the threads.  The padding columns multiply zeros by whatever
    input they read (the caller sends non-finite input elsewhere)."""
    N, C, H, W = x.shape
    OH, OW = g.shape[2], g.shape[3]
    K = dw.shape[2] * dw.shape[3]
    kp = offs.size
    L = 16 if x.itemsize == 4 else 8
    flat = OH * wq
    nvec = steps.size
    span = nvec * L
    img = sy * sx * hq * wq
    P = np.zeros(img + span + wq, dtype=x.dtype)
    Gq = np.zeros(span, dtype=x.dtype)  # the padding columns and the tail stay zero
    R = np.empty(2 * wq, dtype=x.dtype)
    acc = np.empty(m * kp * L, dtype=x.dtype)
    sums = np.empty(m * kp, dtype=x.dtype)
    xf, gf, df = x.reshape(-1), g.reshape(-1), dw.reshape(-1)
    for c in range(t0, t1):
        acc[:] = 0
        for n in range(N):
            pack_plane(xf, (n * C + c) * H * W, H, W, P, 0, sy, sx, hq, wq, pt, pl, cols, R)
            for j in range(m):
                src = ((n * C + c) * m + j) * OH * OW
                for oy in range(OH):
                    d = np.uint64(oy * wq)
                    s = np.uint64(src + oy * OW)
                    for ox in range(np.uint64(OW)):
                        Gq[d + ox] = gf[s + ox]
                for kb in range(0, kp, NRW):
                    _DOT1(Gq, 0, 0, P, 0, offs, kb, steps, steps, nvec, acc, (j * kp + kb) * L)
        sums[:] = 0
        lane_sums(acc, sums)
        for j in range(m):
            for k in range(K):
                df[(c * m + j) * K + k] = sums[j * kp + k]


@njit(cache=True, nogil=True)
def gather_weights(w, widx, Wq, t0, t1):  # pragma: no cover - numba
    """Wq[c, f, t] = w[c, widx[f, t]] for the channels [t0, t1) (``w`` (C, m * kh * kw))."""
    for c in range(t0, t1):
        for f in range(widx.shape[0]):
            for t in range(widx.shape[1]):
                Wq[c, f, t] = w[c, widx[f, t]]


@njit(cache=True, nogil=True)
def backward_input(g, Wq, offs, ntaps, meta, Bp, dx, m, top, left, wq, span, t0, t1):  # pragma: no cover - numba
    """Planes [t0, t1) (``n * C + c``) of the input gradient of a depthwise convolution, any
    stride: the sum over its ``m`` output channels of each output-gradient plane spread back
    through the weights.

    The gradient splits into stride phases (:mod:`fastconv.cpu._phases`): the input pixels
    ``(y0 + i * sy, x0 + j * sx)`` of phase ``f`` each sum the taps of that phase only, from output
    positions at a constant offset per tap -- a stride-1 correlation.  Per plane, the ``m``
    output-gradient planes are copied, padded by ``top``/``left`` (and zeros after), to a flat
    buffer of pitch ``wq``; each phase is computed over its rows of that pitch by the
    micro-kernel of :func:`forward`, taps ``offs[f, :ntaps[f]]`` with weights
    ``Wq[c, f, :ntaps[f]]`` and the bias ``Bp[c]``, then written to its pixels of ``dx``.  ``meta[f]``
    is ``(y0, x0, rows, cols, sy, sx)``; phases no tap reaches hold the bias alone."""
    N, O, OH, OW = g.shape
    C, H, W = dx.shape[1], dx.shape[2], dx.shape[3]
    F, KM = offs.shape
    TW = 8 * (16 if g.itemsize == 4 else 8)
    gimg = span + wq  # one padded output-gradient plane, with a tile of slack
    Gp = np.zeros(m * gimg + TW, dtype=g.dtype)
    Z = np.empty(span + TW, dtype=g.dtype)
    gf, df = g.reshape(-1), dx.reshape(-1)
    of = offs.reshape(-1)
    wf = Wq.reshape(-1)
    for t in range(t0, t1):
        n = t // C
        c = t - n * C
        for j in range(m):
            src = (n * O + c * m + j) * OH * OW
            for oy in range(OH):
                d = np.uint64(j * gimg + (oy + top) * wq + left)
                s = np.uint64(src + oy * OW)
                for ox in range(np.uint64(OW)):
                    Gp[d + ox] = gf[s + ox]
        for f in range(F):
            y0, x0, rows, cols, sy, sx = meta[f]
            if rows <= 0 or cols <= 0:
                continue
            base = np.uint64(t * H * W + y0 * W + x0)
            if ntaps[f] == 0:
                for i in range(rows):
                    for jx in range(cols):
                        df[base + np.uint64(i * sy * W + jx * sx)] = Bp[c]
                continue
            flat = rows * wq
            for p0 in range(0, flat, TW):
                _GEMM1(Gp, p0, wf, (c * F + f) * KM, of, f * KM, ntaps[f], Bp, c, Z, p0, span, 1, min(TW, flat - p0), 0)
            for i in range(rows):
                d = base + np.uint64(i * sy * W)
                z = np.uint64(i * wq)
                step = np.uint64(sx)
                for jx in range(np.uint64(cols)):
                    df[d + jx * step] = Z[z + jx]
