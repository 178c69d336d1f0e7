"""Classic 2-D image filters for NumPy arrays, with automatic choice of algorithm.

``filter2d(image, kernel)`` is a true 2-D *convolution* with ``scipy.signal.convolve2d``
semantics (same ``mode``/``boundary``/``fillvalue`` meaning and output dtype), applied to
a 2-D image or to each channel of an (H, W, C) image.  Three algorithms give the same
result up to floating-point rounding:

* ``'direct'``: the direct kernels of the image engine (exact integer arithmetic for
  integer inputs);
* ``'separable'``: two 1-D passes, used only when the kernel is exactly rank 1 (see
  :func:`separable_factors`);
* ``'fft'``: a ``scipy.fft`` product over the boundary-extended image.

``method='auto'`` picks the cheapest according to a linear cost model measured on the
development machine (``fastconv.image.plan``; ``benchmarks/calibrate_filter2d.py``
re-measures it).  :func:`choose_method` returns the choice without filtering, from the
same plan the filtering uses.  Integer results always use ``'direct'`` (forcing another
method on them is an error).

Accuracy.  ``'direct'`` and ``'separable'`` round like SciPy's direct sum (each output's
error is about ``eps * sum |x| |k|`` over its own window).  The FFT's absolute error on each
output is at most about ``eps * log2(n) * max|x| * sum|k|``, with ``max|x|`` the largest
magnitude anywhere in the (boundary-extended) image and ``n`` the size of the padded
transform: outputs far smaller than the image's largest values lose relative precision.
``'auto'`` therefore leaves the FFT when the image's dynamic range (largest magnitude over
the smallest nonzero magnitude of a kernel-sized neighbourhood) exceeds
``fastconv.image.plan.FFT_MAX_RANGE`` (1e3), so its error stays within that factor of the
direct method's; exactly zero regions get an absolute error below the bound, not exact zeros.

Non-finite input.  Every method gives exactly the direct method's non-finite pattern: an
output is NaN or infinite exactly where SciPy's is (a NaN or infinity reaches the outputs
within the kernel's reach; ``inf * 0`` is NaN).  The FFT path transforms the image with its
non-finite samples set to zero and recomputes the outputs they reach as direct sums; when
those outputs exceed 1/8 of the result, or a kernel tap is not finite, it runs the direct
method instead.

Kernel builders return *convolution* kernels, so for odd sizes
``filter2d(img, sobel(0), boundary='symm')`` equals ``scipy.ndimage.sobel(img, 0, mode='reflect')``
and ``filter2d(img, gaussian_kernel(2r + 1, s), boundary='symm')`` equals
``scipy.ndimage.gaussian_filter(img, s, mode='reflect', truncate=r / s)``.
"""
from __future__ import annotations

import functools
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
from numpy.typing import ArrayLike

from ._window import gaussian_1d
from .image import conventions as conv
from .image import engine, plan
from .image import separable as _separable
from .image.boundary import parse_boundary

__all__ = ["gaussian_kernel", "box_kernel", "sobel", "prewitt", "sharpen", "filter2d", "choose_method",
           "estimate_costs", "separable_factors", "METHODS"]

IntPair = Union[int, Sequence[int]]
#: The algorithms of :func:`filter2d` (besides ``'auto'``).
METHODS = plan.METHODS


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


def gaussian_kernel(size: IntPair, sigma: Union[float, Sequence[float]]) -> np.ndarray:
    """Normalised Gaussian convolution kernel.

    Parameters
    ----------
    size : int or (int, int)
        Kernel size (h, w); an int gives a square kernel.
    sigma : float or (float, float)
        Standard deviation (sy, sx) in pixels; must be positive.

    Returns
    -------
    ndarray
        float64 (h, w) kernel summing to 1, centred on ``(size - 1) / 2``: the outer
        product of two 1-D Gaussians, hence rank 1 (``filter2d`` filters it separably).

    Raises
    ------
    ValueError
        For a non-positive size or sigma.

    Examples
    --------
    >>> from fastconv.filters import gaussian_kernel
    >>> k = gaussian_kernel(5, 1.0)
    >>> k.shape, round(float(k.sum()), 12), bool(k[2, 2] == k.max())
    ((5, 5), 1.0, True)
    """
    h, w = _sizes(size)
    sy, sx = _pair(sigma, "sigma")
    return np.outer(gaussian_1d(h, sy), gaussian_1d(w, sx))


