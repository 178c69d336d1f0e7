"""Row/plane-range parallelism for the image kernels, on Python threads over ``nogil`` Numba code.

Why not ``prange``: on this project's 2-vCPU CI/dev machines, Numba's default OpenMP
layer spins at the end of every parallel region; whenever another process holds one of
the two cores, the spinning thread and the descheduled worker cost a full scheduler
slice -- we measured 12-24 ms stalls on kernels that take 0.1-5 ms (see
``benchmarks/quick_signal.py``).  Here the caller thread runs the first chunk and the
others run on a small ``ThreadPoolExecutor`` whose idle threads block instead of spinning,
so a busy machine degrades to serial speed rather than to scheduler-slice stalls.
The number of chunks follows ``numba.get_num_threads()`` (so ``numba.set_num_threads``
and ``NUMBA_NUM_THREADS`` apply).
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional

import numba

_lock = threading.Lock()
_executor: Optional[ThreadPoolExecutor] = None
_executor_size = 0


def num_threads() -> int:
    """Threads the image kernels may use (Numba's current setting)."""
    return max(1, int(numba.get_num_threads()))


def _get_executor(workers: int) -> ThreadPoolExecutor:
    global _executor, _executor_size
    with _lock:
        if _executor is None or _executor_size < workers:
            _executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fastconv")
            _executor_size = workers
        return _executor


def parallel_ranges(fn: Callable[[int, int], None], n: int, chunks: int) -> None:
    """Call ``fn(lo, hi)`` on ``chunks`` contiguous, disjoint ranges covering ``range(n)``.

    Runs serially when ``chunks <= 1``; otherwise the calling thread runs the first range
    while pool threads run the rest.  ``fn`` must release the GIL (a ``nogil`` Numba
    kernel) for the ranges to overlap.  Exceptions propagate.
    """
    chunks = max(1, min(chunks, n))
    if chunks == 1:
        fn(0, n)
        return
    bounds = [n * c // chunks for c in range(chunks + 1)]
    ex = _get_executor(chunks - 1)
    futures = [ex.submit(fn, bounds[c], bounds[c + 1]) for c in range(1, chunks)]
    try:
        fn(bounds[0], bounds[1])
    finally:
        for f in futures:
            f.result()
