"""Classic 2-D image filters for NumPy arrays, with automatic choice of algorithm.

``filter2d(image, kernel)`` is a true 2-D *convolution* with ``scipy.signal.convolve2d``
semantics (same ``mode``/``boundary``/``fillvalue`` meaning and output dtype), applied to
a 2-D image or to each channel of an (H, W, C) image.  Three algorithms give the same
result up to floating-point rounding:

* ``'direct'``: the Numba kernel of :mod:`fastconv.signal` (exact integer arithmetic for
  integer inputs);
* ``'separable'``: two 1-D passes, used only when the kernel is exactly rank 1 -- the SVD
  must report rank 1 *and* the factorisation must reproduce the kernel to within
  ``8 * max(P, Q) * eps`` (relative to its largest entry);
* ``'fft'``: a ``scipy.fft`` product over the boundary-extended image.

``method='auto'`` picks the cheapest according to :func:`estimate_costs`, a linear cost
model whose constants were measured on the development machine (see the constants below
and ``benchmarks/calibrate_filter2d.py``).  :func:`choose_method` returns the choice
without filtering.  Integer results always use ``'direct'`` (forcing another method on
them is an error).

Kernel builders return *convolution* kernels, so for odd sizes
``filter2d(img, sobel(0), boundary='symm')`` equals ``scipy.ndimage.sobel(img, 0, mode='reflect')``
and ``filter2d(img, gaussian_kernel(2r + 1, s), boundary='symm')`` equals
``scipy.ndimage.gaussian_filter(img, s, mode='reflect', truncate=r / s)``.
"""
from __future__ import annotations

import functools
import math
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
import scipy.fft as sfft
from numpy.typing import ArrayLike

from . import signal as _sig
from .cpu import signal as _k
from .cpu.extend import extend as _extend_image
from .cpu._threads import num_threads

__all__ = ["gaussian_kernel", "box_kernel", "sobel", "prewitt", "sharpen", "filter2d", "choose_method",
           "estimate_costs", "separable_factors"]

IntPair = Union[int, Sequence[int]]
METHODS = ("direct", "separable", "fft")

# --------------------------------------------------------------------------- cost model
# Measured with ``PYTHONPATH=. python benchmarks/calibrate_filter2d.py`` on the development
# machine (2 vCPUs, AMD EPYC znver4; Numba 0.68, SciPy 1.17; note: the machine was shared
# with other jobs, load average ~5-7, so absolute times are noisy).  Each constant is the
# median over square images of 64..1024 px and square kernels of 3..31 taps of
# (time - overhead) / work, where work = output pixels x kernel taps (direct), output
# pixels x (P + Q) (separable), and n log2 n x 2 transforms with n the padded FFT size
# (fft); overheads are the times on an 8x8 image with a 3x3 kernel.
# Measured crossovers ('same' mode, square image and kernel; smallest kernel size of
# {3, 5, 7, 11, 15, 21, 31} where fft beat direct), second of two calibration runs:
#   float64: 64 px none up to 31, 128 px 21, 256 px 15, 512 px 15, 1024 px 21;
#   float32: 64 px none up to 31, 128 px 31, 256 px 21, 512 px 21, 1024 px 31;
# (the model then predicted 21 from 128 px up, 31 at 64 px).  Separable filtering
# of rank-1 kernels ties direct at 3x3, wins from 5x5 up, and beat fft at every size.
# Re-measured after the flat/row-pair direct kernels (``--quick`` grid, 64/256/512 px x
# 3/7/15/31 taps): direct got 1.4-1.5x faster per multiply-add; fft now first beats direct
# at 31 taps from 256 px up in both dtypes and never at 64 px.  The model predicts 31
# at every size, so at 64 px with 31 taps it picks fft where direct is ~2x faster.
# Re-measured after the fused 3x3 kernel and two threads from 6M multiply-adds: the same
# crossovers (31 taps from 256 px, none at 64 px) in both dtypes, so the constants stand.
# Re-measured after the register-blocked kernel for 2-16 rows (fastconv.cpu.tiles): direct
# costs 0.03 (float32) / 0.05 (float64) ns per multiply-add up to 15 taps, but still
# 0.05 / 0.09 at 31 taps (strip kernel), where the decision lies; crossovers: float32 31
# taps from 256 px, float64 none up to 31 (fft and direct within 2-5% at 31 taps from
# 256 px), none at 64 px.  The constants stay fitted to the large kernels.
#: ns per multiply-add of the direct kernel (complex64 runs in complex128).
DIRECT_NS = {"float32": 0.045, "float64": 0.084, "complex64": 0.351, "complex128": 0.351}
#: ns per (pixel x (P + Q)) of the separable kernel.
SEPARABLE_NS = {"float32": 0.112, "float64": 0.248, "complex64": 0.585, "complex128": 0.585}
#: ns per (n log2 n) of the FFT path, n = product of the padded transform sizes.
FFT_NS = {"float32": 0.573, "float64": 1.053, "complex64": 0.9, "complex128": 1.337}
#: Fixed cost per call in ns (Python, dispatch, factorisation, FFT plans).
OVERHEAD_NS = {"direct": 6_000.0, "separable": 10_000.0, "fft": 68_100.0}