def box_kernel(size: IntPair) -> np.ndarray:
    """Mean filter: a float64 (h, w) kernel of ``1 / (h * w)``.

    Parameters
    ----------
    size : int or (int, int)
        Kernel size.

    Returns
    -------
    ndarray
        The kernel.

    Raises
    ------
    ValueError
        For a size that is not a positive int or a pair of them.

    Examples
    --------
    >>> from fastconv.filters import box_kernel
    >>> box_kernel((1, 4))
    array([[0.25, 0.25, 0.25, 0.25]])
    """
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
    """3x3 Sobel derivative as a convolution kernel (rank 1).

    Parameters
    ----------
    axis : {0, 1}
        0 differentiates along rows (d/drow, horizontal edges), 1 along columns.

    Returns
    -------
    ndarray
        float64 (3, 3) kernel; ``filter2d(img, sobel(a), boundary='symm')`` equals
        ``scipy.ndimage.sobel(img, a, mode='reflect')``.

    Raises
    ------
    ValueError
        For an axis other than 0, 1 (or -2, -1).

    Examples
    --------
    >>> from fastconv.filters import sobel
    >>> sobel(0)
    array([[ 1.,  2.,  1.],
           [ 0.,  0.,  0.],
           [-1., -2., -1.]])
    """
    return _derivative(axis, [1.0, 2.0, 1.0])


def prewitt(axis: int = 0) -> np.ndarray:
    """3x3 Prewitt derivative as a convolution kernel (rank 1), like ``scipy.ndimage.prewitt``.

    Parameters
    ----------
    axis : {0, 1}
        0 differentiates along rows, 1 along columns.

    Returns
    -------
    ndarray
        float64 (3, 3) kernel.

    Raises
    ------
    ValueError
        For an axis other than 0, 1 (or -2, -1).

    Examples
    --------
    >>> from fastconv.filters import prewitt
    >>> prewitt(1)[1]
    array([ 1.,  0., -1.])
    """
    return _derivative(axis, [1.0, 1.0, 1.0])


def sharpen() -> np.ndarray:
    """The classic 3x3 sharpening kernel ``5 * centre - 4-neighbours`` (rank 2, symmetric).

    It takes no arguments (hence no Parameters or Raises section).  ``filter2d(img, sharpen())``
    adds the negative Laplacian to the image: flat regions are unchanged, edges are steepened.

    Returns
    -------
    ndarray
        float64 (3, 3) kernel summing to 1.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.filters import filter2d, sharpen
    >>> float(sharpen().sum())
    1.0
    >>> img = np.zeros((5, 6)); img[:, 3:] = 1.0         # a vertical edge, over- and undershot
    >>> filter2d(img, sharpen(), boundary="symm")[2]
    array([ 0.,  0., -1.,  2.,  1.,  1.])
    """
    return np.array([[0.0, -1.0, 0.0], [-1.0, 5.0, -1.0], [0.0, -1.0, 0.0]])


# --------------------------------------------------------------------------- method choice


def separable_factors(kernel: ArrayLike) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """Factors of an exactly rank-1 kernel.

    Parameters
    ----------
    kernel : array_like
        2-D kernel.

    Returns
    -------
    (ndarray, ndarray) or None
        ``(u, v)`` with ``outer(u, v) == kernel`` to within ``8 * max(P, Q) * eps`` of the
        largest entry, confirmed rank 1 by the SVD; None when the kernel is not exactly
        rank 1.  Results are cached per kernel.

    Raises
    ------
    ValueError
        For a kernel that is not a non-empty 2-D array.

    Examples
    --------
    >>> from fastconv.filters import separable_factors, sobel, sharpen
    >>> u, v = separable_factors(sobel(0))
    >>> u, v
    (array([ 2.,  0., -2.]), array([0.5, 1. , 0.5]))
    >>> separable_factors(sharpen()) is None
    True
    """
    return _separable.separable_factors(conv.as_kernel2d(kernel))


