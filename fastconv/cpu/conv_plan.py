"""The planner of the CPU convolution engine: which algorithm and layout run each pass.

:func:`plan` is the one place that decides; :func:`plan_name` answers for a layer the way
``fastconv.filters.choose_method`` does for images, and ``benchmarks/calibrate_conv2d.py``
re-measures the rules on a machine (``benchmarks/CALIBRATION.md`` keeps the history).

Algorithms (see :mod:`fastconv.cpu.conv2d`):

* ``direct/small`` -- tiny problems: plain loops in one call, no set-up;
* ``direct/rows`` -- wide outputs (a row fills at least most of a tile of vectors);
* ``direct/lanes`` -- narrow outputs: images, or blocks of them, side by side in the lanes;
* ``direct/flat`` -- narrow outputs of small batches (forward and input gradient): each padded
  plane is one long row, its padding columns computed and cropped, instead of lanes cut into
  blocks that each carry a halo;
* ``direct/gather`` -- deep layers with outputs narrower than a vector (forward and stride-1
  input gradient): output channels in the lanes, each pixel's input broadcast against them, so
  no lane computes padding columns or stray pixels; channels-last scratch, transposed at the end;
* ``direct/depthwise`` -- depthwise layers (one input channel per group; every pass, any
  stride): each (image, channel) plane packed, computed and cropped while it is in cache
  (:mod:`fastconv.cpu._depthwise`), instead of a pass over memory to pack the whole input;
* ``direct/depthwise-lanes`` -- depthwise layers of small planes (forward, weight gradient, and
  the input gradient of stride 1 and one output per group): a vector lane per channel
  (:mod:`fastconv.cpu._depthwise_lanes`), so a 7x7 plane costs no partly empty vectors;
* ``winograd/lanes`` -- F(2x2, 3x3): 3x3, stride 1, dilation 1, enough channels on both
  sides for its 2.25x fewer multiplications to pay for the transforms; forward and input
  gradient only.  Its weight gradient exists (``forced``) but is not planned: where the
  exact gradient of a tap is zero (inputs that are zero wherever that tap reads them), the
  transforms leave round-off of about 1e-9 instead of 0, and Adam turns such residues into
  full-size steps -- 1 and 2 processes training the classifier drifted 1e-3 apart with it,
  1e-6 without (the direct sums keep exact zeros, as torch's do);
* ``im2col`` -- columns and BLAS: for strides that skip input pixels (the direct layouts
  would copy pixels nobody reads), and the exact path for non-finite weight-gradient inputs;
* ``patch`` -- kernels that tile the input (kernel == stride, no padding or dilation: the
  ``ConvTranspose2d(k=2, s=2)`` of a UNet and its gradients, patch embeddings): each block
  of kh x kw pixels becomes kh*kw channels (space-to-depth) and the pass is a 1x1
  convolution, planned in turn.  The strided passes would otherwise run per stride phase,
  each phase a one-tap convolution of a quarter of the pixels.

Passes are ``'forward'``, ``'backward_input'`` (a convolution of the output gradient:
planned on its own geometry) and ``'backward_weight'``.
"""
from __future__ import annotations

import contextlib
import functools
import threading
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence, Tuple

import numpy as np
import torch

from .. import _programs
from ._direct import MR, NV, blocking

__all__ = ["Geometry", "geometry", "Plan", "plan", "plan_name", "forced", "gathered", "gathered_by_group", "one_group",
           "gathers_forward", "ALGORITHMS", "ROWS_MIN_WIDTH", "pointwise"]

#: Every plan name :func:`plan` can return.
ALGORITHMS = ("direct/small", "direct/rows", "direct/flat", "direct/lanes", "direct/gather", "direct/depthwise",
              "direct/depthwise-lanes", "winograd/lanes", "im2col", "patch")

#: Below this many multiply-adds a pass runs as plain loops in one Numba call
#: (:mod:`fastconv.cpu._small`): the engine's set-up would cost more than the arithmetic.
SMALL_MACS = 32_768

#: Output rows at least this many tiles-of-vectors wide (as a fraction of one tile) run in the
#: row layout; narrower ones waste lanes there and run in the lane layout.  Measured on the
#: 2-vCPU AVX-512 machine, float32: 28-32 px rows are 1.3-2x faster in rows (fewer passes over
#: big outputs), 8-16 px rows 1.5-3x faster in lanes.
ROWS_MIN_WIDTH = 0.75

#: Winograd needs this many images: its lane layout then holds whole images, 2x2 tiles of one
#: position of many images per vector.  Smaller batches split planes into blocks, whose tiles
#: and halos waste lanes.  Measured (one thread, float32, forward; input gradients alike):
#: batch 128 at 8x8 and 16x16, Winograd 3.9 and 5.1 ms against 6.0 and 6.9 ms direct; batch 4
#: at 8x8 (256 channels) 7.4 against 3.1 ms, at 16x16 (128 channels) 3.1 against 2.5 ms,
#: batch 16 at 8x8 0.69 against 0.50 ms; batch 4 at 32x32 and 128x128 within 7% either way.
WINOGRAD_MIN_BATCH = 32

