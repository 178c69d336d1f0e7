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

from .._threads import parallel_for
from ._direct import MR, NV
from ._lanes import block_places
from ._reduce import finite
from ._scratch import scratch
from ._simd import copy_short, gemm_tile, transform2d, transpose_tile

__all__ = ["BT", "G", "AT", "pack_weights", "unpack_weight_grad", "forward", "weight"]

#: B^T (4x4), G (4x3), A^T (2x4) of F(2x2, 3x3).
BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=np.float64)
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=np.float64)
AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=np.float64)

_GEMM = gemm_tile(MR, NV)
_TRANSPOSE = transpose_tile()
_COPY = copy_short()


@njit(cache=True, nogil=True)
def _gwg_row(a, b, d, Up, o, stride):  # pragma: no cover - numba
    """One row of ``t G^T`` (``t`` = G w): four values ``stride`` apart."""
    Up[o] = a
    Up[o + stride] = 0.5 * (a + b + d)
    Up[o + 2 * stride] = 0.5 * (a - b + d)
    Up[o + 3 * stride] = d


@njit(cache=True, nogil=True)
def _pack_weights(w, transposed, flip, obs, Up, t0, t1):  # pragma: no cover - numba
    """``Up[xi, ob, c, m] = (G k G^T)[xi]`` for the o-blocks [t0, t1), in float64 scalars (straight-line
    code: the 3x3 kernel and its 4x3 half-transform stay in registers), rounded once; ``k`` is
    ``w[ob*MR + m, c]``, or ``w[c, ob*MR + m]`` when ``transposed``, rotated by 180 degrees when ``flip``
    (the input gradient's weights, read in place: a strided view would leave the native regions)."""
    O, C = (w.shape[1], w.shape[0]) if transposed else (w.shape[0], w.shape[1])
    stride = Up.shape[0] // 16
    a, d = (2, -1) if flip else (0, 1)  # the first row/column read and the step
    for ob in range(t0, t1):
        for c in range(C):  # the MR rows of one (xi, o-block, c) are adjacent: write them together
            for m in range(min(MR, O - ob * MR)):
                k = w[c, ob * MR + m] if transposed else w[ob * MR + m, c]
                w00, w01, w02 = float(k[a, a]), float(k[a, a + d]), float(k[a, a + 2 * d])
                w10, w11, w12 = float(k[a + d, a]), float(k[a + d, a + d]), float(k[a + d, a + 2 * d])
                w20, w21, w22 = float(k[a + 2 * d, a]), float(k[a + 2 * d, a + d]), float(k[a + 2 * d, a + 2 * d])
                base = (ob * C + c) * MR + m
                _gwg_row(w00, w01, w02, Up, base, stride)
                _gwg_row(0.5 * (w00 + w10 + w20), 0.5 * (w01 + w11 + w21), 0.5 * (w02 + w12 + w22), Up,
                         base + 4 * stride, stride)
                _gwg_row(0.5 * (w00 - w10 + w20), 0.5 * (w01 - w11 + w21), 0.5 * (w02 - w12 + w22), Up,
                         base + 8 * stride, stride)
                _gwg_row(w20, w21, w22, Up, base + 12 * stride, stride)
            for m in range(max(0, O - ob * MR), MR):  # the rows past O of the last block
                for xi in range(16):
                    Up[(ob * C + c) * MR + m + xi * stride] = 0


#: Elements between the 16 ``xi`` slices of the packed weights beyond their size: one cache line,
#: so that the 16 values of one kernel do not all map to one L1 set (a power-of-two slice
#: size made the packing 4x slower).
XI_PAD = 16