def _plan_args(image_shape: Sequence[int], kernel: ArrayLike, mode: str, dtype: Optional[np.dtype]):
    k = conv.as_kernel2d(kernel)
    if len(image_shape) not in (2, 3):
        raise ValueError(f"image must be 2-D (H, W) or 3-D (H, W, C), got shape {tuple(image_shape)}")
    dt = np.dtype(dtype) if dtype is not None else np.result_type(np.float64, k.dtype)
    dt = np.result_type(dt, k.dtype)
    separable = dt.kind not in "iub" and _separable.separable_factors(k) is not None
    return tuple(image_shape), k.shape, conv.parse_mode(mode), dt, separable


def estimate_costs(image_shape: Sequence[int], kernel: ArrayLike, mode: str = "same",
                   dtype: Optional[np.dtype] = None) -> Dict[str, float]:
    """Predicted run time of each applicable :func:`filter2d` method.

    Parameters
    ----------
    image_shape : sequence of int
        (H, W) or (H, W, C).
    kernel : array_like
        The 2-D kernel.
    mode : {'same', 'full', 'valid'}, optional
        As in :func:`filter2d`.
    dtype : numpy.dtype, optional
        The image dtype (default float64); combined with the kernel's.

    Returns
    -------
    dict
        Method name -> predicted ns; ``'separable'`` only for exactly rank-1 kernels and
        only ``'direct'`` for integer results.

    Raises
    ------
    ValueError
        For a kernel that is not a non-empty 2-D array, an image shape that is not 2-D or
        3-D, or an unknown mode.

    Examples
    --------
    >>> from fastconv.filters import estimate_costs, gaussian_kernel
    >>> sorted(estimate_costs((512, 512), gaussian_kernel(9, 2.0)))
    ['direct', 'fft', 'separable']
    """
    return plan.estimate_costs(*_plan_args(image_shape, kernel, mode, dtype))


def choose_method(image_shape: Sequence[int], kernel: ArrayLike, mode: str = "same",
                  dtype: Optional[np.dtype] = None, *, image: Optional[ArrayLike] = None, boundary: str = "fill",
                  fillvalue=0) -> str:
    """The method ``filter2d(..., method='auto')`` uses for this problem.

    Parameters
    ----------
    image_shape, kernel, mode, dtype
        As in :func:`estimate_costs`.
    image : array_like, optional
        The image itself (of shape ``image_shape``).  With it the choice also weighs the
        FFT's precision and non-finite values, as ``filter2d`` does: the FFT is left out when
        the image's dynamic range (largest magnitude over the smallest nonzero local
        magnitude) exceeds ``fastconv.image.plan.FFT_MAX_RANGE``, when non-finite values reach
        too many outputs to patch, or when a kernel tap is not finite.  Without it the
        choice follows the cost model alone.
    boundary, fillvalue
        As in :func:`filter2d` (used with ``image``: a fill value takes part in the range).

    Returns
    -------
    {'direct', 'separable', 'fft'}
        The cheapest method of :func:`estimate_costs` that keeps the accuracy -- the very
        plan ``filter2d`` follows.

    Raises
    ------
    ValueError
        For a kernel that is not a non-empty 2-D array, an image shape that is not 2-D or
        3-D, an unknown mode or boundary, or an ``image`` whose shape is not ``image_shape``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.filters import choose_method, gaussian_kernel, sharpen
    >>> choose_method((512, 512), gaussian_kernel(15, 3.0))
    'separable'
    >>> choose_method((256, 256), sharpen())
    'direct'
    >>> k = np.random.default_rng(0).standard_normal((63, 63))
    >>> choose_method((1024, 1024), k)
    'fft'
    >>> img = np.full((1024, 1024), 1e-3); img[:, 512:] = 1e9   # dynamic range 1e12
    >>> choose_method(img.shape, k, image=img)
    'direct'
    """
    args = _plan_args(image_shape, kernel, mode, dtype)
    values = None
    if image is not None:
        img = np.asarray(image)
        if img.shape != args[0]:
            raise ValueError(f"choose_method: image has shape {img.shape}, but image_shape is {args[0]}")
        values = _values(img, conv.as_kernel2d(kernel), args[2], parse_boundary(boundary),
                         conv.cast_fill(fillvalue, args[3]))
    return plan.choose_method(*args, values=values)


def _values(img: np.ndarray, k: np.ndarray, mcode: int, bcode, fill):
    """A function computing the image's :class:`~fastconv.image.plan.ImageValues` once, on first call."""
    oh, ow, top, left = conv.conv_geometry(mcode, img.shape[0], img.shape[1], k.shape[0], k.shape[1], True)
    return functools.lru_cache(maxsize=None)(lambda: engine.image_values(img, k, top, left, bcode, fill, oh, ow))


