"""Direct convolution with output channels in the lanes: pixels broadcast against channel vectors.

The forward twin of the gathered weight gradient (:func:`fastconv.cpu._wgrad.weight_gather`).
The input is packed channels-last with its zero halo, ``X[n, r, q, c]`` (:func:`pack_nhwc`), the
output pixels are ordered ``(oy, ox, image)``, and for output pixel ``p`` and channel ``o``

    Y[p, o] = sum_k X[poff[p] + offs[k]] * Wp[o-tile, k, o]

over the taps ``k = (ky, kx, c)`` -- a GEMM whose left operand is read in place (one scalar per
pixel and tap, broadcast; consecutive taps read consecutive channels of one pixel) and whose
right operand is the weights packed ``[o-tile, k, TW]`` (:func:`fastconv.cpu._direct.pack_weights`
with ``TW``-channel blocks).  A register tile is ``MRP`` pixels x ``NVO`` vectors of channels
(:func:`fastconv.cpu._simd.gather_tile`), so no lane ever computes a padding column or a stray
pixel.  With the images innermost, a tile of a batch of 8 or more holds one output position, and
its taps that read only padding -- kernel rows and columns outside the image, whole ranges in
this tap order -- are skipped exactly (:func:`tap_windows`): a 5x5 layer on 14x14 planes
computes 83% of its full-kernel products, a 3x3 one on 7x7 planes 82%.  The layout suits narrow
planes (7x7 to 16x16) of deep layers, which the pixel-lane layouts fill only partly.  The result
is channels-last scratch; :func:`unpack` transposes it to NCHW and adds the bias.  Every output
element is one tile row's sum over the taps in order, whatever the threads.
"""
from __future__ import annotations

import functools
from typing import Tuple

import numpy as np
from .._numba import njit

from ._simd import copy_short, gather_tile, transpose_tile
from ._wgrad import image_channels_last

__all__ = ["MRP", "NVO", "KCHUNK", "pixels", "pixel_offsets", "position_offsets", "steps", "tap_offsets", "tap_windows",
           "transposed_windows", "transposed_offsets", "image_stride", "pixel_order", "pack_nhwc", "forward", "unpack",
           "kernel_order_steps", "pack_rows_transposed", "pack_taps_transposed"]

#: Output pixels per register tile.
MRP = 8
#: Vectors of output channels per register tile.
NVO = 2
#: Taps per pass over a task's pixel tiles: their ``KCHUNK x NVO`` weight vectors (16 KB in
#: float32) stay in L1, next to the tiles' input lines, while every pixel tile of the task adds
#: its share.  Measured (two threads, float32, forward kernel): 16 x 512 x 7x7 -> 512 3x3 15.6 ms
#: with 256 taps, 14.0 with 128, 13.8 with 64; 64 x 64 x 14x14 -> 32 5x5 4.25, 3.54, 3.75 ms.
KCHUNK = 128
_TILE = gather_tile(MRP, NVO)
#: The one-vector tile for thin layers (no padding channels), twice the pixels.
_TILE1 = gather_tile(2 * MRP, 1)


@njit(cache=True)
def pixels(nv: int) -> int:  # pragma: no cover - numba (forward calls it too)
    """Output pixels per tile of ``nv`` vectors of channels (16 accumulators either way)."""
    return MRP if nv == NVO else 2 * MRP


_TRANSPOSE = transpose_tile()
_TRANSPOSE_ROWS = transpose_tile(partial=True)
_TRANSPOSE_ADD = transpose_tile(add=True)
_COPY = copy_short()


@functools.lru_cache(maxsize=256)
def pixel_offsets(n: int, oh: int, ow: int, img: int, wq: int, sy: int = 1, sx: int = 1,
                  multiple: int = MRP) -> np.ndarray:
    """Start of each output pixel ``(image, oy, ox)`` in an unsplit row-layout input (one phase:
    the kernels read single elements, so strides need no phase split), ``n*img + oy*sy*wq +
    ox*sx``, padded to a multiple of ``multiple`` by repeating the last pixel (memoised: callers
    must not write)."""
    b, y, x = np.meshgrid(np.arange(n), np.arange(oh), np.arange(ow), indexing="ij")
    p = (b * img + y * (sy * wq) + x * sx).reshape(-1).astype(np.int64)
    pad = -p.size % multiple
    return np.concatenate([p, np.full(pad, p[-1], dtype=np.int64)])


