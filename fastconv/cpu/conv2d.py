"""CPU backend of conv2d: direct register-blocked kernels, Winograd and im2col, chosen by a planner.

The backend contract is :class:`fastconv.ops.conv2d.Backend`.  Every pass -- forward,
gradient w.r.t. the input, gradient w.r.t. the weight -- asks :func:`plan` which algorithm
and layout to run (see :mod:`fastconv.cpu.conv_plan` for the rules and how they were
measured), then runs it on the CPU thread pool:

* ``direct/small`` (:mod:`~fastconv.cpu._small`): tiny problems, plain loops in one call;
* ``direct/rows`` (:mod:`~fastconv.cpu._rows`): pixels of an output row in the vector lanes;
* ``direct/flat``: the row kernels over whole padded planes taken as single rows;
* ``direct/lanes`` (:mod:`~fastconv.cpu._lanes`): images (or image blocks) in the lanes;
* ``direct/depthwise`` (:mod:`~fastconv.cpu._depthwise`): one input channel per group, plane by
  plane, each packed, computed and cropped while it is in cache;
* ``winograd/lanes`` (:mod:`~fastconv.cpu._winograd`): F(2x2, 3x3) for 3x3 stride-1 layers;
* ``im2col`` (:mod:`~fastconv.cpu._im2col`): columns + BLAS;
* ``patch`` (:mod:`~fastconv.cpu._patch`): kernels that tile the input, as 1x1 convolutions of
  pixel blocks.

The direct kernels share one register-blocked micro-kernel (:mod:`~fastconv.cpu._simd`);
the gradient w.r.t. the input of a stride-1 convolution is a convolution of the output
gradient with the flipped, transposed weights, and a strided one splits into one such
convolution per stride phase.  Weight gradients reduce over images and pixels in a fixed
order per output tile, so every result is deterministic whatever the number of threads.
Layouts that compute a few throw-away lanes make the weight gradient multiply zeros by
whatever input those lanes see; when the input holds an infinity or a NaN that would not
be torch's NaN, so non-finite inputs go to the exact im2col path instead -- unless the
reduction has no such lanes (gathered, or rows of whole vectors).  Winograd, whose
transforms mix neighbouring pixels, checks its own output and leaves a non-finite one to the
direct layouts; input gradients of non-finite weights scatter through im2col (the direct
layouts would multiply the output gradient's zero padding by them: NaN where torch has none).

A planned pass (not the tiny ones) is recorded on its second call with the same signature and
replayed from then on (:mod:`fastconv._programs`): its packing, kernels and unpacking in one
compiled call, its data checks (non-finite weights, Winograd's result) asked again in compiled
code.  So everything a pass does to data runs in kernels -- the bias and weight packings, the
crops, the partial sums -- and decisions on data go through :func:`all_finite` or
:func:`fastconv._programs.check`; a pass that breaks this (the BLAS products of 1x1 and patch
convolutions) fails the recording's validation and keeps running as written.
"""
from __future__ import annotations

import functools
import math
import threading
import weakref
from typing import NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
from .._numba import njit

from .. import _programs
from .._threads import num_threads, parallel_for
from . import (_depthwise, _depthwise_lanes, _direct, _gather, _im2col, _lanes, _outputs, _patch, _phases, _rows, _small,
               _wgrad, _winograd)
from ._address import WITNESS
from ._numpy import view as _np
from ._reduce import finite, finite_chunks
from ._scratch import scoped, scratch
from ._simd import SUM_CHAINS, sums
from .conv_plan import (ROWS_MIN_WIDTH, SMALL_MACS, Geometry, Plan, forced_name, forcing, gathered, gathered_by_group,
                        geometry, one_group, plan, pointwise, rows_blocking)

#: The backend contract (:class:`fastconv.ops.conv2d.Backend`); everything else here is private.
__all__ = ["conv2d_forward", "conv2d_backward_input", "conv2d_backward_weight", "conv2d_bias_grad"]


_SUMS = sums()

#: Arrays from this many elements are scanned for non-finite values on the thread team: below it
#: one thread is faster, weights and weight gradients being in cache (two threads, float32,
#: 128 x 128 x 3x3: 12 us in one scan against 23 us on two, plus the hand-off in a training
#: step; 256 x 256 x 3x3: 76 against 59 us).
SCAN_PARALLEL_MIN = 1 << 18


def all_finite(a: np.ndarray) -> bool:
    """Whether ``a`` holds no infinity and no NaN (a transposed view is read in place, not copied;
    a large array in chunks on the thread team: 256 x 256 x 3x3 float32 weights 56 -> 33 us hot).
    A decision on data: a recorded pass asks it again on every replay (:func:`fastconv._programs.check`)."""
    return _programs.check(_programs.FINITE, a, _scan_finite)


def _no_flags(a: np.ndarray) -> bool:
    """Whether no flag of ``a`` (written by a kernel) is set (a recorded check, as :func:`all_finite`)."""
    return not a.any()


