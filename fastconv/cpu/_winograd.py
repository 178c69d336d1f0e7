"""Winograd F(2x2, 3x3) on the lane layout: forward, input gradient and weight gradient.

A 3x3 stride-1 convolution computes each 2x2 output tile from a 4x4 input tile with 16
multiplications per (input, output) channel pair instead of 36:

    Y = A^T [ sum_c (G w G^T) * (B^T d B) ] A        (* elementwise, 4x4)

with the standard matrices of Lavin & Gray (2015), points 0, 1, -1.  In float32 its error
against a float64 reference stays within about 1.5x of a direct float32 sum (F(4x4, 3x3)
and F(3x3, 3x3) were measured at 4-28x and rejected).  The gradients reuse the same
transforms: the input gradient is this convolution of the output gradient with the flipped,
transposed weights, and the weight gradient is ``dw = G^T [ sum_t (A dY_t A^T) * (B^T d_t B) ] G``
summed over tiles ``t``.

Layout: the input is packed in the lane layout (:mod:`fastconv.cpu._lanes`) with blocks of
an even number of output pixels, so tile ``(ty, tx)`` of every lane reads
``P[c, 2ty:2ty+4, 2tx:2tx+4, lane]``.  Transformed tiles are ``V[xi, c, t]`` with ``t = tp * width
+ lane`` (``tp`` the tile position in a block): every GEMM over channels is the broadcast
micro-kernel of :mod:`fastconv.cpu._simd` with vectors over ``t``.
"""
from __future__ import annotations

import numpy as np
from .._numba import njit

from ._direct import MR, NV
from ._simd import gemm_tile, transform2d, transpose_tile

__all__ = ["BT", "G", "AT", "pack_weights", "unpack_weight_grad", "forward", "weight"]

#: B^T (4x4), G (4x3), A^T (2x4) of F(2x2, 3x3).
BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=np.float64)
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=np.float64)
AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=np.float64)

_GEMM = gemm_tile(MR, NV)
_TRANSPOSE = transpose_tile()


@njit(cache=True, nogil=True)
def _transform3(w, u, t):  # pragma: no cover - numba
    """u (4, 4) = G w G^T for one 3x3 ``w``, in float64 (``t``: (4, 3) float64 scratch)."""
    for j in range(3):
        a, b, c = float(w[0, j]), float(w[1, j]), float(w[2, j])
        t[0, j] = a
        t[1, j] = 0.5 * (a + b + c)
        t[2, j] = 0.5 * (a - b + c)
        t[3, j] = c
    for i in range(4):
        a, b, c = t[i, 0], t[i, 1], t[i, 2]
        u[i, 0] = a
        u[i, 1] = 0.5 * (a + b + c)
        u[i, 2] = 0.5 * (a - b + c)
        u[i, 3] = c


