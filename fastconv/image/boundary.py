"""Boundary rules of the image engine: one enum, one index rule, and the extension built from it.

A filter reads outside the image through a *boundary extension*, a copy of the image with
rows and columns added around it, ``ext[r, c] = image[r - top, c - left]``, so that the
filtering loops never test bounds.  Outside the image the :class:`Boundary` decides:

* ``FILL`` (SciPy's ``'fill'``/``'pad'``): a constant ``fill`` value;
* ``SYMM`` (``'symm'``/``'symmetric'``): mirror including the edge sample, as
  ``np.pad(mode='symmetric')``, repeated as often as needed;
* ``WRAP`` (``'wrap'``/``'circular'``): periodic, as ``np.pad(mode='wrap')``.

The rule is written once, in :func:`src_index`.  It is a ``register_jitable`` function, so
the Numba extension (:func:`extend_block`) and the NumPy fallback (:func:`extend_numpy`, for
dtypes Numba lacks) call the same code.  Adding a boundary mode means a new enum member, its
SciPy names in :data:`NAMES` and a branch in :func:`src_index`.
"""
from __future__ import annotations

import enum

import numpy as np
from .._numba import njit
from numba.extending import register_jitable

__all__ = ["Boundary", "NAMES", "parse_boundary", "src_index", "extend", "extend_numpy"]


class Boundary(enum.IntEnum):
    """How an image continues past its edges (the integer values are what the kernels receive)."""

    FILL = 0
    SYMM = 1
    WRAP = 2


#: SciPy's names for each rule (``scipy.signal.convolve2d``'s ``boundary`` argument).
NAMES = {"fill": Boundary.FILL, "pad": Boundary.FILL, "symm": Boundary.SYMM, "symmetric": Boundary.SYMM,
         "wrap": Boundary.WRAP, "circular": Boundary.WRAP}


def parse_boundary(boundary: str) -> Boundary:
    """The :class:`Boundary` named ``boundary``, raising SciPy's ``ValueError`` for unknown names."""
    if isinstance(boundary, Boundary):
        return boundary
    if boundary == "reflect":  # a key SciPy knows but its 2-D kernel rejects
        raise ValueError("Incorrect boundary value.")
    try:
        return NAMES[boundary]
    except (KeyError, TypeError):
        raise ValueError("Acceptable boundary flags are 'fill', 'circular' (or 'wrap'), and "
                         "'symmetric' (or 'symm').") from None


@register_jitable(inline="always")
def src_index(i: int, n: int, boundary: int) -> int:
    """Source index of extended position ``i`` on a length-``n`` axis; -1 means the fill value."""
    if 0 <= i < n:
        return i
    if boundary == 0:  # Boundary.FILL
        return -1
    if boundary == 2:  # Boundary.WRAP
        return i % n
    period = 2 * n     # Boundary.SYMM
    i = i % period
    return i if i < n else period - 1 - i


@njit(cache=True, nogil=True)
def extend_block(a, ext, top, left, boundary, fill, He, We):  # pragma: no cover - numba
    """ext[r, c] = a[r - top, c - left] with the boundary rule outside ``a``, for r < He and
    c < We (``ext`` may be larger: a buffer of fixed row pitch).

    Interior columns of each row are a plain unit-stride copy; only the edge columns
    (and rows entirely outside ``a``) evaluate the boundary rule.
    """
    H, W = a.shape
    lo = min(max(left, 0), We)              # first column copied straight from a
    hi = max(min(left + W, We), lo)         # one past the last such column
    n = hi - lo
    for r in range(He):
        dst = ext[r]
        sr = src_index(r - top, H, boundary)
        if sr < 0:
            for c in range(We):
                dst[c] = fill
            continue
        src = a[sr]
        for c in range(lo):
            sc = src_index(c - left, W, boundary)
            dst[c] = fill if sc < 0 else src[sc]
        d = dst[lo:]
        s = src[lo - left:]
        for c in range(n):
            d[c] = s[c]
        for c in range(hi, We):
            sc = src_index(c - left, W, boundary)
            dst[c] = fill if sc < 0 else src[sc]


@njit(cache=True, nogil=True)
def extend_into(a, ext, top, left, boundary, fill):  # pragma: no cover - numba
    """:func:`extend_block` filling all of ``ext``."""
    extend_block(a, ext, top, left, boundary, fill, ext.shape[0], ext.shape[1])


def extend(a: np.ndarray, top: int, left: int, boundary: int, fill, he: int, we: int) -> np.ndarray:
    """The (he, we) boundary extension of the 2-D array ``a`` whose element (top, left) is ``a[0, 0]``.

    Parameters
    ----------
    a : ndarray
        C-contiguous 2-D image of a Numba-supported dtype.
    top, left : int
        Position of ``a[0, 0]`` in the extension (may be negative: the extension then starts
        inside the image).
    boundary : Boundary or int
        The rule outside the image.
    fill : scalar
        The constant of ``Boundary.FILL``, of ``a``'s dtype.
    he, we : int
        Size of the extension.

    Returns
    -------
    ndarray
        A new (he, we) array of ``a``'s dtype.
    """
    ext = np.empty((he, we), dtype=a.dtype)
    extend_into(a, ext, top, left, int(boundary), fill)
    return ext


def _axis_index(n: int, start: int, length: int, boundary: int):
    idx = np.array([src_index(i - start, n, boundary) for i in range(length)], dtype=np.int64)
    return np.where(idx < 0, 0, idx), idx < 0


def extend_numpy(a: np.ndarray, top: int, left: int, boundary: int, fill, he: int, we: int) -> np.ndarray:
    """:func:`extend` in NumPy, for any dtype (``longdouble``, ``clongdouble``, ``object``...).

    The indices come from the same :func:`src_index` as the Numba extension.
    """
    if a.size == 0:  # nothing to index: all fill (the only rule defined on an empty image)
        return np.full((he, we), fill, dtype=a.dtype)
    ri, rm = _axis_index(a.shape[0], top, he, int(boundary))
    ci, cm = _axis_index(a.shape[1], left, we, int(boundary))
    ext = a[np.ix_(ri, ci)]
    ext[rm, :] = fill
    ext[:, cm] = fill
    return ext
