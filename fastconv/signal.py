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

The work runs in Numba kernels (:mod:`fastconv.cpu.signal`), except ``longdouble``
and ``clongdouble`` (not supported by Numba), which use a NumPy shift-and-add loop.
complex64 is computed in complex128 and rounded once (SciPy sums in complex64, so the
results agree to complex64 rounding).
"""
from __future__ import annotations

import warnings
from typing import Tuple

import numpy as np
from numpy.typing import ArrayLike

from .cpu import signal as _k

__all__ = ["convolve2d", "correlate2d"]

_MODES = {"valid": 0, "same": 1, "full": 2}
_BOUNDARIES = {"fill": 0, "pad": 0, "symm": 1, "symmetric": 1, "wrap": 2, "circular": 2}
_NUMBA_DTYPES = (np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.complex64), np.dtype(np.complex128))


def _mode_code(mode: str) -> int:
    try:
        return _MODES[mode]
    except (KeyError, TypeError):
        raise ValueError("Acceptable mode flags are 'valid', 'same', or 'full'.") from None


def _boundary_code(boundary: str) -> int:
    if boundary == "reflect":  # a key SciPy knows but its 2-D kernel rejects
        raise ValueError("Incorrect boundary value.")
    try:
        return _BOUNDARIES[boundary]
    except (KeyError, TypeError):
        raise ValueError("Acceptable boundary flags are 'fill', 'circular' (or 'wrap'), and "
                         "'symmetric' (or 'symm').") from None


def _swap_needed(mode: str, s1: Tuple[int, ...], s2: Tuple[int, ...]) -> bool:
    if mode != "valid":
        return False
    ok1 = all(a >= b for a, b in zip(s1, s2))
    ok2 = all(b >= a for a, b in zip(s1, s2))
    if not (ok1 or ok2):
        raise ValueError("For 'valid' mode, one must be at least as large as the other in every dimension")
    return not ok1


def result_dtype(name: str, *arrays: np.ndarray) -> np.dtype:
    """SciPy's output dtype for 2-D convolution of ``arrays``, or ValueError if SciPy rejects it."""
    dt = np.result_type(*arrays)
    if dt.kind not in "iufc" or dt == np.float16:
        raise ValueError(f"{name} not available for this type.")
    return dt


def cast_fill(fillvalue, dtype: np.dtype):
    """Convert ``fillvalue`` to ``dtype`` the way SciPy's ``_convolve2d`` does (returns a NumPy scalar).

    Arrays must cast safely; other objects (Python and NumPy scalars, sequences) go through
    ``np.asarray(fillvalue, dtype)`` with NumPy's scalar conversion rules.  Anything that does
    not convert directly is an error, as in SciPy.
    """
    if type(fillvalue) is int and fillvalue == 0:  # the default: skip the slow generic path
        return dtype.type(0)
    try:
        if isinstance(fillvalue, np.ndarray):
            if not np.can_cast(fillvalue.dtype, dtype, "safe"):
                raise TypeError
            arr = fillvalue.astype(dtype)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                arr = np.asarray(fillvalue, dtype=dtype)
    except (TypeError, ValueError, OverflowError):
        if not isinstance(fillvalue, np.ndarray):
            np.asarray(fillvalue, dtype=np.complex128)  # SciPy retries via complex: its errors surface
        raise ValueError("could not cast `fillvalue` directly to the output type "
                         "(it was first converted to complex).") from None
    if arr.size == 0:
        raise ValueError("`fillvalue` cannot be an empty array.")
    if arr.size != 1:
        raise ValueError("`fillvalue` must be scalar or an array with one element.")
    return arr.reshape(())[()]