#: Below :data:`WINOGRAD_MIN_BATCH`, Winograd still wins forward passes with enough 2x2 tiles
#: (:data:`WINOGRAD_GRAD_TILES`, over all images) of at least :data:`WINOGRAD_MID_CHANNELS` input
#: channels, whose rows fill the lanes (at least :data:`WINOGRAD_MIN_WIDTH`).  Measured on
#: 2026-12-06 (two threads, float32, forward, Winograd against the best direct layout, ms):
#: 1 x 64 / 128 / 256 x 56^2 -> same 0.94 / 2.68 / 10.6 against 1.10 / 3.41 / 16.6 (rows, the plan
#: before: 1.73 / 5.75 / 30.5; torch 1.81 / 4.36 / 14.4), 1 x 64 / 128 / 256 x 32^2 (256 tiles)
#: 0.37 / 1.08 / 3.54 against 0.40 / 1.29 / 4.53, 2 and 4 x 64-256 x 28^2 and 32^2 ahead by
#: 0-40% but for 2 x 64 x 28^2 (0.56 against 0.48), 4 x 64 x 16^2 -> 128 and -> 64 0.57 and 0.32
#: against 0.63 and 0.31, 4 x 64 x 64^2 -> 32 1.85 against 2.27, 1 x 128 x 56^2 -> 64 1.50 against
#: 1.86; on 196 tiles (1 x 64-256 x 28^2) 20-60% behind the gather.  Before, the rule asked for
#: 128 input channels, no more outputs, and no count of tiles: 256 -> 256 on 1 x 28^2 ran 5.66 ms
#: in Winograd against 3.54 gathered.  With 32 input channels the direct layouts keep 4 images
#: (4 x 32 x 64^2 -> 32: 1.27 against rows 1.22) and the mid-batch rule takes 8.  (Input
#: gradients have a rule of their own, :data:`WINOGRAD_GRAD_CHANNELS`, which reads
#: :data:`WINOGRAD_DEEP_CHANNELS`.)
WINOGRAD_DEEP_CHANNELS = 128
WINOGRAD_MIN_WIDTH = 16

#: Below :data:`WINOGRAD_MIN_BATCH`, input gradients run Winograd into at least as many channels
#: as they read, at least this many, from rows of at least twice :data:`WINOGRAD_MIN_WIDTH` (or
#: :data:`WINOGRAD_DEEP_CHANNELS` channels read), with at least :data:`WINOGRAD_GRAD_TILES` 2x2
#: tiles.  Measured on 2026-12-05 once the flipped weights were transformed in place and the
#: lane blocks packed through transposes (two threads, float32, input gradient of the layer
#: ``n x c x h^2 -> o``, Winograd against the plan before, ms): 4 x 64 x 32^2 -> 64 1.14 / 1.21,
#: 4 x 128 x 32^2 -> 64 2.09 / 2.51, 4 x 64 x 64^2 -> 64 4.05 / 4.43, 4 x 128 x 64^2 -> 128 12.9 /
#: 17.4, 4 x 128 x 16^2 -> 128 1.12 / 1.22, 4 x 256 x 16^2 -> 128 2.09 / 2.32, 4 x 256 x 16^2 -> 256
#: 3.42 / 4.24, 2 and 1 x 128 x 32^2 -> 128 1.96 / 2.37 and 1.13 / 1.36.  Direct stays faster from
#: fewer channels than it reads (4 x 64 x 16^2 -> 128 0.75 / 0.71, 4 x 32 x 32^2 -> 64 0.81 / 0.71),
#: into 32 channels (4 x 32 x 64^2 -> 32 1.33 / 1.18), from 64 channels at 16^2 (4 x 64 x 16^2 -> 64
#: 0.45 / 0.43) and on 64 tiles (1 x 256 x 16^2 -> 256 2.39 / 1.37).  Winograd ran first after
#: torch in each round, which costs it about 6%: the two slots, both Winograd under the mid-batch
#: rule, timed 8 x 64 x 28^2 -> 64 at 1.61 / 1.51 and 16 x 64 x 14^2 -> 128 at 1.80 / 1.68.
WINOGRAD_GRAD_CHANNELS = 64
WINOGRAD_GRAD_TILES = 256

#: Layers with at most this many output channels per group run forward (and input gradients
#: with at most this many input channels) in the lane layout, whose register blocks come in
#: 4- and 1-channel shapes (:data:`fastconv.cpu._direct.BLOCKINGS`) at any row width; the row
#: layout uses them only on rows wide enough for their wider tiles (:func:`rows_blocking`).
#: Measured (one thread, float32): a 32 -> 1 channel 3x3 layer on 128 images of 32x32, 15.5 ms
#: in rows with the 8-channel block, 5.5 ms in lanes with the 1-channel one (torch: 9.8 ms).
#: Rows of at least ``ROWS_MIN_WIDTH`` of a wide tile go flat instead (whole planes as rows, with
#: the thin blocks): two threads, that layer 2.37 -> 1.27 ms; the 3-channel input gradients of
#: 128 x 3 x 32x32 3x3 and 64 x 3 x 32x32 5x5 first layers 2.88 -> 1.63 and 5.28 -> 2.85 ms.
#: 16-pixel rows stay in lanes (128 x 32 x 16x16 -> 3: lanes 0.44, flat 0.49 ms).
THIN_CHANNELS = 4

