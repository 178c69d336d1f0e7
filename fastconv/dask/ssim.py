"""SSIM of image pairs over dask arrays: the map chunk by chunk, and its mean.

The map is :func:`fastconv.image.ssim.ssim_map` -- :func:`fastconv.ssim`'s window (Gaussian,
11 taps, sigma 1.5, from :func:`fastconv._window.gaussian_1d`), valid positions only,
population moments -- computed per chunk with an overlap of ``win_size // 2`` and no
boundary (valid positions never read past the image).  Output position (i, j) is the
window whose top-left sample is (i, j) of the image, as in memory.
"""
from __future__ import annotations

from numbers import Real
from typing import Optional, Sequence, Tuple

import numpy as np

from ..image.ssim import ssim_map as _ssim_map_numpy
from .chunks import normalise_axes, require_dask

__all__ = ["ssim_map", "ssim"]


def _ssim_block(x: np.ndarray, y: np.ndarray, axes: Tuple[int, int], win_size: int, win_sigma: float,
                c: Tuple[float, float]) -> np.ndarray:
    xm, ym = np.moveaxis(x, axes, (0, 1)), np.moveaxis(y, axes, (0, 1))
    rest = xm.shape[2:]
    xs = xm.reshape(xm.shape[0], xm.shape[1], -1)
    ys = ym.reshape(xs.shape)
    maps = [_ssim_map_numpy(np.ascontiguousarray(xs[:, :, i]), np.ascontiguousarray(ys[:, :, i]), win_size,
                            win_sigma, c) for i in range(xs.shape[2])]
    hv, wv = xs.shape[0] - win_size + 1, xs.shape[1] - win_size + 1
    out = np.stack(maps, axis=2) if maps else np.empty((hv, wv, 0), x.dtype)
    return np.moveaxis(out.reshape((hv, wv) + rest), (0, 1), axes)


def _out_chunks(chunks: Tuple[int, ...], half: int) -> Tuple[int, ...]:
    """Map chunks of an axis in ``chunks``: the outermost ``half`` samples at each end have no map."""
    if len(chunks) == 1:
        return (chunks[0] - 2 * half,)
    return (chunks[0] - half,) + tuple(chunks[1:-1]) + (chunks[-1] - half,)


def _check(x, y, data_range, win_size, win_sigma, K, axes) -> Tuple:
    da = require_dask()
    x = x if isinstance(x, da.Array) else da.asarray(x)
    y = y if isinstance(y, da.Array) else da.asarray(y)
    if x.shape != y.shape:
        raise ValueError(f"fastconv.dask.ssim: input images should have the same shape, got {x.shape} and {y.shape}")
    if x.dtype != y.dtype:
        raise TypeError(f"fastconv.dask.ssim: input images should have the same dtype, got {x.dtype} and {y.dtype}")
    if x.ndim < 2:
        raise ValueError(f"fastconv.dask.ssim: images must have at least 2 dimensions, got shape {x.shape}")
    ar, ac = normalise_axes(axes, x.ndim, "fastconv.dask.ssim")
    if x.dtype.kind not in "fiu" or x.dtype == np.float16:
        raise TypeError(f"fastconv.dask.ssim: unsupported dtype {x.dtype}; expected float32, float64 or integers")
    if data_range is None:
        if x.dtype.kind in "iu":
            raise ValueError(f"fastconv.dask.ssim: integer input ({x.dtype}) needs an explicit data_range "
                             f"(e.g. data_range=255 for 8-bit images)")
        data_range = 1.0
    if isinstance(data_range, bool) or not isinstance(data_range, Real) or not 0 < data_range < float("inf"):
        raise ValueError(f"fastconv.dask.ssim: data_range must be a positive finite number, got {data_range!r}")
    if isinstance(win_size, bool) or not isinstance(win_size, int) or win_size < 1 or win_size % 2 == 0:
        raise ValueError(f"fastconv.dask.ssim: win_size must be a positive odd integer, got {win_size!r}")
    if not float(win_sigma) > 0:
        raise ValueError(f"fastconv.dask.ssim: win_sigma must be positive, got {win_sigma}")
    k1, k2 = (float(k) for k in K)
    if x.shape[ar] < win_size or x.shape[ac] < win_size:
        raise ValueError(f"fastconv.dask.ssim: images of size {x.shape[ar]}x{x.shape[ac]} are too small: SSIM "
                         f"with win_size={win_size} needs height and width >= {win_size}")
    if x.dtype.kind in "iu":  # compared in float32, as fastconv.ssim does
        x, y = x.astype(np.float32), y.astype(np.float32)
    c = ((k1 * data_range) ** 2, (k2 * data_range) ** 2)
    return x, y, (ar, ac), c


