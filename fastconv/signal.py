"""Drop-in, faster ``scipy.signal.convolve2d`` / ``correlate2d`` for NumPy arrays.

Same signatures, output shapes, output dtypes and error cases as SciPy:

* ``convolve2d`` is a true convolution (kernel flipped); ``correlate2d`` is a
  cross-correlation that conjugates ``in2`` (``sum in1[i + p, j + q] * conj(in2[p, q])``
  in 'full' index space).
* ``mode``: ``'full'`` (size ``M + P - 1``), ``'same'`` (size of ``in1``, centred on the
  full output as SciPy does -- for even kernels convolution and correlation centre
  differently, exactly like SciPy), ``'valid'`` (size ``M - P + 1``; one input must be
  at least as large as the other in every dimension, and when ``in2`` is the larger
  one the inputs are swapped, as in SciPy, correlation then flipping its output).
* ``boundary``: ``'fill'``/``'pad'`` (pad with ``fillvalue``), ``'wrap'``/``'circular'``
  (periodic), ``'symm'``/``'symmetric'`` (mirror including the edge sample, repeated
  when the kernel is larger than the image).
* Output dtype is ``numpy.result_type(in1, in2)``; float32 sums in float32 and integer
  results wrap around exactly as SciPy's.  bool/float16/object results raise
  ``ValueError`` like SciPy.  ``fillvalue`` is cast to the output dtype with SciPy's
  rules (a complex or out-of-range fill for a real/integer output is a ``ValueError``).

The work runs in the image engine (``fastconv.image``), except ``longdouble`` and
``clongdouble`` (not supported by Numba), which use a NumPy shift-and-add loop.
complex64 is computed in complex128 and rounded once (SciPy sums in complex64, so the
results agree to complex64 rounding).
"""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from .image import conventions as conv
from .image import engine
from .image.boundary import Boundary, parse_boundary

__all__ = ["convolve2d", "correlate2d"]


def _run_fast(in1, in2, mode: str, flip: bool):
    """The common call -- two C-contiguous, non-empty float32/float64 images of one dtype,
    zero fill, no 'valid'-mode swap -- with the generic checks skipped; None if not applicable.

    On 64-px images the generic path's Python work is a third of the call.
    """
    if type(in1) is not np.ndarray or type(in2) is not np.ndarray:
        return None
    dt = in1.dtype
    # dtype.char: cheaper than comparing dtypes ('f' float32, 'd' float64)
    if in2.dtype is not dt or dt.char not in "fd" or in1.ndim != 2 or in2.ndim != 2:
        return None
    if not (in1.flags.c_contiguous and in2.flags.c_contiguous):
        return None
    mcode = conv.MODES.get(mode) if type(mode) is str else None
    if mcode is None or in1.size == 0 or in2.size == 0:
        return None
    if mcode == 0 and (in1.shape[0] < in2.shape[0] or in1.shape[1] < in2.shape[1]):
        return None  # SciPy swaps the inputs or rejects them: the generic path decides
    return engine.correlate_zero_fill(in1, in2, mcode, flip)


def _run(name: str, in1: ArrayLike, in2: ArrayLike, mode: str, boundary: str, fillvalue, flip: bool) -> np.ndarray:
    if boundary == "fill" and type(fillvalue) is int and fillvalue == 0:
        out = _run_fast(in1, in2, mode, flip)
        if out is not None:
            return out
    in1 = np.asarray(in1)
    in2 = np.asarray(in2)
    if not in1.ndim == in2.ndim == 2:
        raise ValueError(f"{name} inputs must both be 2-D arrays")
    swapped = conv.valid_swap_needed(mode, in1.shape, in2.shape)
    if swapped:
        in1, in2 = in2, in1
    mcode = conv.parse_mode(mode)
    bcode = parse_boundary(boundary)
    # SciPy's order of checks: the fill value (cast only for boundary='fill'), the output size, the dtype
    dt = in1.dtype if in1.dtype is in2.dtype else np.result_type(in1, in2)
    fill = conv.cast_fill(fillvalue, dt) if bcode == Boundary.FILL else None
    oh, ow, top, left = conv.conv_geometry(mcode, in1.shape[0], in1.shape[1], in2.shape[0], in2.shape[1], flip)
    if oh < 0 or ow < 0:  # 'full' of two arrays empty along one axis: SciPy's (NumPy's) error
        raise ValueError("negative dimensions are not allowed")
    if dt not in conv.NUMBA_DTYPES:
        dt = conv.result_dtype("convolve2d", in1, in2)  # SciPy names convolve2d for both functions
    if fill is None:
        fill = dt.type(0)
    kk = in2.conj() if not flip and in2.dtype.kind == "c" else in2
    out = engine.filter_valid(in1, kk, top, left, bcode, fill, oh, ow, dt, flip)
    if swapped and not flip:
        out = np.ascontiguousarray(out[::-1, ::-1])
    return out


