"""The execution plan of the image engine: every threshold, and the functions that pick a kernel.

One place decides, for a filtering call, which method runs (direct, separable or FFT),
which direct kernel runs, and on how many threads.  :func:`fastconv.filters.choose_method`
is :func:`choose_method` here, and :mod:`fastconv.image.engine` executes what
:func:`direct_kernel`, :func:`zero_fill_route` and :func:`threads_for` return, so the
public answer and the engine's own dispatch cannot disagree.

The constants were measured on this project's 2-vCPU machine class (AMD EPYC, AVX-512);
``benchmarks/calibrate_filter2d.py`` re-measures the cost model and
``benchmarks/CALIBRATION.md`` keeps the history of each figure.
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Callable, Dict, Sequence, Union

import numpy as np
from numba.extending import register_jitable

from .._threads import num_threads
from .conventions import conv_geometry

__all__ = ["Method", "Kernel", "Route", "METHODS", "direct_kernel", "zero_fill_route", "threads_for",
           "estimate_costs", "choose_method", "fft_shape", "tile_applies", "ImageValues", "image_values",
           "fft_error_bound", "fft_precise_enough", "fft_patch_pays", "fill_cells"]


class Method(str, enum.Enum):
    """The three algorithms of :func:`fastconv.filters.filter2d`."""

    DIRECT = "direct"
    SEPARABLE = "separable"
    FFT = "fft"


#: Method names, in the order :func:`estimate_costs` reports them.
METHODS = tuple(m.value for m in Method)


class Kernel(enum.IntEnum):
    """The direct kernels of :mod:`fastconv.image.direct` and :mod:`fastconv.image.tiles`."""

    FUSED33 = 0   #: 3x3: one fused pass per pair of output rows
    PAIRS = 1     #: 5+ rows: even/odd output-row pairs sharing loads
    FLAT = 2      #: everything else: 3x3 tap blocks over the rows as one flat signal
    TILES = 3     #: float32/float64, 2-16 rows (not 3x3): register-blocked tiles


class Route(enum.IntEnum):
    """How a zero-fill ``convolve2d``/``correlate2d`` call runs (:func:`zero_fill_route`)."""

    TILES = 0     #: the register-blocked kernel
    SAME33 = 1    #: 3x3 'same' without an extension (interior straight from the image)
    SMALL = 2     #: one Numba entry for geometry, extension and kernel
    GENERAL = 3   #: the general path (extension into scratch, threads)


# --------------------------------------------------------------------------- thresholds

#: Kernels with at least this many rows use the row-pair kernel (measured crossover).
PAIR_MIN_ROWS = 5
#: Kernel heights of the register-blocked kernel: 1.0-1.6x the strip kernels from 2 rows,
#: 0.8-0.95x for single-row kernels; 3x3 kernels keep the fused kernel (1.3-1.5x faster).
TILE_MIN_ROWS, TILE_MAX_ROWS = 2, 16
#: Widest kernel the register-blocked kernel handles (a tile then still spans 200+ columns).
TILE_MAX_COLS = 64
#: dtypes of the register-blocked kernel (integers and complex use the strip kernels).
TILE_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
#: Below this many multiply-adds a call runs on one thread (two threads: 0.83-0.97x at
#: 2.4-3.7M, 1.2-1.85x from 6.6M on the 2-vCPU machine; the safe side of a load-dependent crossover).
PARALLEL_MIN_MACS = 6_000_000
#: Below this many output rows a call runs on one thread.
PARALLEL_MIN_ROWS = 16
#: Largest scratch buffer (bytes) kept per thread between calls.
SCRATCH_KEEP_BYTES = 64 << 20
#: Below this size a fresh ``np.empty`` is cheaper than the scratch lookup, and a call that
#: fits runs as one Numba entry.
SCRATCH_MIN_BYTES = 256 << 10

# Cost model of ``method='auto'`` (``time = OVERHEAD_NS + *_NS * work``; see CALIBRATION.md).
#: ns per multiply-add of the direct kernels (complex64 runs in complex128).
DIRECT_NS = {"float32": 0.045, "float64": 0.084, "complex64": 0.351, "complex128": 0.351}
#: ns per (pixel x (P + Q)) of the separable kernel.
SEPARABLE_NS = {"float32": 0.112, "float64": 0.248, "complex64": 0.585, "complex128": 0.585}
#: ns per (n log2 n) of the FFT path, n = product of the padded transform sizes.
FFT_NS = {"float32": 0.573, "float64": 1.053, "complex64": 0.9, "complex128": 1.337}
#: Fixed cost per call in ns (Python, dispatch, factorisation, FFT plans).
OVERHEAD_NS = {"direct": 6_000.0, "separable": 10_000.0, "fft": 68_100.0}

# Precision and non-finite input of the FFT path (see :func:`fft_error_bound`).
#: ``method='auto'`` leaves the FFT when the image's dynamic range (:func:`image_values`) is above
#: this: its absolute error, set by the largest value anywhere, would then exceed the direct
#: method's error in the region of the smallest values by about this factor or more.
FFT_MAX_RANGE = 1e3
#: Worst measured ratio of the FFT's error to ``eps * log2(n) * max|x| * sum|k|`` was 0.66
#: (64-1024 px, kernels 5-64, normal, uniform and spiky data, float32/float64); the bound
#: is stated with this margin.
FFT_ERROR_FACTOR = 1.0
#: The FFT path patches the outputs reached by non-finite samples (each costs a direct sum of
#: P*Q taps) while they number at most this fraction of all outputs; beyond, it runs direct.
FFT_PATCH_MAX_FRACTION = 0.125


# --------------------------------------------------------------------------- direct kernels


def tile_applies(P: int, Q: int, dtype: np.dtype) -> bool:
    """Whether the register-blocked kernel handles a (P, Q) kernel of ``dtype``."""
    return (TILE_MIN_ROWS <= P <= TILE_MAX_ROWS and Q <= TILE_MAX_COLS and not (P == 3 and Q == 3)
            and dtype in TILE_DTYPES)


@register_jitable
def strip_kernel(P: int, Q: int) -> int:
    """The strip kernel (a :class:`Kernel` value) for a (P, Q) kernel; callable from Numba too."""
    if P == 3 and Q == 3:
        return 0  # Kernel.FUSED33
    if P >= PAIR_MIN_ROWS:
        return 1  # Kernel.PAIRS
    return 2      # Kernel.FLAT


def direct_kernel(P: int, Q: int, dtype: np.dtype) -> Kernel:
    """The direct kernel that filters with a (P, Q) kernel in ``dtype``."""
    if tile_applies(P, Q, dtype):
        return Kernel.TILES
    return Kernel(strip_kernel(P, Q))


def threads_for(rows: int, macs: int) -> int:
    """Threads for a direct call of ``rows`` output rows and ``macs`` multiply-adds."""
    if macs < PARALLEL_MIN_MACS or rows < PARALLEL_MIN_ROWS:
        return 1
    return num_threads()


def fits_small(he: int, we: int, itemsize: int) -> bool:
    """Whether an extension of (he, we) elements is small enough to allocate inside the kernel."""
    return he * we * itemsize < SCRATCH_MIN_BYTES


def zero_fill_route(M: int, N: int, P: int, Q: int, mode: int, dtype: np.dtype) -> Route:
    """How a zero-fill call on an (M, N) image with a (P, Q) kernel runs (see :class:`Route`)."""
    if tile_applies(P, Q, dtype):
        return Route.TILES
    if mode == 1 and P == 3 and Q == 3 and M >= 3 and N >= 3 and M * N * 9 < PARALLEL_MIN_MACS:
        return Route.SAME33
    # bounds on the extension and the work for every mode, without the exact geometry
    if fits_small(M + 2 * P, N + 2 * Q, dtype.itemsize) and (M + P) * (N + Q) * P * Q < PARALLEL_MIN_MACS:
        return Route.SMALL
    return Route.GENERAL


# --------------------------------------------------------------------------- method choice


def fft_shape(oh: int, ow: int, p: int, q: int):
    """Padded (fast) transform size of an FFT correlation with a valid (oh, ow) result."""
    import scipy.fft as sfft  # on first use: importing it costs 14 MB of memory and 0.1 s
    return sfft.next_fast_len(oh + p - 1, True), sfft.next_fast_len(ow + q - 1, True)


def estimate_costs(image_shape: Sequence[int], kernel_shape: Sequence[int], mode: int, dtype: np.dtype,
                   separable: bool) -> Dict[str, float]:
    """Predicted run time in ns of each applicable method.

    Parameters
    ----------
    image_shape : sequence of int
        (H, W) or (H, W, C).
    kernel_shape : sequence of int
        (P, Q).
    mode : int
        Mode code (see :data:`fastconv.image.conventions.MODES`).
    dtype : numpy.dtype
        Output dtype.
    separable : bool
        Whether the kernel is exactly rank 1 (adds the ``'separable'`` estimate).

    Returns
    -------
    dict
        Method name -> ns; integer results have only ``'direct'``.
    """
    h, w = int(image_shape[0]), int(image_shape[1])
    channels = int(image_shape[2]) if len(image_shape) == 3 else 1
    p, q = kernel_shape
    oh, ow, _, _ = conv_geometry(mode, h, w, p, q, True)
    oh, ow = max(oh, 0), max(ow, 0)
    direct_work = oh * ow * p * q * channels
    if dtype.kind in "iub":
        return {"direct": OVERHEAD_NS["direct"] + DIRECT_NS["float64"] * direct_work}
    name = dtype.name if dtype.name in DIRECT_NS else ("complex128" if dtype.kind == "c" else "float64")
    costs = {"direct": OVERHEAD_NS["direct"] + DIRECT_NS[name] * direct_work}
    if separable:
        costs["separable"] = OVERHEAD_NS["separable"] + SEPARABLE_NS[name] * oh * ow * (p + q) * channels
    n = math.prod(fft_shape(oh, ow, p, q))
    costs["fft"] = OVERHEAD_NS["fft"] + FFT_NS[name] * n * math.log2(max(n, 2)) * (channels + 1)
    return costs


@dataclass(frozen=True)
class ImageValues:
    """What the FFT path's accuracy depends on, from the image's values (:func:`image_values`)."""

    #: Non-finite samples of the boundary extension that the FFT would see (image samples, and
    #: the fill cells when the fill value is non-finite).
    nonfinite: int
    #: Dynamic range: the largest finite magnitude over the smallest nonzero block maximum
    #: (blocks of half the kernel size, so every kernel window holds a whole block); 1 for an
    #: image without nonzero values.
    dynamic_range: float
    #: Whether every kernel tap is finite (a non-finite tap reaches every output: the FFT is left).
    kernel_finite: bool = True


def fill_cells(h: int, w: int, he: int, we: int, top: int, left: int) -> int:
    """Cells of an (he, we) extension whose element (top, left) is image[0, 0] that lie outside the
    (h, w) image (where ``boundary='fill'`` puts the fill value)."""
    rows = max(0, min(he, top + h) - max(0, top))
    cols = max(0, min(we, left + w) - max(0, left))
    return he * we - rows * cols


def _block_max(mag: np.ndarray, br: int, bc: int) -> np.ndarray:
    """Maxima of ``mag`` ((H, W[, C])) over blocks of br x bc (the last blocks may be smaller)."""
    rows = np.maximum.reduceat(mag, np.arange(0, mag.shape[0], br), axis=0)
    return np.maximum.reduceat(rows, np.arange(0, mag.shape[1], bc), axis=1)


def image_values(img: np.ndarray, kernel: np.ndarray, fill, fill_count: int) -> ImageValues:
    """The :class:`ImageValues` of a 2-D or (H, W, C) image and a kernel, the image's extension
    adding ``fill_count`` cells of ``fill`` per channel (0 for 'symm'/'wrap' and 'valid' mode).
    One pass over the image plus a block reduction; only computed when the cost model picks
    the FFT."""
    p, q = kernel.shape
    channels = img.shape[2] if img.ndim == 3 else 1
    kernel_finite = bool(np.isfinite(kernel).all())
    fill_bad = fill_count * channels if not np.isfinite(fill) else 0
    if img.size == 0:
        return ImageValues(fill_bad, 1.0, kernel_finite)
    mag = np.abs(img)
    finite = np.isfinite(mag)
    bad = int(finite.size - np.count_nonzero(finite))
    if bad:
        mag = np.where(finite, mag, 0)
    top = float(mag.max())
    if fill_count and np.isfinite(fill):
        top = max(top, float(abs(fill)))
    blocks = _block_max(mag, max(1, (p + 1) // 2), max(1, (q + 1) // 2))
    nonzero = blocks[blocks > 0]
    low = float(nonzero.min()) if nonzero.size else 0.0
    return ImageValues(bad + fill_bad, top / low if low > 0 else 1.0, kernel_finite)


def fft_error_bound(max_abs: float, kernel_abs_sum: float, transform_size: int, dtype: np.dtype) -> float:
    """The FFT path's absolute error bound on each output: ``eps * log2(n) * max|x| * sum|k|``.

    ``max_abs`` is the largest magnitude of the (finite) boundary extension -- anywhere in
    it, not only in the output's window: the FFT spreads rounding errors over the whole
    transform -- ``kernel_abs_sum`` is ``sum|k|``, ``n`` the number of points of the padded
    transform (:func:`fft_shape`) and ``eps`` that of the transform's precision.
    """
    eps = float(np.finfo(dtype).eps)
    return FFT_ERROR_FACTOR * eps * max(math.log2(max(transform_size, 2)), 1.0) * max_abs * kernel_abs_sum


def fft_precise_enough(values: ImageValues) -> bool:
    """Whether the FFT's error stays within :data:`FFT_MAX_RANGE` of the direct method's everywhere
    (and the kernel is finite)."""
    return values.kernel_finite and values.dynamic_range <= FFT_MAX_RANGE


def fft_patch_pays(nonfinite: int, p: int, q: int, oh: int, ow: int, channels: int = 1) -> bool:
    """Whether the FFT path should patch the outputs reached by ``nonfinite`` samples (else: direct).

    Each non-finite sample reaches up to p * q outputs, each patched by a direct sum of p * q
    taps; the patch pays while those outputs are at most :data:`FFT_PATCH_MAX_FRACTION` of all.
    """
    return nonfinite * p * q <= FFT_PATCH_MAX_FRACTION * oh * ow * max(channels, 1)


def choose_method(image_shape: Sequence[int], kernel_shape: Sequence[int], mode: int, dtype: np.dtype,
                  separable: bool,
                  values: Union[ImageValues, Callable[[], ImageValues], None] = None) -> str:
    """The cheapest method of :func:`estimate_costs` (``'direct'`` for integer results).

    With the image's ``values`` (or a function computing them, called only when the cost
    model picks the FFT) the FFT is left out when its error would exceed the direct
    method's by more than :data:`FFT_MAX_RANGE` somewhere (:func:`fft_precise_enough`) or
    when non-finite samples reach too many outputs to patch (:func:`fft_patch_pays`).
    """
    costs = estimate_costs(image_shape, kernel_shape, mode, dtype, separable)
    best = min(costs, key=costs.get)
    if best == Method.FFT.value and values is not None:
        if callable(values):
            values = values()
        h, w = int(image_shape[0]), int(image_shape[1])
        channels = int(image_shape[2]) if len(image_shape) == 3 else 1
        p, q = int(kernel_shape[0]), int(kernel_shape[1])
        oh, ow, _, _ = conv_geometry(mode, h, w, p, q, True)
        if not (fft_precise_enough(values) and fft_patch_pays(values.nonfinite, p, q, oh, ow, channels)):
            del costs[best]
            best = min(costs, key=costs.get)
    return best
