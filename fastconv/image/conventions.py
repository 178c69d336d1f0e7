"""SciPy's conventions for 2-D filtering, shared by :mod:`fastconv.signal` and :mod:`fastconv.filters`.

* Modes (``scipy.signal.convolve2d``): ``'valid'`` (0), ``'same'`` (1) and ``'full'`` (2).
* Output geometry: :func:`conv_geometry` gives the output size and the offsets of the image
  in the boundary extension; ``'same'`` is centred on the full output as SciPy does
  (convolution and correlation centre differently for even kernels).
* Output dtype: ``numpy.result_type`` of the inputs; bool, float16 and object results are
  errors (:func:`result_dtype`).  Integers are computed in int64, whose wrap-around equals
  SciPy's modulo the output width; complex64 in complex128 (:func:`compute_dtype`).
* ``fillvalue`` is cast with SciPy's rules (:func:`cast_fill`).
"""
from __future__ import annotations

import warnings
from typing import Optional, Tuple

import numpy as np
from numba.extending import register_jitable

__all__ = ["MODES", "parse_mode", "conv_geometry", "result_dtype", "cast_fill", "compute_dtype", "as_kernel2d",
           "NUMBA_DTYPES", "valid_swap_needed"]

#: SciPy's mode names and the codes the kernels receive.
MODES = {"valid": 0, "same": 1, "full": 2}

#: dtypes the Numba kernels run in directly.
NUMBA_DTYPES = (np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.complex64), np.dtype(np.complex128))


def parse_mode(mode: str) -> int:
    """Mode code of ``mode``, raising SciPy's ``ValueError`` for unknown names."""
    try:
        return MODES[mode]
    except (KeyError, TypeError):
        raise ValueError("Acceptable mode flags are 'valid', 'same', or 'full'.") from None


@register_jitable
def conv_geometry(mode: int, M: int, N: int, P: int, Q: int, flip: bool):
    """(oh, ow, top, left): output size and extension offsets of an (M, N) image filtered by a
    (P, Q) kernel in ``mode`` 0 = 'valid', 1 = 'same', 2 = 'full' (SciPy's conventions).

    'same' is centred on the full output as SciPy does: convolution (``flip``) starts at
    offset P // 2, correlation at (P - 1) // 2 (they differ for even kernels).
    """
    if mode == 2:
        return M + P - 1, N + Q - 1, P - 1, Q - 1
    if mode == 0:
        return M - P + 1, N - Q + 1, 0, 0
    if flip:
        return M, N, P // 2, Q // 2
    return M, N, (P - 1) // 2, (Q - 1) // 2


def as_kernel2d(kernel) -> np.ndarray:
    """``kernel`` as an ndarray, raising ``ValueError`` unless it is 2-D and non-empty (the kernels of
    :func:`fastconv.filters.filter2d` and :mod:`fastconv.dask`)."""
    k = np.asarray(kernel)
    if k.ndim != 2:
        raise ValueError(f"kernel must be a 2-D array, got {k.ndim} dimension(s) (shape {k.shape})")
    if k.size == 0:
        raise ValueError("kernel must not be empty")
    return k


def valid_swap_needed(mode: str, s1: Tuple[int, ...], s2: Tuple[int, ...]) -> bool:
    """Whether SciPy swaps the inputs ('valid' mode with the kernel larger); ValueError if neither fits."""
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


def compute_dtype(dtype: np.dtype) -> Optional[np.dtype]:
    """The dtype the Numba kernels run in for output ``dtype`` (integers in int64); None = NumPy fallback."""
    if dtype.kind in "iu":
        return np.dtype(np.int64)
    if dtype == np.complex64:  # one complex specialisation less to compile; more accurate sums
        return np.dtype(np.complex128)
    if dtype in NUMBA_DTYPES:
        return dtype
    return None
