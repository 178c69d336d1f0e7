"""Output tensors of the CPU kernels, from a pool of storages that keep their pages mapped.

A large tensor that torch allocates afresh often lies on new pages -- a fresh ``mmap``, or heap
memory that glibc returned to the system at an earlier ``free`` -- and the kernel that writes it
first takes a page fault per 4 KiB.  In a training step these faults land inside the parallel
kernels, where the two threads serialise on the process's page tables: in a UNet step (c16,
batch 4, 128x128) fastconv's own outputs took about 5000 faults a step, and a 16 -> 16 channel
3x3 forward at 128x128 took 1.26 ms in the step against 0.89 ms into an output already mapped.

:func:`empty` hands out ordinary, contiguous CPU tensors (not views: in-place operations and
autograd treat them like any other output) on storages the pool keeps.  A storage is free again
once no tensor refers to it (torch's reference count of the storage: a tensor, a view, a NumPy
array or a DLPack capsule of it all hold one), so the activations and gradients one training step
frees are the outputs of the next, with their pages in place.  Storages are pooled by size in
bytes, whatever the dtype.  A storage moved to shared memory (a tensor sent to another process,
as from a ``DataLoader`` worker) or resized by its user leaves the pool: another process may
still read it.

A new pooled storage's whole 2 MiB pages are advised onto transparent huge pages (Linux's
``MADV_HUGEPAGE``, before anything touches them; where the system allows it): the kernels write
an NCHW output by rows of many images and channels at once, one page each with 4 KiB pages.
With them, 128 x 32 x 16x16 -> 64 forward+backward went from 13.8 to 12.6 ms alone (the scratch
buffers were on huge pages already: :mod:`fastconv.cpu._scratch`).

Outputs under :data:`POOL_MIN_BYTES` come from torch (glibc reuses small blocks without faults).
The pool keeps at most ``FASTCONV_OUTPUT_POOL_MB`` megabytes (environment, read at import;
default 1024; 0 turns the pool off): past that, free storages are dropped, least recently used
first, and if that is not enough the output comes from torch.  :func:`release` (public as
:func:`fastconv.empty_cache`) drops every free storage.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import math
import mmap
import os
import sys
import threading
from collections import OrderedDict
from typing import List, Sequence

import torch

from .. import _programs
from ._scratch import _HUGE

__all__ = ["empty", "new", "release", "held_bytes", "POOL_MIN_BYTES", "POOL_MAX_BYTES"]

#: Outputs smaller than this (bytes) come straight from torch.
POOL_MIN_BYTES = 256 << 10
#: The most bytes the pool's storages may hold, in use or free.
POOL_MAX_BYTES = int(float(os.environ.get("FASTCONV_OUTPUT_POOL_MB", "1024")) * (1 << 20))


def _counts_references():
    """torch's (private) reference count of a storage, if it counts as the pool needs: 1 for the
    storage alone, one more for each tensor on it, back to 1 when they are gone; else None (no pool)."""
    count = getattr(torch._C, "_storage_Use_Count", None)
    if count is None:
        return None
    try:
        storage = torch.empty(4).untyped_storage()
        alone = count(storage._cdata)
        t = torch.empty((0,)).set_(storage, 0, (2, 2))
        v = t[1:]
        held = count(storage._cdata)
        del t, v
        return count if (alone, held, count(storage._cdata)) == (1, 3, 1) else None
    except Exception:  # noqa: BLE001 - any surprise: no pool
        return None


_use_count = _counts_references()


def _madvise():
    """libc's ``madvise`` with its argument types, where Linux has ``MADV_HUGEPAGE``; else None."""
    if not sys.platform.startswith("linux") or not hasattr(mmap, "MADV_HUGEPAGE"):
        return None
    try:
        fn = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


_libc_madvise = _madvise()


def _huge(t: torch.Tensor) -> torch.Tensor:
    """``t`` (fresh, untouched), its whole 2 MiB pages advised onto transparent huge pages."""
    if _libc_madvise is not None:
        a = t.data_ptr()
        lo, hi = -(-a // _HUGE) * _HUGE, (a + t.untyped_storage().nbytes()) // _HUGE * _HUGE
        if hi > lo:
            _libc_madvise(lo, hi - lo, mmap.MADV_HUGEPAGE)  # (advice: a failure changes nothing)
    return t


_lock = threading.Lock()
#: Storages by size in bytes, least recently handed out first.
_pool: "OrderedDict[int, List[torch.UntypedStorage]]" = OrderedDict()
_held = [0]


def _after_fork() -> None:
    """A forked child (a DataLoader worker) starts with a fresh lock: the parent's may have been held."""
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def _free(storage: torch.UntypedStorage) -> bool:
    """Whether nothing but the pool refers to ``storage``."""
    return _use_count(storage._cdata) == 1


def empty(shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised, contiguous CPU tensor of ``shape`` and ``dtype`` (see the module notes)."""
    shape = tuple(shape)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < POOL_MIN_BYTES or _use_count is None or nbytes > POOL_MAX_BYTES:
        return torch.empty(shape, dtype=dtype)
    if _programs.validating():  # a temporary of the validation: unmapped when it dies, not pooled
        return _programs.mapped(nbytes // dtype.itemsize, dtype).view(shape)
    with _lock:  # a storage found free is taken (referenced by the new tensor) before another thread looks
        bucket = _pool.setdefault(nbytes, [])
        _pool.move_to_end(nbytes)
        for i, storage in enumerate(bucket):
            if _free(storage):
                if storage.nbytes() != nbytes or storage.is_shared():
                    # resized by its last user, or moved to shared memory (sent to another
                    # process, which may still read it): not the pool's any more
                    del bucket[i]
                    _held[0] -= nbytes
                    break
                return torch.empty((0,), dtype=dtype).set_(storage, 0, shape)
        if _held[0] + nbytes > POOL_MAX_BYTES and not _evict(_held[0] + nbytes - POOL_MAX_BYTES):
            return torch.empty(shape, dtype=dtype)
        out = _huge(torch.empty(shape, dtype=dtype))
        _pool.setdefault(nbytes, []).append(out.untyped_storage())  # (eviction may have dropped the bucket)
        _held[0] += nbytes
        return out


def new(like: torch.Tensor, shape: Sequence[int], numel: int) -> torch.Tensor:
    """:func:`empty` of ``like``'s dtype, ``numel`` the product of ``shape``: small outputs take
    ``like.new_empty`` without a look at the pool (the tiny calls' path: 0.3 us less than
    ``torch.empty`` with a dtype)."""
    if numel * like.element_size() < POOL_MIN_BYTES:
        return like.new_empty(shape)
    return empty(shape, like.dtype)


def _evict(need: int) -> bool:
    """Drop free storages, least recently used sizes first, until ``need`` bytes are gone; whether
    that was possible (the caller holds the lock)."""
    for nbytes in list(_pool):
        bucket = _pool[nbytes]
        keep = []
        for storage in bucket:
            if need > 0 and _free(storage):
                need -= nbytes
                _held[0] -= nbytes
            else:
                keep.append(storage)
        if keep:
            _pool[nbytes] = keep
        else:
            del _pool[nbytes]
        if need <= 0:
            return True
    return False


def release() -> None:
    """Drop every free storage of the pool (storages still in use stay pooled)."""
    with _lock:
        _evict(_held[0])


def held_bytes() -> int:
    """Bytes of the storages the pool holds, in use or free."""
    return _held[0]
