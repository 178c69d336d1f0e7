"""Range parallelism for the CPU kernels: ``nogil`` Numba code on torch's own OpenMP threads.

Why not ``prange``: on this project's 2-vCPU machines, Numba's OpenMP workers, OpenBLAS's
and torch's own OpenMP pool keep spinning after each parallel region and starve one
another; we measured 12-24 ms stalls on kernels that take 0.1-5 ms.

Why torch's threads: after each of its parallel regions, torch's OpenMP (GNU libgomp) keeps
its workers spinning for about 3 ms.  A model interleaves torch ops (BatchNorm, ReLU, the
loss) with fastconv's kernels, so a separate pool of ours would find the second core taken
by a spinning torch worker on nearly every call, and two threads ran no faster than one
(measured: a converted classifier's train step, 87 ms on two threads against 89 ms on one).
So when torch runs on libgomp, the ranges are run through libgomp's ``GOMP_parallel`` --
the same entry point compiled OpenMP code calls -- on torch's own team: the spinning worker
picks the work up at once.  Each team thread takes ranges from a shared counter, so any team
size (nested regions run a team of one) covers every range.

Elsewhere -- no libgomp in the process (other platforms, other OpenMP runtimes), a forked
child (GNU OpenMP is not fork-safe), or ``FASTCONV_THREADS=python`` -- a few persistent
Python worker threads run the ranges, the calling thread running the first; idle workers
block on a condition variable instead of spinning.

* The number of ranges follows ``numba.get_num_threads()`` (so ``numba.set_num_threads`` and
  ``NUMBA_NUM_THREADS`` apply); work under :data:`PARALLEL_MIN_WORK` runs on the calling
  thread only, with no hand-off at all.
* :func:`parallel_for` runs a module-level Numba kernel with array and scalar arguments in a
  native region (:mod:`fastconv._regions`): a compiled entry point on each team thread, no
  Python and no GIL, about 8 us a hand-off on the 2-vCPU machine.  Anything else (closures,
  strided arrays) takes the Python path: the worker's wake-up and the GIL passing between the
  Python parts of the ranges cost 35-60 us a hand-off there, on either backend (measured with
  an empty kernel).  The threshold is the break-even of the native region: copying
  :data:`PARALLEL_MIN_WORK` elements takes 17 us on one thread and 17 us split over two.
* Fork-safe: ``os.register_at_fork`` gives a forked child (a ``DataLoader`` worker, a
  ``multiprocessing`` fork pool) a fresh, empty pool, because the parent's worker threads do
  not exist in the child.
* Thread-safe: several Python threads may call in at once; each call gets its own ranges
  and waits only for them.
"""
from __future__ import annotations

import ctypes
import os
import re
import threading
from typing import Callable, List, Optional

import numba
import numba.np.ufunc.parallel

from . import _programs, _regions

__all__ = ["num_threads", "parallel_ranges", "parallel_for", "PARALLEL_MIN_WORK", "VECTOR_MACS", "backend"]

#: Below this much work (element copies or scalar operations) a kernel runs on the calling
#: thread only: two threads would save less than the hand-off costs.
PARALLEL_MIN_WORK = 1 << 16
#: Multiply-adds of the vectorised, register-blocked kernels per unit of work (they run about
#: 16 to an element copy): ``parallel_for(..., macs=n)`` counts ``n // VECTOR_MACS``.
VECTOR_MACS = 16


#: Numba's per-thread count of the threading layer, read directly once the layer is up:
#: ``numba.get_num_threads()`` takes its start-up lock on every call (about 2 us; a layer's
#: forward and backward ask 15 times).  None until then, or if the internal is missing.
_read_num_threads: Optional[Callable[[], int]] = None


def num_threads() -> int:
    """Threads the kernels may use (Numba's current setting, per calling thread)."""
    global _read_num_threads
    read = _read_num_threads
    if read is not None:
        return max(1, int(read()))
    n = int(numba.get_num_threads())  # starts the threading layer on the first call
    read = getattr(numba.np.ufunc.parallel, "_get_num_threads", None)
    if callable(read) and int(read()) == n:
        _read_num_threads = read
    return max(1, n)


class _Job:
    """One range of one call: run ``fn(lo, hi)``, record an exception, signal completion."""

    __slots__ = ("fn", "lo", "hi", "error", "done")

    def __init__(self, fn: Callable[[int, int], None], lo: int, hi: int, done: "_Countdown") -> None:
        self.fn, self.lo, self.hi, self.done = fn, lo, hi, done
        self.error: Optional[BaseException] = None

    def run(self) -> None:
        try:
            self.fn(self.lo, self.hi)
        except BaseException as exc:  # re-raised in the caller
            self.error = exc
        finally:
            self.done.tick()


class _Countdown:
    __slots__ = ("left", "cond")

    def __init__(self, n: int) -> None:
        self.left = n
        self.cond = threading.Condition(threading.Lock())

    def tick(self) -> None:
        with self.cond:
            self.left -= 1
            if self.left == 0:
                self.cond.notify_all()

    def wait(self) -> None:
        with self.cond:
            while self.left:
                self.cond.wait()


class _Pool:
    """Persistent daemon workers sharing one job queue (a list under a condition variable)."""

    def __init__(self) -> None:
        self.cond = threading.Condition(threading.Lock())
        self.jobs: List[_Job] = []
        self.workers: List[threading.Thread] = []

    def _grow(self, n: int) -> None:
        while len(self.workers) < n:
            t = threading.Thread(target=self._work, name=f"fastconv-{len(self.workers)}", daemon=True)
            t.start()
            self.workers.append(t)

    def _work(self) -> None:
        while True:
            with self.cond:
                while not self.jobs:
                    self.cond.wait()
                job = self.jobs.pop()
            job.run()

    def submit(self, jobs: List[_Job]) -> None:
        with self.cond:
            self._grow(len(jobs))
            self.jobs.extend(jobs)
            self.cond.notify(len(jobs))