def pack_weights(w: np.ndarray, opad: int, flip: bool = False) -> np.ndarray:
    """``U = G w G^T`` for every (o, c), packed [xi, o-block, c, MR] (zero rows past O), flat, ``w``'s dtype,
    in the calling thread's scratch slot ``'wino_weights'``;
    slice ``xi`` starts at ``xi * (len(Up) // 16)`` (the slices are :data:`XI_PAD` elements apart).
    ``w`` (O, C, 3, 3) may be the channel-swapped view ``w.transpose(1, 0, 2, 3)`` of a contiguous
    array (the input gradient's): it is read in place, as are the kernels rotated by 180 degrees
    when ``flip``."""
    O, C = w.shape[0], w.shape[1]
    transposed = not w.flags.c_contiguous and w.transpose(1, 0, 2, 3).flags.c_contiguous
    base = w.transpose(1, 0, 2, 3) if transposed else np.ascontiguousarray(w)
    obs = opad // MR
    size = opad * C + XI_PAD
    Up = scratch("wino_weights", 16 * size, w.dtype)
    parallel_for(_pack_weights, obs, base, transposed, flip, obs, Up, work=16 * opad * C * 4)
    return Up


@njit(cache=True, nogil=True)
def _unpack_weight_grad(du, C, dw, t0, t1):  # pragma: no cover - numba
    """dw[o, c] = G^T dU[:, o, c] G (3x3) for the output channels [t0, t1), in float64 scalars."""
    for o in range(t0, t1):
        for c in range(C):
            for j in range(4):  # t = G^T dU, column j
                a, b, c2, d = float(du[j, o, c]), float(du[4 + j, o, c]), float(du[8 + j, o, c]), float(du[12 + j, o, c])
                r0, r1, r2 = a + 0.5 * (b + c2), 0.5 * (b - c2), 0.5 * (b + c2) + d
                if j == 0:
                    t00, t10, t20 = r0, r1, r2
                elif j == 1:
                    t01, t11, t21 = r0, r1, r2
                elif j == 2:
                    t02, t12, t22 = r0, r1, r2
                else:
                    t03, t13, t23 = r0, r1, r2
            for i in range(3):
                if i == 0:
                    a, b, c2, d = t00, t01, t02, t03
                elif i == 1:
                    a, b, c2, d = t10, t11, t12, t13
                else:
                    a, b, c2, d = t20, t21, t22, t23
                dw[o, c, i, 0] = a + 0.5 * (b + c2)
                dw[o, c, i, 1] = 0.5 * (b - c2)
                dw[o, c, i, 2] = 0.5 * (b + c2) + d


def unpack_weight_grad(du: np.ndarray, O: int, C: int, dw: np.ndarray) -> None:
    """dw[o, c] = G^T dU[:, o, c] G (3x3), for dU (16, opad, cpad), in float64."""
    parallel_for(_unpack_weight_grad, O, du, C, dw, work=O * C * 40)


# tile transforms on NV vectors of lanes: V = B^T d B, Y = A^T M A + bias, D = A dY A^T
_IN = transform2d(BT, BT, NV)
_OUT = transform2d(AT, AT, NV, add=True)
_GRAD = transform2d(AT.T, AT.T, NV)