# --------------------------------------------------------------------------- filtering


def filter2d(image: ArrayLike, kernel: ArrayLike, mode: str = "same", boundary: str = "fill", fillvalue=0,
             method: str = "auto") -> np.ndarray:
    """Convolve a 2-D image, or each channel of an (H, W, C) image, with a 2-D kernel.

    Per channel the result equals ``scipy.signal.convolve2d(channel, kernel, mode, boundary,
    fillvalue)``: a true convolution (the kernel is flipped), with SciPy's output dtype.

    Parameters
    ----------
    image : array_like
        (H, W) or (H, W, C) image.
    kernel : array_like
        Non-empty 2-D convolution kernel (see :func:`gaussian_kernel`, :func:`sobel`...).
    mode : {'same', 'full', 'valid'}, optional
        Output size, as ``scipy.signal.convolve2d``.  In ``'valid'`` mode the kernel must
        not be larger than the image.
    boundary : {'fill', 'wrap', 'symm'}, optional
        How the image continues past its edges (SciPy's names and aliases).
    fillvalue : scalar, optional
        The constant of ``boundary='fill'``.
    method : {'auto', 'direct', 'separable', 'fft'}, optional
        The algorithm; ``'auto'`` is :func:`choose_method`'s choice for this image (cost, and
        the FFT's precision on this image's dynamic range).  ``'separable'`` needs an exactly
        rank-1 kernel; integer results need ``'direct'`` (exact arithmetic).  ``'fft'`` has an
        absolute error of about ``eps * log2(n) * max|x| * sum|k|`` on every output (see the
        module docstring); non-finite input gives the direct method's NaN/inf pattern on
        every method.

    Returns
    -------
    ndarray
        (oh, ow) or (oh, ow, C) array of dtype ``numpy.result_type(image, kernel)``; an
        (H, W, 0) image gives an (oh, ow, 0) result.

    Raises
    ------
    ValueError
        For images that are not 2-D or 3-D, empty or non-2-D kernels, unknown mode, boundary
        or method, a kernel larger than the image in 'valid' mode, a non-separable kernel
        with ``method='separable'``, and a non-direct method on integer results.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.filters import filter2d, sobel
    >>> img = np.zeros((5, 6)); img[:, 3:] = 1.0         # a vertical edge
    >>> filter2d(img, sobel(1), boundary="symm")[2]
    array([0., 0., 4., 4., 0., 0.])
    >>> img[2, 1] = np.nan                                 # NaN only within the kernel's reach
    >>> np.isnan(filter2d(img, np.ones((3, 3)), method="fft")).sum()
    np.int64(9)
    """
    img = np.asarray(image)
    k = conv.as_kernel2d(kernel)
    if img.ndim not in (2, 3):
        raise ValueError(f"image must be 2-D (H, W) or 3-D (H, W, C), got shape {img.shape}")
    if method not in METHODS + ("auto",):
        raise ValueError(f"method must be one of 'auto', 'direct', 'separable', 'fft', got {method!r}")
    mcode = conv.parse_mode(mode)
    bcode = parse_boundary(boundary)
    dt = conv.result_dtype("filter2d", img, k)
    fill = conv.cast_fill(fillvalue, dt)
    h, w = img.shape[:2]
    p, q = k.shape
    if mcode == 0 and (p > h or q > w):
        raise ValueError(f"filter2d: in 'valid' mode the kernel {k.shape} must not be larger than the "
                         f"image {(h, w)}")
    oh, ow, top, left = conv.conv_geometry(mcode, h, w, p, q, True)
    values = None
    if method == "auto":
        values = _values(img, k, mcode, bcode, fill)
        method = plan.choose_method(img.shape, k.shape, mcode, dt,
                                    dt.kind not in "iub" and _separable.separable_factors(k) is not None, values)
    elif method != "direct" and dt.kind in "iu":
        raise ValueError(f"filter2d: method={method!r} needs a floating-point or complex result, but the "
                         f"inputs give {dt}; use method='direct' for exact integer filtering")
    kk = np.ascontiguousarray(k[::-1, ::-1])
    return engine.filter_image(img, kk, top, left, bcode, fill, oh, ow, dt, method, values)