def _scan_finite(a: np.ndarray) -> bool:
    if not a.flags.c_contiguous:
        t = a.transpose(np.argsort([-abs(s) for s in a.strides], kind="stable"))
        if t.flags.c_contiguous:
            a = t
    flat = a.reshape(-1)
    if flat.size < SCAN_PARALLEL_MIN:  # one scan, no chunk flags and no hand-off
        return bool(finite(flat))
    chunks = 4 * num_threads()
    ok = np.empty(chunks, dtype=np.uint8)
    parallel_for(finite_chunks, chunks, flat, -(-flat.size // chunks), ok, work=flat.size)
    return bool(ok.all())


# --------------------------------------------------------------------------- direct forward


def _tap_order(offs: np.ndarray, geo: Geometry, flip: bool) -> np.ndarray:
    """Tap offsets (flat [g, k], ``k = (c, ky, kx)``) in the packed weights' order: as they are, or,
    with ``flip``, each channel's taps reversed -- the weights then apply rotated by 180 degrees
    (an input gradient) while they are packed unrotated, a strided copy with no negative strides."""
    if not flip:
        return offs
    return np.ascontiguousarray(offs.reshape(-1, geo.kh * geo.kw)[:, ::-1]).reshape(-1)  # the kernels read it raw


def _tile(dtype) -> int:
    return _direct.NV * (64 // np.dtype(dtype).itemsize)


def _forward_pointwise(xa, wa, ba, geo: Geometry, outa) -> None:
    """A 1x1 convolution straight from the NCHW planes: ungrouped, one batched product ``W @ x[n]``
    on torch's BLAS (the OpenMP team the kernels use) into the output, then the bias; grouped,
    each image is one "row" of ``H * W`` pixels for the direct kernel.

    The product wins on every measured shape -- two threads, float32, ms, direct against product:
    8 x 256 x 56x56 -> 64 7.40 / 2.36, 8 x 64 x 56x56 -> 64 2.71 / 0.65, 4 x 256 x 8x8 -> 512 (the
    UNet's ConvTranspose2d(256, 128, 2, 2) as blocks) 0.33 / 0.19, 16 x 512 x 14x14 -> 128 2.23 /
    1.49, 32 x 128 x 28x28 -> 512 27.1 / 23.2 -- as the register-blocked kernel streams all
    ``C`` input rows from L2 once per 8 output channels.

    In the direct kernel a partial last tile reads up to a tile past a plane's end: into the next
    image for all but the last image, which then runs from a copy with that much slack.
    """
    hw = geo.h * geo.w
    if geo.groups == 1:
        out3 = torch.from_numpy(outa).view(geo.n, geo.o, hw)
        w2 = torch.from_numpy(wa.reshape(geo.o, geo.c))  # (input gradient: a transposed view, which BLAS reads as is)
        torch.matmul(w2, torch.from_numpy(xa).view(geo.n, geo.c, hw), out=out3)
        if ba is not None:
            out3.add_(torch.from_numpy(ba).view(1, geo.o, 1))
        return
    mr, nv = rows_blocking(geo.og, hw, xa.dtype)
    tw = nv * (64 // xa.itemsize)
    img = geo.c * hw
    offs = (np.arange(geo.c, dtype=np.int64) * hw)
    wp = _direct.pack_weights(wa, geo.groups, mr)
    bp = _direct.pack_bias(ba, geo.o, geo.groups, xa.dtype, mr)
    obs = _direct.blocks(geo.og, mr)
    out = outa.reshape(geo.n, geo.o, 1, hw)
    flat = xa.reshape(-1)
    whole = geo.n if hw % tw == 0 else geo.n - 1  # images whose tiles stay inside the array
    if whole:
        parallel_for(_direct.forward_rows, whole * geo.groups * obs, flat, wp, offs, bp, out[:whole], geo.og,
                     obs, geo.k, img, 0, mr, macs=whole * geo.o * hw * geo.k)
    if whole == geo.n:
        return
    last = np.zeros(img + tw, dtype=xa.dtype)
    last[:img] = flat[(geo.n - 1) * img:]
    parallel_for(_direct.forward_rows, geo.groups * obs, last, wp, offs, bp, out[-1:], geo.og, obs, geo.k, img, 0,
                 mr, macs=geo.o * hw * geo.k)


#: Weights of one tap chunk of the row-layout forward, all o-blocks of a group (bytes; 0: no chunking).
ROWS_KCHUNK_BYTES = 24576


def _forward_rows(xa, wa, ba, geo: Geometry, outa, flip: bool = False) -> None:
    """Direct convolution in the row layout (see :func:`fastconv.cpu._direct.forward_rows`)."""
    if pointwise(geo):
        _forward_pointwise(xa, wa, ba, geo, outa)  # one tap: nothing to flip
        return
    mr, nv = rows_blocking(geo.og, geo.ow, xa.dtype)
    tw = nv * (64 // xa.itemsize)
    rows = _rows.plan_rows(geo.c, geo.rows_read, geo.cols_read, geo.stride, 0, 2 * tw)
    X = _rows.pack_rows(xa, rows, geo.pad[0], geo.pad[2], geo.cols_read, parallel_for)
    offs = _tap_order(_rows.tap_offsets_rows(rows, geo.groups, geo.cg, geo.kh, geo.kw, *geo.dilation), geo, flip)
    wp = _direct.pack_weights(wa, geo.groups, mr)
    bp = _direct.pack_bias(ba, geo.o, geo.groups, xa.dtype, mr)
    obs = _direct.blocks(geo.og, mr)
    kchunk = max(16, ROWS_KCHUNK_BYTES // (geo.og * xa.itemsize))
    if mr == _direct.MR and geo.og % mr == 0 and geo.ow % tw == 0 and obs > 1 and geo.k > kchunk and ROWS_KCHUNK_BYTES:
        parallel_for(_direct.forward_rows_chunked, geo.n * geo.groups * geo.oh, X, wp, offs, bp, outa, geo.og, obs,
                     geo.k, rows.img, rows.wq, kchunk, macs=geo.macs)
        return
    tasks = geo.n * geo.groups * obs * geo.oh
    parallel_for(_direct.forward_rows, tasks, X, wp, offs, bp, outa, geo.og, obs, geo.k, rows.img, rows.wq, mr,
                 macs=geo.macs)


def _forward_flat(xa, wa, ba, geo: Geometry, outa, flip: bool = False) -> None:
    """Direct convolution over whole padded planes as single rows (:func:`fastconv.cpu._direct.forward_rows`).

    Each image's (phase-split, padded) input plane is one row of ``oh * wq`` positions: a tap is
    a constant offset from every position, so tiles run along the flattened plane and only the
    ``wq - ow`` padding columns of each output row are computed in vain (8x8 planes: 80% useful,
    16x16: 89%); they are cropped on the way out.  Small batches of narrow planes would otherwise
    run in lanes cut into blocks, each block packed with its halo (2-3 times the input).
    """
    mr, nv = rows_blocking(geo.og, geo.oh * geo.cols_read, xa.dtype)
    tw = nv * (64 // xa.itemsize)
    rows = _rows.plan_rows(geo.c, geo.rows_read, geo.cols_read, geo.stride, 0, 2 * tw + geo.cols_read)
    X = _rows.pack_rows(xa, rows, geo.pad[0], geo.pad[2], geo.cols_read, parallel_for)
    offs = _tap_order(_rows.tap_offsets_rows(rows, geo.groups, geo.cg, geo.kh, geo.kw, *geo.dilation), geo, flip)
    wp = _direct.pack_weights(wa, geo.groups, mr)
    bp = _direct.pack_bias(ba, geo.o, geo.groups, xa.dtype, mr)
    obs = _direct.blocks(geo.og, mr)
    flat = geo.oh * rows.wq
    Z = scratch("flat", (geo.n, geo.o, 1, flat), xa.dtype)
    parallel_for(_direct.forward_rows, geo.n * geo.groups * obs, X, wp, offs, bp, Z, geo.og, obs, geo.k, rows.img, 0,
                 mr, macs=geo.n * geo.o * flat * geo.k)
    parallel_for(_direct.crop_planes, geo.n * geo.o, Z, rows.wq, outa, work=outa.size)


def _pack_channels_last(xa, hq: int, wq: int, pad_top: int, pad_left: int) -> Tuple[np.ndarray, int]:
    """``xa`` packed channels-last into ``hq x wq`` positions with its zero halo
    (:func:`fastconv.cpu._gather.pack_nhwc`), and the image stride."""
    istride = _gather.image_stride(hq, wq, xa.shape[1], xa.itemsize)
    X = scratch("pack", xa.shape[0] * istride, xa.dtype)
    parallel_for(_gather.pack_nhwc, xa.shape[0], xa, X, istride, hq, wq, pad_top, pad_left, work=X.size)
    return X, istride


def _run_gather(X, poff, offs, win, steps_yx: Tuple[int, int], c: int, kw: int, w4, ba, outa, macs: int) -> None:
    """:func:`fastconv.cpu._gather.forward` over ``X`` (``c`` channels a position, taps ``(ky, kx, c)``)
    with the weights ``w4`` (out, kh, kw, c) -- any view, packed here -- into channels-last
    scratch, then transposed into NCHW ``outa`` with the bias ``ba``."""
    o = outa.shape[1]
    nv = _wgrad.gather_vectors(o, outa.dtype)
    tw, mrp = nv * (64 // outa.itemsize), _gather.pixels(nv)
    k = offs.size
    opad = _gather_width(o, outa.dtype)
    wp, sb = _gather_weights(w4, tw, opad)
    Y = scratch("out", poff.size * opad, outa.dtype)
    otiles, ptiles = opad // tw, poff.size // mrp
    pchunks = max(1, min(ptiles, -(-4 * num_threads() // otiles)))
    parallel_for(_gather.forward, otiles * pchunks, X, poff, offs, wp, sb, k, c, kw, win,
                 steps_yx[0], steps_yx[1], Y, opad, pchunks, nv, macs=macs)
    lanes = 64 // outa.itemsize
    parallel_for(_gather.unpack, outa.shape[0] * -(-o // lanes), Y, tw, poff.size, mrp, outa,
                 _direct.bias_arg(ba, outa.dtype), ba is not None, work=outa.size)


def _gather_weights(w4, tw: int, opad: int) -> Tuple[np.ndarray, np.ndarray]:
    """The weights ``w4`` (out, kh, kw, c) -- a view of OIHW weights (a forward) or of their
    transpose (an input gradient) -- packed in ``opad / tw`` o-tiles of ``tw`` channels, and the
    offsets of each tap's vectors (taps ``(ky, kx, c)``) within a tile.

    From either view the tiles hold the taps in the weights' own order ``(c, ky, kx)``, so the
    packing reads rows of the memory as they lie, through register transposes
    (:func:`fastconv.cpu._gather.pack_rows_transposed`, :func:`~fastconv.cpu._gather.pack_taps_transposed`);
    the steps reorder the taps.  Measured (two threads, float32, 256 x 256 x 3x3): forward 0.09 ms
    and input gradient 0.11 ms, against 0.20 and 0.23 ms as strided copies into ``(ky, kx, c)``
    order; in a UNet step (c16, batch 4) the gather's packings took 2.15 ms, now 1.5 (the weights
    come from memory there).  Other views keep the strided copy (:func:`fastconv.cpu._direct.pack_weights`).
    """
    o, kh, kw, c = w4.shape
    taps = kh * kw
    k = taps * c
    lanes = 64 // w4.itemsize
    wp = scratch("weights", opad * k, w4.dtype)
    rows = w4.transpose(0, 3, 1, 2)  # (o, c, kh, kw)
    if rows.flags.c_contiguous:
        parallel_for(_gather.pack_rows_transposed, (opad // tw) * -(-k // lanes), rows.reshape(-1), o, k, tw, wp,
                     work=wp.size)
        return wp, _gather.kernel_order_steps(c, taps, tw)
    cols = w4.transpose(3, 0, 1, 2)  # (c, o, kh, kw)
    if cols.flags.c_contiguous:
        parallel_for(_gather.pack_taps_transposed, (opad // tw) * c, cols.reshape(-1), c, o, taps, tw, wp,
                     work=wp.size)
        return wp, _gather.kernel_order_steps(c, taps, tw)
    return _direct.pack_weights(w4, 1, tw), _gather.steps(k, tw)


def _forward_gather(xa, wa, ba, geo: Geometry, outa, flip: bool = False) -> None:
    """Direct convolution with output channels in the lanes (:mod:`fastconv.cpu._gather`; one
    group): the input packed channels-last with its halo, the output channels-last in scratch,
    then transposed to NCHW with the bias."""
    mrp = _gather.pixels(_wgrad.gather_vectors(geo.o, xa.dtype))
    hq, wq = geo.rows_read, geo.cols_read
    X, istride = _pack_channels_last(xa, hq, wq, geo.pad[0], geo.pad[2])
    offs = _gather.tap_offsets(geo.c, geo.kh, geo.kw, wq, *geo.dilation, flip)
    poff = _gather.position_offsets(geo.n, geo.oh, geo.ow, istride, wq, geo.c, *geo.stride, mrp)
    win = _gather.tap_windows(geo.n, geo.oh, geo.ow, geo.stride, geo.dilation, geo.kh, geo.kw,
                              (geo.pad[0], geo.pad[2]), (geo.h, geo.w), flip, mrp)
    # taps (ky, kx, c), as the offsets
    _run_gather(X, poff, offs, win, (1, 1), geo.c, geo.kw, wa.transpose(0, 2, 3, 1), ba, outa, geo.macs)


def _lane_plan(geo: Geometry, dtype, tile: int = 0) -> _lanes.Lanes:
    """The lane blocking of ``geo``'s output, its width a multiple of ``tile`` (default: the wide tile)."""
    lanes = 64 // np.dtype(dtype).itemsize
    tile = tile or _tile(dtype)
    return _lanes.plan_lanes(geo.n, geo.oh, geo.ow, tile, max(2 * lanes, tile))


def _lane_region(geo: Geometry, lanes: _lanes.Lanes) -> Tuple[int, int]:
    """Input rows and columns one lane reads."""
    return ((lanes.bh - 1) * geo.stride[0] + (geo.kh - 1) * geo.dilation[0] + 1,
            (lanes.bw - 1) * geo.stride[1] + (geo.kw - 1) * geo.dilation[1] + 1)


def _pack_lanes(xa, geo: Geometry, lanes: _lanes.Lanes) -> Tuple[np.ndarray, int, int]:
    hb, wb = _lane_region(geo, lanes)
    P = scratch("pack", (geo.c, hb, wb, lanes.width), xa.dtype)
    pad = (geo.pad[0], geo.pad[2])
    kernel, args = _lanes.pack_task(xa, lanes, hb, wb, geo.stride, pad, P, 0)
    parallel_for(kernel, geo.c, *args, work=P.size)
    return P, hb, wb


class _LaneOut(NamedTuple):
    """A lane-layout result waiting to be unpacked: channel ``o`` of ``outa`` is
    ``Y[ymap[o] + p * rstride + lane]`` (:func:`fastconv.cpu._lanes.unpack`)."""

    Y: np.ndarray
    ymap: np.ndarray
    rstride: int
    lanes: _lanes.Lanes
    outa: np.ndarray

    def unpack(self) -> None:
        """Write every channel of ``outa`` (contiguous) on the thread pool."""
        kernel, args = _lanes.unpack_task(self.Y, self.ymap, self.rstride, self.outa, self.lanes)
        parallel_for(kernel, self.outa.shape[1], *args, work=self.outa.size)


def _lanes_direct(xa, wa, ba, geo: Geometry, outa, flip: bool = False) -> _LaneOut:
    """Direct convolution in the lane layout (register block by :func:`fastconv.cpu._direct.blocking`),
    left in scratch to unpack."""
    mr, nv = _direct.blocking(geo.og)
    lanes = _lane_plan(geo, xa.dtype, nv * (64 // xa.itemsize))
    P, hb, wb = _pack_lanes(xa, geo, lanes)
    offs = _tap_order(_direct.tap_offsets(geo.groups, geo.cg, geo.kh, geo.kw, hb, wb, *geo.dilation, lanes.width), geo,
                      flip)
    wp = _direct.pack_weights(wa, geo.groups, mr)
    bp = _direct.pack_bias(ba, geo.o, geo.groups, xa.dtype, mr)
    obs = _direct.blocks(geo.og, mr)
    npix = lanes.bh * lanes.bw
    Y = scratch("out", geo.groups * obs * npix * mr * lanes.width, xa.dtype)
    tasks = geo.groups * obs * (lanes.width // (nv * (64 // xa.itemsize)))
    parallel_for(_direct.forward_tiles, tasks, P.reshape(-1), wp, offs, bp, Y, obs, geo.k, npix, lanes.bw,
                 geo.stride[0], geo.stride[1], wb, lanes.width, mr, macs=geo.macs)
    o = np.arange(geo.o)
    g, j = o // geo.og, o % geo.og
    ymap = (((g * obs + j // mr) * npix * mr + j % mr) * lanes.width).astype(np.int64)
    return _LaneOut(Y, ymap, mr * lanes.width, lanes, outa)


def _forward_lanes(xa, wa, ba, geo: Geometry, outa, flip: bool = False) -> None:
    """Direct convolution in the lane layout, then unpacked to NCHW."""
    _lanes_direct(xa, wa, ba, geo, outa, flip).unpack()


@functools.lru_cache(maxsize=256)
def _wino_lanes(geo: Geometry, dtype) -> _lanes.Lanes:
    """A lane plan whose blocks hold whole 2x2 tiles (even sizes; memoised)."""
    lanes = _lane_plan(geo, dtype)
    bh, bw = lanes.bh + lanes.bh % 2, lanes.bw + lanes.bw % 2
    by, bx = -(-geo.oh // bh), -(-geo.ow // bw)
    count = geo.n * by * bx
    tw = _tile(dtype)
    return _lanes.Lanes(geo.n, by, bx, bh, bw, count, -(-count // tw) * tw)


def _wino_pack(xa, geo: Geometry, lanes: _lanes.Lanes) -> np.ndarray:
    """``xa`` packed in the lane layout with the 4x4-tile halo of each block."""
    P = scratch("pack", (geo.c, lanes.bh + 2, lanes.bw + 2, lanes.width), xa.dtype)
    pad = (geo.pad[0], geo.pad[2])
    kernel, args = _lanes.pack_task(xa, lanes, lanes.bh + 2, lanes.bw + 2, (1, 1), pad, P, 0)
    parallel_for(kernel, geo.c, *args, work=P.size)
    return P


@functools.lru_cache(maxsize=256)
def _zeros(n: int, dtype) -> np.ndarray:
    """``n`` zeros of ``dtype``, shared (memoised): an absent bias.  Writeable, as the native regions
    take only writeable arrays; nothing writes it."""
    return np.zeros(n, dtype=dtype)


def _forward_winograd(xa, wa, ba, geo: Geometry, outa, flip: bool = False) -> bool:
    """F(2x2, 3x3) (:func:`fastconv.cpu._winograd.forward`) of ``wa`` (rotated by 180 degrees when
    ``flip``: its weight transform reads the kernels flipped) into ``outa``; whether the result is
    finite.

    The transforms mix every input of a tile into every output of it, so an infinity or a NaN
    in the input, the weights or the bias leaves a non-finite value in the output (which
    cannot cancel), possibly where the direct sum has none: the caller then recomputes directly.
    The kernel checks each output channel's band while it is in cache, instead of scanning both
    operands first (128 x 32 x 16x16 -> 64, forward+backward: 1.05 ms of scans)."""
    lanes = _wino_lanes(geo, xa.dtype)
    P = _wino_pack(xa, geo, lanes)
    opad = _direct.blocks(geo.o) * _direct.MR
    Up = _winograd.pack_weights(wa, opad, flip)
    bias = _zeros(geo.o, xa.dtype) if ba is None else ba
    bad = np.zeros(geo.o, dtype=np.uint8)
    parallel_for(_winograd.forward, (lanes.bh // 2) * (lanes.width // _tile(xa.dtype)), P, Up, bias, outa, bad, opad,
                 lanes.BY, lanes.BX, lanes.bh, lanes.bw, macs=geo.macs)
    return _programs.check(_programs.CLEAR, bad, _no_flags)


def _depthwise_plane(geo: Geometry) -> Tuple[_rows.Rows, np.ndarray]:
    """The row layout of one padded, phase-split input plane of a depthwise layer, and its taps' offsets."""
    rows = _rows.plan_rows(1, geo.rows_read, geo.cols_read, geo.stride, 0, 0)
    return rows, _rows.tap_offsets_rows(rows, 1, 1, geo.kh, geo.kw, *geo.dilation)


def _forward_depthwise(xa, wa, ba, geo: Geometry, outa, flip: bool = False) -> None:
    """Depthwise convolution plane by plane, each packed, computed and cropped in cache
    (:func:`fastconv.cpu._depthwise.forward`)."""
    m = geo.og
    mr = 1 if m < 4 else (4 if m < 8 else _direct.MR)  # (a 4-channel block for 2 outputs: twice the work)
    rows, offs = _depthwise_plane(geo)
    offs = _tap_order(offs, geo, flip)
    wp = _direct.pack_weights(wa, geo.groups, mr)
    bp = _direct.pack_bias(ba, geo.o, geo.groups, xa.dtype, mr)
    parallel_for(_depthwise.forward, geo.n * geo.c, xa, wp, offs, bp, outa, m, _direct.blocks(m, mr), mr,
                 *geo.stride, rows.hq, rows.wq, geo.pad[0], geo.pad[2], geo.cols_read, macs=geo.macs)


@functools.lru_cache(maxsize=256)
def _depthwise_lanes_layout(geo: Geometry, itemsize: int) -> Tuple[int, int, np.ndarray, np.ndarray, int]:
    """The padded rows and columns the convolution reads, its taps' offsets in the channel-lane
    layout of :mod:`fastconv.cpu._depthwise_lanes`, its kernel rows' offsets, and the row width
    of the row-wise micro-kernel (0: none; memoised: do not write)."""
    hp, wp = geo.rows_read, geo.cols_read
    lanes = 64 // itemsize
    ky = np.arange(geo.kh, dtype=np.int64)[:, None] * geo.dilation[0]
    kx = np.arange(geo.kw, dtype=np.int64)[None, :] * geo.dilation[1]
    rowwise = geo.kw if geo.kw in (3, 5, 7) and geo.stride[1] == geo.dilation[1] == 1 else 0
    return hp, wp, ((ky * wp + kx) * lanes).reshape(-1), ky[:, 0] * wp * lanes, rowwise


def _depthwise_lanes_weights(wa, ba, geo: Geometry, dtype, flip: bool) -> Tuple[np.ndarray, np.ndarray]:
    """The weights and bias per lane, [channel block, m, tap, lane] / [channel block, m, lane]
    (:func:`fastconv.cpu._depthwise_lanes.pack_weights`)."""
    lanes = 64 // np.dtype(dtype).itemsize
    blocks = _direct.blocks(geo.c, lanes) * geo.og
    wl = np.empty(blocks * geo.kh * geo.kw * lanes, dtype=dtype)
    bl = np.empty(blocks * lanes, dtype=dtype)
    parallel_for(_depthwise_lanes.pack_weights, 1, wa, _direct.bias_arg(ba, dtype), ba is not None, geo.og, flip,
                 wl, bl)
    return wl, bl


def _forward_depthwise_lanes(xa, wa, ba, geo: Geometry, outa, flip: bool = False) -> None:
    """Depthwise convolution of small planes, ``L`` channels of an image side by side in the lanes
    (:func:`fastconv.cpu._depthwise_lanes.forward`)."""
    hp, wp, offs, roffs, rowwise = _depthwise_lanes_layout(geo, xa.itemsize)
    wl, bl = _depthwise_lanes_weights(wa, ba, geo, xa.dtype, flip)
    tasks = geo.n * _direct.blocks(geo.c, 64 // xa.itemsize)
    parallel_for(_depthwise_lanes.forward, tasks, xa, wl, bl, offs, roffs, rowwise, outa, geo.og, *geo.stride,
                 geo.pad[0], geo.pad[2], hp, wp, macs=geo.macs)


_FORWARD = {"direct/rows": _forward_rows, "direct/flat": _forward_flat, "direct/lanes": _forward_lanes,
            "direct/gather": _forward_gather, "direct/depthwise": _forward_depthwise,
            "direct/depthwise-lanes": _forward_depthwise_lanes, "winograd/lanes": _forward_winograd}


#: Plans that are not forward passes of the engine (the callers of :func:`_forward` take them).
_NOT_FORWARD = ("im2col", "direct/small", "patch")


def _plan_forward(geo: Geometry, dtype, pass_: str) -> Plan:
    """The plan of a convolution the engine runs as a forward pass (any but im2col, direct/small
    and patch)."""
    p = plan(pass_, geo, dtype)
    if p.name not in _FORWARD:
        p = plan(pass_, geo, dtype, exclude=_NOT_FORWARD)
    return p


#: Forward plans whose sums multiply the zero padding by the weights (an infinite or NaN weight
#: then leaves a NaN there) ...
_PADDING_PRODUCTS = ("direct/rows", "direct/flat", "direct/lanes", "direct/depthwise", "direct/depthwise-lanes",
                     "winograd/lanes", "im2col")
#: ... and plans that sum only the taps inside the image; the gather skips padding by tiles of
#: pixels, so some of its sums read it and others not.
_PADDING_SKIPPED = ("direct/small",)


def _padding_mismatch(name: str, geo: Geometry, wa: np.ndarray) -> bool:
    """Whether plan ``name`` would put NaNs from padding where torch has none, or miss torch's: a
    non-finite weight times the zero padding.  torch's float32 convolution (oneDNN) sums only the
    taps inside the image; its float64 one multiplies im2col's zero columns (0 * inf = NaN).  The
    weights are scanned only where padding exists and the plan's convention is not the dtype's."""
    if not any(geo.pad):
        return False
    ok = name in (_PADDING_PRODUCTS if wa.dtype == np.float64 else _PADDING_SKIPPED)
    return not ok and not all_finite(wa)


def _forward(xa: np.ndarray, wa: np.ndarray, ba: Optional[np.ndarray], geo: Geometry, outa: np.ndarray,
             pass_: str, flip: bool = False) -> bool:
    """``outa`` = the convolution ``geo`` of ``xa`` with ``wa`` (+ ``ba``), or with ``wa`` rotated by 180
    degrees when ``flip``, as planned for ``pass_``; ``outa`` may be a strided view.  A Winograd
    result that is not finite is recomputed directly (see :func:`_forward_winograd`).

    Returns False, with ``outa`` unwritten, where a forward pass's weights are not finite and the
    plan's handling of the padding is not torch's (:func:`_padding_mismatch`): the caller then
    runs the pass in the dtype's convention.  Input gradients never see non-finite weights here."""
    p = _plan_forward(geo, xa.dtype, pass_)
    if pass_ == "forward" and p.name != "winograd/lanes" and _padding_mismatch(p.name, geo, wa):
        return False
    out = outa if outa.flags.c_contiguous else scratch("strided_out", outa.shape, outa.dtype)
    if _FORWARD[p.name](xa, wa, ba, geo, out, flip) is False:
        p = plan(pass_, geo, xa.dtype, exclude=("winograd",) + _NOT_FORWARD)
        if pass_ == "forward" and _padding_mismatch(p.name, geo, wa):
            return False
        _FORWARD[p.name](xa, wa, ba, geo, out, flip)
    if out is not outa:
        outa[...] = out
    return True


def _bias_fill(out: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    out.zero_()
    if bias is not None:
        out += bias.detach().reshape(1, -1, 1, 1)
    return out


def _addressable(*tensors: Optional[torch.Tensor]) -> bool:
    """Whether a small pass may run from the tensors' addresses (:mod:`fastconv.cpu._address`):
    all contiguous and not lazily negated (None counts), of a dtype with a witness."""
    for t in tensors:
        if t is not None and not (t.dtype in WITNESS and t.is_contiguous() and not t.is_neg()):
            return False
    return True


def conv2d_forward(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], stride: Sequence[int],
                   padding: Sequence[int], dilation: Sequence[int], groups: int,
                   out_hw: Tuple[int, int]) -> torch.Tensor:
    """``y = conv2d(x, weight) + bias`` for contiguous NCHW ``x`` and OIHW ``weight`` (see the contract).
    Planned passes are replayed from their recorded programs (:mod:`fastconv._programs`)."""
    if x.shape[0] * weight.numel() * out_hw[0] * out_hw[1] < SMALL_MACS and not forcing():  # tiny: no program
        return _conv2d_forward.__wrapped__(x, weight, bias, stride, padding, dilation, groups, out_hw)  # no pass scope
    key = ("forward", x.shape, weight.shape, bias is None, x.dtype, *stride, *padding, *dilation, groups, *out_hw,
           num_threads(), forced_name())
    return _programs.call(_conv2d_forward, key, (x, weight, bias), (stride, padding, dilation, groups, out_hw),
                          _outputs.new)


@scoped
def _conv2d_forward(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], stride: Sequence[int],
                    padding: Sequence[int], dilation: Sequence[int], groups: int,
                    out_hw: Tuple[int, int]) -> torch.Tensor:
    n, c, h, w = x.shape
    o, cg, kh, kw = weight.shape
    oh, ow = out_hw
    size = n * o * oh * ow
    out = _outputs.new(x, (n, o, oh, ow), size)
    if size == 0:
        return out
    if c == 0:
        return _bias_fill(out, bias)
    # tiny problems skip the planner's set-up altogether, and the smallest even the NumPy views
    small = size * cg * kh * kw < SMALL_MACS and not forcing()
    if small and _addressable(x, weight, bias):
        _small.forward_at(x.data_ptr(), weight.data_ptr(), 0 if bias is None else bias.data_ptr(), out.data_ptr(),
                          WITNESS[x.dtype], n, c, h, w, o, cg, kh, kw, oh, ow, bias is not None, stride[0], stride[1],
                          padding[0], padding[2], dilation[0], dilation[1], groups)
        if x.dtype == torch.float64 and any(padding) and not finite(_np(out).reshape(-1)) \
                and not all_finite(_np(weight)):  # im2col's NaNs from the padding, as torch's (_padding_mismatch)
            return _im2col.forward(x, weight, bias, stride, padding, dilation, groups, out_hw)
        return out
    xa, wa = _np(x), _np(weight)
    ba = None if bias is None else _np(bias)
    geo = geometry(x.shape, weight.shape, stride, padding, dilation, groups, out_hw)
    name = "direct/small" if small else plan("forward", geo, xa.dtype).name
    if name == "im2col" and not (xa.dtype == np.float32 and _padding_mismatch(name, geo, wa)):
        return _im2col.forward(x, weight, bias, stride, padding, dilation, groups, out_hw)
    if name == "patch":
        y = conv2d_forward(_space_to_depth(x, geo), _patch_weight(weight), bias, (1, 1), (0, 0, 0, 0), (1, 1),
                           groups, (1, geo.oh * geo.ow))
        return y.view(out.shape)
    if name == "direct/small":
        if _padding_mismatch(name, geo, wa):  # float64, non-finite weights: im2col's NaNs, as torch's
            return _im2col.forward(x, weight, bias, stride, padding, dilation, groups, out_hw)
        _small.forward(xa, wa, _direct.bias_arg(ba, xa.dtype), ba is not None, stride[0], stride[1],
                       padding[0], padding[2], dilation[0], dilation[1], groups, out.numpy())
    elif name == "im2col" or not _forward(xa, wa, ba, geo, out.numpy(), "forward"):
        # non-finite weights, a plan without the dtype's padding convention: float64 multiplies
        # im2col's zero columns, float32 sums only the taps inside the image (plain loops: such
        # weights have already failed the model)
        if xa.dtype == np.float64:
            return _im2col.forward(x, weight, bias, stride, padding, dilation, groups, out_hw)
        _small.forward(xa, wa, _direct.bias_arg(ba, xa.dtype), ba is not None, stride[0], stride[1],
                       padding[0], padding[2], dilation[0], dilation[1], groups, out.numpy())
    return out


# --------------------------------------------------------------------------- patch convolutions


#: The last space-to-depth copy of this thread: (weak reference to its source, the source's
#: version, the geometry, the blocks) -- valid while the ``"patch"`` scratch holds it.
_last_blocks = threading.local()


def _space_to_depth(x: torch.Tensor, geo: Geometry) -> torch.Tensor:
    """The (kh, kw) pixel blocks of ``x`` that a patch convolution reads, as channels (c, ky, kx):
    (n, c * kh * kw, 1, oh * ow) (:mod:`fastconv.cpu._patch`), in this thread's ``"patch"``
    scratch: a temporary of the calling pass (a fresh one faulted its pages in on every call --
    measured on the UNet's ConvTranspose2d(32, 16, 2, 2) weight gradient, 4 x 16 x 128x128,
    0.98 ms against 0.25 + 0.39 ms for the copy and the product alone).

    A ConvTranspose2d's backward copies its output gradient's blocks twice, for the input and
    the weight gradient: the second call finds them still in the scratch (the same tensor
    object, unmodified since: its version) and copies nothing."""
    _programs.deny()  # a pass that keeps the blocks between calls
    last = getattr(_last_blocks, "value", None)
    if last is not None and last[0]() is x and last[1] == x._version and last[2] == geo:
        return last[3]
    blocks = torch.from_numpy(scratch("patch", (geo.n, geo.c * geo.kh * geo.kw, 1, geo.oh * geo.ow),
                                      _np(x).dtype))
    _blocks_copy(_np(x), blocks.numpy(), geo, True)
    _last_blocks.value = (weakref.ref(x), x._version, geo, blocks)
    return blocks


def _blocks_copy(planes: np.ndarray, blocks: np.ndarray, geo: Geometry, to_blocks: bool,
                 bias: Optional[np.ndarray] = None) -> None:
    """Space-to-depth (``to_blocks``) or depth-to-space copy between NCHW ``planes`` and ``blocks``;
    from blocks, ``bias`` (per channel of ``planes``) is added on the way."""
    nc = geo.n * planes.shape[1]
    shift = _direct.NO_BIAS[planes.dtype.char][:0] if bias is None else bias
    parallel_for(_patch.blocks_copy, nc, planes.reshape(nc, planes.shape[2], planes.shape[3]),
                 blocks.reshape(nc, geo.kh, geo.kw, geo.oh, geo.ow), to_blocks, shift, work=blocks.size)


def _patch_weight(weight: torch.Tensor) -> torch.Tensor:
    """OIHW ``weight`` as the 1x1 weight of a patch convolution: (O, C/g * kh * kw, 1, 1)."""
    return weight.reshape(weight.shape[0], -1, 1, 1)


def _patch_backward_input(grad_out: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                          geo: Geometry, dx: torch.Tensor) -> None:
    """Input gradient of a patch convolution: the 1x1 input gradient of the blocks, back in place
    (depth-to-space); pixels no block covers get ``bias`` (or zero).

    Ungrouped, the blocks are one batched product ``W^T g[n]`` on torch's BLAS into this thread's
    ``"patch"`` scratch (a fresh output-sized temporary faulted its pages in on every call: a
    ConvTranspose2d's forward)."""
    kk = geo.kh * geo.kw
    hw = geo.oh * geo.ow
    _programs.deny()  # it invalidates the blocks kept between calls
    if geo.groups == 1:
        _last_blocks.value = None  # the scratch is about to hold something else
        z = torch.from_numpy(scratch("patch", (geo.n, geo.c * kk, 1, hw), dx.numpy().dtype))
        z3 = z.view(geo.n, geo.c * kk, hw)
        torch.matmul(weight.detach().reshape(geo.o, geo.c * kk).t(), grad_out.detach().reshape(geo.n, geo.o, hw),
                     out=z3)
        ba = None if bias is None else _np(bias.contiguous())  # added in the copy below
    else:
        z = conv2d_backward_input(grad_out.reshape(geo.n, geo.o, 1, hw), _patch_weight(weight),
                                  None if bias is None else bias.repeat_interleave(kk), (1, 1), (0, 0, 0, 0), (1, 1),
                                  geo.groups, (1, hw))
        ba = None
    _blocks_copy(dx.numpy(), z.numpy(), geo, False, ba)
    rest = 0 if bias is None else bias.view(1, -1, 1, 1)
    dx[:, :, geo.oh * geo.kh:] = rest
    dx[:, :, :, geo.ow * geo.kw:] = rest


# --------------------------------------------------------------------------- gradient w.r.t. the input


def _transposed(wa: np.ndarray, groups: int) -> np.ndarray:
    """``wa`` (O, C/g, kh, kw) with the channel roles swapped within each group: (C, O/g, kh, kw)
    (a view when ``groups == 1``: the packing reads any strides; else a copy, by a kernel)."""
    if groups == 1:
        return wa.transpose(1, 0, 2, 3)
    o, cg, kh, kw = wa.shape
    if cg == 1 and o == groups:  # one channel in and out per group (depthwise): nothing to swap
        return wa
    out = np.empty((groups * cg, o // groups, kh, kw), dtype=wa.dtype)
    parallel_for(_direct.transpose_groups, o, wa, groups, out, work=wa.size)
    return out


@functools.lru_cache(maxsize=256)
def _index(values: Tuple[int, ...]) -> np.ndarray:
    """``values`` as an int64 array (memoised: do not write)."""
    return np.array(values, dtype=np.int64)


def _backward_input_phases(ga, wa, ba, geo: Geometry, dx) -> None:
    """Input gradient of a strided convolution: one stride-1 convolution per stride phase
    (:mod:`fastconv.cpu._phases`), each reading one padded row-layout copy of the output gradient
    with its own taps -- row by row where the phase's rows fill the wide tile, else over whole
    planes taken as single rows (as ``direct/flat``) -- into contiguous scratch, then interleaved
    into ``dx`` plane by plane."""
    (sy, sx), (dy, dx_), (pt, pl) = geo.stride, geo.dilation, (geo.pad[0], geo.pad[2])
    n, c, h, w = dx.shape
    ys = _phases.axis_phases(sy, dy, pt, geo.kh, h)
    xs = _phases.axis_phases(sx, dx_, pl, geo.kw, w)
    (top, bottom), (left, right) = _phases.axis_padding(ys, geo.oh), _phases.axis_padding(xs, geo.ow)
    tw = _tile(ga.dtype)
    wq = geo.ow + left + right
    rows = _rows.plan_rows(geo.o, geo.oh + top + bottom, wq, (1, 1), 0, 2 * tw + wq)
    G = _rows.pack_rows(ga, rows, top, left, wq, parallel_for, slot="grad")
    live = [(py, px) for py in ys for px in xs if py.count > 0 and px.count > 0]
    flat = {(py.r, px.r): px.count < ROWS_MIN_WIDTH * tw for py, px in live}
    pitch = {(py.r, px.r): wq if flat[py.r, px.r] else px.count for py, px in live}
    zoff, total = {}, 0
    for py, px in live:
        if py.taps and px.taps:
            zoff[py.r, px.r] = total
            total += n * c * py.count * pitch[py.r, px.r]
    Z = scratch("phases", max(total, 1), ga.dtype)
    chan = np.arange(geo.o, dtype=np.int64).reshape(geo.groups, geo.og, 1, 1)
    for py, px in live:
        key = (py.r, px.r)
        if key not in zoff:  # no tap reaches this phase: bias only
            dx[:, :, py.first::sy, px.first::sx][:, :, :py.count, :px.count] = 0 if ba is None else ba.reshape(1, -1, 1, 1)
            continue
        ey = np.array(py.e, dtype=np.int64).reshape(1, 1, -1, 1)
        ex = np.array(px.e, dtype=np.int64).reshape(1, 1, 1, -1)
        offs = ((chan * rows.hq + py.a0 + top - ey) * rows.wq + px.a0 + left - ex).reshape(-1)
        k = geo.og * len(py.taps) * len(px.taps)
        size = py.count * pitch[key]
        mr, _ = rows_blocking(geo.cg, size if flat[key] else px.count, ga.dtype)
        taps = np.empty((geo.o, geo.cg, len(py.taps), len(px.taps)), dtype=wa.dtype)  # the phase's taps
        parallel_for(_direct.select_taps, geo.o, wa, _index(tuple(py.taps)), _index(tuple(px.taps)), taps,
                     work=taps.size)
        wp = _direct.pack_weights(_transposed(taps, geo.groups), geo.groups, mr)
        bp = _direct.pack_bias(ba, c, geo.groups, ga.dtype, mr)
        obs = _direct.blocks(geo.cg, mr)
        z = Z[zoff[key]:zoff[key] + n * c * size]
        if flat[key]:
            parallel_for(_direct.forward_rows, n * geo.groups * obs, G, wp, offs, bp, z.reshape(n, c, 1, size),
                         geo.cg, obs, k, rows.img, 0, mr, macs=z.size * k)
        else:
            parallel_for(_direct.forward_rows, n * geo.groups * obs * py.count, G, wp, offs, bp,
                         z.reshape(n, c, py.count, px.count), geo.cg, obs, k, rows.img, rows.wq, mr, macs=z.size * k)
    meta = []
    for py in ys:
        done = set()
        for px in xs:
            key = (py.r, px.r)
            if key not in zoff or px.r in done:
                continue
            mate = [q for q in xs if q.first == px.first + 1 and (py.r, q.r) in zoff]
            if sx == 2 and mate and mate[0].count == px.count and pitch[py.r, mate[0].r] == pitch[key]:
                done.add(mate[0].r)
                z2 = zoff[py.r, mate[0].r]
            else:
                z2 = -1
            meta.append((zoff[key], py.count * pitch[key], pitch[key], py.first, px.first, py.count, px.count, z2))
    if meta:
        parallel_for(_phases.scatter, n * c, Z, np.array(meta, dtype=np.int64), dx.reshape(-1), h, w, sy, sx,
                     work=dx.size)


@functools.lru_cache(maxsize=256)
def _depthwise_phases(geo: Geometry, itemsize: int):
    """The stride phases of a depthwise input gradient (:func:`fastconv.cpu._depthwise.backward_input`):
    the taps' offsets and weight indices per phase, their counts, each phase's pixels, and the
    padded output-gradient plane's geometry (memoised: do not write)."""
    m = geo.og
    ys = _phases.axis_phases(geo.stride[0], geo.dilation[0], geo.pad[0], geo.kh, geo.h)
    xs = _phases.axis_phases(geo.stride[1], geo.dilation[1], geo.pad[2], geo.kw, geo.w)
    (top, bottom), (left, right) = _phases.axis_padding(ys, geo.oh), _phases.axis_padding(xs, geo.ow)
    wq = geo.ow + left + right
    lanes = 8 * (64 // itemsize)
    span = -(-(geo.oh + top + bottom) * wq // lanes) * lanes
    phases = [(py, px) for py in ys for px in xs]
    km = m * max(1, max(len(py.taps) * len(px.taps) for py, px in phases))
    offs = np.zeros((len(phases), km), dtype=np.int64)
    widx = np.zeros((len(phases), km), dtype=np.int64)  # flat index into one channel's m x kh x kw weights
    ntaps = np.zeros(len(phases), dtype=np.int64)
    meta = np.zeros((len(phases), 6), dtype=np.int64)
    for f, (py, px) in enumerate(phases):
        k = 0
        for j in range(m):
            for ty, ey in zip(py.taps, py.e):
                for tx, ex in zip(px.taps, px.e):
                    offs[f, k] = j * (span + wq) + (py.a0 - ey + top) * wq + px.a0 - ex + left
                    widx[f, k] = (j * geo.kh + ty) * geo.kw + tx
                    k += 1
        ntaps[f] = k
        meta[f] = (py.first, px.first, py.count, px.count, *geo.stride)
    return offs, widx, ntaps, meta, top, left, wq, span


def _backward_input_depthwise(ga, wa, ba, geo: Geometry, dx) -> None:
    """Input gradient of a depthwise convolution, any stride, plane by plane by stride phase
    (:func:`fastconv.cpu._depthwise.backward_input`)."""
    n, c = dx.shape[:2]
    offs, widx, ntaps, meta, top, left, wq, span = _depthwise_phases(geo, ga.itemsize)
    Wq = np.empty((c,) + widx.shape, dtype=wa.dtype)  # (c, phases, taps)
    parallel_for(_depthwise.gather_weights, c, wa.reshape(c, -1), widx, Wq, work=Wq.size)
    bp = np.zeros(c, dtype=ga.dtype) if ba is None else ba
    parallel_for(_depthwise.backward_input, n * c, ga, Wq, offs, ntaps, meta, bp, dx, geo.og, top, left, wq, span,
                 macs=geo.macs)


def _gathers_strided(geo: Geometry, dtype) -> bool:
    """Whether a strided input gradient planned on the gather runs as one (:func:`_backward_input_gather`):
    one group, no dilation, and whole tiles of one position (the batch a multiple of the tile)."""
    mrp = _gather.pixels(_wgrad.gather_vectors(geo.c, dtype))
    return geo.groups == 1 and geo.dilation == (1, 1) and geo.n % mrp == 0


def _backward_input_gather(ga, wa, ba, geo: Geometry, dx) -> None:
    """Input gradient of a strided convolution in one gather pass, no phase split: each
    input-gradient pixel sums, over the output-gradient positions its stride phase reaches, the
    gradient (packed channels-last, no halo) against the weights packed ``[c-tile, (ky, kx, o)]``
    -- only the taps of its phase, exactly (:func:`fastconv.cpu._gather.transposed_windows`) --
    then the channels-last result is transposed into ``dx`` with the bias.  Measured (two threads,
    float32): 128 x 32 x 14x14 -> 16 3x3/2, 0.45 ms against 1.15 through the phases."""
    n, c, h, w = dx.shape
    mrp = _gather.pixels(_wgrad.gather_vectors(c, ga.dtype))
    pad = (geo.pad[0], geo.pad[2])
    X, istride = _pack_channels_last(ga, geo.oh, geo.ow, 0, 0)
    poff, offs = _gather.transposed_offsets(n, h, w, istride, geo.o, geo.stride, geo.kh, geo.kw, pad, geo.ow, mrp)
    win = _gather.transposed_windows(n, h, w, geo.stride, geo.kh, geo.kw, pad, (geo.oh, geo.ow), mrp)
    # [c, (ky, kx, o)]: the offsets' order
    _run_gather(X, poff, offs, win, geo.stride, geo.o, geo.kw, wa.transpose(1, 2, 3, 0), ba, dx, geo.macs)


def conv2d_backward_input(grad_out: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                          stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int], groups: int,
                          in_hw: Tuple[int, int]) -> torch.Tensor:
    """Gradient of conv2d w.r.t. its input, of spatial size ``in_hw``, plus ``bias`` per channel
    (planned passes replayed as :func:`conv2d_forward`'s)."""
    if grad_out.numel() * (weight.numel() // max(1, weight.shape[0])) < SMALL_MACS and not forcing():  # tiny
        return _conv2d_backward_input.__wrapped__(grad_out, weight, bias, stride, padding, dilation, groups, in_hw)
    key = ("backward_input", grad_out.shape, weight.shape, bias is None, grad_out.dtype, *stride, *padding, *dilation,
           groups, *in_hw, num_threads(), forced_name())
    return _programs.call(_conv2d_backward_input, key, (grad_out, weight, bias),
                          (stride, padding, dilation, groups, in_hw), _outputs.new)


@scoped
def _conv2d_backward_input(grad_out: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                           stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int], groups: int,
                           in_hw: Tuple[int, int]) -> torch.Tensor:
    n = grad_out.shape[0]
    c = weight.shape[1] * groups
    dx = _outputs.new(grad_out, (n, c, in_hw[0], in_hw[1]), n * c * in_hw[0] * in_hw[1])
    if dx.numel() == 0:
        return dx
    if grad_out.numel() == 0 or weight.numel() == 0:
        return _bias_fill(dx, bias)
    o, cg, kh, kw = weight.shape
    small = grad_out.numel() * cg * kh * kw < SMALL_MACS and not forcing()  # tiny: no planner set-up
    if small and _addressable(grad_out, weight, bias):  # the smallest: not even NumPy views (a scatter of
        _small.backward_input_at(grad_out.data_ptr(), weight.data_ptr(),  # products, exact on any weights)
                                 0 if bias is None else bias.data_ptr(), dx.data_ptr(), WITNESS[dx.dtype], n, c,
                                 in_hw[0], in_hw[1], o, cg, kh, kw, grad_out.shape[2], grad_out.shape[3],
                                 bias is not None, stride[0], stride[1], padding[0], padding[2], dilation[0],
                                 dilation[1], groups)
        return dx
    ga, wa = _np(grad_out), _np(weight)
    if small:
        name = "direct/small"
    else:
        geo = geometry((n, c, in_hw[0], in_hw[1]), weight.shape, stride, padding, dilation, groups,
                       grad_out.shape[2:])
        name = plan("backward_input", geo, ga.dtype).name
    if name == "patch":
        _patch_backward_input(grad_out, weight, bias, geo, dx)
        return dx
    # non-finite weights: the direct passes would multiply the gradient's zero padding by them (a
    # NaN), where torch's input gradient -- a scatter of the products -- has none (weights are
    # small: the scan costs microseconds)
    if name == "im2col" or not all_finite(wa):
        return _im2col.backward_input(grad_out, weight, bias, stride, padding, dilation, groups, in_hw)
    ba = None if bias is None else _np(bias)
    if name == "direct/small":
        _small.backward_input(ga, wa, _direct.bias_arg(ba, ga.dtype), ba is not None, stride[0], stride[1],
                              padding[0], padding[2], dilation[0], dilation[1], groups, dx.numpy())
        return dx
    if name == "direct/depthwise":
        _backward_input_depthwise(ga, wa, ba, geo, dx.numpy())
        return dx
    if tuple(stride) != (1, 1):
        if name == "direct/gather" and _gathers_strided(geo, ga.dtype):
            _backward_input_gather(ga, wa, ba, geo, dx.numpy())
        else:
            _backward_input_phases(ga, wa, ba, geo, dx.numpy())
        return dx
    # a stride-1 convolution of the output gradient with the flipped, transposed weights
    dy, dx_ = dilation
    top, left = dy * (kh - 1) - padding[0], dx_ * (kw - 1) - padding[2]
    gt = geometry(grad_out.shape, (c, weight.shape[0] // groups, kh, kw), (1, 1), (top, 0, left, 0), dilation,
                  groups, in_hw)
    _forward(ga, _transposed(wa, groups), ba, gt, dx.numpy(), "backward_input", flip=True)
    return dx


# --------------------------------------------------------------------------- gradient w.r.t. the weight


#: Reduction steps per chunk of :func:`fastconv.cpu._wgrad.weight_gather`.
GATHER_CHUNK = 1024
#: Image-major slots of the gathered weight gradient's steps (partial sums added in order), for
#: layers of at least :data:`GATHER_SLOT_MIN_STEPS` steps (images x output pixels): each thread
#: then reads the half of the packed input and output gradient it packed, instead of all of
#: both, dirty in the other core's cache.  Two threads, float32, ms, one slot / two: 4 x 16 x
#: 64x64 -> 32 0.95 / 0.75; 4 x 64 x 64x64 -> 32 2.35 / 2.18; 4 x 64 x 32x32 -> 64 1.24 / 1.13;
#: 128 x 32 x 16x16 -> 64 5.15 / 4.39; 128 x 64 x 8x8 -> 128 4.63 / 4.12; 4 x 128 x 16x16 -> 128
#: 1.18 / 1.13.  Few steps against many taps lose to the second partial sum: 4 x 256 x 8x8 -> 256
#: (256 steps) 1.38 / 1.60, 16 x 512 x 7x7 -> 512 (784) 13.4 / 14.8.
GATHER_SLOTS = 2
GATHER_SLOT_MIN_STEPS = 1024


def _weight_gather(A, offs, sa, B, sb, geo: Geometry, dtype, dw) -> bool:
    """Run :func:`fastconv.cpu._wgrad.weight_gather` and write ``dw`` (groups == 1); ``B`` has
    :func:`_gather_width` channels per row.  Returns whether ``dw`` is finite (checked as it is
    transposed: a scan after it cost 12-25 us on 128 x 128 x 3x3 weights)."""
    nv = _wgrad.gather_vectors(geo.o, dtype, wide=True)
    tw = nv * (64 // np.dtype(dtype).itemsize)
    opad = B.shape[-1]
    mrg = _wgrad.gather_taps(nv)
    kp = -(-geo.k // mrg) * mrg
    aoff = np.empty(kp, dtype=np.int64)
    aoff[:geo.k] = offs
    aoff[geo.k:] = offs[-1]
    slots = GATHER_SLOTS if sa.size >= GATHER_SLOT_MIN_STEPS else 1
    outT = scratch("acc", (slots, kp, opad), dtype)
    kbs, ntt = kp // mrg, opad // tw
    # as few tasks as balance the threads (lcm(o-tiles, threads)): every task streams all of B's
    # rows for its o-tile, so each extra tap group reads the output gradient once more -- 64 x 3 x
    # 32x32 -> 64 5x5: 2.05 ms in 2 tasks against 3.13 in 8; 128 x 32 x 16x16 -> 64: 4.5 against 5.2
    threads = num_threads()
    groups_k = -(-kbs // min(kbs, threads // math.gcd(ntt * slots, threads)))
    tasks = slots * ntt * -(-kbs // groups_k)
    parallel_for(_wgrad.weight_gather, tasks, A, aoff, sa, B.reshape(-1), sb, GATHER_CHUNK, groups_k, nv, outT,
                 macs=geo.macs)
    if slots > 1:  # in order, rows streamed on the team (added inside the transposes instead, the
        #            other core's partial sums were read by cache lines: 0.28 against 0.18 ms on
        #            4 x 256 x 16x16 -> 128; NumPy's addition took 0.03-0.05 ms on one thread)
        parallel_for(_wgrad.add_slots, geo.k, outT, work=slots * dw.size)
    L = 64 // outT.itemsize
    bad = np.empty(-(-geo.o // L), dtype=np.uint8)
    parallel_for(_wgrad.transpose_into, bad.size, outT[0], dw.reshape(geo.o, geo.k), bad, work=dw.size)
    return _programs.check(_programs.CLEAR, bad, _no_flags)


def _gather_width(o: int, dtype, wide: bool = False) -> int:
    """Channels per row of a gathered reduction's channels-last operand: ``o`` padded to whole
    tiles of :func:`fastconv.cpu._wgrad.gather_vectors` vectors (``wide``: a weight gradient's)."""
    tw = _wgrad.gather_vectors(o, dtype, wide) * (64 // np.dtype(dtype).itemsize)
    return -(-o // tw) * tw


def _channels_last(ga, opad: int, by_pixel: bool = False) -> np.ndarray:
    """The output gradient with channels last, padded to ``opad``: rows (image, pixel), or with
    ``by_pixel`` rows (pixel, image)."""
    n, o, h, w = ga.shape
    B = scratch("grad", (n * h * w, opad), ga.dtype)
    nstride, pstride = (1, n) if by_pixel else (h * w, 1)
    parallel_for(_wgrad.channels_last, n, ga, B.reshape(-1), opad, nstride, pstride, work=B.size)
    return B


#: Row-layout weight gradients of layers with at most :data:`ROW_SLOTS_MAX_CHANNELS` output
#: channels split their steps (images first) into this many partial sums, added in order.
ROW_SLOTS = 2
ROW_SLOTS_MAX_CHANNELS = 32


@functools.lru_cache(maxsize=256)
def _row_steps(n: int, planes: int, oh: int, owp: int, lanes: int, img: int, wq: int) -> Tuple[np.ndarray, np.ndarray]:
    """The steps (image, output row, vector of columns) of a row-layout weight gradient: offsets
    into the output gradient (``planes`` padded channels of ``oh x owp``) and into the packed
    input (memoised, as a meshgrid costs 36 us on a 4 x 128x128 layer: do not write)."""
    n_, oy, v = np.meshgrid(np.arange(n), np.arange(oh), np.arange(owp // lanes), indexing="ij")
    sg = ((n_ * planes * oh + oy) * owp + v * lanes).reshape(-1).astype(np.int64)
    sx = (n_ * img + oy * wq + v * lanes).reshape(-1).astype(np.int64)
    return sg, sx


def _weight_groups(xa, ga, geo: Geometry, dw) -> bool:
    """The weight gradient of a grouped layer whose groups are deep enough to gather, group by group:
    each group's input and output-gradient channels copied out (a kernel each) and reduced by
    :func:`_weight_rows` as an ungrouped layer (measured in
    :func:`fastconv.cpu.conv_plan.gathered_by_group`).  Returns whether every group's gradient was
    found finite."""
    one = one_group(geo)
    xs = scratch("group_input", (geo.n, geo.cg, geo.h, geo.w), xa.dtype)
    gs = scratch("group_grad", (geo.n, geo.og, geo.oh, geo.ow), ga.dtype)
    finite_ = True
    for g in range(geo.groups):
        parallel_for(_direct.copy_channels, geo.n, xa, g * geo.cg, xs, work=xs.size)
        parallel_for(_direct.copy_channels, geo.n, ga, g * geo.og, gs, work=gs.size)
        finite_ = _weight_rows(xs, gs, one, dw[g * geo.og:(g + 1) * geo.og]) is True and finite_
    return finite_


def _weight_rows(xa, ga, geo: Geometry, dw) -> Optional[bool]:
    """Weight gradient in the row layout: steps are (image, output row, vector of columns), or
    -- with enough output channels -- the valid pixels, broadcast against channel vectors.
    Returns whether ``dw`` is finite where that was checked on the way (the gathered reduction),
    else None."""
    if gathered_by_group(geo, xa.dtype):
        return _weight_groups(xa, ga, geo, dw)
    if gathered(geo, xa.dtype):
        rows = _rows.plan_rows(geo.c, geo.rows_read, geo.cols_read, (1, 1), 0, 0)  # single reads: one phase
        X = _rows.pack_rows(xa, rows, geo.pad[0], geo.pad[2], geo.cols_read, parallel_for)
        B = _channels_last(ga, _gather_width(geo.o, xa.dtype, wide=True))
        sa = _gather.pixel_offsets(geo.n, geo.oh, geo.ow, rows.img, rows.wq, *geo.stride, 1)
        sb = _gather.steps(sa.size, B.shape[1])
        offs = _rows.tap_offsets_rows(rows, 1, geo.cg, geo.kh, geo.kw, *geo.dilation)
        return _weight_gather(X, offs, sa, B, sb, geo, xa.dtype, dw)
    lanes = 64 // xa.itemsize
    owp = -(-geo.ow // lanes) * lanes
    tw = _tile(xa.dtype)
    ax = (geo.kw - 1) * geo.dilation[1] // geo.stride[1]
    rows = _rows.plan_rows(geo.c, geo.rows_read, geo.cols_read, geo.stride, owp + ax, 2 * tw)
    X = _rows.pack_rows(xa, rows, geo.pad[0], geo.pad[2], geo.cols_read, parallel_for)
    mrw = _wgrad.block_rows(geo.og)
    ogp = -(-geo.og // mrw) * mrw
    if ogp == geo.og and owp == geo.ow and ga.flags.c_contiguous:
        G = ga  # already whole channel blocks and whole vectors of columns
    else:
        G = scratch("grad", (geo.n, geo.groups * ogp, geo.oh, owp), xa.dtype)
        parallel_for(_wgrad.pad_planes, G.shape[0] * G.shape[1], ga, G, geo.og, work=G.size)
    offs = _wgrad.pad_offsets(_rows.tap_offsets_rows(rows, geo.groups, geo.cg, geo.kh, geo.kw, *geo.dilation),
                              geo.groups, geo.k)
    kp = offs.size // geo.groups
    sg, sx = _row_steps(geo.n, geo.groups * ogp, geo.oh, owp, lanes, rows.img, rows.wq)
    slots = ROW_SLOTS if geo.o <= ROW_SLOTS_MAX_CHANNELS else 1
    out = scratch("acc", slots * geo.groups * ogp * kp, xa.dtype)  # weight_tiles writes all of it
    oblocks = geo.groups * (ogp // mrw)
    kgroups = _wgrad.tap_groups(oblocks, kp, num_threads())
    parallel_for(_wgrad.weight_tiles, slots * oblocks * kgroups, G.reshape(-1), geo.oh * owp, X, offs, sg, sx,
                 _wgrad.CHUNK, out, ogp, kp, kgroups, mrw, slots, macs=geo.macs)
    # the slots in order (the sum does not depend on the threads), cropped into dw
    parallel_for(_wgrad.slots_into, geo.o, out, slots, ogp, kp, geo.og, geo.k, dw.reshape(-1), work=slots * dw.size)


@functools.lru_cache(maxsize=256)
def _lane_steps(geo: Geometry, lanes: _lanes.Lanes, wb: int):
    """The valid (block pixel, lane) pairs: offsets into the packed input, and the pixels and lanes.

    Ordered (vector of lanes, pixel, lane), so that a chunk of steps reads a narrow band of the
    packed input (one cache line per pixel and channel) for many pixels: that band stays in L2
    while every tap tile passes over it.  Memoised: do not write."""
    L = 16  # one cache line of float32 lanes (two of float64)
    npix = lanes.bh * lanes.bw
    nv = -(-lanes.count // L)
    v, p, l = np.meshgrid(np.arange(nv), np.arange(npix), np.arange(L), indexing="ij")
    lane = v * L + l
    keep = lane < lanes.count
    p, lane = p[keep], lane[keep]
    oy, ox = p // lanes.bw, p % lanes.bw
    b = lane % lanes.blocks
    y, x = (b // lanes.BX) * lanes.bh + oy, (b % lanes.BX) * lanes.bw + ox
    ok = (y < geo.oh) & (x < geo.ow)
    sa = ((oy * geo.stride[0] * wb + ox * geo.stride[1]) * lanes.width + lane)[ok]
    return sa.astype(np.int64), p[ok], lane[ok]


@functools.lru_cache(maxsize=256)
def _lane_vector_steps(nv: int, bw: int, npix: int, stride: Tuple[int, int], wb: int, width: int,
                       L: int) -> Tuple[np.ndarray, np.ndarray]:
    """The steps (vector of lanes, block pixel) of a lane-layout weight gradient: offsets into the
    output gradient and into the packed input (memoised: do not write)."""
    v, p = np.meshgrid(np.arange(nv), np.arange(npix), indexing="ij")  # chunks: one vector of lanes
    oy, ox = p // bw, p % bw
    sg = (p * width + v * L).reshape(-1).astype(np.int64)
    sx = ((oy * stride[0] * wb + ox * stride[1]) * width + v * L).reshape(-1).astype(np.int64)
    return sg, sx


def _weight_lanes(xa, ga, geo: Geometry, dw) -> Optional[bool]:
    """Weight gradient in the lane layout: steps are (output pixel of a block, vector of lanes), or
    -- with enough output channels -- the valid (pixel, lane) pairs, broadcast against channel
    vectors.  Returns whether ``dw`` is finite where that was checked (see :func:`_weight_rows`)."""
    lanes = _lane_plan(geo, xa.dtype)
    P, hb, wb = _pack_lanes(xa, geo, lanes)
    if gathered(geo, xa.dtype):
        opad = _gather_width(geo.o, xa.dtype, wide=True)
        if lanes.blocks == 1 and (lanes.bh, lanes.bw) == (geo.oh, geo.ow):
            B = _channels_last(ga, opad, by_pixel=True)  # rows (pixel, lane) in one pass
        else:
            Bn = _channels_last(ga, opad)
            B = scratch("grad2", (lanes.bh * lanes.bw * lanes.count, opad), xa.dtype)  # rows (pixel, lane)
            parallel_for(_wgrad.lane_rows, lanes.bh * lanes.bw, Bn, geo.oh, geo.ow, lanes.BY, lanes.BX, lanes.bh,
                         lanes.bw, lanes.count, B, work=B.size)
        sa, p, lane = _lane_steps(geo, lanes, wb)
        sb = ((p * lanes.count + lane) * B.shape[1]).astype(np.int64)
        offs = _direct.tap_offsets(1, geo.cg, geo.kh, geo.kw, hb, wb, *geo.dilation, lanes.width)
        return _weight_gather(P.reshape(-1), offs, sa, B, sb, geo, xa.dtype, dw)
    L = 64 // xa.itemsize
    mrw = _wgrad.block_rows(geo.og)
    ogp = -(-geo.og // mrw) * mrw
    npix = lanes.bh * lanes.bw
    G = scratch("grad", (geo.groups * ogp, lanes.bh, lanes.bw, lanes.width), xa.dtype)
    for g in range(geo.groups):
        G[g * ogp + geo.og:(g + 1) * ogp] = 0
        c0 = g * geo.og  # channels of group g go to g * ogp + (c - c0)
        parallel_for(lambda a, b, c0=c0, g=g: _lanes.pack(ga, lanes, lanes.bh, lanes.bw, (1, 1), (0, 0), G,
                                                           g * ogp - c0, c0 + a, c0 + b),
                     geo.og, work=geo.og * G[0].size)
    offs = _wgrad.pad_offsets(_direct.tap_offsets(geo.groups, geo.cg, geo.kh, geo.kw, hb, wb, *geo.dilation,
                                                  lanes.width), geo.groups, geo.k)
    kp = offs.size // geo.groups
    sg, sx = _lane_vector_steps(lanes.width // L, lanes.bw, npix, geo.stride, wb, lanes.width, L)
    out = np.zeros(geo.groups * ogp * kp, dtype=xa.dtype)
    oblocks = geo.groups * (ogp // mrw)
    kgroups = _wgrad.tap_groups(oblocks, kp, num_threads())
    parallel_for(_wgrad.weight_tiles, oblocks * kgroups, G.reshape(-1), npix * lanes.width, P.reshape(-1), offs, sg,
                 sx, _wgrad.CHUNK, out, ogp, kp, kgroups, mrw, 1, macs=geo.macs)
    dw[...] = out.reshape(geo.groups, ogp, kp)[:, :geo.og, :geo.k].reshape(dw.shape)


#: Partial sums of the Winograd weight gradient: a fixed number, so that the summation order
#: (chunks ``s, s + SLOTS, ...`` per slot, then the slots in order) never depends on the threads.
WINOGRAD_SLOTS = 8


def _weight_winograd(xa, ga, geo: Geometry, dw) -> None:
    """F(2x2, 3x3) weight gradient: dU[xi] = sum over tiles of (A dY A^T)[xi] * (B^T d B)[xi], then G^T dU G."""
    lanes = _wino_lanes(geo, xa.dtype)
    P = _wino_pack(xa, geo, lanes)
    tw = _tile(xa.dtype)
    opad = _direct.blocks(geo.o) * _direct.MR
    Gl = scratch("grad", (opad, lanes.bh, lanes.bw, lanes.width), xa.dtype, zero=True)
    kernel, args = _lanes.pack_task(ga, lanes, lanes.bh, lanes.bw, (1, 1), (0, 0), Gl, 0)
    parallel_for(kernel, geo.o, *args, work=Gl.size)
    cpad = -(-geo.c // tw) * tw
    chunks = (lanes.bh // 2) * (lanes.bw // 2) * (lanes.width // tw)
    slots = min(WINOGRAD_SLOTS, chunks)
    du = scratch("acc", (slots, 16, opad, cpad), xa.dtype)
    parallel_for(_winograd.weight, slots, P, Gl, du, geo.c, slots, macs=geo.macs)
    if slots > 1:  # into du[0], the slots in order (non-finite sums are recomputed: _backward_weight)
        parallel_for(_wgrad.add_slots, 16 * opad, du.reshape(slots, 16 * opad, cpad), work=du.size)
    _winograd.unpack_weight_grad(du[0], geo.o, geo.c, dw)


def _weight_pointwise(xa, ga, geo: Geometry, dw) -> None:
    """1x1 weight gradient: ``dW = sum_n g[n] x[n]^T`` over (O, H*W) x (H*W, C) products, added image
    by image in order.

    The products run on torch's BLAS, whose threads are the OpenMP team the engine's kernels use:
    NumPy's OpenBLAS has a pool of its own, and the two pools, alternating call by call in a
    training step, spin against each other on a 2-core machine (measured: a 0.4 ms product took
    4-8 ms after a torch copy)."""
    hw = geo.h * geo.w
    acc = torch.from_numpy(dw).view(geo.o, geo.c)
    g2, x2 = torch.from_numpy(ga).view(geo.n, geo.o, hw), torch.from_numpy(xa).view(geo.n, geo.c, hw)
    torch.mm(g2[0], x2[0].T, out=acc)
    for n in range(1, geo.n):
        acc.addmm_(g2[n], x2[n].T)


def _weight_depthwise(xa, ga, geo: Geometry, dw) -> None:
    """Depthwise weight gradient, a task per input channel over all images (:func:`fastconv.cpu._depthwise.weight`)."""
    rows, offs = _depthwise_plane(geo)
    offs = _wgrad.pad_offsets(offs, 1, geo.kh * geo.kw)
    lanes = 64 // xa.itemsize
    steps = np.arange(-(-geo.oh * rows.wq // lanes), dtype=np.int64) * lanes
    parallel_for(_depthwise.weight, geo.c, xa, ga, offs, steps, dw, geo.og, *geo.stride, rows.hq, rows.wq, geo.pad[0],
                 geo.pad[2], geo.cols_read, macs=geo.macs)


#: The depthwise channel-lane weight gradient splits the images into chunks until it has this
#: many tasks (channel blocks x chunks; the chunks' sums are added in a fixed order).
DEPTHWISE_LANES_TASKS = 8


def _weight_depthwise_lanes(xa, ga, geo: Geometry, dw) -> None:
    """Depthwise weight gradient of small planes in the channel-lane layout, a task per channel
    block and chunk of images (:func:`fastconv.cpu._depthwise_lanes.weight`), the chunks then
    added in order (:func:`fastconv.cpu._depthwise_lanes.reduce_chunks`)."""
    lanes = 64 // xa.itemsize
    blocks = _direct.blocks(geo.c, lanes)
    chunk = -(-geo.n // min(geo.n, -(-DEPTHWISE_LANES_TASKS // blocks)))
    chunks = -(-geo.n // chunk)
    k = geo.kh * geo.kw
    hp, wp, offs = _depthwise_lanes_layout(geo, xa.itemsize)[:3]
    acc = scratch("depthwise_sums", blocks * chunks * geo.og * k * lanes, xa.dtype)
    parallel_for(_depthwise_lanes.weight, blocks * chunks, xa, ga, offs, acc, geo.og, chunk, *geo.stride, geo.pad[0],
                 geo.pad[2], hp, wp, macs=geo.macs)
    parallel_for(_depthwise_lanes.reduce_chunks, geo.c, acc, chunks, geo.og, k, dw.reshape(-1), work=acc.size)


_WEIGHT = {"direct/rows": _weight_rows, "direct/lanes": _weight_lanes, "direct/depthwise": _weight_depthwise,
           "direct/depthwise-lanes": _weight_depthwise_lanes, "winograd/lanes": _weight_winograd}


def conv2d_backward_weight(x: torch.Tensor, grad_out: torch.Tensor, stride: Sequence[int], padding: Sequence[int],
                           dilation: Sequence[int], groups: int, kernel_hw: Tuple[int, int]) -> torch.Tensor:
    """Gradient of conv2d w.r.t. its OIHW weight of spatial size ``kernel_hw``.

    A non-finite output gradient meets the input's zero padding in the sums of the border
    taps: torch's float32 gradient (oneDNN) sums only the taps inside the image there, its
    float64 one multiplies im2col's zero columns (0 * inf = NaN).  Plain loops
    (``direct/small``) do the former, every other plan the latter; where the plan's convention
    is not the dtype's and the result is not finite, the output gradient is scanned and, if it
    is the cause, the pass reruns in the dtype's convention.  Planned passes are replayed as
    :func:`conv2d_forward`'s."""
    if grad_out.numel() * (x.shape[1] // groups) * kernel_hw[0] * kernel_hw[1] < SMALL_MACS and not forcing():
        return _conv2d_backward_weight.__wrapped__(x, grad_out, stride, padding, dilation, groups, kernel_hw)  # tiny
    key = ("backward_weight", x.shape, grad_out.shape, x.dtype, *stride, *padding, *dilation, groups, *kernel_hw,
           num_threads(), forced_name())
    return _programs.call(_conv2d_backward_weight, key, (x, grad_out), (stride, padding, dilation, groups, kernel_hw),
                          _new_weight_grad)


def _new_weight_grad(like: torch.Tensor, shape: Tuple[int, ...], numel: int) -> torch.Tensor:
    """A replayed weight gradient's tensor, as the pass allocates it (weights are small: not pooled)."""
    return torch.empty(shape, dtype=like.dtype)


@scoped
def _conv2d_backward_weight(x: torch.Tensor, grad_out: torch.Tensor, stride: Sequence[int], padding: Sequence[int],
                            dilation: Sequence[int], groups: int, kernel_hw: Tuple[int, int]) -> torch.Tensor:
    o, c = grad_out.shape[1], x.shape[1]
    dw = torch.empty((o, c // groups, kernel_hw[0], kernel_hw[1]), dtype=x.dtype)  # every path writes it all
    if dw.numel() == 0 or grad_out.numel() == 0 or x.numel() == 0:
        return dw.zero_()
    k = (c // groups) * kernel_hw[0] * kernel_hw[1]  # taps per output channel (dw[0].numel() costs a view)
    small = grad_out.numel() * k < SMALL_MACS and not forcing()  # tiny: no planner set-up
    if small and _addressable(x, grad_out):  # the smallest: not even NumPy views
        _small.backward_weight_at(x.data_ptr(), grad_out.data_ptr(), dw.data_ptr(), WITNESS[dw.dtype], *x.shape, o,
                                  *dw.shape[1:], *grad_out.shape[2:], stride[0], stride[1], padding[0], padding[2],
                                  dilation[0], dilation[1], groups)
        if x.dtype == torch.float64 and any(padding) and not finite(_np(dw).reshape(-1)) \
                and not all_finite(_np(grad_out)):  # im2col's NaNs from the padding, as torch's (see above)
            return _im2col.backward_weight(x, grad_out, stride, padding, dilation, groups, kernel_hw)
        return dw
    xa, ga = _np(x), _np(grad_out)
    geo = geometry(x.shape, dw.shape, stride, padding, dilation, groups, grad_out.shape[2:])
    p = Plan("direct", "small") if small else plan("backward_weight", geo, xa.dtype)
    if p.name == "patch":  # (no padding)
        dw1 = conv2d_backward_weight(_space_to_depth(x, geo), grad_out.reshape(geo.n, o, 1, geo.oh * geo.ow),
                                     (1, 1), (0, 0, 0, 0), (1, 1), groups, (1, 1))
        return dw1.view(dw.shape)
    dw, checked = _backward_weight(p, x, grad_out, geo, dw)
    skips = p.name == "direct/small"
    if (any(padding) and skips == (xa.dtype == np.float64) and not (checked or all_finite(_np(dw)))
            and not all_finite(ga)):
        if skips:
            return _im2col.backward_weight(x, grad_out, stride, padding, dilation, groups, kernel_hw)
        dw = torch.empty_like(dw)
        _small.backward_weight(xa, ga, stride[0], stride[1], padding[0], padding[2], dilation[0], dilation[1], groups,
                               dw.numpy())
    return dw


def _backward_weight(p: Plan, x: torch.Tensor, grad_out: torch.Tensor, geo: Geometry,
                     dw: torch.Tensor) -> Tuple[torch.Tensor, bool]:
    """The weight gradient of ``geo`` as planned (``p``: not ``patch``), in ``dw`` or a new tensor,
    and whether it was found finite on the way (False: not checked, or not finite)."""
    xa, ga = _np(x), _np(grad_out)
    stride, padding, dilation = geo.stride, geo.pad, geo.dilation
    if p.name == "direct/small":
        _small.backward_weight(xa, ga, stride[0], stride[1], padding[0], padding[2], dilation[0], dilation[1],
                               geo.groups, dw.numpy())
        return dw, False
    if p.name == "im2col":
        return _im2col.backward_weight(x, grad_out, stride, padding, dilation, geo.groups, (geo.kh, geo.kw)), False
    if pointwise(geo) and geo.groups == 1:
        _weight_pointwise(xa, ga, geo, dw.numpy())
        return dw, False
    finite_ = _WEIGHT[p.name](xa, ga, geo, dw.numpy())  # (None: not checked)
    # the gathered reduction multiplies only real (image, pixel) pairs, and so do row-layout
    # vectors of whole rows; the other layouts multiply zeros by whatever input their throw-away
    # lanes read, and a non-finite one there leaves a NaN that torch has not.  It cannot hide in a
    # finite result, so only a non-finite one is recomputed -- on im2col, which multiplies real
    # pairs only (a scan of the input first cost 0.3 ms on 8 x 144 x 56x56)
    exact = p.name == "direct/rows" and (gathered(geo, xa.dtype) or geo.ow % (64 // xa.itemsize) == 0)
    if exact:
        return dw, finite_ is True
    if finite_ or (finite_ is None and all_finite(_np(dw))):
        return dw, True
    if p.name == "winograd/lanes":  # (forced only) transforms mix a non-finite value into every tap
        return _backward_weight(plan("backward_weight", geo, xa.dtype, exclude=("winograd", "direct/small")), x,
                                grad_out, geo, dw)
    return _im2col.backward_weight(x, grad_out, stride, padding, dilation, geo.groups, (geo.kh, geo.kw)), False


# --------------------------------------------------------------------------- bias gradient


@njit(cache=True, nogil=True)
def _conv2d_bias_grad(g, out, t0, t1):  # pragma: no cover - numba
    """out[c] = sum over n and p of g[n, c, p] (``g`` (N, C, HW)), in float64, in a fixed order: whole
    vectors of each plane into :data:`fastconv.cpu._simd.SUM_CHAINS` chains of lane sums
    (:func:`fastconv.cpu._simd.sums`), the planes' last elements into a scalar, then the chains,
    the lanes (pairwise: float32's 16 lanes of float64 sums, two vectors, which
    :func:`fastconv.cpu._simd.lane_sums` would take for two rows) and the scalar.  Measured (two
    threads, float32): 8 x 64 x 56x56 1.09 ms with eight scalar sums, 0.21 ms in one chain of lane
    sums, 0.08 in four (torch 0.11); 128 x 64 x 16x16 0.31 -> 0.11 ms (torch 0.15)."""
    N, C, HW = g.shape
    L = 64 // g.itemsize
    nv = HW // L
    acc = np.empty(SUM_CHAINS * L, np.float64)
    gf = g.reshape(-1)
    for c in range(t0, t1):
        acc[:] = 0.0
        t = 0.0
        for n in range(N):
            base = (n * C + c) * HW
            _SUMS(gf, base, nv, acc)
            for i in range(base + nv * L, base + HW):
                t += gf[i]
        for h in range(1, SUM_CHAINS):
            for l in range(L):
                acc[l] += acc[h * L + l]
        m = L
        while m > 1:
            m //= 2
            for l in range(m):
                acc[l] += acc[l + m]
        out[c] = acc[0] + t


def conv2d_bias_grad(grad_out: torch.Tensor) -> torch.Tensor:
    """Sum of ``grad_out`` over batch and space: the gradient of a per-channel bias."""
    n, c = grad_out.shape[:2]
    acc = np.zeros(c, dtype=np.float64)  # (the kernel writes every channel; zero for an empty batch)
    if grad_out.numel():
        g = _np(grad_out).reshape(n, c, -1)
        parallel_for(_conv2d_bias_grad, c, g, acc, work=grad_out.numel())
    return torch.from_numpy(acc.astype(_np(grad_out).dtype, copy=False))
