"""fastconv's NumPy image API over ``dask.array``: images beyond memory, on all cores or a cluster.

| function | in memory |
| --- | --- |
| :func:`filter2d` | :func:`fastconv.filters.filter2d` (mode 'same') |
| :func:`filter2d_stack` | several ``filter2d`` kernels in one pass, stacked |
| :func:`convolve2d`, :func:`correlate2d` | :func:`fastconv.signal.convolve2d`, :func:`~fastconv.signal.correlate2d` (mode 'same') |
| :func:`ssim_map`, :func:`ssim` | the SSIM map of :mod:`fastconv.image.ssim`; :func:`fastconv.ssim` |

Each runs the image engine chunk by chunk through ``dask.array.map_overlap``, with an
overlap depth from the kernel's size and origin and dask's boundaries for the image edges
(:mod:`fastconv.dask.chunks`).  The results equal the in-memory functions exactly, at
chunk edges too, whatever the chunking.  Tasks run ``nogil`` Numba kernels on one thread
each, so dask's threaded scheduler uses every core; the functions pickle by reference, so a
``dask.distributed`` cluster needs nothing on its workers beyond an installed fastconv.
:mod:`fastconv.dask.stream` filters a zarr image larger than the workers' memory.

dask is optional: ``pip install 'fastconv[dask]'``.  Without it this module imports, and each
function raises an ImportError saying what to install.
"""
from __future__ import annotations

from .chunks import INSTALL_HINT, require_dask
from .filters import convolve2d, correlate2d, filter2d, filter2d_stack
from .ssim import ssim, ssim_map

__all__ = ["filter2d", "filter2d_stack", "convolve2d", "correlate2d", "ssim_map", "ssim", "require_dask", "INSTALL_HINT"]