# --------------------------------------------------------------------------- kernel builders


def _pair(value, name: str) -> Tuple:
    if np.ndim(value) == 0:
        return value, value
    items = tuple(value)
    if len(items) != 2:
        raise ValueError(f"{name} must be a scalar or a pair, got {value!r}")
    return items


def _sizes(size: IntPair) -> Tuple[int, int]:
    h, w = _pair(size, "size")
    for s in (h, w):
        if isinstance(s, (bool, np.bool_)) or not isinstance(s, (int, np.integer)) or s < 1:
            raise ValueError(f"size must be a positive int or a pair of positive ints, got {size!r}")
    return int(h), int(w)


def _gauss1d(n: int, sigma: float) -> np.ndarray:
    if not float(sigma) > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    t = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
    g = np.exp(-(t * t) / (2.0 * float(sigma) ** 2))
    return g / g.sum()


def gaussian_kernel(size: IntPair, sigma: Union[float, Sequence[float]]) -> np.ndarray:
    """Normalised (sum 1) float64 Gaussian of ``size`` (int or (h, w)) and ``sigma`` (scalar or (sy, sx)),
    centred on ``(size - 1) / 2`` -- the outer product of two 1-D Gaussians, hence rank 1."""
    h, w = _sizes(size)
    sy, sx = _pair(sigma, "sigma")
    return np.outer(_gauss1d(h, sy), _gauss1d(w, sx))


def box_kernel(size: IntPair) -> np.ndarray:
    """Mean filter: a float64 (h, w) kernel of ones / (h * w)."""
    h, w = _sizes(size)
    return np.full((h, w), 1.0 / (h * w))


def _axis(axis: int) -> int:
    if axis not in (0, 1, -1, -2) or isinstance(axis, bool):
        raise ValueError(f"axis must be 0 (rows, vertical derivative) or 1 (columns, horizontal), got {axis!r}")
    return axis % 2


def _derivative(axis: int, smooth: Sequence[float]) -> np.ndarray:
    # convolution kernel: derivative [1, 0, -1] (the flip of correlation's [-1, 0, 1])
    k = np.outer([1.0, 0.0, -1.0], smooth)
    return k if _axis(axis) == 0 else np.ascontiguousarray(k.T)


def sobel(axis: int = 0) -> np.ndarray:
    """3x3 Sobel derivative along ``axis`` (0: d/drow, 1: d/dcol) as a convolution kernel (rank 1);
    ``filter2d(img, sobel(a), boundary='symm')`` equals ``scipy.ndimage.sobel(img, a, mode='reflect')``."""
    return _derivative(axis, [1.0, 2.0, 1.0])


def prewitt(axis: int = 0) -> np.ndarray:
    """3x3 Prewitt derivative along ``axis`` as a convolution kernel (rank 1), like ``scipy.ndimage.prewitt``."""
    return _derivative(axis, [1.0, 1.0, 1.0])


def sharpen() -> np.ndarray:
    """The classic 3x3 sharpening kernel ``5*center - 4-neighbours`` (rank 2, symmetric)."""
    return np.array([[0.0, -1.0, 0.0], [-1.0, 5.0, -1.0], [0.0, -1.0, 0.0]])


# --------------------------------------------------------------------------- method choice


def _kernel2d(kernel: ArrayLike) -> np.ndarray:
    k = np.asarray(kernel)
    if k.ndim != 2:
        raise ValueError(f"kernel must be a 2-D array, got {k.ndim} dimension(s) (shape {k.shape})")
    if k.size == 0:
        raise ValueError("kernel must not be empty")
    return k