@functools.lru_cache(maxsize=256)
def steps(k: int, tw: int) -> np.ndarray:
    """Offsets ``k * tw`` of each tap's weight vectors within an o-tile (memoised: do not write)."""
    return np.arange(k, dtype=np.int64) * tw


@functools.lru_cache(maxsize=256)
def kernel_order_steps(c: int, taps: int, tw: int) -> np.ndarray:
    """Offsets of each tap's weight vectors within an o-tile packed in the kernels' own order
    ``(c, ky, kx)`` (:func:`pack_rows_transposed`, :func:`pack_taps_transposed`), for the taps in
    the gather's order ``(ky, kx, c)`` (memoised: do not write)."""
    t, ch = np.divmod(np.arange(taps * c, dtype=np.int64), c)
    return (ch * taps + t) * tw


@njit(cache=True, nogil=True)
def pack_rows_transposed(a, o, k, tw, wp, t0, t1):  # pragma: no cover - numba
    """``wp[ot, j, m] = a[(ot*tw + m)*k + j]`` (zero for rows ``ot*tw + m >= o``): the ``(o, k)``
    matrix ``a`` (flat) in o-tiles of ``tw`` columns, for the tasks [t0, t1) = (o-tile, block of
    ``L`` columns ``j``) pairs; whole ``L x L`` blocks go through register transposes."""
    L = 64 // a.itemsize
    nj = -(-k // L)
    for task in range(t0, t1):
        ot = task // nj
        j0 = (task - ot * nj) * L
        j1 = min(k, j0 + L)
        base = ot * k * tw
        for m0 in range(0, tw, L):
            r0 = ot * tw + m0
            if j1 - j0 == L and r0 + L <= o:
                _TRANSPOSE(a, r0 * k + j0, k, wp, base + j0 * tw + m0, tw)
                continue
            for j in range(j0, j1):
                for m in range(L):
                    wp[base + j * tw + m0 + m] = a[(r0 + m) * k + j] if r0 + m < o else 0


@njit(cache=True, nogil=True)
def pack_taps_transposed(w, c, o, taps, tw, wp, t0, t1):  # pragma: no cover - numba
    """``wp[ot, i*taps + t, m] = w[(i*o + ot*tw + m)*taps + t]`` (zero for ``ot*tw + m >= o``): the
    ``(c, o, taps)`` array ``w`` (flat; a transposed OIHW weight's memory) in o-tiles of ``tw``,
    for the tasks [t0, t1) = (o-tile, ``i``) pairs.  ``L`` consecutive ``o`` of one ``i`` are
    ``L`` rows ``taps`` apart: register transposes of ``L x L`` blocks (reading past each row into
    the next) store their first ``min(L, taps - t)`` rows; a block that would read past the array
    is copied element by element."""
    L = 64 // w.itemsize
    k = c * taps
    for task in range(t0, t1):
        ot = task // c
        i = task - ot * c
        base = (ot * k + i * taps) * tw
        for m0 in range(0, tw, L):
            r0 = ot * tw + m0
            src = (i * o + r0) * taps
            whole = r0 + L <= o
            for t0_ in range(0, taps, L):
                if whole and src + t0_ + (L - 1) * taps + L <= w.size:
                    _TRANSPOSE_ROWS(w, src + t0_, taps, wp, base + t0_ * tw + m0, tw, min(L, taps - t0_))
                    continue
                for t in range(t0_, min(taps, t0_ + L)):
                    for m in range(L):
                        wp[base + t * tw + m0 + m] = w[src + m * taps + t] if r0 + m < o else 0


@functools.lru_cache(maxsize=256)
def image_stride(hq: int, wq: int, c: int, itemsize: int) -> int:
    """Elements from one image to the next in :func:`pack_nhwc`'s layout: ``hq * wq * c`` rounded up
    to an odd number of cache lines, so that a tile's pixels -- one position of consecutive images
    -- fall in different L1 sets.  (At a power-of-two stride, 16 images of 16x16 x 32 channels, all
    16 loads of a tap hit one set: the forward kernel ran 15% slower.)"""
    per_line = 64 // itemsize
    lines = -(-hq * wq * c // per_line)
    return (lines | 1) * per_line


def pixel_order(n: int, oh: int, ow: int, block: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image, output row and column of each pixel in :func:`forward`'s order: blocks of ``block``
    consecutive images (the last one smaller), within a block ``(oy, ox, image)``.  A tile of
    ``block`` pixels is then one position of ``block`` images, and a thread's contiguous share of
    tiles reads a contiguous share of the images (the ones it packed, and fewer pages)."""
    y, x, i = [], [], []
    for n0 in range(0, n, block):
        bs = min(block, n - n0)
        yy, xx, ii = np.meshgrid(np.arange(oh), np.arange(ow), np.arange(n0, n0 + bs), indexing="ij")
        y.append(yy.reshape(-1)), x.append(xx.reshape(-1)), i.append(ii.reshape(-1))
    return np.concatenate(i), np.concatenate(y), np.concatenate(x)


@functools.lru_cache(maxsize=256)
def position_offsets(n: int, oh: int, ow: int, istride: int, wq: int, c: int, sy: int, sx: int,
                     multiple: int) -> np.ndarray:
    """Start of each output pixel (:func:`pixel_order` with blocks of ``multiple`` images) in the
    channels-last input of :func:`pack_nhwc` (images ``istride`` apart, rows of ``wq`` padded
    positions of ``c`` channels), padded to a multiple of ``multiple`` by repeating the last pixel
    (memoised: callers must not write)."""
    b, y, x = pixel_order(n, oh, ow, multiple)
    p = (b * istride + (y * sy * wq + x * sx) * c).astype(np.int64)
    pad = -p.size % multiple
    return np.concatenate([p, np.full(pad, p[-1], dtype=np.int64)])


@functools.lru_cache(maxsize=256)
def tap_offsets(c: int, kh: int, kw: int, wq: int, dy: int, dx: int, flip: bool) -> np.ndarray:
    """Offset of each tap ``(ky, kx, c)`` from a pixel's start in the channels-last input; with
    ``flip`` packed tap ``(ky, kx)`` reads kernel position ``(kh-1-ky, kw-1-kx)`` (the weights are
    packed unrotated, applied rotated: an input gradient).  (Memoised: do not write.)"""
    ky, kx = np.arange(kh), np.arange(kw)
    if flip:
        ky, kx = ky[::-1], kx[::-1]
    offs = ((ky[:, None, None] * dy * wq + kx[None, :, None] * dx) * c + np.arange(c)[None, None, :])
    return offs.reshape(-1).astype(np.int64)


def _axis_window(o: np.ndarray, s: int, d: int, k: int, pad: int, size: int, flip: bool) -> Tuple[np.ndarray, np.ndarray]:
    """For output coordinates ``o`` along one axis, the packed taps ``[first, last)`` that read
    inside the image: tap ``t`` (``k-1-t`` with ``flip``) reads input ``o*s + t*d - pad``."""
    t = np.arange(k)
    eff = k - 1 - t if flip else t
    inside = (o[:, None] * s + eff[None, :] * d - pad >= 0) & (o[:, None] * s + eff[None, :] * d - pad < size)
    any_ = inside.any(axis=1)
    first = np.where(any_, inside.argmax(axis=1), 0)
    last = np.where(any_, k - inside[:, ::-1].argmax(axis=1), 0)
    return first, last


@functools.lru_cache(maxsize=256)
def tap_windows(n: int, oh: int, ow: int, stride: Tuple[int, int], dilation: Tuple[int, int], kh: int, kw: int,
                pad: Tuple[int, int], hw: Tuple[int, int], flip: bool, tile: int) -> np.ndarray:
    """For each tile of ``tile`` pixels of :func:`position_offsets`, the packed kernel rows
    ``[ky0, ky1)`` and columns ``[kx0, kx1)`` (int64 ``[tiles, 4]``) that read inside the
    ``hw`` image for some pixel of the tile: the rest read the zero halo.  A tile of one output
    position skips exactly the taps that read only padding; a tile over two positions takes the
    hull of theirs.  (Memoised: do not write.)"""
    _, oy, ox = pixel_order(n, oh, ow, tile)
    extra = -oy.size % tile
    oy = np.concatenate([oy, np.full(extra, oy[-1])]).reshape(-1, tile)
    ox = np.concatenate([ox, np.full(extra, ox[-1])]).reshape(-1, tile)
    y0, y1 = _axis_window(np.arange(oh), stride[0], dilation[0], kh, pad[0], hw[0], flip)
    x0, x1 = _axis_window(np.arange(ow), stride[1], dilation[1], kw, pad[1], hw[1], flip)
    win = np.stack([y0[oy].min(axis=1), y1[oy].max(axis=1), x0[ox].min(axis=1), x1[ox].max(axis=1)], axis=1)
    return np.ascontiguousarray(win.astype(np.int64))


def _transposed_axis(i: np.ndarray, s: int, k: int, pad: int, size: int) -> Tuple[np.ndarray, np.ndarray]:
    """For input-gradient coordinates ``i`` of a stride-``s`` convolution along one axis, the taps
    ``range(first, last, s)`` that reach them: tap ``t`` carries output ``(i + pad - t) / s`` when
    that divides and lies in ``[0, size)``."""
    t = np.arange(k)
    q = i[:, None] + pad - t[None, :]
    ok = (q % s == 0) & (q >= 0) & (q < s * size)
    any_ = ok.any(axis=1)
    first = np.where(any_, ok.argmax(axis=1), 0)
    last = np.where(any_, k - ok[:, ::-1].argmax(axis=1), 0)
    return first, last


@functools.lru_cache(maxsize=256)
def transposed_windows(n: int, h: int, w: int, stride: Tuple[int, int], kh: int, kw: int, pad: Tuple[int, int],
                       out_hw: Tuple[int, int], tile: int) -> np.ndarray:
    """:func:`tap_windows` for the input gradient of a strided, undilated convolution computed
    directly (``h x w`` input-gradient pixels in :func:`pixel_order`, the output gradient ``out_hw``):
    per tile, the kernel rows and columns ``[first, last)`` stepped by the stride that carry a
    gradient to it -- exact for tiles of one position, the only ones the caller uses.
    (Memoised: do not write.)"""
    _, iy, ix = pixel_order(n, h, w, tile)
    if iy.size % tile:
        raise ValueError("transposed_windows needs tiles of one position (the batch a multiple of the tile)")
    y0, y1 = _transposed_axis(np.arange(h), stride[0], kh, pad[0], out_hw[0])
    x0, x1 = _transposed_axis(np.arange(w), stride[1], kw, pad[1], out_hw[1])
    iy, ix = iy.reshape(-1, tile)[:, 0], ix.reshape(-1, tile)[:, 0]
    return np.ascontiguousarray(np.stack([y0[iy], y1[iy], x0[ix], x1[ix]], axis=1).astype(np.int64))


@functools.lru_cache(maxsize=256)
def transposed_offsets(n: int, h: int, w: int, istride: int, c: int, stride: Tuple[int, int], kh: int, kw: int,
                       pad: Tuple[int, int], ow: int, tile: int) -> Tuple[np.ndarray, np.ndarray]:
    """Pixel starts and tap offsets of the direct strided input gradient: pixel ``(b, iy, ix)`` starts at
    output-gradient position ``((iy + pt) // sy, (ix + pl) // sx)`` of the channels-last, unpadded
    gradient (``ow`` positions a row, ``c`` channels, images ``istride`` apart), and tap
    ``(ky, kx, o)`` -- valid only in the residue class of the pixel's phase -- is ``ky // sy`` rows
    and ``kx // sx`` columns before it.  (Memoised: do not write.)"""
    (sy, sx), (pt, pl) = stride, pad
    b, iy, ix = pixel_order(n, h, w, tile)
    poff = (b * istride + (((iy + pt) // sy) * ow + (ix + pl) // sx) * c).astype(np.int64)
    ky, kx = np.arange(kh), np.arange(kw)
    offs = -((ky[:, None, None] // sy) * ow + (kx[None, :, None] // sx)) * c + np.arange(c)[None, None, :]
    return poff, offs.reshape(-1).astype(np.int64)


@njit(cache=True, nogil=True)
def pack_nhwc(x, Xf, istride, HQ, WQ, pt, pl, t0, t1):  # pragma: no cover - numba
    """``Xf[n*istride + (r*WQ + q)*C + c] = x[n, c, r - pt, q - pl]``, zero outside ``x``, for the
    images [t0, t1) (``HQ x WQ`` padded positions; :func:`image_stride`).

    With whole ``L x L`` blocks in every image row (``C`` and ``W`` multiples of the vector width,
    the image inside the padded positions) the blocks are transposed straight into place.  With
    ``C`` a multiple of the vector width and the image inside, ``L x L`` (channel x flattened
    pixel) blocks -- whose pixels may span image rows (7x7, 14x14, 56x56 planes) -- are transposed
    into a register-sized tile, each pixel's ``L`` channels then stored at its padded position
    (one pass: through an image-sized scratch first, 8 x 64 x 56x56 took 0.42 ms, a copy 0.22).
    Otherwise an image is first transposed whole, ``(C, H*W) -> (H*W, C)``, into an image-sized
    buffer of the task range's own (one allocation a range: an input-sized scratch held 16 MB for
    a 128 x 32 x 32x32 batch), then copied row by row into place between the zero halo."""
    N, C, H, W = x.shape
    HW = H * W
    xf = x.reshape(-1)
    q0 = min(WQ, max(0, pl))  # columns left of the image
    q1 = min(WQ, max(q0, pl + W))  # past its right edge
    L = 64 // x.itemsize
    inside = 0 <= pt and pt + H <= HQ and 0 <= pl and pl + W <= WQ
    # whole L x L blocks in every image row land in place: transposed straight into ``Xf`` (one
    # pass, not two through ``tmp``)
    direct = C % L == 0 and W % L == 0 and inside
    tiles = C % L == 0 and inside and not direct
    T = np.empty(L * L, dtype=x.dtype)
    pfull = HW - HW % L
    # one image-sized buffer, reused image after image, stays in cache (a slot per image went
    # through memory: 8 x 64 x 56x56 with halo, 0.83 -> 0.75 ms on two threads)
    tmp = np.empty(0 if direct or tiles else HW * C, dtype=x.dtype)
    slot = 0
    for n in range(t0, t1):
        base = n * HW * C
        if not (direct or tiles):
            image_channels_last(xf, base, C, HW, tmp, slot, C, C)
        for r in range(HQ):
            row = n * istride + r * WQ * C
            iy = r - pt
            if iy < 0 or iy >= H:
                Xf[row:row + WQ * C] = 0
                continue
            Xf[row:row + q0 * C] = 0
            Xf[row + q1 * C:row + WQ * C] = 0
            if direct:  # (q0 = pl, q1 = pl + W)
                for c0 in range(0, C, L):
                    for x0 in range(0, W, L):
                        _TRANSPOSE(xf, base + c0 * HW + iy * W + x0, HW, Xf, row + (q0 + x0) * C + c0, C)
            elif not tiles:
                t = slot + (iy * W + q0 - pl) * C
                Xf[row + q0 * C:row + q1 * C] = tmp[t:t + (q1 - q0) * C]
        if tiles:
            img = n * istride + (pt * WQ + pl) * C
            for c0 in range(0, C, L):
                for p0 in range(0, HW, L):
                    if p0 < pfull:
                        _TRANSPOSE(xf, base + c0 * HW + p0, HW, T, 0, L)  # row j: pixel p0 + j's L channels
                    else:
                        for j in range(HW - p0):
                            for i in range(L):
                                T[j * L + i] = xf[base + (c0 + i) * HW + p0 + j]
                    iy = p0 // W
                    ix = p0 - iy * W
                    for j in range(min(L, HW - p0)):
                        _COPY(T, j * L, Xf, img + (iy * WQ + ix) * C + c0, L)
                        ix += 1
                        if ix == W:
                            ix = 0
                            iy += 1


@njit(cache=True, nogil=True)
def forward(X, poff, offs, Wp, sb, K, C, kw, win, ty, tx, Y, opad, pchunks, nv, t0, t1):  # pragma: no cover - numba
    """The tasks [t0, t1) = (pixel chunk, o-tile) pairs of ``Y[p, o] = sum_k X[poff[p] + offs[k]] * Wp``.

    ``Y`` is ``[opad / TW, pixels, TW]`` flat, an o-tile's rows side by side: a tile's stores are
    one contiguous run, and :func:`unpack` reads a channel block's rows ``block * TW`` elements
    apart instead of ``block * opad`` (4 KB on 8 x 64 x 56^2 -> 128 3x3 /2; its unpacking measured
    the same either way, 0.41-0.43 ms without a bias); ``Wp`` holds ``opad / TW`` o-tiles of
    ``K x TW`` (``TW = nv`` vectors, tiles of :func:`pixels` pixels); ``sb`` is :func:`steps`; the
    ``K = kh*kw*C`` taps are ordered ``(ky, kx, c)``.  Pixel tile ``t`` sums the taps of kernel rows
    ``range(win[t, 0], win[t, 1], ty)`` and columns ``range(win[t, 2], win[t, 3], tx)`` only
    (:func:`tap_windows`: the others read padding; :func:`transposed_windows`: the others miss the
    stride) -- with ``tx == 1`` one contiguous range per kernel row -- and is zero when they are
    empty.  A task's pixel tiles are a contiguous share of the ``poff.size / MRP`` tiles; it passes
    over its taps ``KCHUNK`` at a time (a tile accumulates in ``Y``).  Tasks run pixel chunk by
    pixel chunk, the o-tiles innermost, so a thread's range of tasks reads its share of the input,
    all o-tiles' weights (an o-tile's are ``K x TW``, less than a chunk's input).  Two threads,
    float32, the input gradient of 64 x 64 x 14x14 -> 32 5x5 (two o-tiles), kernel alone: 2.5 ms
    o-tile by o-tile (each thread read the whole 2.6 MB input), 2.05 ms so; its unpacking 0.26 ->
    0.19 ms (each thread's rows).
    """
    L = 64 // X.itemsize
    TW = nv * L
    mrp = pixels(nv)
    npix = poff.shape[0]
    ntiles = npix // mrp
    otiles = opad // TW
    for task in range(t0, t1):
        c = task // otiles
        ot = task - c * otiles
        p0 = ntiles * c // pchunks
        p1 = ntiles * (c + 1) // pchunks
        ybase = ot * npix * TW
        for pt in range(p0, p1):
            if win[pt, 0] >= win[pt, 1] or win[pt, 2] >= win[pt, 3]:
                row = ybase + pt * mrp * TW
                Y[row:row + mrp * TW] = 0
        for k0 in range(0, K, KCHUNK):
            k1 = min(K, k0 + KCHUNK)
            for pt in range(p0, p1):
                first = (win[pt, 0] * kw + win[pt, 2]) * C
                for ky in range(win[pt, 0], win[pt, 1], ty):
                    for kx in range(win[pt, 2], win[pt, 3] if tx > 1 else win[pt, 2] + 1, tx):
                        lo = max(k0, (ky * kw + kx) * C)
                        hi = min(k1, (ky * kw + (kx + 1 if tx > 1 else win[pt, 3])) * C)
                        if lo < hi and nv == NVO:
                            _TILE(X, 0, poff, pt * mrp, offs[lo:hi], Wp, ot * K * TW, sb[lo:hi], hi - lo, Y,
                                  ybase + pt * mrp * TW, TW, lo > first)
                        elif lo < hi:
                            _TILE1(X, 0, poff, pt * mrp, offs[lo:hi], Wp, ot * K * TW, sb[lo:hi], hi - lo, Y,
                                   ybase + pt * mrp * TW, TW, lo > first)


@njit(cache=True, nogil=True)
def unpack(Y, tw, npix, block, out, bias, has_bias, t0, t1):  # pragma: no cover - numba
    """``out[n, o, p] = Y[o // tw, row(n, p), o % tw] (+ bias[o])`` for the tasks [t0, t1) = (image,
    block of ``L`` channels) pairs: ``Y`` is :func:`forward`'s o-tiles of ``tw`` channels, each
    ``[npix, tw]``, the rows in :func:`pixel_order` with blocks of ``block`` images.  Whole
    ``L x L`` blocks go through register transposes that add the bias on the way (a second pass
    adding it took 0.15 of 0.43 ms on 8 x 64 x 56^2 -> 128 3x3 /2; rounded the same: one addition
    to the finished sum).  The scalar rest adds it after the copy."""
    N, O, H, W = out.shape
    HW = H * W
    L = 64 // Y.itemsize
    obs = -(-O // L)
    of = out.reshape(-1)
    pfull = HW - HW % L
    for task in range(t0, t1):
        n = task // obs
        o0 = (task - n * obs) * L
        o1 = min(O, o0 + L)
        n0 = n - n % block
        rs = min(block, N - n0) * tw  # from one pixel's row to the next of the same image
        src = (o0 // tw) * npix * tw + o0 % tw + (n0 * HW + n - n0) * tw
        dst = n * O * HW
        if o1 - o0 == L:
            for p0 in range(0, pfull, L):
                if has_bias:
                    _TRANSPOSE_ADD(Y, src + p0 * rs, rs, of, dst + o0 * HW + p0, HW, bias, o0)
                else:
                    _TRANSPOSE(Y, src + p0 * rs, rs, of, dst + o0 * HW + p0, HW)
            p1 = pfull
        else:
            p1 = 0
        for o in range(o0, o1):
            for p in range(p1, HW):
                of[dst + o * HW + p] = Y[src + p * rs + o - o0]
            if has_bias:
                v = bias[o]
                for p in range(dst + o * HW + p1, dst + (o + 1) * HW):
                    of[p] += v
