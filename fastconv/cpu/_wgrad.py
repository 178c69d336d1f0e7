"""Weight gradients by register-blocked dot products (:func:`fastconv.cpu._simd.dot_tile`).

``dW[o, k] = sum_s sum_l G[o, s, l] * X[k, s, l]``: the output gradient of channel ``o`` and
the input seen by tap ``k = (c, ky, kx)``, both laid out so that one reduction step ``s`` is
one vector of lanes at a constant offset per channel (``G``) or per tap (``X``).  The steps
come in chunks small enough for the input they read to stay in L2 while every tile of
``dW`` takes its share; a task is one block of ``MRW`` output channels (all taps, all
chunks, in a fixed order), so the result does not depend on how tasks are spread over
threads.  Channels and taps are padded to
whole tiles (zero gradient rows; tap offsets repeated), and the caller crops.
"""
from __future__ import annotations

import numpy as np
from .._numba import njit

from ._reduce import finite
from ._simd import dot_tile, gather_tile, lane_sums, transpose_tile

__all__ = ["MRW", "NRW", "block_rows", "weight_tiles", "tap_groups", "pad_offsets", "MRG", "NVG", "gather_vectors", "gather_taps", "weight_gather", "image_channels_last", "channels_last", "lane_rows", "transpose_into"]

#: Output channels per weight-gradient tile.
MRW = 4
#: Taps per weight-gradient tile.
NRW = 6
#: Reduction steps (vectors of lanes) per chunk: the o-block's gradient rows of a chunk,
#: MRW x CHUNK vectors, stay in L1 while the chunk's taps stream past them.
CHUNK = 64
_DOT = dot_tile(MRW, NRW)
_DOT1 = dot_tile(1, NRW)


