"""The image engine's entry points: run a filtering call as :mod:`fastconv.image.plan` decides.

Every 2-D problem is a *valid* cross-correlation of a boundary extension of the image,
``ext[r, c] = image[r - top, c - left]`` (see :mod:`fastconv.image.boundary`), with a small
kernel -- reversed along both axes for a convolution (``flip``).  The front ends
(:mod:`fastconv.signal`, :mod:`fastconv.filters`) turn SciPy's arguments into that form with
:mod:`fastconv.image.conventions` and call:

* :func:`correlate_zero_fill`: the common ``convolve2d``/``correlate2d`` call (two
  C-contiguous float images, zero fill), with as little Python as possible;
* :func:`filter_valid`: any dtype and boundary, one 2-D image, direct method;
* :func:`filter_image`: a 2-D or (H, W, C) image with a chosen method.

Large problems are split into output-row blocks on threads (:mod:`fastconv._threads`);
large buffers are per-thread scratch reused across calls.
"""
from __future__ import annotations

import threading
from typing import Callable, List, Optional, Union

import numpy as np

from .._threads import parallel_ranges
from . import plan
from .boundary import Boundary, extend, extend_numpy
from .conventions import compute_dtype, conv_geometry
from .direct import filter_ext, filter_small, same33_zero, zero_fill_small
from .fft import fft_filter
from .plan import ImageValues, Method, Route
from .separable import filter_separable_ext, separable_factors
from .tiles import tile_kernel

__all__ = ["correlate_valid_ext", "correlate_zero_fill", "correlate_separable", "filter_valid", "filter_image",
           "image_values"]

_tls = threading.local()


def scratch(shape, dtype) -> np.ndarray:
    """A per-thread reusable buffer of ``shape`` (fresh page-faulting allocations cost ~25% on big images)."""
    dtype = np.dtype(dtype)
    n = shape[0] * shape[1]
    nbytes = n * dtype.itemsize
    if nbytes > plan.SCRATCH_KEEP_BYTES or nbytes < plan.SCRATCH_MIN_BYTES:
        return np.empty(shape, dtype=dtype)
    cache = getattr(_tls, "buffers", None)
    if cache is None:
        cache = _tls.buffers = {}
    buf = cache.get(dtype)
    if buf is None or buf.size < n:
        buf = cache[dtype] = np.empty(max(n, 4096), dtype=dtype)
    return buf[:n].reshape(shape)


def _run_tiles(tiles, a, k, flip, top, left, boundary, fill, oh, ow) -> np.ndarray:
    """:func:`correlate_valid_ext` through the register-blocked kernel ``tiles``."""
    out = np.empty((oh, ow), dtype=a.dtype)
    threads = plan.threads_for(oh, oh * ow * k.size)
    if threads == 1:
        tiles(a, k, flip, top, left, boundary, fill, out)
    else:
        parallel_ranges(lambda r0, r1: tiles(a, k, flip, top - r0, left, boundary, fill, out[r0:r1]), oh, threads)
    return out


