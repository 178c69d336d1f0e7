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
import numpy as np

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


#: Below this many inner-loop iterations a kernel runs on the calling thread only.
PARALLEL_MIN_WORK = 1 << 16


def parallel_for(kernel: Callable[..., None], n_tasks: int, *args, work: int = 0) -> None:
    """Run ``kernel(*args, lo, hi)`` over ``range(n_tasks)`` split across the pool.

    ``kernel`` is a ``nogil`` Numba function that loops ``for task in range(lo, hi)``;
    ``work`` (total inner iterations, default ``n_tasks``) decides whether threading pays.
    """
    if n_tasks <= 0:
        return
    chunks = num_threads() if max(work, n_tasks) >= PARALLEL_MIN_WORK else 1
    parallel_ranges(lambda lo, hi: kernel(*args, lo, hi), n_tasks, chunks)


_blas = None


def _single_threaded_blas():
    """Context that limits BLAS to one thread while our pool threads call it (one pool, none spinning)."""
    global _blas
    if _blas is None:
        from threadpoolctl import ThreadpoolController
        _blas = ThreadpoolController()
    return _blas.limit(limits=1, user_api="blas")


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """``out[...] = a @ b`` (stacked over a leading group axis), columns split across the pool.

    BLAS runs single-threaded inside each pool thread: OpenBLAS's own threads keep
    spinning after a call and then starve the Numba kernels that follow (measured:
    im2col 15 ms -> 9 ms, bias scatter 9 ms -> 3.6 ms on a 128x32x16x16 conv).
    """
    n = b.shape[-1]
    chunks = num_threads() if a.shape[-2] * a.shape[-1] * n >= PARALLEL_MIN_WORK * 16 else 1
    with _single_threaded_blas():
        parallel_ranges(lambda lo, hi: np.matmul(a, b[..., lo:hi], out=out[..., lo:hi]), n, chunks)


def matmul_nt_add(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """``out += a @ b.swapaxes(-1, -2)``, the long contraction axis split across the pool."""
    n = a.shape[-1]
    chunks = num_threads() if out.size * n >= PARALLEL_MIN_WORK * 16 else 1
    bounds = [n * c // chunks for c in range(chunks + 1)]
    parts = [np.empty_like(out) for _ in range(chunks)]

    def run(lo: int, hi: int) -> None:
        for c in range(lo, hi):
            s = slice(bounds[c], bounds[c + 1])
            np.matmul(a[..., s], b[..., s].swapaxes(-1, -2), out=parts[c])

    with _single_threaded_blas():
        parallel_ranges(run, chunks, chunks)
    for p in parts:
        out += p