def ssim_map(x, y, data_range: Optional[float] = None, win_size: int = 11, win_sigma: float = 1.5,
             K: Sequence[float] = (0.01, 0.03), *, axes: Sequence[int] = (-2, -1)):
    """The SSIM map of two images (or stacks of images) as a dask array, chunk by chunk.

    Parameters
    ----------
    x, y : dask.array.Array or array_like
        Images of one shape and dtype (float32, float64 or integers, which are compared in
        float32), filtered along ``axes``; every other axis indexes separate images.
    data_range : float, optional
        Dynamic range of the pixel values: 1.0 for float images by default; required for
        integer images (e.g. 255).
    win_size : int, optional
        Odd size of the Gaussian window.
    win_sigma : float, optional
        Its standard deviation.
    K : (float, float), optional
        The SSIM constants (K1, K2).
    axes : (int, int), optional
        The image axes (rows, columns).

    Returns
    -------
    dask.array.Array
        The map at valid positions: ``win_size - 1`` shorter than the images along both
        axes, of their (float) dtype.  It equals :func:`fastconv.image.ssim.ssim_map` of the
        whole images exactly, and its mean is :func:`fastconv.ssim` of the pair (within the
        rounding of the final sum).

    Raises
    ------
    ImportError
        Without dask.
    ValueError, TypeError
        For mismatched shapes or dtypes, images smaller than the window, bad window, K or
        ``data_range``, or integer images without ``data_range``.

    Examples
    --------
    >>> import numpy as np
    >>> import dask.array as da
    >>> from fastconv import dask as fdask
    >>> x = np.random.default_rng(0).random((64, 48))
    >>> m = fdask.ssim_map(da.from_array(x, chunks=16), da.from_array(x, chunks=16))
    >>> m.shape, bool(np.allclose(m.compute(), 1.0))
    ((54, 38), True)
    """
    da = require_dask()
    x, y, axes, c = _check(x, y, data_range, win_size, win_sigma, K, axes)
    half = win_size // 2
    chunks = list(x.chunks)
    depth = {ax: 0 for ax in range(x.ndim)}
    for ax in axes:
        if len(chunks[ax]) > 1 and half > 0:
            chunks[ax] = da.overlap.ensure_minimum_chunksize(half, chunks[ax])
            depth[ax] = half
    x = x.rechunk(tuple(chunks))
    y = y.rechunk(tuple(chunks))
    out_chunks = tuple(_out_chunks(cs, half) if ax in axes else cs for ax, cs in enumerate(chunks))
    return da.map_overlap(_ssim_block, x, y, depth=depth, boundary="none", trim=False, chunks=out_chunks,
                          dtype=x.dtype, meta=np.empty((0,) * x.ndim, dtype=x.dtype), axes=axes,
                          win_size=win_size, win_sigma=float(win_sigma), c=c)


def ssim(x, y, data_range: Optional[float] = None, win_size: int = 11, win_sigma: float = 1.5,
         K: Sequence[float] = (0.01, 0.03), *, axes: Sequence[int] = (-2, -1)):
    """Mean SSIM of two images (or stacks) as a lazy dask scalar: the mean of :func:`ssim_map`.

    Parameters
    ----------
    x, y, data_range, win_size, win_sigma, K, axes
        As in :func:`ssim_map`.

    Returns
    -------
    dask.array.Array
        0-d float64 array (call ``.compute()``): the mean over all valid positions (and all
        images of a stack), which is ``fastconv.ssim`` of the pair as (N, C, H, W) tensors up
        to rounding.

    Raises
    ------
    ImportError, ValueError, TypeError
        As :func:`ssim_map`.

    Examples
    --------
    >>> import numpy as np
    >>> import dask.array as da
    >>> from fastconv import dask as fdask
    >>> rng = np.random.default_rng(1)
    >>> x = rng.random((64, 64))
    >>> y = np.clip(x + 0.05 * rng.standard_normal(x.shape), 0, 1)
    >>> s = fdask.ssim(da.from_array(x, chunks=32), da.from_array(y, chunks=32)).compute()
    >>> 0.5 < float(s) < 1.0
    True
    """
    return ssim_map(x, y, data_range, win_size, win_sigma, K, axes=axes).mean(dtype=np.float64)