#: Wide rows that fill less than this fraction of their row tiles (40 px rows in two 32-px tiles:
#: 0.625) run as flattened planes too (``direct/flat``: only the padding columns are computed in
#: vain), any batch.  Measured on 2026-12-06 (two threads, float32, 3x3, forward / input gradient,
#: ms, flat against rows): 8 x 32 x 40^2 0.80 / 0.86 against 1.11 / 1.19 (torch 0.82 / 2.20), 64 x
#: 32 x 40^2 7.21 / 7.44 against 9.36 / 9.53, 16 x 32 x 36^2 1.36 / 1.43 against 1.98 / 2.10, 8 x 32
#: x 24^2 0.30 / 0.30 against 0.36 / 0.35, 8 x 48 x 48^2 2.39 / 2.39 against 2.86 / 2.85, 8 x 16 x
#: 48^2 0.36 / 0.35 against 0.43 / 0.42; where the tiles are full or nearly so, rows stay as fast
#: or faster (8 x 32 x 80^2, 0.83: 3.63 / 3.56 against 3.74 / 3.71; 56^2, 0.875: 1.50 / 1.51
#: against 1.60 / 1.53; 64^2 and 112^2: flat 5-8% slower).
ROWS_MIN_FILL = 0.8

#: Below this batch, narrow outputs (forward and input gradient) run as flattened planes
#: (``direct/flat``): the lane layout would cut images into blocks to fill its lanes, each packed
#: with its halo.  Measured (two threads, float32, forward): 4 x 256 x 8x8 -> 256, flat 1.25 ms
#: against 1.80 in lanes; 4 x 128 x 8x8 -> 256 0.68 / 1.01; 4 x 64 x 16x16 -> 128 0.49 / 0.68;
#: 4 x 256 x 16x16 -> 128 1.61 / 2.02; 16 x 64 x 8x8 -> 64 0.38 / 0.43.  At batch 128 lanes hold
#: whole images and win (128 x 32 x 16x16 -> 64: flat 3.8, Winograd in lanes 2.9 ms).
FLAT_MAX_BATCH = 31

#: Output channels (per group) from which weight gradients run on :func:`fastconv.cpu._wgrad.weight_gather`
#: (vectors over output channels, two vectors wide); thinner layers reduce over vectors of pixels
#: instead.  Measured (one thread, float32): 16-channel layers 1.3-1.6x faster reducing over pixels
#: (half the gather's channel lanes would be padding), 32-channel and deeper 1.6-1.9x faster gathered.
GATHER_MIN_CHANNELS = 32
#: ... or this many for strided layers, whose pixel-vector reductions first split the input into
#: phases, and for rows narrower than the row layout takes (their pixel vectors run in lanes cut
#: into blocks): 128 x 32 x 16x16 -> 16 3x3/2, weight gradient 0.98 ms gathered against 2.14 in
#: lanes (forward 0.91 against 1.53; torch 0.53 and 0.48); stride 1, one-vector tiles: 128 x 16 x
#: 8x8 -> 16 0.39 against 0.84 ms, 128 x 32 x 16x16 -> 16 1.81 against 3.41 (torch 0.18, 1.18); on
#: 128x128 rows the two tie (1.90 / 2.10 and 3.55 / 3.35 ms), so wide rows keep the dot products.
GATHER_MIN_CHANNELS_STRIDED = 16
#: ... and from this many taps (input channels x kernel taps per group): with fewer, the gather's
#: tap tiles are too few to pay for the channels-last copy of the output gradient (3-channel
#: first layers, 27 taps: 1.5x faster reducing over pixels; 75 taps: 1.1x faster gathered).
GATHER_MIN_TAPS = 48


def gathers_forward(geo: Geometry, dtype) -> bool:
    """Whether the forward pass of ``geo`` (or the convolution of a stride-1 input gradient) runs
    with output channels in the lanes (``direct/gather``): the deep, ungrouped layers whose weight
    gradients gather (:func:`gathered`), when output rows are at most one vector wide or the
    stride is not 1.

    The pixel layouts fill their lanes only partly there: flat planes of 8x8 compute 96 positions
    for 64 pixels, lanes cut images into blocks with halos, and strides split the input into
    phases first; the gather reads single elements of one channels-last copy and skips the taps
    that read padding.  Measured after the channels-last gather of 2026-12-04 (two threads,
    float32, forward / input gradient, ms, gather against the other layouts): 4 x 256 x 16x16 ->
    256 input gradient 4.45 against flat 5.37, 4 x 128 x 16x16 -> 128 1.30 / 1.50; 4 x 16 x 16x16
    -> 32 0.13 / 0.16 against flat 0.19 / 0.18; 64 and 128 x 16 x 16x16 -> 32 0.82 / 0.99 and
    1.71 / 1.91 against lanes 1.50 / 1.58 and 2.39 / 3.15; 4 x 64 x 16x16 -> 64 and -> 128 within
    3% either way.  Earlier, on 8x8 and 14x14: 4 x 256 x 8x8 -> 256 against flat 1.66 / 1.82;
    64 x 64 x 14x14 -> 32 5x5 against lanes 3.15 / 4.96.  Stride 2, forward: 128 x 32 x 32x32 ->
    32 4x4 (a ConvTranspose2d's input gradient) 4.0 against lanes 9.0 (torch 3.6); 8 x 32 x 128x128
    -> 64 3x3 5.6 against rows 9.6.  Rows of 32 and more keep the pixel layouts (4 x 64 x 32x32 ->
    64: rows 1.08 / 1.07 against 1.45 / 1.44; 1.15 / 1.14 forward on 2026-12-06), but for deep
    inputs (:data:`WINOGRAD_MID_CHANNELS`) of a few images on fewer tiles than Winograd takes
    (:func:`_many_tiles_for_winograd`): 1 x 64 / 128 / 256 x 28^2 -> same, forward 0.30 / 0.98 /
    3.54 against rows 0.39 / 1.31 / 4.82 (torch 0.36 / 0.90 / 3.48).
    """
    return gathered(geo, dtype) and (geo.ow <= 64 // as_numpy_dtype(dtype).itemsize or geo.stride != (1, 1)
                                     or (geo.cg >= WINOGRAD_MID_CHANNELS and geo.n < WINOGRAD_MID_BATCH
                                         and _tiles(geo) < WINOGRAD_GRAD_TILES))