@njit(cache=True, nogil=True)
def forward(P, Up, bias, out, bad, opad, BY, BX, bh, bw, t0, t1):  # pragma: no cover - numba
    """The convolution into the NCHW ``out`` from the lane layout ``P`` (:mod:`fastconv.cpu._lanes`:
    ``BY x BX`` blocks of ``bh x bw`` output pixels an image, even sizes), for the tasks [t0, t1) =
    (tile row of a block, lane tile) pairs.

    Per task, tile by tile along the row: the input tiles of every channel are transformed into an
    L2-resident ``V[xi, c, j]``; then for each block of ``MR`` output channels the 16 GEMMs over
    channels leave ``M[xi, m, j]`` in L1, transformed back (+ bias) into a band ``[o, 2 rows, bw, TW
    lanes]`` that stays in cache.  Each channel's band is then transposed into
    ``out`` by ``L x L`` (pixels x lanes) blocks: straight into place where a lane is a whole image
    (its two rows lie side by side in the plane), else through a register-sized tile whose rows are
    copied into each lane's block, inside the image.  (Through a full-size lane-layout result and a
    separate unpacking pass, 128 x 32 x 16x16 -> 64 wrote and read back 8 MB: the unpacking alone
    took 0.5-1 ms.)  ``Up`` is the transformed weights of :func:`pack_weights`; ``bias`` has O
    entries.  ``bad[o] = 1`` (uint8, one per channel, zeros) where channel ``o``'s band holds an
    infinity or a NaN (rows and lanes past the image included: they hold finite values or the bias)."""
    C, hb, wb, width = P.shape
    N, O, OH, OW = out.shape
    of = out.reshape(-1)
    L = 64 // P.itemsize
    TW = NV * L
    Pf = P.reshape(-1)
    plane = hb * wb * width
    ntl = width // TW
    obs = opad // MR
    ustride = Up.shape[0] // 16
    vs = C * TW + L  # V's xi slices, one vector apart beyond their size (a power-of-two stride put the
    #                  16 stores of each transformed tile into one L1 set)
    V = np.empty(16 * vs, dtype=P.dtype)
    M = np.empty(16 * MR * TW, dtype=P.dtype)
    offs = np.arange(C) * TW
    zeros = np.zeros(MR, dtype=P.dtype)
    pix = 2 * bw  # a band's pixels per channel and lane
    band = pix * TW
    B = np.empty(O * band + L * TW, dtype=P.dtype)  # (a transpose at a band's end reads L pixel rows)
    S = np.empty(L * L, dtype=P.dtype)
    HW = OH * OW
    count = N * BY * BX
    whole = BY * BX == 1 and bh == OH and bw == OW
    dst, rows, cols = block_places(out.shape, BY, BX, bh, bw)
    for task in range(t0, t1):
        ty = task // ntl
        l0 = (task - ty * ntl) * TW
        for tx in range(bw // 2):  # the tile row into the band
            pb = ((2 * ty) * wb + 2 * tx) * width + l0
            for c in range(C):
                _IN(Pf, c * plane + pb, wb * width, width, V, c * TW, 4 * vs, vs, 0.0)
            for ob in range(obs):
                for xi in range(16):
                    _GEMM(V, xi * vs, Up, xi * ustride + ob * C * MR, offs, 0, C, zeros, 0, M, xi * MR * TW, TW, MR,
                          TW, 0)
                for m in range(min(MR, O - ob * MR)):
                    o = ob * MR + m
                    _OUT(M, m * TW, 4 * MR * TW, MR * TW, B, o * band + 2 * tx * TW, bw * TW, TW, bias[o])
        for o in range(O):
            src = o * band
            if not finite(B[src:src + band]):
                bad[o] = 1
            for g in range(0, min(TW, count - l0), L):
                n0 = l0 + g  # the group's first lane
                nl = min(L, count - n0)
                if whole:  # lane = image: the band is 2 * bw pixels side by side in each plane
                    d = (n0 * O + o) * HW + 2 * ty * OW
                    for q0 in range(0, pix, L):
                        r = min(L, pix - q0)
                        if nl == L and r == L:
                            _TRANSPOSE(B, src + q0 * TW + g, TW, of, d + q0, O * HW)
                        else:
                            _TRANSPOSE(B, src + q0 * TW + g, TW, S, 0, L)
                            for i in range(nl):
                                _COPY(S, i * L, of, d + i * O * HW + q0, r)
                    continue
                for yr in range(2):
                    y = 2 * ty + yr
                    for x0 in range(0, bw, L):
                        _TRANSPOSE(B, src + (yr * bw + x0) * TW + g, TW, S, 0, L)
                        for i in range(nl):
                            l = n0 + i
                            if y < rows[l] and x0 < cols[l]:
                                _COPY(S, i * L, of, dst[l] + (o * OH + y) * OW + x0, min(L, cols[l] - x0))


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