def convolve2d(in1: ArrayLike, in2: ArrayLike, mode: str = "full", boundary: str = "fill",
               fillvalue=0) -> np.ndarray:
    """Convolve two 2-D arrays, as ``scipy.signal.convolve2d``.

    Parameters
    ----------
    in1 : array_like
        First input (the image).
    in2 : array_like
        Second input (the kernel), flipped along both axes: a true convolution.
    mode : {'full', 'valid', 'same'}, optional
        Output size: ``'full'`` (``M + P - 1``), ``'valid'`` (``M - P + 1``, no boundary
        values involved) or ``'same'`` (the size of ``in1``, centred as SciPy centres it).
    boundary : {'fill', 'wrap', 'symm'}, optional
        How ``in1`` continues past its edges: the constant ``fillvalue``, periodically, or
        mirrored including the edge sample.  SciPy's aliases ``'pad'``, ``'circular'`` and
        ``'symmetric'`` are accepted.
    fillvalue : scalar, optional
        The constant of ``boundary='fill'``, cast to the output dtype with SciPy's rules.

    Returns
    -------
    ndarray
        The convolution, of dtype ``numpy.result_type(in1, in2)``; float32 sums in float32
        and integers wrap around exactly as SciPy's.

    Raises
    ------
    ValueError
        For inputs that are not 2-D, unknown ``mode``/``boundary``, bool/float16/object
        dtypes, a ``fillvalue`` that does not cast, and ``'valid'`` inputs neither of which
        is at least as large as the other -- SciPy's errors.

    See Also
    --------
    correlate2d : the cross-correlation.
    fastconv.filters.filter2d : the same convolution on (H, W, C) images, with a choice of algorithm.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.signal import convolve2d
    >>> img = np.arange(16.0).reshape(4, 4)
    >>> convolve2d(img, np.array([[1.0, -1.0]]), mode="valid")
    array([[1., 1., 1.],
           [1., 1., 1.],
           [1., 1., 1.],
           [1., 1., 1.]])
    >>> convolve2d(img, np.ones((3, 3)) / 9, mode="same", boundary="symm").shape
    (4, 4)
    """
    return _run("convolve2d", in1, in2, mode, boundary, fillvalue, flip=True)


def correlate2d(in1: ArrayLike, in2: ArrayLike, mode: str = "full", boundary: str = "fill",
                fillvalue=0) -> np.ndarray:
    """Cross-correlate two 2-D arrays, as ``scipy.signal.correlate2d``.

    ``out[i, j] = sum_{p, q} in1_ext[i + p, j + q] * conj(in2[p, q])`` in 'full' index space:
    the kernel is not flipped, and complex kernels are conjugated.

    Parameters
    ----------
    in1 : array_like
        First input (the image).
    in2 : array_like
        Second input (the template).
    mode : {'full', 'valid', 'same'}, optional
        Output size, as in :func:`convolve2d`.  In ``'valid'`` mode with ``in2`` the larger
        input, the inputs are swapped and the output flipped, as SciPy does.
    boundary : {'fill', 'wrap', 'symm'}, optional
        How ``in1`` continues past its edges, as in :func:`convolve2d`.
    fillvalue : scalar, optional
        The constant of ``boundary='fill'``.

    Returns
    -------
    ndarray
        The correlation, of dtype ``numpy.result_type(in1, in2)``.

    Raises
    ------
    ValueError
        SciPy's errors, as listed in :func:`convolve2d`.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.signal import correlate2d
    >>> img = np.zeros((5, 5)); img[2, 3] = 1.0
    >>> template = np.array([[0.0, 1.0, 0.0], [1.0, 2.0, 1.0], [0.0, 1.0, 0.0]])
    >>> out = correlate2d(img, template, mode="same")
    >>> np.unravel_index(out.argmax(), out.shape)
    (np.int64(2), np.int64(3))
    """
    return _run("correlate2d", in1, in2, mode, boundary, fillvalue, flip=False)