@njit(cache=True, nogil=True)
def pack_weights(w, opad):  # pragma: no cover - numba
    """``U = G w G^T`` for every (o, c), packed [xi, o-block, c, MR] (zero rows past O), flat, ``w``'s dtype."""
    O, C = w.shape[0], w.shape[1]
    obs = opad // MR
    Up = np.zeros(16 * opad * C, dtype=w.dtype)
    u = np.empty((4, 4))
    t = np.empty((4, 3))
    for o in range(O):
        ob = o // MR
        m = o - ob * MR
        for c in range(C):
            _transform3(w[o, c], u, t)
            for xi in range(16):
                Up[((xi * obs + ob) * C + c) * MR + m] = u[xi // 4, xi % 4]
    return Up


@njit(cache=True, nogil=True)
def unpack_weight_grad(du, O, C, dw):  # pragma: no cover - numba
    """dw[o, c] = G^T dU[:, o, c] G (3x3), for dU (16, opad, cpad), in float64."""
    t = np.empty((3, 4))
    for o in range(O):
        for c in range(C):
            for j in range(4):
                a, b, c2, d = float(du[j, o, c]), float(du[4 + j, o, c]), float(du[8 + j, o, c]), float(du[12 + j, o, c])
                t[0, j] = a + 0.5 * (b + c2)
                t[1, j] = 0.5 * (b - c2)
                t[2, j] = 0.5 * (b + c2) + d
            for i in range(3):
                a, b, c2, d = t[i, 0], t[i, 1], t[i, 2], t[i, 3]
                dw[o, c, i, 0] = a + 0.5 * (b + c2)
                dw[o, c, i, 1] = 0.5 * (b - c2)
                dw[o, c, i, 2] = 0.5 * (b + c2) + d


# tile transforms on NV vectors of lanes: V = B^T d B, Y = A^T M A + bias, D = A dY A^T
_IN = transform2d(BT, BT, NV)
_OUT = transform2d(AT, AT, NV, add=True)
_GRAD = transform2d(AT.T, AT.T, NV)


@njit(cache=True, nogil=True)
def forward(P, Up, bias, Y, opad, tbw, ntp, t0, t1):  # pragma: no cover - numba
    """Y (O, bh, bw, width) = the convolution, for the tasks [t0, t1) = (tile position, lane tile) chunks.

    Per chunk: the input tiles of every channel are transformed into an L2-resident
    ``V[xi, c, j]``; then for each block of ``MR`` output channels the 16 GEMMs over channels
    leave ``M[xi, m, j]`` in L1, transformed back into ``Y`` at once.  ``Up`` is the
    transformed weights packed [xi, o-block, c, MR]; ``bias`` has O entries.
    """
    C, hb, wb, width = P.shape
    O, bh, bw = Y.shape[0], Y.shape[1], Y.shape[2]
    plane = hb * wb * width
    yplane = bh * bw * width
    Pf = P.reshape(-1)
    Yf = Y.reshape(-1)
    L = 64 // P.itemsize
    TW = NV * L
    ntl = width // TW
    obs = opad // MR
    V = np.empty(16 * C * TW, dtype=P.dtype)
    M = np.empty(16 * MR * TW, dtype=P.dtype)
    offs = np.arange(C) * TW
    zeros = np.zeros(MR, dtype=P.dtype)
    for task in range(t0, t1):
        tp = task // ntl
        l0 = (task - tp * ntl) * TW
        ty = tp // tbw
        tx = tp - ty * tbw
        yb = ((2 * ty) * bw + 2 * tx) * width + l0
        pb = ((2 * ty) * wb + 2 * tx) * width + l0
        for c in range(C):
            _IN(Pf, c * plane + pb, wb * width, width, V, c * TW, 4 * C * TW, C * TW, 0.0)
        for ob in range(obs):
            for xi in range(16):
                _GEMM(V, xi * C * TW, Up, (xi * obs + ob) * C * MR, offs, 0, C, zeros, 0, M, xi * MR * TW, TW, MR,
                      TW, 0)
            for m in range(min(MR, O - ob * MR)):
                o = ob * MR + m
                _OUT(M, m * TW, 4 * MR * TW, MR * TW, Yf, o * yplane + yb, bw * width, width, bias[o])


@njit(cache=True, nogil=True)
def weight(P, Gl, dU, C, slots, s0, s1):  # pragma: no cover - numba
    """Partial weight gradients ``dU[slot] (16, opad, cpad)`` for the slots [s0, s1).

    Slot ``s`` sums the chunks (tile position, lane tile) ``s, s + slots, ...`` in order:
    input tiles transformed and transposed to ``Vt[xi, j, c]``, gradient tiles transformed
    and packed ``Dp[xi, o-block, j, MR]``, then ``dU[xi, o, c] += sum_j Dp * Vt`` by the
    broadcast micro-kernel in accumulate mode (vectors over channels).  ``Gl`` is the output
    gradient in the lane layout (opad, bh, bw, width), zero past the real channels.
    """
    opad = Gl.shape[0]
    C_, hb, wb, width = P.shape
    plane = hb * wb * width
    Pf = P.reshape(-1)
    Gf = Gl.reshape(-1)
    L = 64 // P.itemsize
    TW = NV * L
    ntl = width // TW
    nslots = dU.shape[0]
    cpad = dU.shape[3]
    bh = Gl.shape[1]
    bw = Gl.shape[2]
    gplane = bh * bw * width
    tbw = bw // 2
    ntp = (bh // 2) * tbw
    chunks = ntp * ntl
    obs = opad // MR
    V = np.zeros(16 * cpad * TW, dtype=P.dtype)
    Vt = np.empty(16 * TW * cpad, dtype=P.dtype)
    D = np.empty(16 * opad * TW, dtype=P.dtype)
    Dp = np.empty(16 * opad * TW, dtype=P.dtype)
    offs = np.arange(TW) * cpad
    zeros = np.zeros(MR, dtype=P.dtype)
    for slot in range(s0, s1):
        dUs = dU[slot].reshape(-1)
        dUs[:] = 0
        for chunk in range(slot, chunks, nslots):
            tp = chunk // ntl
            l0 = (chunk - tp * ntl) * TW
            ty = tp // tbw
            tx = tp - ty * tbw
            pb = ((2 * ty) * wb + 2 * tx) * width + l0
            for c in range(C):
                _IN(Pf, c * plane + pb, wb * width, width, V, c * TW, 4 * cpad * TW, cpad * TW, 0.0)
            for xi in range(16):  # V[xi, c, j] -> Vt[xi, j, c], L x L blocks
                for c0 in range(0, cpad, L):
                    for j0 in range(0, TW, L):
                        _TRANSPOSE(V, (xi * cpad + c0) * TW + j0, TW, Vt, (xi * TW + j0) * cpad + c0, cpad)
            gb = ((2 * ty) * bw + 2 * tx) * width + l0
            for o in range(opad):
                _GRAD(Gf, o * gplane + gb, bw * width, width, D, o * TW, 4 * opad * TW, opad * TW, 0.0)
            for xi in range(16):  # D[xi, o, j] -> Dp[xi, o-block, j, m]
                for o in range(opad):
                    ob = o // MR
                    m = o - ob * MR
                    src = (xi * opad + o) * TW
                    dst = (xi * obs + ob) * TW * MR + m
                    for j in range(TW):
                        Dp[dst + j * MR] = D[src + j]
            for xi in range(16):
                for ob in range(obs):
                    for ct in range(0, cpad, TW):
                        _GEMM(Vt, xi * TW * cpad + ct, Dp, (xi * obs + ob) * TW * MR, offs, 0, TW, zeros, 0, dUs,
                              (xi * opad + ob * MR) * cpad + ct, cpad, MR, TW, 1)
