"""``filter2d``, ``convolve2d`` and ``correlate2d`` (mode 'same') over dask arrays, chunk by chunk.

Each is ``dask.array.map_overlap`` of the image engine (:mod:`fastconv.image`) with the
overlap of :mod:`fastconv.dask.chunks`; the result equals the in-memory function on the
whole array exactly, at chunk edges too.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
from numpy.typing import ArrayLike

from ..image import conventions as conv
from ..image import engine, plan
from ..image.boundary import Boundary, parse_boundary
from ..image.separable import separable_factors
from .chunks import (AxisPlan, block_window, dask_boundary, normalise_axes, one_thread, plan_axis,
                     require_dask)

__all__ = ["filter2d", "filter2d_stack", "convolve2d", "correlate2d", "choose_method"]

#: The chunk shape at which ``method='auto'`` compares the methods' costs.
REFERENCE_CHUNK = (1024, 1024)


def choose_method(kernel: ArrayLike, dtype=np.float64) -> str:
    """The method :func:`filter2d` runs for ``method='auto'``: 'separable' or 'direct'.

    The cheaper of the two by :func:`fastconv.image.plan.estimate_costs` on a
    :data:`REFERENCE_CHUNK` chunk, whatever the actual chunking, so that every chunk runs the
    same method (the FFT is never chosen: its rounding depends on the chunk).

    Parameters
    ----------
    kernel : array_like
        The 2-D kernel.
    dtype : numpy.dtype, optional
        The image dtype (combined with the kernel's).

    Returns
    -------
    {'direct', 'separable'}

    Examples
    --------
    >>> from fastconv.dask.filters import choose_method
    >>> from fastconv.filters import gaussian_kernel, sharpen
    >>> choose_method(gaussian_kernel(9, 2.0)), choose_method(sharpen())
    ('separable', 'direct')
    """
    k = conv.as_kernel2d(kernel)
    dt = np.result_type(np.dtype(dtype), k.dtype)
    separable = dt.kind not in "iub" and separable_factors(k) is not None
    costs = plan.estimate_costs(REFERENCE_CHUNK, k.shape, conv.MODES["same"], dt, separable)
    costs.pop(plan.Method.FFT.value, None)
    return min(costs, key=costs.get)


#: One filter of a chunk task: the correlation kernel, the samples each output reads before its own
#: position along the two axes, and the method.
Filter = Tuple[np.ndarray, Tuple[int, int], str]


def _filter_block(block: np.ndarray, filters: Sequence[Tuple[np.ndarray, Tuple[AxisPlan, AxisPlan], str]],
                  axes: Tuple[int, int], rule: Boundary, fill, dt: np.dtype, stacked: bool,
                  block_info=None) -> np.ndarray:
    """One chunk of the result: the engine's valid correlation of the ghosted ``block`` with each
    filter's kernel (``stacked``: the results on a new first axis)."""
    loc = block_info[None]["array-location"][1 if stacked else 0:]
    moved = np.moveaxis(block, axes, (0, 1))
    rest = moved.shape[2:]
    img = moved.reshape(moved.shape[0], moved.shape[1], -1)
    if not rest:
        img = img[:, :, 0]
    results = []
    for kk, plans, method in filters:
        (top, oh, drop_r), (left, ow, drop_c) = (
            block_window(plans[i], loc[ax][0], loc[ax][1] - loc[ax][0], block.shape[ax], i == 0)
            for i, ax in enumerate(axes))
        with one_thread():
            out = engine.filter_image(img, kk, top, left, rule, fill, oh, ow, dt, method)
        out = out[drop_r:, drop_c:].reshape((oh - drop_r, ow - drop_c) + rest)
        results.append(np.moveaxis(out, (0, 1), axes))
    return np.stack(results) if stacked else results[0]


def _overlap_filter(x, filters: Sequence[Filter], axes: Tuple[int, int], boundary: Boundary, fill, dt: np.dtype,
                    stacked: bool = False):
    """The lazy 'same'-mode correlations of the dask array ``x`` with the ``filters`` along ``axes``, in
    one overlap: the result, or (``stacked``) the results on a new first axis."""
    da = require_dask()
    x = x.astype(dt)
    depth_all = {ax: 0 for ax in range(x.ndim)}
    for i, ax in enumerate(axes):
        before = max(f[1][i] for f in filters)
        after = max(f[0].shape[i] - 1 - f[1][i] for f in filters)
        depth_all[ax] = plan_axis(x.shape[ax], len(x.chunks[ax]), before, after, i == 0).depth
        if depth_all[ax] == 0 and len(x.chunks[ax]) > 1:
            x = x.rechunk({ax: -1})  # the reach passes the whole axis: one chunk, the engine's rule
    plans = tuple((kk, tuple(AxisPlan(b[i], kk.shape[i] - 1 - b[i], depth_all[ax]) for i, ax in enumerate(axes)),
                   method) for kk, b, method in filters)
    if any(depth_all.values()):
        x = x.rechunk(tuple(da.overlap.ensure_minimum_chunksize(depth_all[ax], c) if depth_all[ax] else c
                            for ax, c in enumerate(x.chunks)))
    bnd = dask_boundary(boundary, fill)
    extra = dict(new_axis=0, chunks=((len(filters),),) + x.chunks) if stacked else {}
    return da.map_overlap(_filter_block, x, depth=depth_all,
                          boundary={ax: (bnd if depth_all[ax] else "none") for ax in range(x.ndim)},
                          trim=False, dtype=dt, meta=np.empty((0,) * (x.ndim + stacked), dtype=dt),
                          filters=plans, axes=axes, rule=boundary, fill=fill, dt=dt, stacked=stacked, **extra)


def _as_dask(image, name: str):
    da = require_dask()
    x = image if isinstance(image, da.Array) else da.asarray(image)
    if any(np.isnan(c) for cs in x.chunks for c in cs):
        raise ValueError(f"{name}: the chunk sizes of the image must be known (call compute_chunk_sizes())")
    return x


def _check_same(mode: str, name: str) -> None:
    if conv.parse_mode(mode) != conv.MODES["same"]:
        raise ValueError(f"{name}: only mode='same' runs chunk by chunk (the output keeps the input's "
                         f"chunks), got mode={mode!r}")


def filter2d(image, kernel: ArrayLike, mode: str = "same", boundary: str = "fill", fillvalue=0,
             method: str = "auto", *, axes: Sequence[int] = (0, 1)):
    """:func:`fastconv.filters.filter2d` of a dask array, chunk by chunk.

    Parameters
    ----------
    image : dask.array.Array or array_like
        The image: (H, W), (H, W, C) -- channels filtered one by one -- or any array filtered
        along ``axes`` with every other axis as channels.
    kernel : array_like
        Non-empty 2-D convolution kernel (in memory).
    mode : {'same'}, optional
        Only 'same': the result has the image's shape and chunks.
    boundary : {'fill', 'wrap', 'symm'}, optional
        As in :func:`fastconv.filters.filter2d` (SciPy's names and aliases).
    fillvalue : scalar, optional
        The constant of ``boundary='fill'``.
    method : {'auto', 'direct', 'separable', 'fft'}, optional
        ``'auto'`` is :func:`choose_method`'s choice, ``'separable'`` or ``'direct'``, never
        the FFT, so that the result is independent of the chunking.  ``'fft'`` transforms each
        chunk with its overlap: within the FFT's error bound of the in-memory result (see
        :mod:`fastconv.filters`), not bit-equal.
    axes : (int, int), optional
        The two axes filtered as rows and columns.

    Returns
    -------
    dask.array.Array
        The lazy result, of the image's shape and chunks (chunks smaller than the kernel's
        reach are merged first) and of dtype ``numpy.result_type(image, kernel)``.  With
        ``method`` 'direct' or 'separable' (or 'auto', which is one of them) it equals
        ``fastconv.filters.filter2d(image.compute(), kernel, 'same', boundary, fillvalue,
        method)`` exactly.

    Raises
    ------
    ImportError
        Without dask (``pip install 'fastconv[dask]'``).
    ValueError
        For another mode, unknown boundary or method, bad axes, a non-2-D or empty kernel,
        dtypes SciPy rejects, or a non-separable kernel with ``method='separable'``.

    Examples
    --------
    >>> import numpy as np
    >>> import dask.array as da
    >>> from fastconv import dask as fdask, filters
    >>> img = np.random.default_rng(0).random((300, 200))
    >>> lazy = fdask.filter2d(da.from_array(img, chunks=64), filters.gaussian_kernel(9, 2.0), boundary="symm")
    >>> lazy.chunks[0]
    (64, 64, 64, 64, 44)
    >>> out = lazy.compute(scheduler="threads")
    >>> bool((out == filters.filter2d(img, filters.gaussian_kernel(9, 2.0), boundary="symm",
    ...                              method="separable")).all())
    True
    """
    x, filters, axes, bcode, fill, dt = _prepare(image, [kernel], mode, boundary, fillvalue, method, axes)
    return _overlap_filter(x, filters, axes, bcode, fill, dt)


def filter2d_stack(image, kernels: Sequence[ArrayLike], mode: str = "same", boundary: str = "fill", fillvalue=0,
                   method: str = "auto", *, axes: Sequence[int] = (0, 1)):
    """:func:`filter2d` with several kernels in one pass: one overlap, one task per chunk.

    Parameters
    ----------
    image : dask.array.Array or array_like
        As in :func:`filter2d`.
    kernels : sequence of array_like
        2-D convolution kernels (their sizes may differ).
    mode, boundary, fillvalue, method, axes
        As in :func:`filter2d` (``method`` applies to every kernel; 'auto' chooses per kernel).

    Returns
    -------
    dask.array.Array
        The results stacked on a new first axis: ``out[i]`` equals ``filter2d(image,
        kernels[i], ...)`` exactly.

    Raises
    ------
    ImportError, ValueError
        As :func:`filter2d`, and for an empty ``kernels``.

    Examples
    --------
    >>> import numpy as np
    >>> import dask.array as da
    >>> from fastconv import dask as fdask, filters
    >>> img = np.random.default_rng(3).random((40, 50))
    >>> both = fdask.filter2d_stack(da.from_array(img, chunks=16), [filters.sobel(0), filters.sobel(1)], boundary="symm")
    >>> both.shape
    (2, 40, 50)
    >>> bool((both[1].compute() == filters.filter2d(img, filters.sobel(1), boundary="symm", method="direct")).all())
    True
    """
    if len(kernels) == 0:
        raise ValueError("filter2d_stack: kernels must not be empty")
    x, filters, axes, bcode, fill, dt = _prepare(image, kernels, mode, boundary, fillvalue, method, axes)
    return _overlap_filter(x, filters, axes, bcode, fill, dt, stacked=True)


def _prepare(image, kernels: Sequence[ArrayLike], mode: str, boundary: str, fillvalue, method: str,
             axes: Sequence[int]):
    """Validate :func:`filter2d`'s arguments: (dask image, filters, axes, boundary, fill, dtype)."""
    _check_same(mode, "filter2d")
    x = _as_dask(image, "filter2d")
    if x.ndim < 2:
        raise ValueError(f"filter2d: image must have at least 2 dimensions, got shape {x.shape}")
    axes = normalise_axes(axes, x.ndim, "filter2d")
    ks = [conv.as_kernel2d(k) for k in kernels]
    if method not in plan.METHODS + ("auto",):
        raise ValueError(f"method must be one of 'auto', 'direct', 'separable', 'fft', got {method!r}")
    bcode = parse_boundary(boundary)
    dt = conv.result_dtype("filter2d", np.empty(0, x.dtype), *ks)
    fill = conv.cast_fill(fillvalue, dt)
    filters = []
    for k in ks:
        m = choose_method(k, dt) if method == "auto" else method
        if m != "direct" and dt.kind in "iu":
            raise ValueError(f"filter2d: method={m!r} needs a floating-point or complex result, but the "
                             f"inputs give {dt}; use method='direct' for exact integer filtering")
        if m == "separable" and separable_factors(k) is None:
            raise ValueError("filter2d: method='separable' needs a rank-1 kernel (outer product of two "
                             "vectors); this kernel is not separable")
        p, q = k.shape
        filters.append((np.ascontiguousarray(k[::-1, ::-1]), (p // 2, q // 2), m))
    return x, filters, axes, bcode, fill, dt


def _signal(name: str, in1, in2: ArrayLike, mode: str, boundary: str, fillvalue, flip: bool,
            axes: Sequence[int]):
    _check_same(mode, name)
    x = _as_dask(in1, name)
    if x.ndim < 2:
        raise ValueError(f"{name} inputs must both be 2-D arrays (here: at least 2-D, filtered along "
                         f"axes {tuple(axes)})")
    ar, ac = normalise_axes(axes, x.ndim, name)
    k = np.asarray(in2)
    if k.ndim != 2:
        raise ValueError(f"{name} inputs must both be 2-D arrays")
    bcode = parse_boundary(boundary)
    dt = conv.result_dtype("convolve2d", np.empty(0, x.dtype), k)
    fill = conv.cast_fill(fillvalue, dt)
    if k.size == 0 or 0 in (x.shape[ar], x.shape[ac]):
        da = require_dask()
        return da.zeros(x.shape, dtype=dt, chunks=x.chunks)  # SciPy: zeros when an input is empty
    p, q = k.shape
    if flip:
        kk, before = np.ascontiguousarray(k[::-1, ::-1]), (p // 2, q // 2)
    else:
        kk, before = (k.conj() if k.dtype.kind == "c" else k), ((p - 1) // 2, (q - 1) // 2)
    return _overlap_filter(x, [(np.ascontiguousarray(kk), before, "direct")], (ar, ac), bcode, fill, dt)


def convolve2d(in1, in2: ArrayLike, mode: str = "same", boundary: str = "fill", fillvalue=0, *,
               axes: Sequence[int] = (-2, -1)):
    """:func:`fastconv.signal.convolve2d` in mode 'same' of a dask array, chunk by chunk.

    Parameters
    ----------
    in1 : dask.array.Array or array_like
        The image; arrays of more than two dimensions are filtered along ``axes`` (by default
        the last two), each other index separately.
    in2 : array_like
        The 2-D kernel (in memory), flipped: a true convolution.
    mode : {'same'}, optional
        Only 'same': the result has ``in1``'s shape and chunks.
    boundary : {'fill', 'wrap', 'symm'}, optional
        As SciPy's (aliases accepted).
    fillvalue : scalar, optional
        The constant of ``boundary='fill'``, cast with SciPy's rules.
    axes : (int, int), optional
        The axes filtered as rows and columns.

    Returns
    -------
    dask.array.Array
        Lazy result of dtype ``numpy.result_type(in1, in2)`` whose every 2-D slice equals
        ``fastconv.signal.convolve2d(slice, in2, 'same', boundary, fillvalue)`` exactly.

    Raises
    ------
    ImportError
        Without dask.
    ValueError
        SciPy's errors (see :func:`fastconv.signal.convolve2d`), another mode, or bad axes.

    Examples
    --------
    >>> import numpy as np
    >>> import dask.array as da
    >>> from fastconv import dask as fdask, signal
    >>> stack = np.random.default_rng(1).random((3, 50, 40))
    >>> k = np.arange(6.0).reshape(2, 3)
    >>> out = fdask.convolve2d(da.from_array(stack, chunks=(1, 16, 16)), k, boundary="wrap").compute()
    >>> bool((out[2] == signal.convolve2d(stack[2], k, "same", "wrap")).all())
    True
    """
    return _signal("convolve2d", in1, in2, mode, boundary, fillvalue, True, axes)


def correlate2d(in1, in2: ArrayLike, mode: str = "same", boundary: str = "fill", fillvalue=0, *,
                axes: Sequence[int] = (-2, -1)):
    """:func:`fastconv.signal.correlate2d` in mode 'same' of a dask array, chunk by chunk.

    Parameters
    ----------
    in1 : dask.array.Array or array_like
        The image, filtered along ``axes`` as in :func:`convolve2d`.
    in2 : array_like
        The 2-D template (in memory), not flipped; complex templates are conjugated.
    mode, boundary, fillvalue, axes
        As in :func:`convolve2d`.

    Returns
    -------
    dask.array.Array
        Lazy result whose every 2-D slice equals ``fastconv.signal.correlate2d(slice, in2,
        'same', boundary, fillvalue)`` exactly.

    Raises
    ------
    ImportError
        Without dask.
    ValueError
        As :func:`convolve2d`.

    Examples
    --------
    >>> import numpy as np
    >>> import dask.array as da
    >>> from fastconv import dask as fdask, signal
    >>> img = np.random.default_rng(2).random((40, 30))
    >>> t = np.ones((4, 4))
    >>> out = fdask.correlate2d(da.from_array(img, chunks=8), t, boundary="symm").compute()
    >>> bool((out == signal.correlate2d(img, t, "same", "symm")).all())
    True
    """
    return _signal("correlate2d", in1, in2, mode, boundary, fillvalue, False, axes)