def correlate_valid_ext(a: np.ndarray, k: np.ndarray, top: int, left: int, boundary: int, fill,
                        oh: int, ow: int, flip: bool = False) -> np.ndarray:
    """``out[i, j] = sum ext[i + p, j + q] * kk[p, q]`` with ``ext[r, c] = a[r - top, c - left]`` extended.

    ``kk`` is ``k``, or ``k`` reversed along both axes when ``flip`` (convolution).  ``a`` and
    ``k`` are C-contiguous 2-D arrays of one Numba-supported dtype; ``fill`` is a scalar of
    that dtype; ``boundary`` a :class:`~fastconv.image.boundary.Boundary`.  Returns a new
    (oh, ow) array of that dtype.
    """
    tiles = tile_kernel(k.shape, a.dtype)
    if tiles is not None:
        return _run_tiles(tiles, a, k, flip, top, left, boundary, fill, oh, ow)
    P, Q = k.shape
    threads = plan.threads_for(oh, oh * ow * P * Q)
    if threads == 1 and plan.fits_small(oh + P - 1, ow + Q - 1, a.itemsize):
        return filter_small(a, k, flip, top, left, boundary, fill, oh, ow)
    out = np.empty((oh, ow), dtype=a.dtype)
    if flip:
        k = np.ascontiguousarray(k[::-1, ::-1])
    if threads == 1:
        filter_ext(a, k, top, left, boundary, fill, scratch((oh + P - 1, ow + Q - 1), a.dtype), out)
        return out

    def run(t0, t1):  # output-row pairs t0 .. t1-1: every range starts at an even row
        r0, r1 = 2 * t0, min(2 * t1, oh)
        ext = scratch((r1 - r0 + P - 1, ow + Q - 1), a.dtype)
        filter_ext(a, k, top - r0, left, boundary, fill, ext, out[r0:r1])

    # The row-pair kernel sums even and odd output rows in different orders, so ranges start at
    # even rows: the result does not depend on the number of threads (nor, in fastconv.dask,
    # on the chunking).
    parallel_ranges(run, (oh + 1) // 2, threads)
    return out


_ZEROS = {np.dtype(t): np.dtype(t).type(0) for t in (np.float32, np.float64)}


def correlate_zero_fill(a: np.ndarray, k: np.ndarray, mode: int, flip: bool) -> np.ndarray:
    """``scipy.signal.convolve2d`` (``flip``) or ``correlate2d`` of real ``a`` and ``k`` with
    ``boundary='fill', fillvalue=0`` in ``mode`` (0 valid, needing ``a`` at least as large as
    ``k``; 1 same; 2 full).  Both arrays C-contiguous, non-empty, float32 or float64, one dtype."""
    M, N = a.shape
    P, Q = k.shape
    route = plan.zero_fill_route(M, N, P, Q, mode, a.dtype)
    if route == Route.TILES:
        oh, ow, top, left = conv_geometry(mode, M, N, P, Q, flip)
        return _run_tiles(tile_kernel(k.shape, a.dtype), a, k, flip, top, left, 0, _ZEROS[a.dtype], oh, ow)
    if route == Route.SAME33:
        out = np.empty((M, N), dtype=a.dtype)  # NumPy's allocation: cheaper than returning Numba's
        same33_zero(a, k, flip, out)
        return out
    if route == Route.SMALL:
        return zero_fill_small(a, k, flip, mode)
    oh, ow, top, left = conv_geometry(mode, M, N, P, Q, flip)
    return correlate_valid_ext(a, k, top, left, 0, a.dtype.type(0), oh, ow, flip)


def correlate_separable(a: np.ndarray, u: np.ndarray, v: np.ndarray, top: int, left: int, boundary: int,
                        fill, oh: int, ow: int) -> np.ndarray:
    """:func:`correlate_valid_ext` for the rank-1 kernel ``outer(u, v)`` in two 1-D passes."""
    P, Q = u.shape[0], v.shape[0]
    out = np.empty((oh, ow), dtype=a.dtype)

    def run(r0, r1):
        ext = scratch((r1 - r0 + P - 1, ow + Q - 1), a.dtype)
        tmp = np.empty(ow + Q - 1, dtype=a.dtype)
        filter_separable_ext(a, u, v, top - r0, left, boundary, fill, ext, tmp, out[r0:r1])

    parallel_ranges(run, oh, plan.threads_for(oh, oh * ow * (P + Q)))
    return out


def _filter_numpy(a, kk, top, left, boundary, fill, oh, ow):
    """Shift-and-add correlation in NumPy, for the dtypes Numba lacks (long double)."""
    P, Q = kk.shape
    ext = extend_numpy(a, top, left, boundary, fill, oh + P - 1, ow + Q - 1)
    out = np.zeros((oh, ow), dtype=a.dtype)
    for p in range(P):
        for q in range(Q):
            out += ext[p:p + oh, q:q + ow] * kk[p, q]
    return out


def filter_valid(a: np.ndarray, kk: np.ndarray, top: int, left: int, boundary: int, fill, oh: int,
                 ow: int, out_dtype: np.dtype, flip: bool = False) -> np.ndarray:
    """Valid correlation of the (top, left)-shifted, boundary-extended 2-D ``a`` with ``kk`` (reversed
    along both axes when ``flip``) as a new (oh, ow) array of ``out_dtype``.

    An empty kernel gives zeros, an empty image the filtered fill value (as SciPy).  Integers are computed in int64 and complex64 in
    complex128 (:func:`~fastconv.image.conventions.compute_dtype`); long double in NumPy.
    """
    if oh <= 0 or ow <= 0:
        return np.zeros((max(oh, 0), max(ow, 0)), dtype=out_dtype)
    if kk.size == 0 or (a.size == 0 and boundary != Boundary.FILL):
        # SciPy returns zeros for an empty kernel; an empty image with a fill boundary is all fill
        # (SciPy's 'full' output then holds fill * sum(kernel)), with the others SciPy crashes
        return np.zeros((oh, ow), dtype=out_dtype)
    cdt = compute_dtype(out_dtype)
    if cdt is None:
        if flip:
            kk = kk[::-1, ::-1]
        return _filter_numpy(a.astype(out_dtype), kk.astype(out_dtype), top, left, boundary,
                             np.asarray(fill, dtype=out_dtype), oh, ow)
    a_c = np.ascontiguousarray(a, dtype=cdt)
    k_c = np.ascontiguousarray(kk, dtype=cdt)
    f = fill if fill.dtype == cdt else np.asarray(fill).astype(cdt)[()]  # integers wrap into int64
    out = correlate_valid_ext(a_c, k_c, top, left, boundary, f, oh, ow, flip)
    if out.dtype != out_dtype:
        out = out.astype(out_dtype)
    return out


def _fft_dtype(dt: np.dtype) -> np.dtype:
    if dt in (np.float32, np.float64, np.complex64, np.complex128):
        return dt
    return np.dtype(np.complex128) if dt.kind == "c" else np.dtype(np.float64)


def image_values(img: np.ndarray, kk: np.ndarray, top: int, left: int, boundary: int, fill, oh: int,
                 ow: int) -> ImageValues:
    """:func:`fastconv.image.plan.image_values` of a filtering call in its engine geometry."""
    P, Q = kk.shape
    cells = 0
    if boundary == Boundary.FILL:
        cells = plan.fill_cells(img.shape[0], img.shape[1], oh + P - 1, ow + Q - 1, top, left)
    return plan.image_values(img, kk, fill, cells)


def _filter_fft(img: np.ndarray, kk: np.ndarray, top: int, left: int, boundary: int, fill, oh: int, ow: int,
                dt: np.dtype, values: ImageValues) -> Optional[np.ndarray]:
    """The FFT path of :func:`filter_image`; None where the plan or :func:`~fastconv.image.fft.fft_filter`
    sends the call to the direct method."""
    P, Q = kk.shape
    channels = img.shape[2] if img.ndim == 3 else 1
    if not values.kernel_finite or not plan.fft_patch_pays(values.nonfinite, P, Q, oh, ow, channels):
        return None
    cdt = _fft_dtype(dt)
    src = np.ascontiguousarray(img, dtype=cdt)
    he, we = oh + P - 1, ow + Q - 1
    f = cdt.type(fill)
    if img.ndim == 2:
        ext = extend(src, top, left, boundary, f, he, we)
    else:
        ext = np.stack([extend(np.ascontiguousarray(src[:, :, c]), top, left, boundary, f, he, we)
                        for c in range(src.shape[2])], axis=2)
    out = fft_filter(ext, kk.astype(cdt), oh, ow)
    return None if out is None else out.astype(dt, copy=False)


def filter_image(img: np.ndarray, kk: np.ndarray, top: int, left: int, boundary: int, fill, oh: int, ow: int,
                 dt: np.dtype, method: str,
                 values: Union[ImageValues, Callable[[], ImageValues], None] = None) -> np.ndarray:
    """Correlate a 2-D image, or each channel of an (H, W, C) image, with ``kk`` by ``method``.

    Parameters
    ----------
    img : ndarray
        (H, W) or (H, W, C) image.
    kk : ndarray
        C-contiguous correlation kernel (a convolution passes the flipped kernel).
    top, left, oh, ow : int
        Geometry from :func:`~fastconv.image.conventions.conv_geometry`.
    boundary : Boundary
        Boundary rule; ``fill`` its constant, of dtype ``dt``.
    dt : numpy.dtype
        Output dtype.
    method : {'direct', 'separable', 'fft'}
        The algorithm; 'separable' requires a rank-1 ``kk``.  'fft' runs the direct method
        instead when non-finite samples reach too many outputs to patch, when a kernel tap
        is not finite or when the transform overflows (:mod:`fastconv.image.fft`).
    values : ImageValues or callable, optional
        The image's :func:`image_values` (or a function computing them), when the caller has
        them already; the FFT path computes them otherwise.

    Returns
    -------
    ndarray
        (oh, ow) or (oh, ow, C) array of ``dt``.
    """
    if img.ndim == 3 and img.shape[2] == 0:  # no channel: SciPy per channel gives nothing to stack
        return np.zeros((max(oh, 0), max(ow, 0), 0), dtype=dt)
    chans = [img] if img.ndim == 2 else [img[:, :, c] for c in range(img.shape[2])]
    if method == Method.FFT and img.size and oh > 0 and ow > 0:
        if values is None:
            values = image_values(img, kk, top, left, boundary, fill, oh, ow)
        elif callable(values):
            values = values()
        out = _filter_fft(img, kk, top, left, boundary, fill, oh, ow, dt, values)
        if out is not None:
            return out
        method = Method.DIRECT
    if method == Method.DIRECT or img.size == 0 or oh <= 0 or ow <= 0:
        outs = [filter_valid(c, kk, top, left, boundary, fill, oh, ow, dt) for c in chans]
    else:
        outs = _separable_channels(chans, kk, top, left, boundary, fill, oh, ow, dt)
    return outs[0] if img.ndim == 2 else np.stack(outs, axis=2)


def _separable_channels(chans: List[np.ndarray], kk, top, left, boundary, fill, oh, ow, dt) -> List[np.ndarray]:
    factors = separable_factors(kk)
    if factors is None:
        raise ValueError("filter2d: method='separable' needs a rank-1 kernel (outer product of two "
                         "vectors); this kernel is not separable")
    cdt = compute_dtype(dt)
    if cdt is None:  # long double: no Numba kernel
        return [filter_valid(c, kk, top, left, boundary, fill, oh, ow, dt) for c in chans]
    u, v = (np.ascontiguousarray(f, dtype=cdt) for f in factors)
    return [correlate_separable(np.ascontiguousarray(c, dtype=cdt), u, v, top, left, boundary,
                                cdt.type(fill), oh, ow).astype(dt, copy=False) for c in chans]