def separable_factors(kernel: ArrayLike) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """``(u, v)`` with ``outer(u, v) == kernel`` to tight tolerance when the kernel is exactly rank 1, else None.

    The factors come from the row and column of the largest entry (exact for
    integer-valued kernels such as Sobel); the reconstruction must match,
    ``max|outer(u, v) - k| <= tol * max|k|`` with ``tol = 8 * max(P, Q) * eps`` of the
    kernel's precision, and the SVD must confirm rank 1 (``s[1] <= tol * s[0]``).  Kernels
    failing the cheap reconstruction test skip the SVD.  Results are cached per kernel
    (bytes, shape, dtype), so repeated filtering with one kernel pays this once.
    """
    k = _kernel2d(kernel)
    if k.dtype.kind not in "iufc":
        return None
    factors = _separable_cached(np.ascontiguousarray(k).tobytes(), k.shape, k.dtype.str)
    return None if factors is None else (factors[0].copy(), factors[1].copy())


@functools.lru_cache(maxsize=256)
def _separable_cached(data: bytes, shape: Tuple[int, int], dtype: str):
    k = np.frombuffer(data, dtype=np.dtype(dtype)).reshape(shape)
    kf = k.astype(np.complex128 if k.dtype.kind == "c" else np.float64)
    eps = np.finfo(k.dtype).eps if k.dtype.kind in "fc" else np.finfo(np.float64).eps
    tol = 8 * max(shape) * eps
    amax = np.abs(kf).max()
    if amax == 0 or not np.isfinite(amax):
        return None
    i, j = np.unravel_index(np.argmax(np.abs(kf)), kf.shape)
    u = kf[:, j].copy()
    v = kf[i, :] / kf[i, j]
    if np.abs(np.outer(u, v) - kf).max() > tol * amax:
        return None
    if min(shape) > 1:
        s = np.linalg.svd(kf, compute_uv=False)
        if s[1] > tol * s[0]:
            return None
    return u, v


def _fft_shape(oh: int, ow: int, p: int, q: int) -> Tuple[int, int]:
    return sfft.next_fast_len(oh + p - 1, True), sfft.next_fast_len(ow + q - 1, True)


def estimate_costs(image_shape: Sequence[int], kernel: ArrayLike, mode: str = "same",
                   dtype: Optional[np.dtype] = None) -> Dict[str, float]:
    """Predicted run time in ns of each applicable method (``'separable'`` only for rank-1 kernels)."""
    k = _kernel2d(kernel)
    if len(image_shape) not in (2, 3):
        raise ValueError(f"image must be 2-D (H, W) or 3-D (H, W, C), got shape {tuple(image_shape)}")
    h, w = int(image_shape[0]), int(image_shape[1])
    channels = int(image_shape[2]) if len(image_shape) == 3 else 1
    dt = np.dtype(dtype) if dtype is not None else np.result_type(np.float64, k.dtype)
    dt = np.result_type(dt, k.dtype)
    p, q = k.shape
    oh, ow, _, _ = _sig._conv_geometry(_sig._mode_code(mode), (h, w), (p, q), True)
    oh, ow = max(oh, 0), max(ow, 0)
    if dt.kind in "iub":
        return {"direct": OVERHEAD_NS["direct"] + DIRECT_NS["float64"] * oh * ow * p * q * channels}
    name = dt.name if dt.name in DIRECT_NS else ("complex128" if dt.kind == "c" else "float64")
    costs = {"direct": OVERHEAD_NS["direct"] + DIRECT_NS[name] * oh * ow * p * q * channels}
    if separable_factors(k) is not None:
        costs["separable"] = OVERHEAD_NS["separable"] + SEPARABLE_NS[name] * oh * ow * (p + q) * channels
    n = math.prod(_fft_shape(oh, ow, p, q))
    costs["fft"] = OVERHEAD_NS["fft"] + FFT_NS[name] * n * math.log2(max(n, 2)) * (channels + 1)
    return costs


def choose_method(image_shape: Sequence[int], kernel: ArrayLike, mode: str = "same",
                  dtype: Optional[np.dtype] = None) -> str:
    """The method ``filter2d(..., method='auto')`` uses for this problem: the cheapest of
    :func:`estimate_costs` (``'direct'`` for integer results)."""
    costs = estimate_costs(image_shape, kernel, mode, dtype)
    return min(costs, key=costs.get)


# --------------------------------------------------------------------------- filtering