def pad_offsets(offs: np.ndarray, groups: int, k: int) -> np.ndarray:
    """Tap offsets [g, k] padded to [g, whole NRW tiles] by repeating the last tap."""
    kp = -(-k // NRW) * NRW
    out = np.empty((groups, kp), dtype=np.int64)
    o = offs.reshape(groups, k)
    out[:, :k] = o
    out[:, k:] = o[:, -1:]
    return out.reshape(-1)


@njit(cache=True, nogil=True)
def weight_tiles(G, gstride, X, offs, sg, sx, chunk, out, ogp, kp, kgroups, mrw, slots, t0, t1):  # pragma: no cover - numba
    """out[(g*ogp + o) * kp + k] = the reduction above, for the tasks [t0, t1) = (g, o-block, tap group)
    triples (``kgroups`` groups of tap tiles per o-block, so that thin layers still have tasks for
    every thread).

    ``G``'s channel ``g*ogp + o`` starts at ``(g*ogp + o) * gstride``; ``offs`` is flat [g, kp];
    ``sg``/``sx`` are the steps (offsets added to G's channel start and to the tap offset),
    taken ``chunk`` at a time: the o-block's gradient rows for a chunk stay in L1 while every
    k-block of the group passes over them.  Lane accumulators live in a per-task buffer until the end;
    each output element is summed by one task in a fixed order, whatever the threads.  o-blocks
    are ``mrw`` channels: :data:`MRW`, or 1 for one output channel per group (depthwise layers,
    which ``MRW``-channel blocks would pad to a quarter of useful work).

    With ``slots > 1`` the steps are cut into ``slots`` equal ranges, slot-major in the task
    order: task ``t`` sums the steps of slot ``t // (tasks per slot)`` into ``out[slot]`` (the
    caller adds the slots in order).  Threads take contiguous task ranges, so a thread then
    reads the images it packed itself (:func:`fastconv.cpu._rows.pack_rows` splits by image)
    instead of every image, half of them dirty in the other core's cache.
    """
    L = 64 // G.itemsize
    obs = ogp // mrw
    kbs = kp // NRW
    per = -(-kbs // kgroups)
    T = mrw * NRW * L
    acc = np.empty(per * T, dtype=G.dtype)
    tile = np.empty(mrw * NRW, dtype=G.dtype)
    size = out.shape[0] // slots
    tps = size // (ogp * kp) * obs * kgroups  # tasks per slot
    for t in range(t0, t1):
        slot = t // tps
        task = t - slot * tps
        base = slot * size
        lo = sg.shape[0] * slot // slots
        S = sg.shape[0] * (slot + 1) // slots
        gob = task // kgroups
        kb0 = (task - gob * kgroups) * per
        kb1 = min(kbs, kb0 + per)
        g = gob // obs
        o = g * ogp + (gob - g * obs) * mrw
        acc[:] = 0
        for s0 in range(lo, S, chunk):
            s1 = min(S, s0 + chunk)
            a = sg[s0:s1]
            b = sx[s0:s1]
            for kb in range(kb0, kb1):
                if mrw == 1:
                    _DOT1(G, o * gstride, gstride, X, 0, offs, g * kp + kb * NRW, a, b, s1 - s0, acc, (kb - kb0) * T)
                else:
                    _DOT(G, o * gstride, gstride, X, 0, offs, g * kp + kb * NRW, a, b, s1 - s0, acc, (kb - kb0) * T)
        for kb in range(kb0, kb1):
            tile[:] = 0
            lane_sums(acc[(kb - kb0) * T:(kb - kb0 + 1) * T], tile)
            for m in range(mrw):
                for r in range(NRW):
                    out[base + (o + m) * kp + kb * NRW + r] = tile[m * NRW + r]


def block_rows(og: int) -> int:
    """Output channels per :func:`weight_tiles` o-block for ``og`` per group: :data:`MRW`, or 1 when
    each group has one (depthwise layers: a 4-channel block would be three quarters padding)."""
    return 1 if og == 1 else MRW


def tap_groups(oblocks: int, kp: int, threads: int) -> int:
    """Tap-tile groups per o-block for :func:`weight_tiles`: one, unless the o-blocks are fewer
    than twice the threads (thin layers), then enough for about two tasks per thread."""
    if oblocks >= 2 * threads:
        return 1
    return max(1, min(kp // NRW, -(-2 * threads // oblocks)))


# --------------------------------------------------------------------------- gathered broadcasts

#: Taps per register tile of :func:`weight_gather`.
MRG = 8
#: Vectors of output channels per register tile of :func:`weight_gather`.
NVG = 2
_GATHER = gather_tile(MRG, NVG)
#: The one-vector tile (thin layers: no padding channels), twice the taps.
_GATHER1 = gather_tile(2 * MRG, 1)
#: The three-vector tile of weight gradients of deep layers: 24 accumulators, 11 loads per 24
#: multiply-adds (8 taps x 3 vectors of output channels).
_GATHER3 = gather_tile(MRG, 3)
#: Output channels (in vectors of lanes) from which weight gradients use three-vector tiles.
#: Two threads, float32, ms, two / three vectors: 16 x 512 x 7x7 -> 512 19.3-20.9 / 14.3-14.7;
#: 8 x 128 x 56x56 -> 128 3x3/2 8.7-9.1 / 7.9-8.4; but 4 x 128 and 4 x 256 x 8x8 -> 256 0.70-0.83 /
#: 0.91-0.99 and 1.44-1.55 / 1.56-1.80 (a 256-channel row pads to 288); forward gathers gained
#: nothing from three vectors (16 x 512 x 7x7: 13.0 / 12.9).
WIDE_VECTORS = 24
#: Taps of the four-vector tile (24 accumulators, 12 loads per 24 multiply-adds) that weight
#: gradients of 64, 128 and 256 output channels use: one o-tile reads each output-gradient row
#: once per tap tile for 64 channels.  Two threads, float32, ms, two / four vectors (two runs):
#: 128 x 32 x 16x16 -> 64 4.54-4.31 / 4.31-4.13; 128 x 64 x 8x8 -> 128 4.14-4.03 / 3.95-3.91;
#: 4 x 256 x 16x16 -> 128 2.19-2.10 / 2.12-2.02; 4 x 64 x 32x32 -> 64 1.11-1.04 / 1.06-1.02;
#: 4 x 256 x 8x8 -> 256 1.30 / 1.31-1.33.
GATHER4_TAPS = 6
_GATHER4 = gather_tile(GATHER4_TAPS, 4)


def gather_vectors(o: int, dtype, wide: bool = False) -> int:
    """Vectors of output channels per :func:`weight_gather` (and forward gather) tile: one for
    ``o`` up to one vector's lanes (16 float32: a two-vector tile would be half padding), else
    ``NVG`` -- or, with ``wide`` (weight gradients), four for whole four-vector tiles below
    :data:`WIDE_VECTORS` vectors (:data:`GATHER4_TAPS`) and three from there."""
    lanes = 64 // np.dtype(dtype).itemsize
    if o <= lanes:
        return 1
    if wide and o % (4 * lanes) == 0 and o < WIDE_VECTORS * lanes:
        return 4
    return 3 if wide and o >= WIDE_VECTORS * lanes else NVG


@njit(cache=True)
def gather_taps(nv: int) -> int:  # pragma: no cover - numba (weight_gather calls it too)
    """Taps per :func:`weight_gather` tile of ``nv`` vectors (``MRG`` x 2 or 3 vectors,
    :data:`GATHER4_TAPS` x 4, ``2 MRG`` x 1)."""
    return 2 * MRG if nv == 1 else GATHER4_TAPS if nv == 4 else MRG


_TRANSPOSE = transpose_tile()


@njit(cache=True, nogil=True)
def weight_gather(A, aoff, sa, B, sb, chunk, groups_k, nv, outT, t0, t1):  # pragma: no cover - numba
    """outT[s, k, o] = sum_r A[aoff[k] + sa[r]] * B[sb[r] + o] over slot ``s``'s steps, for the tasks [t0, t1).

    The reduction steps ``r`` are the valid (image, pixel) pairs of the layer, so no lane is
    ever wasted or multiplied by a stray input.  ``B`` holds the output gradient channel-last
    (one row of ``opad`` channels per step, ``sb[r]`` its start); ``A`` is the packed input,
    ``aoff`` the tap offsets padded to whole tiles.  A task is one ``nv * L``-wide tile of
    output channels (:func:`gather_vectors`) times a group of ``groups_k`` tap tiles
    (:func:`gather_taps` taps each); it walks the steps ``chunk`` at
    a time, so that a chunk of ``B`` stays in L2 while every tap tile of the group passes
    over it.  Each tile sums its steps in order: the result does not depend on the threads.

    ``outT`` is ``(slots, kp, opad)``: the steps are cut into ``slots`` equal ranges, slot-major
    in the task order, each summed into its own ``outT[s]`` (the caller adds them in order) --
    as :func:`weight_tiles` does, so that a thread reads the images it packed.
    """
    L = 64 // A.itemsize
    TW = nv * L
    mrg = gather_taps(nv)
    slots, kp, opad = outT.shape
    kbs = kp // mrg
    ngroups = -(-kbs // groups_k)
    ntt = opad // TW
    tps = ntt * ngroups  # tasks per slot
    for t in range(t0, t1):
        slot = t // tps
        task = t - slot * tps
        lo = sa.shape[0] * slot // slots
        R = sa.shape[0] * (slot + 1) // slots
        flat = outT[slot].reshape(-1)
        ot = task // ngroups
        kg = task - ot * ngroups
        kb0 = kg * groups_k
        kb1 = min(kbs, kb0 + groups_k)
        for r0 in range(lo, R, chunk):
            r1 = min(R, r0 + chunk)
            a = sa[r0:r1]
            b = sb[r0:r1]
            for kb in range(kb0, kb1):
                if nv == NVG:
                    _GATHER(A, 0, aoff, kb * mrg, a, B, ot * TW, b, r1 - r0, flat, kb * mrg * opad + ot * TW, opad,
                            r0 > lo)
                elif nv == 4:
                    _GATHER4(A, 0, aoff, kb * mrg, a, B, ot * TW, b, r1 - r0, flat, kb * mrg * opad + ot * TW, opad,
                             r0 > lo)
                elif nv == 3:
                    _GATHER3(A, 0, aoff, kb * mrg, a, B, ot * TW, b, r1 - r0, flat, kb * mrg * opad + ot * TW, opad,
                             r0 > lo)
                else:
                    _GATHER1(A, 0, aoff, kb * mrg, a, B, ot * TW, b, r1 - r0, flat, kb * mrg * opad + ot * TW, opad,
                             r0 > lo)


@njit(cache=True, nogil=True)
def pad_planes(g, G, og, t0, t1):  # pragma: no cover - numba
    """G[n, j] = g[n, j] (rows zero-padded to G's width) for j < og, zero planes past it, for the
    planes [t0, t1) of ``G`` (N, P, OH, OWP) -- ``P`` a multiple of ``ogp``, channel ``j`` of block
    ``b`` read from ``g[n, b * og + j]`` (N, groups * og, OH, OW)."""
    N, P, OH, OWP = G.shape
    OW = g.shape[3]
    ogp = P // (g.shape[1] // og)
    for t in range(t0, t1):
        n = t // P
        p = t - n * P
        b = p // ogp
        j = p - b * ogp
        for y in range(OH):
            row = G[n, p, y]
            if j < og:
                src = g[n, b * og + j, y]
                for x in range(OW):
                    row[x] = src[x]
                for x in range(OW, OWP):
                    row[x] = 0
            else:
                for x in range(OWP):
                    row[x] = 0


@njit(cache=True, nogil=True)
def slots_into(out, slots, ogp, kp, og, k, dw, t0, t1):  # pragma: no cover - numba
    """dw[r, :k] = out[0, r', :k] + out[1, r', :k] + ... (slots in order) for the weight rows
    [t0, t1) = (group, channel < og) pairs, ``r' = g * ogp + o`` the row in the ``kp``-wide
    partial sums ``out`` (flat, ``slots`` of them)."""
    size = out.size // slots
    for r in range(t0, t1):
        g = r // og
        src = (g * ogp + r - g * og) * kp
        for j in range(k):
            dw[r * k + j] = out[src + j]
        for s in range(1, slots):
            for j in range(k):
                dw[r * k + j] += out[s * size + src + j]


@njit(cache=True, nogil=True)
def add_slots(src, t0, t1):  # pragma: no cover - numba
    """src[0, k] += src[1, k] + ... (in order) for the rows [t0, t1) of ``src`` (slots, K, O),
    C-contiguous: partial sums added row by row, so the result does not depend on the threads."""
    for s in range(1, src.shape[0]):
        for k in range(t0, t1):
            a = src[0, k]
            b = src[s, k]
            for o in range(a.shape[0]):
                a[o] += b[o]


@njit(cache=True, nogil=True)
def transpose_into(src, dst, bad, t0, t1):  # pragma: no cover - numba
    """dst[o, k] = src[k, o] for the blocks [t0, t1) of ``L`` rows (one cache line of lanes) of 2-D
    ``dst`` (O, K); ``src`` is (>= K, >= O), C-contiguous.  Whole L x L blocks go through register
    transposes.  ``bad[t] = 1`` where block ``t``'s rows of ``dst`` hold an infinity or a NaN (read
    back while in cache), else 0."""
    O, K = dst.shape
    S = src.shape[1]
    L = 64 // src.itemsize
    sf = src.reshape(-1)
    df = dst.reshape(-1)
    kfull = K - K % L
    r1 = min(t1 * L, O)
    for o0 in range(t0 * L, r1, L):
        o1 = min(o0 + L, r1)
        kleft = 0
        if o1 == o0 + L:
            for k0 in range(0, kfull, L):
                _TRANSPOSE(sf, k0 * S + o0, S, df, o0 * K + k0, K)
            kleft = kfull
        for o in range(o0, o1):
            for k in range(kleft, K):
                df[o * K + k] = sf[k * S + o]
        bad[o0 // L] = 0 if finite(df[o0 * K:o1 * K]) else 1


@njit(cache=True, nogil=True)
def image_channels_last(gf, src, O, HW, B, dst, rstride, opad):  # pragma: no cover - numba
    """``B[dst + p*rstride + o] = gf[src + o*HW + p]`` for one image's ``(O, HW)`` planes, and zero
    for the channels ``O <= o < opad``; whole ``L x L`` (channel x pixel) blocks go through
    register transposes."""
    L = 64 // gf.itemsize
    ofull = O - O % L
    pfull = HW - HW % L
    for o0 in range(0, ofull, L):
        for p0 in range(0, pfull, L):
            _TRANSPOSE(gf, src + o0 * HW + p0, HW, B, dst + p0 * rstride + o0, rstride)
    for p in range(HW):
        row = dst + p * rstride
        start = ofull if p < pfull else 0
        for o in range(start, O):
            B[row + o] = gf[src + o * HW + p]
        for o in range(O, opad):
            B[row + o] = 0


@njit(cache=True, nogil=True)
def channels_last(g, B, opad, nstride, pstride, t0, t1):  # pragma: no cover - numba
    """B[(n*nstride + p*pstride) * opad + o] = g[n, o, p] for the images [t0, t1), channels past O zero.

    ``nstride=HW, pstride=1`` gives NHWC; ``nstride=1, pstride=N`` gives the (pixel, image) rows of
    unblocked lanes (:func:`image_channels_last` per image)."""
    N, O, H, W = g.shape
    HW = H * W
    gf = g.reshape(-1)
    for n in range(t0, t1):
        image_channels_last(gf, n * O * HW, O, HW, B, n * nstride * opad, pstride * opad, opad)


@njit(cache=True, nogil=True)
def lane_rows(Bn, OH, OW, BY, BX, bh, bw, count, B2, t0, t1):  # pragma: no cover - numba
    """B2[(p * count + lane) * opad:] = the channel row of ``Bn`` (channels last, (n, y, x) rows)
    at lane ``lane``'s pixel ``p`` of its block, for the block pixels [t0, t1); zero outside the output."""
    opad = B2.shape[1]
    for p in range(t0, t1):
        oy = p // bw
        ox = p - oy * bw
        for lane in range(count):
            n = lane // (BY * BX)
            b = lane - n * (BY * BX)
            y = (b // BX) * bh + oy
            x = (b % BX) * bw + ox
            dst = B2[p * count + lane]
            if y < OH and x < OW:
                src = Bn[(n * OH + y) * OW + x]
                for o in range(opad):
                    dst[o] = src[o]
            else:
                dst[:] = 0