def compute_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype the Numba kernels run in for output ``dtype`` (integers in int64); None = NumPy fallback."""
    if dtype.kind in "iu":
        return np.dtype(np.int64)
    if dtype == np.complex64:  # one complex specialisation less to compile; more accurate sums
        return np.dtype(np.complex128)
    if dtype in _NUMBA_DTYPES:
        return dtype
    return None


def filter_valid(a: np.ndarray, kk: np.ndarray, top: int, left: int, boundary: int, fill, oh: int,
                 ow: int, out_dtype: np.dtype, flip: bool = False) -> np.ndarray:
    """Valid correlation of the (top, left)-shifted, boundary-extended ``a`` with ``kk`` (reversed
    along both axes when ``flip``) as ``out_dtype``."""
    if oh <= 0 or ow <= 0:
        return np.zeros((max(oh, 0), max(ow, 0)), dtype=out_dtype)
    if a.size == 0 or kk.size == 0:
        # SciPy returns zeros when either input is empty
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
    out = _k.correlate_valid_ext(a_c, k_c, top, left, boundary, f, oh, ow, flip)
    if out.dtype != out_dtype:
        out = out.astype(out_dtype)
    return out


def extend_numpy(a: np.ndarray, top: int, left: int, boundary: int, fill, he: int, we: int) -> np.ndarray:
    """NumPy version of the boundary extension (for dtypes Numba lacks)."""
    def idx(n, start, length):
        i = np.arange(length) - start
        if boundary == 2:
            return i % n, np.zeros(length, bool)
        if boundary == 1:
            j = i % (2 * n)
            return np.where(j < n, j, 2 * n - 1 - j), np.zeros(length, bool)
        return np.clip(i, 0, n - 1), (i < 0) | (i >= n)
    ri, rm = idx(a.shape[0], top, he)
    ci, cm = idx(a.shape[1], left, we)
    ext = a[np.ix_(ri, ci)]
    ext[rm, :] = fill
    ext[:, cm] = fill
    return ext


def _filter_numpy(a, kk, top, left, boundary, fill, oh, ow):
    P, Q = kk.shape
    ext = extend_numpy(a, top, left, boundary, fill, oh + P - 1, ow + Q - 1)
    out = np.zeros((oh, ow), dtype=a.dtype)
    for p in range(P):
        for q in range(Q):
            out += ext[p:p + oh, q:q + ow] * kk[p, q]
    return out


def _conv_geometry(mode: int, shape1: Tuple[int, int], shape2: Tuple[int, int], flip: bool):
    """Output size and (top, left) extension offsets for convolution (flip) or correlation."""
    return _k.conv_geometry(mode, shape1[0], shape1[1], shape2[0], shape2[1], flip)


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
    mcode = _MODES.get(mode) if type(mode) is str else None
    if mcode is None or in1.size == 0 or in2.size == 0:
        return None
    if mcode == 0 and (in1.shape[0] < in2.shape[0] or in1.shape[1] < in2.shape[1]):
        return None  # SciPy swaps the inputs or rejects them: the generic path decides
    return _k.correlate_zero_fill(in1, in2, mcode, flip)


def _run(name: str, in1: ArrayLike, in2: ArrayLike, mode: str, boundary: str, fillvalue, flip: bool) -> np.ndarray:
    if boundary == "fill" and type(fillvalue) is int and fillvalue == 0:
        out = _run_fast(in1, in2, mode, flip)
        if out is not None:
            return out
    in1 = np.asarray(in1)
    in2 = np.asarray(in2)
    if not in1.ndim == in2.ndim == 2:
        raise ValueError(f"{name} inputs must both be 2-D arrays")
    swapped = _swap_needed(mode, in1.shape, in2.shape)
    if swapped:
        in1, in2 = in2, in1
    mcode = _mode_code(mode)
    bcode = _boundary_code(boundary)
    if in1.dtype is in2.dtype and in1.dtype in _NUMBA_DTYPES:
        dt = in1.dtype  # fast path for the common case
    else:
        dt = result_dtype("convolve2d", in1, in2)  # SciPy names convolve2d for both functions
    fill = cast_fill(fillvalue, dt)
    kk = in2.conj() if not flip and in2.dtype.kind == "c" else in2
    oh, ow, top, left = _conv_geometry(mcode, in1.shape, in2.shape, flip)
    out = filter_valid(in1, kk, top, left, bcode, fill, oh, ow, dt, flip)
    if swapped and not flip:
        out = np.ascontiguousarray(out[::-1, ::-1])
    return out


def convolve2d(in1: ArrayLike, in2: ArrayLike, mode: str = "full", boundary: str = "fill",
               fillvalue=0) -> np.ndarray:
    """2-D convolution of ``in1`` with ``in2`` (kernel flipped), like ``scipy.signal.convolve2d``.

    ``mode`` is 'full', 'same' or 'valid'; ``boundary`` is 'fill' (pad with ``fillvalue``),
    'wrap' or 'symm'.  See the module docstring for the exact conventions.
    """
    return _run("convolve2d", in1, in2, mode, boundary, fillvalue, flip=True)


def correlate2d(in1: ArrayLike, in2: ArrayLike, mode: str = "full", boundary: str = "fill",
                fillvalue=0) -> np.ndarray:
    """2-D cross-correlation of ``in1`` with ``conj(in2)``, like ``scipy.signal.correlate2d``.

    ``mode`` is 'full', 'same' or 'valid'; ``boundary`` is 'fill' (pad with ``fillvalue``),
    'wrap' or 'symm'.  See the module docstring for the exact conventions.
    """
    return _run("correlate2d", in1, in2, mode, boundary, fillvalue, flip=False)
