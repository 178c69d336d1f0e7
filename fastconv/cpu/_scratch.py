"""Per-thread scratch buffers of the CPU convolution engine, reused from call to call.

The engine packs its operands into temporary layouts of several megabytes (a batch's input in
lanes, an output gradient channels-last, Winograd partial sums).  Allocated afresh on every call,
such a buffer comes from a fresh ``mmap`` whenever glibc's heap cannot serve it, and the kernel
then pays a page fault per 4 KiB on first touch: measured on the 3 -> 32 channel first layer of a
128-image batch, 500 to 8700 faults and 13 to 39 ms for a forward+backward pass whose kernels take
10 ms.  :func:`scratch` hands out a view of a buffer kept for the calling thread under a *slot*
name, grown when a call needs more, so the pages are touched once.

Rules: a slot holds one temporary at a time (a function that needs two buffers at once uses two
slots); nothing that outlives the call may be a view of scratch; each thread has its own buffers.
The memory stays allocated for the thread (at most the largest size each slot ever needed);
:func:`release` frees it.  Recorded passes (:mod:`fastconv._programs`) hold the buffers they ran
on: a buffer replaced (grown) or released drops the thread's programs.
"""
from __future__ import annotations

import math
import mmap
import threading
from typing import Sequence, Union

import numpy as np

from .. import _programs
from .._numba import njit
from .._threads import parallel_for

__all__ = ["scratch", "release"]

_local = threading.local()
_ALIGN = 64


def scratch(slot: str, shape: Union[int, Sequence[int]], dtype, zero: bool = False) -> np.ndarray:
    """A C-contiguous, 64-byte aligned array of ``shape`` and ``dtype`` from this thread's buffer ``slot``.

    Its contents are arbitrary unless ``zero``.  The next call with the same slot (in this thread)
    reuses the memory.
    """
    dt = np.dtype(dtype)
    shape = tuple(map(int, shape)) if isinstance(shape, (tuple, list)) else (int(shape),)
    nbytes = math.prod(shape) * dt.itemsize
    bufs = getattr(_local, "bufs", None)
    if bufs is None:
        bufs = _local.bufs = {}
    buf = bufs.get(slot)
    if buf is None or buf.nbytes < nbytes:
        buf = bufs[slot] = _allocate(nbytes)
        _programs.invalidate()
    out = buf[:nbytes].view(dt).reshape(shape)
    if zero:  # by a kernel: a recorded pass zeroes it again on every replay
        flat = buf[:nbytes]
        parallel_for(_zero, -(-nbytes // _ZERO_CHUNK), flat, work=nbytes // 4)
    return out


#: Bytes a task of :func:`_zero` clears.
_ZERO_CHUNK = 1 << 16


@njit(cache=True, nogil=True)
def _zero(a, t0, t1):  # pragma: no cover - numba
    """a[t * _ZERO_CHUNK:(t + 1) * _ZERO_CHUNK] = 0 for the chunks [t0, t1) of the bytes ``a``."""
    for i in range(t0 * _ZERO_CHUNK, min(t1 * _ZERO_CHUNK, a.size)):
        a[i] = 0


_HUGE = 2 << 20


def _allocate(nbytes: int) -> np.ndarray:
    """At least ``nbytes`` bytes starting on a 64-byte boundary (so that :func:`scratch` need not
    look up the address per call); 2 MiB and more on transparent huge pages."""
    if nbytes < _HUGE or not hasattr(mmap, "MADV_HUGEPAGE"):
        raw = np.empty(max(nbytes, 1) + _ALIGN, dtype=np.uint8)
        start = (-raw.ctypes.data) % _ALIGN
        return raw[start:start + max(nbytes, 1)]
    size = -(-(nbytes + _ALIGN) // _HUGE) * _HUGE
    m = mmap.mmap(-1, size + _HUGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    raw = np.frombuffer(m, dtype=np.uint8)
    start = (-raw.ctypes.data) % _HUGE
    try:
        m.madvise(mmap.MADV_HUGEPAGE, start, size)
    except OSError:
        pass
    return raw[start:start + size]


def release() -> None:
    """Free the calling thread's scratch buffers (and drop its recorded passes, which hold them)."""
    _local.bufs = {}
    _programs.invalidate()


def buffers() -> list:
    """The calling thread's scratch buffers (raw bytes)."""
    return list(getattr(_local, "bufs", {}).values())


_programs.scratch_buffers = buffers