def _fft_valid(ext: np.ndarray, kk: np.ndarray, oh: int, ow: int) -> np.ndarray:
    """Valid correlation of ``ext`` ((oh+P-1, ow+Q-1[, C])) with ``kk`` via a circular FFT product."""
    p, q = kk.shape
    s = _fft_shape(oh, ow, p, q)
    kflip = kk[::-1, ::-1]
    if ext.ndim == 3:
        kflip = kflip[:, :, None]
    workers = num_threads()
    if ext.dtype.kind == "c":
        prod = sfft.fft2(ext, s, axes=(0, 1), workers=workers) * sfft.fft2(kflip, s, axes=(0, 1), workers=workers)
        full = sfft.ifft2(prod, s, axes=(0, 1), workers=workers)
    else:
        prod = sfft.rfft2(ext, s, axes=(0, 1), workers=workers) * sfft.rfft2(kflip, s, axes=(0, 1), workers=workers)
        full = sfft.irfft2(prod, s, axes=(0, 1), workers=workers)
    return np.ascontiguousarray(full[p - 1:p - 1 + oh, q - 1:q - 1 + ow]).astype(ext.dtype, copy=False)


def filter2d(image: ArrayLike, kernel: ArrayLike, mode: str = "same", boundary: str = "fill", fillvalue=0,
             method: str = "auto") -> np.ndarray:
    """Convolve a 2-D image, or each channel of an (H, W, C) image, with a 2-D kernel.

    Per channel the result equals ``scipy.signal.convolve2d(channel, kernel, mode, boundary,
    fillvalue)`` (true convolution; ``mode`` 'same' (default), 'full' or 'valid'; ``boundary``
    'fill', 'wrap' or 'symm'), with SciPy's output dtype.  ``method`` is 'auto' (see
    :func:`choose_method`), 'direct', 'separable' (rank-1 kernels only) or 'fft'.
    In 'valid' mode the kernel must not be larger than the image.
    """
    img = np.asarray(image)
    k = _kernel2d(kernel)
    if img.ndim not in (2, 3):
        raise ValueError(f"image must be 2-D (H, W) or 3-D (H, W, C), got shape {img.shape}")
    if method not in METHODS + ("auto",):
        raise ValueError(f"method must be one of 'auto', 'direct', 'separable', 'fft', got {method!r}")
    mcode = _sig._mode_code(mode)
    bcode = _sig._boundary_code(boundary)
    dt = _sig.result_dtype("filter2d", img, k)
    fill = _sig.cast_fill(fillvalue, dt)
    h, w = img.shape[:2]
    p, q = k.shape
    if mcode == 0 and (p > h or q > w):
        raise ValueError(f"filter2d: in 'valid' mode the kernel {k.shape} must not be larger than the "
                         f"image {(h, w)}")
    oh, ow, top, left = _sig._conv_geometry(mcode, (h, w), (p, q), True)
    if method == "auto":
        method = choose_method(img.shape, k, mode, dt)
    elif method != "direct" and dt.kind in "iu":
        raise ValueError(f"filter2d: method={method!r} needs a floating-point or complex result, but the "
                         f"inputs give {dt}; use method='direct' for exact integer filtering")
    kk = np.ascontiguousarray(k[::-1, ::-1])
    chans = [img] if img.ndim == 2 else [img[:, :, c] for c in range(img.shape[2])]
    if method == "direct" or img.size == 0 or oh <= 0 or ow <= 0:
        outs = [_sig.filter_valid(c, kk, top, left, bcode, fill, oh, ow, dt) for c in chans]
    elif method == "separable":
        factors = separable_factors(kk)
        if factors is None:
            raise ValueError("filter2d: method='separable' needs a rank-1 kernel (outer product of two "
                             "vectors); this kernel is not separable")
        cdt = _sig.compute_dtype(dt)
        if cdt is None:  # long double: no Numba kernel
            outs = [_sig.filter_valid(c, kk, top, left, bcode, fill, oh, ow, dt) for c in chans]
        else:
            u, v = (np.ascontiguousarray(f, dtype=cdt) for f in factors)
            outs = [_k.correlate_separable(np.ascontiguousarray(c, dtype=cdt), u, v, top, left, bcode,
                                           cdt.type(fill), oh, ow).astype(dt, copy=False) for c in chans]
    else:
        cdt = dt if dt in (np.float32, np.float64, np.complex64, np.complex128) else (
            np.dtype(np.complex128) if dt.kind == "c" else np.dtype(np.float64))
        src = np.ascontiguousarray(img, dtype=cdt)
        he, we = oh + p - 1, ow + q - 1
        if img.ndim == 2:
            ext = _extend_image(src, top, left, bcode, cdt.type(fill), he, we)
        else:
            ext = np.stack([_extend_image(np.ascontiguousarray(src[:, :, c]), top, left, bcode,
                                          cdt.type(fill), he, we) for c in range(src.shape[2])], axis=2)
        res = _fft_valid(ext, kk.astype(cdt), oh, ow).astype(dt, copy=False)
        return res
    if img.ndim == 2:
        return outs[0]
    return np.stack(outs, axis=2)