def gathered(geo: Geometry, dtype) -> bool:
    """Whether the weight gradient of ``geo`` in ``dtype`` reduces by gathered broadcasts (deep,
    ungrouped layers).

    Gathered weight gradients run in the row layout whatever the width: its steps are single
    pixels, so narrow rows waste nothing, and the packing carries no halos.  Measured (two
    threads, float32) against the lane layout: 4 x 256 x 8x8 -> 256 1.00 / 1.35 ms, 4 x 64 x
    16x16 -> 128 0.59 / 0.97, 128 x 32 x 16x16 -> 64 4.6 / 6.5, 128 x 64 x 8x8 -> 128 3.5 / 4.3;
    14x14 5x5 and 4x4/2 layers within 4%.
    """
    wide = geo.ow >= ROWS_MIN_WIDTH * _tile(dtype)
    least = GATHER_MIN_CHANNELS if geo.stride == (1, 1) and wide else GATHER_MIN_CHANNELS_STRIDED
    return geo.groups == 1 and geo.og >= least and geo.k >= GATHER_MIN_TAPS


def one_group(geo: Geometry) -> Geometry:
    """The convolution of one group of ``geo`` (ungrouped: its input and output channels per group)."""
    return geometry((geo.n, geo.cg, geo.h, geo.w), (geo.og, geo.cg, geo.kh, geo.kw), geo.stride, geo.pad,
                    geo.dilation, 1, (geo.oh, geo.ow))


def gathered_by_group(geo: Geometry, dtype) -> bool:
    """Whether a grouped layer's weight gradient runs group by group, each gathered (:func:`gathered`
    on :func:`one_group`): its groups copied out, where the grouped reductions step over pixel
    vectors.  Measured (two threads, float32, ms, by group against the plan before; torch): 16 x 64
    x 28^2 -> 64 in 2 groups 1.77-1.94 against rows 2.31 (1.61), 8 x 96 x 28^2 -> 256 in 2 groups
    4.14 against 6.88 (3.89), 16 x 128 x 14^2 -> 128 in 4 groups 1.00 against lanes 2.19 (0.86-0.90)."""
    return geo.groups > 1 and gathered(one_group(geo), dtype)


#: Winograd needs this many input and output channels: its transforms cost about as much as
#: 16 multiply-adds per tile and channel, so thin layers (the 3-channel first layer of an
#: image model) run direct.  Raised from 16 after the fixes of 2026-12-04 made the direct
#: kernels the faster ones there (two threads, direct against Winograd): 64 x 16 x 32x32 -> 16
#: input gradient 1.46 against 2.03 ms, 128 x 16 x 16x16 -> 16 forward 0.91 against 1.10,
#: 32 x 16 x 32x32 -> 32 forward 1.17 against 1.47; with 32 channels they tie or Winograd wins.
WINOGRAD_MIN_CHANNELS = 32

#: Batches from this size (below :data:`WINOGRAD_MIN_BATCH`) run Winograd in both passes on
#: layers of at least :data:`WINOGRAD_MID_CHANNELS` input channels and rows of at least
#: :data:`WINOGRAD_MID_WIDTH`: two threads, forward / input gradient, direct against Winograd:
#: 8 x 64 x 28x28 -> 64 1.97 / 1.97 against 1.75 / 1.89 ms, 16 x 64 x 14x14 -> 128 2.13 / 2.48
#: against 1.71 / 2.08, 8 x 256 x 14x14 -> 256 6.59 / 7.96 against 5.72 / 6.05, 16 x 256 x 14x14
#: -> 256 13.6 / 15.7 against 9.6 / 9.7 (torch 10.7 / 11.3).  At 7x7 the tiles waste too much:
#: 16 x 512 x 7x7 -> 512 15.4 ms direct, 23.7 Winograd.
WINOGRAD_MID_BATCH = 8

#: Where the gather runs the direct pass (:func:`gathers_forward`: planes up to one vector wide),
#: Winograd needs this many output channels: its output transform and unpacking are per output
#: channel, and the gather wastes no lane on a thin output.  Two threads, float32, Winograd
#: against the gather (forward / input gradient, ms): 64 and 128 x 32 x 8x8 -> 32 0.44 / 0.45
#: and 0.87 / 0.85 against 0.34 / 0.35 and 0.65 / 0.61; the input gradients (32 outputs) of
#: 64 x 32 x 8x8 -> 64 0.96 against 0.65, of 16 x 32 x 14x14 -> 64 1.04 against 0.60; at 14x14
#: and 16x16 with batches of 64 and more, 32 -> 32 within 7% either way, and at 16x16 the input
#: gradients into 32 channels of 64 and 128 images 2-7% faster in Winograd (whole images in its
#: lanes), so those keep it.  With 64 outputs Winograd stays as fast or faster (128 x 32 x 8x8 ->
#: 64 forward 1.43 against 1.51).
WINOGRAD_GATHER_OUTPUTS = 64
WINOGRAD_MID_CHANNELS = 64
WINOGRAD_MID_WIDTH = 14


