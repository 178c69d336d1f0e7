"""How :mod:`fastconv.dask` cuts a filter into chunk tasks: overlap depths, boundaries, block geometry.

A 2-D filter reads, for each output position, ``before`` samples above (left of) it and
``after`` below (right of) it along each filtered axis -- for a (P, Q) kernel in mode
'same', ``P // 2`` and ``P - 1 - P // 2`` for a convolution, the reverse for a correlation,
so even sizes read one more sample on one side.  :func:`plan_axis` turns that reach into
what ``dask.array.map_overlap`` needs:

* an axis held in one chunk gets no overlap: the image engine applies the boundary rule
  itself, exactly as in memory (this also covers kernels reaching past the whole axis,
  where SciPy's 'symm' and 'wrap' repeat the image more than once);
* otherwise the axis gets a symmetric depth ``max(before, after)`` (dask's boundaries
  want one depth per axis), one more on the row axis so that every block can start its
  output at an even row (:func:`block_window`), and the boundary maps to dask's: fill ->
  the constant, wrap -> ``'periodic'``, symm -> ``'reflect'`` (dask mirrors including the
  edge sample, as ``numpy.pad(mode='symmetric')`` and SciPy's 'symm' do).  dask rechunks
  chunks smaller than the depth.

Every output position is then computed from the same samples, with the same kernel and
the same arithmetic as in memory: the image engine's sums depend only on the position's
window, except the row-pair kernel, which sums even and odd rows differently -- hence
blocks start at even rows.  The tasks call ``nogil`` Numba kernels on one thread each
(:func:`one_thread`), so dask's threaded scheduler runs one task per core.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Sequence, Tuple

import numba
import numpy as np

from ..image.boundary import Boundary

__all__ = ["require_dask", "AxisPlan", "plan_axis", "dask_boundary", "block_window", "one_thread", "INSTALL_HINT"]

#: What to install for :mod:`fastconv.dask`.
INSTALL_HINT = "pip install 'fastconv[dask]'"


def require_dask():
    """``dask.array``, or an ImportError that says what to install."""
    try:
        import dask.array as da
    except ImportError as exc:
        raise ImportError(f"fastconv.dask needs dask (dask.array): {INSTALL_HINT} "
                          f"(installs dask[array], distributed and zarr); {exc}") from None
    return da


@dataclass(frozen=True)
class AxisPlan:
    """The overlap of one filtered axis."""

    #: Samples each output reads before / after its own position.
    before: int
    after: int
    #: Ghost samples dask adds on each side of every chunk (0: the axis is one chunk).
    depth: int


def plan_axis(size: int, nchunks: int, before: int, after: int, rows: bool) -> AxisPlan:
    """The :class:`AxisPlan` of an axis of ``size`` samples in ``nchunks`` chunks; depth 0 means
    the caller must hold the axis in one chunk (it is one already, or the reach exceeds it)."""
    depth = max(before, after) + (1 if rows else 0)
    if nchunks == 1 or depth == 0 or depth > size:
        return AxisPlan(before, after, 0)
    return AxisPlan(before, after, depth)


def dask_boundary(boundary: Boundary, fill):
    """dask's name for a :class:`Boundary` (the fill value itself for ``FILL``)."""
    if boundary == Boundary.WRAP:
        return "periodic"
    if boundary == Boundary.SYMM:
        return "reflect"
    return fill


def block_window(plan: AxisPlan, start: int, length: int, block_len: int, rows: bool) -> Tuple[int, int, int]:
    """(offset, count, drop) along one axis of a block whose outputs are global positions
    ``start .. start + length - 1`` and which holds ``block_len`` samples (ghosts included).

    ``offset`` is the engine's ``top``/``left`` (the position of the block's first sample in
    the extension), ``count`` the outputs to compute, ``drop`` how many of them to discard:
    a row block starting at an odd row computes one row more, above, and drops it.
    """
    if plan.depth == 0:                     # whole axis in the block: the engine's boundary rule
        return plan.before, length, 0
    drop = 1 if rows and start % 2 else 0
    return -(plan.depth - plan.before - drop), length + drop, drop


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run the image engine on the calling thread only (Numba's thread count is thread-local)."""
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(before)


def normalise_axes(axes: Sequence[int], ndim: int, name: str) -> Tuple[int, int]:
    """Two distinct axes of an ``ndim``-D array as non-negative ints."""
    try:
        ar, ac = (int(a) for a in axes)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: axes must be a pair of ints, got {axes!r}") from None
    if not (-ndim <= ar < ndim and -ndim <= ac < ndim):
        raise ValueError(f"{name}: axes {tuple(axes)} out of range for a {ndim}-D array")
    ar, ac = ar % ndim, ac % ndim
    if ar == ac:
        raise ValueError(f"{name}: axes must be two different axes, got {tuple(axes)}")
    return ar, ac


def planes(block: np.ndarray, axes: Tuple[int, int]):
    """Views of ``block`` with the filtered axes first and every other axis after them."""
    return np.moveaxis(block, axes, (0, 1))
