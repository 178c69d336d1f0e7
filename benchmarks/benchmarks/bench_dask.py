"""Images beyond one array: ``fastconv.dask.filter2d`` against ``dask_image.ndfilters.convolve``.

Both filter the same 8192x8192 float32 image, held by dask in 1024x1024 chunks (persisted in
memory in ``setup``, so no random generation is timed), with a square kernel, mode 'same'
and the mirror boundary (fastconv's 'symm' is ndimage's 'reflect'), on dask's threaded
scheduler with the same number of threads (one per core).  dask-image runs
``scipy.ndimage.convolve`` per chunk through ``map_overlap``; fastconv runs its ``nogil``
image engine per chunk (one thread per task).  ``setup`` checks that the two agree
(float32 sums against ndimage's float64 ones) before anything is timed.

``track_speedup`` is dask-image's time over fastconv's, both measured in the same call
(``common.speedup``): above 1, fastconv is faster.
"""
from __future__ import annotations

import os

import numpy as np

from .common import SEED, require_module, rng, speedup

SIZE, CHUNK = 8192, 1024


def _threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class DaskFilter2d:
    """fastconv.dask.filter2d vs dask_image.ndfilters.convolve on an 8192^2 float32 image in 1024^2 chunks."""

    params = [[3, 7, 15]]
    param_names = ["kernel"]
    unit = "ratio"
    timeout = 900
    number = 1
    repeat = 3

    def setup(self, kernel):
        da = require_module("dask.array")
        ndimage = require_module("dask_image.ndfilters")
        fdask = require_module("fastconv.dask")
        x = da.random.default_rng(SEED).random((SIZE, SIZE), chunks=CHUNK, dtype=np.float32)
        self.x = x.persist(scheduler="threads")
        self.w = rng(kernel).standard_normal((kernel, kernel)).astype(np.float32)
        self.threads = _threads()
        self.fast = fdask.filter2d(self.x, self.w, boundary="symm", method="direct")
        self.peer = ndimage.convolve(self.x, self.w, mode="reflect")
        crop = (slice(CHUNK - 40, CHUNK + 40), slice(3 * CHUNK - 40, 3 * CHUNK + 40))  # across chunk edges
        got, want = self.fast[crop].compute(), self.peer[crop].compute()
        tol = 8 * kernel * kernel * np.finfo(np.float32).eps * np.abs(self.w).sum()
        np.testing.assert_allclose(got, want, rtol=0, atol=tol)

    def _run(self, arr):
        return arr.compute(scheduler="threads", num_workers=self.threads)

    def time_fastconv(self, kernel):
        self._run(self.fast)

    def time_dask_image(self, kernel):
        self._run(self.peer)

    def track_speedup(self, kernel):
        return speedup(lambda: self._run(self.fast), lambda: self._run(self.peer), k=2, budget=0.0)