@dataclass(frozen=True)
class Geometry:
    """One convolution: input (n, c, h, w), weight (o, cg, kh, kw), ``groups``, stride, padding
    (top, bottom, left, right), dilation and output (oh, ow)."""

    n: int
    c: int
    h: int
    w: int
    o: int
    cg: int
    kh: int
    kw: int
    groups: int
    stride: Tuple[int, int]
    pad: Tuple[int, int, int, int]
    dilation: Tuple[int, int]
    oh: int
    ow: int

    def __hash__(self) -> int:  # computed once: the planner's caches hash a geometry per pass
        h = self.__dict__.get("_hash")
        if h is None:
            h = hash((self.n, self.c, self.h, self.w, self.o, self.cg, self.kh, self.kw, self.groups, self.stride,
                      self.pad, self.dilation, self.oh, self.ow))
            object.__setattr__(self, "_hash", h)
        return h

    @property
    def og(self) -> int:
        """Output channels per group."""
        return self.o // self.groups

    @property
    def k(self) -> int:
        """Taps per output channel: (c, ky, kx) triples of one group."""
        return self.cg * self.kh * self.kw

    @property
    def macs(self) -> int:
        """Multiply-adds of the direct convolution."""
        return self.n * self.o * self.oh * self.ow * self.k

    @property
    def rows_read(self) -> int:
        """Padded input rows the convolution reads."""
        return (self.oh - 1) * self.stride[0] + (self.kh - 1) * self.dilation[0] + 1

    @property
    def cols_read(self) -> int:
        """Padded input columns the convolution reads."""
        return (self.ow - 1) * self.stride[1] + (self.kw - 1) * self.dilation[1] + 1


def geometry(x_shape: Sequence[int], w_shape: Sequence[int], stride: Sequence[int], padding: Sequence[int],
             dilation: Sequence[int], groups: int, out_hw: Sequence[int]) -> Geometry:
    """The :class:`Geometry` of a conv2d call (shapes as torch's; ``padding`` as (top, bottom, left, right)),
    memoised: a pass asks for one or two, and building a frozen dataclass costs microseconds."""
    return _geometry(tuple(x_shape), tuple(w_shape), tuple(stride), tuple(padding), tuple(dilation), groups,
                     tuple(out_hw))


@functools.lru_cache(maxsize=1024)
def _geometry(x_shape, w_shape, stride, padding, dilation, groups, out_hw) -> Geometry:
    n, c, h, w = (int(v) for v in x_shape)
    o, cg, kh, kw = (int(v) for v in w_shape)
    return Geometry(n, c, h, w, o, cg, kh, kw, int(groups), (int(stride[0]), int(stride[1])),
                    tuple(int(p) for p in padding), (int(dilation[0]), int(dilation[1])), int(out_hw[0]),
                    int(out_hw[1]))


@dataclass(frozen=True)
class Plan:
    """A planner decision: ``algorithm`` ('direct', 'winograd' or 'im2col') and ``layout``
    ('rows', 'flat', 'lanes', 'gather' or '')."""

    algorithm: str
    layout: str

    @functools.cached_property
    def name(self) -> str:  # (plans are memoised: computed once)
        return f"{self.algorithm}/{self.layout}" if self.layout else self.algorithm

    def __str__(self) -> str:
        return self.name


def as_numpy_dtype(dtype) -> np.dtype:
    """``dtype`` (NumPy, torch or a name) as a NumPy dtype."""
    if isinstance(dtype, torch.dtype):
        return np.dtype(str(dtype).replace("torch.", ""))
    return np.dtype(dtype)


@functools.lru_cache(maxsize=16)
def _tile(dtype) -> int:  # (memoised: asked several times a pass)
    return NV * 64 // as_numpy_dtype(dtype).itemsize


def rows_blocking(og: int, ow: int, dtype) -> Tuple[int, int]:
    """The register block (output channels, vectors) of the row layout for ``og`` output channels
    per group and rows of ``ow`` pixels: the thin blocks of :func:`fastconv.cpu._direct.blocking`
    where a row fills ``ROWS_MIN_WIDTH`` of their wider tile, else the 8-channel block."""
    mr, nv = blocking(og)
    if ow >= ROWS_MIN_WIDTH * nv * 64 // as_numpy_dtype(dtype).itemsize:
        return mr, nv
    return MR, NV