_pool = _Pool()


class _OpenMP:
    """Ranges run on the calling thread's libgomp team (torch's, for torch's threads)."""

    def __init__(self, path: str) -> None:
        lib = ctypes.CDLL(path)  # already loaded by torch: the same library instance
        self.parallel = lib.GOMP_parallel
        self.parallel.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
        self.parallel.restype = None
        self.max_threads = lib.omp_get_max_threads
        self.max_threads.restype = ctypes.c_int
        self.calls: dict = {}
        self.lock = threading.Lock()
        self.body = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(self._body)  # kept alive with self

    def _body(self, key) -> None:
        call = self.calls[key]
        fn, bounds, errors, taken = call
        while True:
            with self.lock:
                i = taken[0]
                taken[0] += 1
            if i >= len(bounds) - 1:
                return
            try:
                fn(bounds[i], bounds[i + 1])
            except BaseException as exc:  # re-raised in the caller
                errors.append(exc)

    def run(self, fn: Callable[[int, int], None], bounds: List[int]) -> None:
        errors: List[BaseException] = []
        call = (fn, bounds, errors, [0])
        key = id(call)
        self.calls[key] = call
        try:
            team = max(len(bounds) - 1, int(self.max_threads()))  # never shrink torch's team
            self.parallel(self.body, key, team, 0)
        finally:
            del self.calls[key]
        if errors:
            raise errors[0]


def _find_libgomp() -> Optional[str]:
    """The libgomp the process has loaded (torch's), from /proc/self/maps; None if there is none."""
    try:
        with open("/proc/self/maps") as fh:
            paths = set(re.findall(r"(/\S*/libgomp[^/\s]*\.so[^/\s]*)", fh.read()))
    except OSError:
        return None
    if not paths:
        return None
    return sorted(paths, key=lambda p: ("torch" not in p, p))[0]


def _openmp() -> Optional[_OpenMP]:
    if os.environ.get("FASTCONV_THREADS", "").lower() == "python":
        return None
    import torch  # noqa: F401  (loads torch's OpenMP runtime, if it has one)
    path = _find_libgomp()
    if path is None:
        return None
    try:
        return _OpenMP(path)
    except (OSError, AttributeError):
        return None


_omp: Optional[_OpenMP] = _openmp()
_regions.setup(_find_libgomp() if _omp is not None else None)


def backend() -> str:
    """Where the ranges run: ``'openmp'`` (torch's libgomp team) or ``'python'`` (fastconv's threads)."""
    return "openmp" if _omp is not None else "python"


def _after_fork_in_child() -> None:
    global _pool, _omp
    _pool = _Pool()
    _omp = None  # GNU OpenMP's threads do not survive a fork, and its pool cannot be rebuilt
    _regions.disable()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_after_fork_in_child)


def parallel_ranges(fn: Callable[[int, int], None], n: int, chunks: int) -> None:
    """Call ``fn(lo, hi)`` on ``chunks`` contiguous, disjoint ranges covering ``range(n)``.

    Runs serially when ``chunks <= 1``; otherwise on torch's OpenMP team or fastconv's own
    threads (see the module notes).  ``fn`` must release the GIL (a ``nogil`` Numba kernel)
    for the ranges to overlap.  The first exception raised by any range propagates, after
    every range has finished.
    """
    chunks = max(1, min(chunks, n))
    _programs.deny()  # Python ranges cannot be replayed
    if chunks == 1:
        fn(0, n)
        return
    bounds = [n * c // chunks for c in range(chunks + 1)]
    if _omp is not None:
        _omp.run(fn, bounds)
        return
    done = _Countdown(chunks - 1)
    jobs = [_Job(fn, bounds[c], bounds[c + 1], done) for c in range(1, chunks)]
    _pool.submit(jobs)
    try:
        fn(bounds[0], bounds[1])
    finally:
        done.wait()
    for job in jobs:
        if job.error is not None:
            raise job.error


def parallel_for(kernel: Callable[..., None], n_tasks: int, *args, work: int = 0, macs: int = 0) -> None:
    """Run ``kernel(*args, lo, hi)`` over ``range(n_tasks)`` split across the pool.

    ``kernel`` is a ``nogil`` Numba function (or a Python function calling them) that loops
    ``for task in range(lo, hi)``; its cost -- ``work`` element copies or scalar operations
    (default ``n_tasks``) plus ``macs`` vectorised multiply-adds -- decides whether threading
    pays (:data:`PARALLEL_MIN_WORK`).
    """
    if n_tasks <= 0:
        return
    chunks = num_threads() if max(work, n_tasks) + macs // VECTOR_MACS >= PARALLEL_MIN_WORK else 1
    rec = _programs.recorder()
    if rec is not None:  # recording a pass: every kernel in a native region, even on one thread
        if _regions.run(kernel, n_tasks, min(chunks, n_tasks), args, rec):
            return
        rec.ok = False
    if chunks == 1:
        kernel(*args, 0, n_tasks)
        return
    if _regions.run(kernel, n_tasks, min(chunks, n_tasks), args):
        return
    parallel_ranges(lambda lo, hi: kernel(*args, lo, hi), n_tasks, chunks)
