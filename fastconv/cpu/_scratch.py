"""Per-thread scratch memory of the CPU convolution engine, reused from call to call.

The engine packs its operands into temporary layouts of several megabytes (a batch's input in
lanes, an output gradient channels-last, Winograd partial sums).  Allocated afresh on every call,
such a buffer comes from a fresh ``mmap`` whenever glibc's heap cannot serve it, and the kernel
then pays a page fault per 4 KiB on first touch: measured on the 3 -> 32 channel first layer of a
128-image batch, 500 to 8700 faults and 13 to 39 ms for a forward+backward pass whose kernels take
10 ms.  :func:`scratch` hands out views of memory kept for the calling thread, so the pages are
touched once.

A pass of the engine (a function under :func:`scoped`: a convolution's forward, input gradient or
weight gradient) takes its temporaries, by *slot* name, one after the other from the thread's
*arena*, which the next pass reuses from its start: the memory held is the most that one pass
needs, not the sum over slots of the most each slot ever needed (held after a denoiser's training
step, batch 128: 24 MB against 64; the classifier's 14 against 23). A pass that finds the arena too
small takes its own buffers for the rest of the call, and the arena is replaced by a large enough
one when the outermost pass returns. A pass run inside another (a patch convolution's pointwise
one) takes its memory past the outer pass's. Outside any pass, and for the slots of
:data:`PERSISTENT` (whose contents a later call reads again), a slot is a buffer of its own, grown
when a call needs more.

Rules: a slot holds one temporary at a time (a function that needs two buffers at once uses two
slots); nothing that outlives the call may be a view of scratch; each thread has its own memory.
It stays allocated for the thread; :func:`release` frees it.  Recorded passes
(:mod:`fastconv._programs`) hold the memory they ran on: the arena or a buffer replaced (grown) or
released drops the thread's programs.
"""
from __future__ import annotations

import functools
import math
import mmap
import threading
from typing import Any, Callable, Dict, List, Sequence, TypeVar, Union

import numpy as np

from .. import _programs
from .._numba import njit
from .._threads import parallel_for

__all__ = ["scratch", "scoped", "release", "buffers", "PERSISTENT"]

_local = threading.local()
_ALIGN = 64
#: Slots whose contents a later call reads again (the patch convolution's blocks, which its
#: weight gradient reuses from the forward): buffers of their own, never in the arena.
PERSISTENT = frozenset({"patch"})


class _Arena:
    """A thread's arena: its memory, the bytes the passes running now have taken, the most any
    pass took (the arena's next size, where it is short), and the slots of each running pass."""

    __slots__ = ("buf", "top", "need", "passes")

    def __init__(self) -> None:
        self.buf = np.empty(0, dtype=np.uint8)
        self.top = 0
        self.need = 0
        self.passes: List[Dict[str, np.ndarray]] = []


def _arena() -> _Arena:
    arena = getattr(_local, "arena", None)
    if arena is None:
        arena = _local.arena = _Arena()
    return arena


F = TypeVar("F", bound=Callable[..., Any])


def scoped(fn: F) -> F:
    """``fn`` as a pass of the engine: its :func:`scratch` comes from the thread's arena, given back
    when it returns (see the module notes)."""
    @functools.wraps(fn)
    def run(*args, **kwargs):
        arena = _arena()
        start = arena.top
        arena.passes.append({})
        try:
            return fn(*args, **kwargs)
        finally:
            arena.passes.pop()
            arena.top = start
            if not arena.passes and arena.need > arena.buf.nbytes:
                arena.buf = _allocate(arena.need)
                _programs.invalidate()
    return run  # type: ignore[return-value]


def depth() -> int:
    """How many passes under :func:`scoped` the calling thread is running now."""
    arena = getattr(_local, "arena", None)
    return 0 if arena is None else len(arena.passes)


def scratch(slot: str, shape: Union[int, Sequence[int]], dtype, zero: bool = False) -> np.ndarray:
    """A C-contiguous, 64-byte aligned array of ``shape`` and ``dtype`` from this thread's scratch
    memory: slot ``slot`` of the running pass (or a buffer of the slot's own; see the module notes).

    Its contents are arbitrary unless ``zero``.  A second call with the same slot in the same pass
    reuses the memory of the first (its array must no longer be in use).
    """
    dt = np.dtype(dtype)
    shape = tuple(map(int, shape)) if isinstance(shape, (tuple, list)) else (int(shape),)
    nbytes = math.prod(shape) * dt.itemsize
    arena = getattr(_local, "arena", None)
    if arena is not None and arena.passes and slot not in PERSISTENT:
        slots = arena.passes[-1]
        buf = slots.get(slot)
        if buf is None or buf.nbytes < nbytes:
            start = -(-arena.top // _ALIGN) * _ALIGN
            arena.top = start + max(nbytes, 1)
            arena.need = max(arena.need, arena.top)
            # past the arena's end: a buffer of this call's own (the arena grows after the pass)
            buf = slots[slot] = arena.buf[start:arena.top] if arena.top <= arena.buf.nbytes else _allocate(nbytes)
    else:
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
    """Free the calling thread's scratch memory (and drop its recorded passes, which hold it)."""
    _local.bufs = {}
    arena = getattr(_local, "arena", None)
    if arena is not None:
        arena.buf = np.empty(0, dtype=np.uint8)  # (a pass running now keeps its views alive)
        arena.need = 0
    _programs.invalidate()


def buffers() -> list:
    """The calling thread's scratch memory (raw bytes): the arena and the slots' own buffers."""
    arena = getattr(_local, "arena", None)
    return ([arena.buf] if arena is not None and arena.buf.nbytes else []) + list(getattr(_local, "bufs", {}).values())


_programs.scratch_buffers = buffers
_programs.scratch_depth = depth