def _row_fill(geo: Geometry, dtype) -> float:
    """The fraction of the row layout's tiles that an output row fills (:data:`ROWS_MIN_FILL`)."""
    tw = rows_blocking(geo.og, geo.ow, dtype)[1] * (64 // as_numpy_dtype(dtype).itemsize)
    return geo.ow / (-(-geo.ow // tw) * tw)


def pointwise(geo: Geometry) -> bool:
    """Whether ``geo`` is a 1x1 convolution with stride 1 and no padding whose output has its input's
    size (not cropped or extended by the explicit size: a transposed convolution's
    ``output_padding``): a GEMM per image on the unpacked planes (pixels contiguous, no halo)."""
    return ((geo.kh, geo.kw) == (1, 1) and geo.stride == (1, 1) and not any(geo.pad)
            and (geo.oh, geo.ow) == (geo.h, geo.w))


def _direct_layout(geo: Geometry, dtype, pass_: str = "forward") -> str:
    wide = geo.ow >= ROWS_MIN_WIDTH * _tile(dtype)
    if pass_ != "backward_weight" and pointwise(geo) and geo.groups == 1:
        # the row layout's pointwise pass: one batched BLAS product per pass, which beats the
        # gather on narrow or few planes too (two threads, float32, forward / input gradient, ms,
        # product against gather): the UNet's ConvTranspose2d(256, 128, 2, 2) as 4 x 512 x 1x64
        # blocks -> 256 0.24 / 0.27 against 0.31 / 0.38; 4 x 512 x 8x8 -> 256 0.23 / 0.28 against
        # 0.32 / 0.38; 1 x 512 x 16x16 -> 256 0.24 / 0.28 against 0.35 / 0.38; 2 x 1024 x 7x7 ->
        # 256 0.25 / 0.40 against 0.30 / 0.59; 16 x 512 x 7x7 -> 128 within 10% either way
        return "rows"
    if pass_ != "backward_weight" and gathers_forward(geo, dtype):
        return "gather"
    if geo.stride != (1, 1) and geo.cg <= THIN_CHANNELS and not gathered(geo, dtype):
        # strided layers on thin inputs (an image model's first layer): the row layout's phase
        # split is one cheap pass, the lanes' strided blocks are not -- 128 x 1 x 32x32 -> 32
        # 3x3/2: rows 0.36 / 0.44 ms (forward / weight gradient) against lanes 0.74 / 0.88;
        # 128 x 3 x 32x32 -> 32: 0.68 / 0.92 against 1.82 / 1.46 (torch 0.32 / 0.32, 2.2 / 0.39)
        return "rows"
    if pass_ != "backward_weight" and not wide and geo.n <= FLAT_MAX_BATCH and not _skips_pixels(geo):
        return "flat"
    if pass_ != "backward_weight" and wide and _row_fill(geo, dtype) < ROWS_MIN_FILL and not _skips_pixels(geo):
        return "flat"
    if pass_ == "backward_weight" and (gathered(geo, dtype) or gathered_by_group(geo, dtype)):
        return "rows"
    if pass_ != "backward_weight" and geo.og <= THIN_CHANNELS and rows_blocking(geo.og, geo.ow, dtype)[0] == MR:
        # rows too short for a thin register block: whole planes as rows have room for one, if
        # the rows are not so short that their padding columns dominate; else the lane layout
        return "flat" if wide and not _skips_pixels(geo) else "lanes"
    return "rows" if wide else "lanes"


def _skips_pixels(geo: Geometry) -> bool:
    """Whether the stride steps over input pixels that no tap reads."""
    return (geo.stride[0] > (geo.kh - 1) * geo.dilation[0] + 1
            or geo.stride[1] > (geo.kw - 1) * geo.dilation[1] + 1)


_forced = threading.local()


@contextlib.contextmanager
def forced(name: Optional[str]) -> Iterator[None]:
    """Within the block, :func:`plan` returns ``name`` (one of :data:`ALGORITHMS`) wherever it applies.

    For tests and calibration: every algorithm can be run on the same problems.  Winograd
    applies to 3x3 stride-1 undilated convolutions only; elsewhere the normal plan runs.
    """
    if name is not None and name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}; algorithms are {ALGORITHMS}")
    global _forcing_blocks
    prev = getattr(_forced, "name", None)
    _forced.name = name
    with _forcing_lock:
        _forcing_blocks += 1
    try:
        yield
    finally:
        _forced.name = prev
        with _forcing_lock:
            _forcing_blocks -= 1


#: :func:`forced` blocks active in any thread: while there are none, :func:`forcing` answers
#: without reading the thread-local (a tiny convolution asks on every call).
_forcing_blocks = 0
_forcing_lock = threading.Lock()


def forcing() -> bool:
    """Whether a :func:`forced` block is active in this thread."""
    return _forcing_blocks > 0 and getattr(_forced, "name", None) is not None


def forced_name() -> Optional[str]:
    """The algorithm a :func:`forced` block of this thread imposes, or None."""
    return getattr(_forced, "name", None) if _forcing_blocks else None


def replan() -> None:
    """Forget every plan made (after recalibrating the rules): the memoised plans and the calling
    thread's recorded passes (:mod:`fastconv._programs`), which replay theirs."""
    _planned.cache_clear()
    _programs.clear()


def _mid_batch_winograd(geo: Geometry) -> bool:
    """The mid-batch Winograd rule (:data:`WINOGRAD_MID_BATCH`)."""
    return (geo.n >= WINOGRAD_MID_BATCH and geo.cg >= WINOGRAD_MID_CHANNELS
            and min(geo.oh, geo.ow) >= WINOGRAD_MID_WIDTH)


def _tiles(geo: Geometry) -> int:
    """The whole 2x2 output tiles of F(2x2, 3x3) over all images."""
    return geo.n * (geo.oh // 2) * (geo.ow // 2)


def _many_tiles_for_winograd(geo: Geometry) -> bool:
    """The small-batch Winograd rule of forward passes (the comment above :data:`WINOGRAD_DEEP_CHANNELS`)."""
    return (geo.cg >= WINOGRAD_MID_CHANNELS and min(geo.oh, geo.ow) >= WINOGRAD_MIN_WIDTH
            and _tiles(geo) >= WINOGRAD_GRAD_TILES)


def _input_grad_for_winograd(geo: Geometry) -> bool:
    """The small-batch Winograd rule of input gradients (:data:`WINOGRAD_GRAD_CHANNELS`); ``geo`` is
    the convolution of the output gradient (``cg`` the channels it reads)."""
    return (geo.og >= geo.cg >= WINOGRAD_GRAD_CHANNELS
            and (geo.cg >= WINOGRAD_DEEP_CHANNELS or min(geo.oh, geo.ow) >= 2 * WINOGRAD_MIN_WIDTH)
            and _tiles(geo) >= WINOGRAD_GRAD_TILES)


def _thin_for_winograd(geo: Geometry, dtype) -> bool:
    """The gather's rule against Winograd (:data:`WINOGRAD_GATHER_OUTPUTS`)."""
    return (geo.og < WINOGRAD_GATHER_OUTPUTS and gathers_forward(geo, dtype)
            and (geo.n < WINOGRAD_MIN_BATCH or geo.ow < 64 // dtype.itemsize))


def winograd_applies(geo: Geometry) -> bool:
    """Whether F(2x2, 3x3) computes this convolution (3x3, stride 1, no dilation, no groups)."""
    return (geo.kh, geo.kw) == (3, 3) and geo.stride == (1, 1) and geo.dilation == (1, 1) and geo.groups == 1


def depthwise_applies(geo: Geometry) -> bool:
    """Whether ``direct/depthwise`` runs ``geo``: one input channel per group, any number of
    outputs per group (every pass and stride)."""
    return geo.groups > 1 and geo.cg == 1 and geo.groups == geo.c


#: Depthwise 3x3 planes of at most this many output pixels run with channels in the lanes
#: (``direct/depthwise-lanes``), larger ones plane by plane (``direct/depthwise``), and input
#: gradients (planes of the input's size) up to :data:`DEPTHWISE_LANES_MAX_GRAD_PIXELS`; both limits
#: grow with the square of the kernel's taps over 9 (the lanes' transposes cost the same per pixel
#: whatever the kernel; the per-plane layout's padded rows and partly empty tiles cost per tap).
#: Measured on 2026-12-06 (two threads, float32, stride 1, lanes against plane by plane, ms),
#: forward / input gradient with the row-wise micro-kernel (:func:`fastconv.cpu._simd.lane_row_taps`):
#: 3x3: 32 x 960 x 7^2 0.69 / 0.69 against 2.31 / 1.36, 8 x 512 x 14^2 0.38 / 0.43 against 0.60 /
#: 0.45, 8 x 144 x 28^2 0.44 / 0.34 against 0.44 / 0.32; 5x5: 8 x 192 x 28^2 1.04 / 1.02 against
#: 1.17 / 0.92; 7x7: 8 x 384 x 14^2 0.55 / 0.55 against 1.20 / 1.05, 8 x 96 x 56^2 1.62 / 1.84
#: against 2.43 / 2.27.  Weight gradients: 3x3: 32 x 960 x 7^2 0.75 against 2.50, 32 x 256 x 10^2 /
#: 12^2 / 16^2 0.37 / 0.45 / 0.91 against 0.86 / 0.99 / 1.32, 8 x 512 x 14^2 0.36 against 0.72, 16 x
#: 256 x 20^2 1.17 against 0.98, 8 x 144 x 28^2 0.55 against 0.53; 5x5: 32 x 384 x 14^2 1.86 against
#: 3.32, 8 x 192 x 28^2 0.91 against 1.09; 7x7: 16 x 192 x 20^2 1.11 against 2.06, 8 x 96 x 28^2 /
#: 40^2 / 56^2 0.63 / 1.50 / 2.63 against 0.89 / 1.94 / 3.45.  (Plane by plane, a 7x7 plane fills 63
#: of the 128 lanes of its tile and pays its packing and cropping per 49 outputs.)
DEPTHWISE_LANES_MAX_PIXELS = 256
DEPTHWISE_LANES_MAX_GRAD_PIXELS = 196


def depthwise_lanes_applies(pass_: str, geo: Geometry) -> bool:
    """Whether ``direct/depthwise-lanes`` runs this pass of ``geo``: a depthwise layer (every pass;
    input gradients of stride 1 and one output per group only: the convolution of the output
    gradient with the rotated weights)."""
    return depthwise_applies(geo) and (pass_ != "backward_input" or (geo.stride == (1, 1) and geo.og == 1))


def _depthwise_lanes_pixels(pass_: str, taps: int) -> float:
    """The most output pixels per plane that ``direct/depthwise-lanes`` is planned for (the
    comment above :data:`DEPTHWISE_LANES_MAX_PIXELS`)."""
    limit = DEPTHWISE_LANES_MAX_GRAD_PIXELS if pass_ == "backward_input" else DEPTHWISE_LANES_MAX_PIXELS
    return limit * (taps / 9) ** 2


def patch_applies(geo: Geometry) -> bool:
    """Whether the kernel tiles the input: kernel == stride (not 1x1), no dilation, no padding (a
    negative bottom or right padding -- a transposed convolution's ``output_padding`` -- only
    leaves pixels unread)."""
    top, bottom, left, right = geo.pad
    return ((geo.kh, geo.kw) == geo.stride and geo.kh * geo.kw > 1 and geo.dilation == (1, 1)
            and top == left == 0 and bottom <= 0 and right <= 0)


def _parse(name: str) -> Plan:
    algorithm, _, layout = name.partition("/")
    return Plan(algorithm, layout)


def plan(pass_: str, geo: Geometry, dtype, exclude: Sequence[str] = ()) -> Plan:
    """The algorithm and layout for one pass of the convolution ``geo`` in ``dtype``.

    Parameters
    ----------
    pass_ : {'forward', 'backward_input', 'backward_weight'}
        The pass.  For ``'backward_input'``, ``geo`` is the convolution of the output
        gradient that computes the input gradient (stride 1) or the original convolution
        (strided: its phases run direct).
    geo : Geometry
        The convolution.
    dtype : numpy dtype
        float32 or float64.
    exclude : sequence of str
        Algorithms ('winograd') or plan names ('direct/small') not to choose (the engine
        excludes Winograd when its result was not finite).  ``'patch'`` is planned for every pass where
        it applies (the 1x1 convolution it runs is planned in turn).

    Returns
    -------
    Plan
    """
    if pass_ not in ("forward", "backward_input", "backward_weight"):
        raise ValueError(f"unknown pass {pass_!r}")
    name = forced_name()
    if name is not None and name not in exclude and name.split("/")[0] not in exclude:
        if ((not name.startswith("winograd") or winograd_applies(geo)) and (name != "patch" or patch_applies(geo))
                and (name not in ("direct/flat", "direct/gather") or pass_ != "backward_weight")
                and (name != "direct/gather" or geo.groups == 1)
                and (name != "direct/depthwise" or depthwise_applies(geo))
                and (name != "direct/depthwise-lanes" or depthwise_lanes_applies(pass_, geo))):
            return _parse(name)
    return _planned(pass_, geo, np.dtype(dtype), tuple(exclude))


@functools.lru_cache(maxsize=4096)
def _planned(pass_: str, geo: Geometry, dtype: np.dtype, exclude: Tuple[str, ...]) -> Plan:
    """:func:`plan` without a forced algorithm, memoised: the rules read this module's constants
    when a geometry is first planned (after recalibrating them, call :func:`replan`)."""
    if geo.macs < SMALL_MACS and "direct/small" not in exclude:
        return Plan("direct", "small")
    if patch_applies(geo) and "patch" not in exclude:
        return Plan("patch", "")
    if (depthwise_lanes_applies(pass_, geo) and "direct/depthwise-lanes" not in exclude
            and geo.oh * geo.ow <= _depthwise_lanes_pixels(pass_, geo.kh * geo.kw)):
        return Plan("direct", "depthwise-lanes")
    if depthwise_applies(geo) and "direct/depthwise" not in exclude:
        return Plan("direct", "depthwise")
    if _skips_pixels(geo) and "im2col" not in exclude:
        return Plan("im2col", "")
    if (pass_ != "backward_weight" and "winograd" not in exclude and winograd_applies(geo)
            and geo.cg >= WINOGRAD_MIN_CHANNELS and geo.og >= WINOGRAD_MIN_CHANNELS
            and not _thin_for_winograd(geo, dtype)
            and (geo.n >= WINOGRAD_MIN_BATCH or _mid_batch_winograd(geo)
                 or (pass_ == "forward" and _many_tiles_for_winograd(geo))
                 or (pass_ == "backward_input" and _input_grad_for_winograd(geo)))):
        return Plan("winograd", "lanes")
    return Plan("direct", _direct_layout(geo, dtype, pass_))


def plan_name(x_shape: Sequence[int], w_shape: Sequence[int], stride: Sequence[int], padding: Sequence[int],
              dilation: Sequence[int], groups: int, dtype, pass_: str = "forward") -> str:
    """The plan of one pass of ``conv2d`` as a string, for inspection (e.g. ``'winograd/lanes'``).

    ``padding`` is (top, bottom, left, right); ``dtype`` a torch or NumPy float dtype.

    Examples
    --------
    >>> from fastconv.cpu.conv_plan import plan_name
    >>> plan_name((128, 3, 32, 32), (32, 3, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, "float32")
    'direct/rows'
    """
    from .._shapes import conv_out_size
    dt = as_numpy_dtype(dtype)
    oh = conv_out_size(x_shape[2], w_shape[2], stride[0], padding[0] + padding[1], dilation[0])
    ow = conv_out_size(x_shape[3], w_shape[3], stride[1], padding[2] + padding[3], dilation[1])
    geo = geometry(x_shape, w_shape, stride, padding, dilation, groups, (oh, ow))
    name = plan(pass_, geo, dt).name
    if pass_ == "backward_input" and tuple(stride) == (1, 1) and name not in ("direct/small", "direct/depthwise",
                                                                             "im2col", "patch"):
        # the engine plans the convolution of the output gradient with the flipped, transposed weights
        n, c, h, w = x_shape
        o, _, kh, kw = w_shape
        top, left = dilation[0] * (kh - 1) - padding[0], dilation[1] * (kw - 1) - padding[2]
        geo = geometry((n, o, oh, ow), (c, o // groups, kh, kw), (1, 1), (top, 0, left, 0), dilation, groups, (h, w))
        return plan(pass_, geo, dt).name
    return name
