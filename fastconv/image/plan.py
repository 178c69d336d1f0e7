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
from typing import Dict, Sequence

import numpy as np
import scipy.fft as sfft
from numba.extending import register_jitable

from .._threads import num_threads
from .conventions import conv_geometry

__all__ = ["Method", "Kernel", "Route", "METHODS", "direct_kernel", "zero_fill_route", "threads_for",
           "estimate_costs", "choose_method", "fft_shape", "tile_applies"]


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


def choose_method(image_shape: Sequence[int], kernel_shape: Sequence[int], mode: int, dtype: np.dtype,
                  separable: bool) -> str:
    """The cheapest method of :func:`estimate_costs` (``'direct'`` for integer results)."""
    costs = estimate_costs(image_shape, kernel_shape, mode, dtype, separable)
    return min(costs, key=costs.get)

