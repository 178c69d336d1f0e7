"""Recorded passes: a call's native regions replayed as one program, with no Python between them.

A convolution pass spends 15-25 us of Python hot -- planning, packing set-up, one native region
per kernel (:mod:`fastconv._regions`) -- and in a training step 5-10 times that: every kernel
streams megabytes through the caches, so the interpreter runs cold after it (measured on a
4 x 128 x 16x16 -> 128 3x3 layer: 14 us a forward pass alone, 125 us after an 8 MB copy; the
layer's forward+backward spent 0.84 of its 3.56 ms outside the kernels' regions).

:func:`call` runs a pass ``fn(*inputs, *args)`` and, from the second call of a signature
(``key``) on, records it: every native region the pass runs (kernel entry point and argument
slots), and every check it makes on data (:func:`check`); the first call of a signature runs
plainly, so one-off shapes pay nothing.  A recorded program is then
*validated* once: replayed on random inputs (into an output filled with NaN) and compared bit
for bit with ``fn`` run normally on the same inputs.  Anything the pass does outside its native
regions -- a NumPy or torch operation on the data, a copy kept from an earlier call, a Python
write into scratch -- makes the replay differ there, and the signature keeps the normal path.
From then on a call of that signature is one compiled function: it writes the new tensors'
addresses into the recorded slots and runs every region in one OpenMP parallel region, with a
barrier between kernels (:func:`_chain_body`), then re-evaluates the recorded checks; if one gives
another answer than when recorded (a non-finite value the pass handles elsewhere), the program
is dropped and ``fn`` runs normally.

Arrays a region reads or writes are, in a program, either a view of one of the call's tensors
(the inputs or the output: patched per call), or kept by the program (scratch, memoised
offsets, the recorded call's temporaries).  Scratch buffers are the calling thread's
(:mod:`fastconv.cpu._scratch`), so programs are kept per thread, and dropped when a scratch
buffer is reallocated or released (:func:`invalidate`).

Rules for passes (checked by the validation, not assumed): no data read or written outside
native regions; data-dependent decisions only through :func:`check`; kernel results are
deterministic (the same ranges on the same threads).  Programs need native regions
(:func:`fastconv._regions.enabled`); ``FASTCONV_PROGRAMS=0`` turns them off.
"""
from __future__ import annotations

import ctypes
import hashlib
import math
import mmap
import os
import threading
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from llvmlite import ir
from numba import carray, cfunc, types
from numba.extending import intrinsic

from . import _regions
from ._numba import njit
from ._regions import ptr_B, ptr_d, ptr_f
from .cpu._reduce import finite

__all__ = ["call", "check", "deny", "recorder", "invalidate", "clear", "validating", "mapped", "MAX_PROGRAMS", "CLEAR",
           "FINITE"]

#: Programs kept per thread (signatures past it clear the thread's programs).
MAX_PROGRAMS = 512
#: ``FASTCONV_PROGRAMS=0`` (environment, read at import) turns recording and replays off.
ENABLED = os.environ.get("FASTCONV_PROGRAMS", "1") != "0"
#: Passes whose validation would allocate more than this (bytes: the largest input plus the
#: output) are not recorded: the validation runs while a training step's activations are alive and
#: raises the process's peak by what it allocates (its temporaries are mapped pages of their own,
#: unmapped after it), and passes that large gain least (their kernels take milliseconds; a program
#: saves 0.1-0.5 ms).  9 MB: 8 MB of activations and a weight gradient (128 x 32 x 16x16 -> 64's,
#: whose pass alone went 4.4-4.9 -> 4.0-4.2 ms).  Peak RSS over five steps (MB, limit 8 / 12 / 16
#: MB, three to five processes): classifier (batch 128) 518 / 524 / 523-524, cifar-net 488-489 /
#: 488-489 / 498, denoiser 561-593 (median 565) / 562-591 (577) / 565-602 (torch: 528-563,
#: 502-513, 540-583); 9 MB as 8 within their spread.  A 4 MB limit cost the denoiser's step 9 ms of 50.
MAX_VALIDATION_BYTES = 9 << 20
#: Kinds of :func:`check`: flags a kernel sets (uint8, all clear?) and floats (all finite?).
CLEAR, FINITE = 0, 1

_local = threading.local()
#: Threads recording now (a fast test on every region: zero almost always), under its lock.
_recording = [0]
_recording_lock = threading.Lock()


@intrinsic
def _call_ptr(typingctx, fn, arg):
    """Call ``void fn(void *arg)`` at address ``fn`` (a region's entry point)."""
    sig = types.void(types.int64, types.int64)

    def codegen(context, builder, signature, args):
        i8p = ir.IntType(8).as_pointer()
        f = builder.inttoptr(args[0], ir.FunctionType(ir.VoidType(), [i8p]).as_pointer())
        builder.call(f, [builder.inttoptr(args[1], i8p)])
        return context.get_dummy_value()
    return sig, codegen


@intrinsic
def _call_void(typingctx, fn):
    """Call ``void fn(void)`` at address ``fn`` (``GOMP_barrier``)."""
    sig = types.void(types.int64)

    def codegen(context, builder, signature, args):
        f = builder.inttoptr(args[0], ir.FunctionType(ir.VoidType(), []).as_pointer())
        builder.call(f, [])
        return context.get_dummy_value()
    return sig, codegen


@intrinsic
def _call_parallel(typingctx, fn, body, data, team):
    """``GOMP_parallel(body, data, team, 0)`` through its address ``fn``."""
    sig = types.void(types.int64, types.int64, types.int64, types.int64)

    def codegen(context, builder, signature, args):
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        bodyty = ir.FunctionType(ir.VoidType(), [i8p]).as_pointer()
        fnty = ir.FunctionType(ir.VoidType(), [bodyty, i8p, i32, i32])
        f = builder.inttoptr(args[0], fnty.as_pointer())
        builder.call(f, [builder.inttoptr(args[1], bodyty), builder.inttoptr(args[2], i8p),
                         builder.trunc(args[3], i32), ir.Constant(i32, 0)])
        return context.get_dummy_value()
    return sig, codegen


def _chain_body(data):  # pragma: no cover - native
    """The body of a program's parallel region: table ``[steps, barrier, (entry, slots) ...]``;
    every thread of the team runs each region's entry point (which takes its share of the
    ranges), then waits for the others before the next kernel."""
    head = carray(data, 2, dtype=np.int64)
    steps = head[0]
    table = carray(data, 2 + 2 * steps, dtype=np.int64)
    for s in range(steps):
        if s:
            _call_void(table[1])
        _call_ptr(table[2 + 2 * s], table[3 + 2 * s])


_chain_address: List[int] = []


def _chain() -> int:
    """The address of the compiled :func:`_chain_body` (compiled, or loaded from the disk cache, on
    first use: programs exist only where native regions do, which need that cache)."""
    if not _chain_address:
        _chain_address.append(cfunc(types.void(types.voidptr), nopython=True, cache=True)(_chain_body).address)
    return _chain_address[0]


@njit(cache=True, nogil=True, inline="always")
def _base(k, b0, b1, b2, b3):  # pragma: no cover - numba
    """The address of operand ``k``."""
    return b0 if k == 0 else (b1 if k == 1 else (b2 if k == 2 else b3))


@njit(cache=True, nogil=True)
def _launch(slots, where, operand, offset, b0, b1, b2, b3, parallel, body, table, team, checks):  # pragma: no cover
    """Patch the operands' addresses ``b0..b3`` (plus each slot's byte offset) into the slots, run
    the program's region, then its checks; whether each gave its recorded answer.  A check row is
    (kind, target, count, answer): :data:`CLEAR` -- the ``count`` flag bytes at address ``target``
    are all zero -- or :data:`FINITE` -- the ``count`` elements of operand ``target`` are finite,
    float32 (kind 1) or float64 (kind 2)."""
    for i in range(where.size):
        slots[where[i]] = _base(operand[i], b0, b1, b2, b3) + offset[i]
    _call_parallel(parallel, body, table.ctypes.data, team)
    ok = True
    for r in range(checks.shape[0]):
        kind, target, count = checks[r, 0], checks[r, 1], checks[r, 2]
        if kind == CLEAR:
            flags = carray(ptr_B(target), count)
            v = True
            for i in range(count):
                if flags[i] != 0:
                    v = False
        else:
            base = _base(target, b0, b1, b2, b3)
            v = finite(carray(ptr_f(base), count)) if kind == FINITE else finite(carray(ptr_d(base), count))
        if v != (checks[r, 3] != 0):
            ok = False
    return ok


class _Recorder:
    """What one call does: its regions (entry, copy of the slots, the arrays in them) and checks."""

    def __init__(self) -> None:
        self.steps: List[Tuple[int, np.ndarray, List[Tuple[int, np.ndarray]]]] = []
        self.checks: List[Tuple[int, np.ndarray, bool]] = []  # (kind, array, answer)
        self.team = 1
        self.ok = True
        self.paused = 0

    def region(self, address: int, slots: np.ndarray, specs: Sequence[str], args: Sequence, chunks: int) -> None:
        arrays = [(slot, a) for s, slot, a in zip(specs, _regions.slots_of(specs), args) if s[0] == "a"]
        self.steps.append((address, slots.copy(), arrays))
        self.team = max(self.team, chunks)


def recorder() -> Optional[_Recorder]:
    """The calling thread's recorder, if it is recording (and not paused)."""
    if not _recording[0]:
        return None
    rec = getattr(_local, "rec", None)
    return None if rec is None or rec.paused else rec


def deny() -> None:
    """The pass being recorded (if any) cannot be replayed (it keeps state between calls)."""
    rec = recorder()
    if rec is not None:
        rec.ok = False


def check(kind: int, a: np.ndarray, test: Callable[[np.ndarray], bool]) -> bool:
    """``test(a)``, a data-dependent decision of the pass, which must be ``kind``'s question about
    ``a``: :data:`CLEAR` (no flag set in the uint8 array ``a``, which the regions write) or
    :data:`FINITE` (no infinity or NaN in ``a``, the whole of one of the call's tensors).  When
    recording, the answer is recorded (and replays ask again, in compiled code); regions that
    ``test`` runs are not part of the pass."""
    rec = recorder()
    if rec is None:
        return test(a)
    rec.paused += 1
    try:
        answer = bool(test(a))
    finally:
        rec.paused -= 1
    rec.checks.append((kind, a, answer))
    return answer


class Program:
    """A recorded, validated pass: its slots, patches, checks and the region table."""

    __slots__ = ("slots", "where", "operand", "offset", "table", "team", "checks", "shape", "keep")

    def __init__(self, slots, where, operand, offset, table, team, checks, shape, keep) -> None:
        self.slots, self.where, self.operand, self.offset = slots, where, operand, offset
        self.table, self.team, self.checks, self.shape, self.keep = table, team, checks, shape, keep

    def run(self, inputs: Sequence[Optional[torch.Tensor]], out: torch.Tensor) -> bool:
        """Run on ``inputs`` into ``out``; whether every check gave its recorded answer."""
        b = [0, 0, 0, 0]
        for i, t in enumerate(inputs):
            if t is not None:
                b[i] = t.data_ptr()
        b[len(inputs)] = out.data_ptr()
        return _launch(self.slots, self.where, self.operand, self.offset, b[0], b[1], b[2], b[3],
                       _regions._native.parallel_address, _chain(), self.table, self.team, self.checks)


def _operand(ranges: Sequence[Tuple[int, int]], address: int, nbytes: int) -> int:
    """The index of the range holding ``nbytes`` at ``address``; -1 if none."""
    for i, (base, size) in enumerate(ranges):
        if base <= address and address + nbytes <= base + size and size:
            return i
    return -1


def _finish(rec: _Recorder, inputs: Sequence[Optional[torch.Tensor]], out: torch.Tensor) -> Optional[Program]:
    """The program of a recorded call, or None where it cannot be expressed."""
    if not rec.ok or not rec.steps or len(inputs) > 3:
        return None
    tensors = list(inputs) + [out]
    ranges = [(0, 0) if t is None else (t.data_ptr(), t.numel() * t.element_size()) for t in tensors]
    sizes = [d.size for _, d, _ in rec.steps]
    starts = np.cumsum([0] + sizes)
    slots = np.concatenate([d for _, d, _ in rec.steps])
    where, operand, offset, keep = [], [], [], []
    for (address, d, arrays), start in zip(rec.steps, starts):
        for slot, a in arrays:
            k = _operand(ranges, int(d[slot]), a.nbytes)
            if k >= 0:
                where.append(start + slot)
                operand.append(k)
                offset.append(int(d[slot]) - ranges[k][0])
            else:
                keep.append(a)
    checks = []
    for kind, a, answer in rec.checks:
        k = _operand(ranges, a.ctypes.data, a.nbytes)
        if kind == FINITE and k >= 0 and a.ctypes.data == ranges[k][0] and a.nbytes == ranges[k][1] \
                and a.dtype in (np.float32, np.float64):  # a whole tensor of the call
            checks.append((FINITE + (a.dtype == np.float64), k, a.size, answer))
        elif kind == CLEAR and k < 0 and a.dtype == np.uint8 and a.flags.c_contiguous and any(a is b for b in keep):
            checks.append((CLEAR, a.ctypes.data, a.size, answer))  # flags the regions write
        else:
            return None
    table = np.zeros(2 + 2 * len(rec.steps), dtype=np.int64)
    table[0], table[1] = len(rec.steps), _regions._native.barrier_address
    for s, ((address, _, _), start) in enumerate(zip(rec.steps, starts)):
        table[2 + 2 * s] = address
        table[3 + 2 * s] = slots.ctypes.data + 8 * int(start)
    team = max(rec.team, int(_regions._native.max_threads()))
    return Program(slots, np.array(where, dtype=np.int64), np.array(operand, dtype=np.int64),
                   np.array(offset, dtype=np.int64), table, team, np.array(checks, dtype=np.int64).reshape(-1, 4),
                   tuple(out.shape), keep)


def _programs() -> Dict[Any, Any]:
    progs = getattr(_local, "programs", None)
    if progs is None:
        progs = _local.programs = {}
    return progs


def invalidate() -> None:
    """Drop the calling thread's programs (a scratch buffer they hold was replaced or released)."""
    _local.generation = getattr(_local, "generation", 0) + 1
    if getattr(_local, "programs", None):
        _local.programs = {}


clear = invalidate

#: The per-thread table's marker of a signature that is not replayed.
_NEVER = "never"


def _eligible(inputs: Sequence[Optional[torch.Tensor]]) -> bool:
    for t in inputs:
        if t is not None and (t.is_neg() or not t.is_contiguous()):
            return False
    # (a pass inside another runs plainly: its scratch lies past the outer pass's, wherever that ends)
    return ENABLED and _regions.enabled() and getattr(_local, "rec", None) is None and not scratch_depth()


def call(fn: Callable[..., torch.Tensor], key: Any, inputs: Tuple[Optional[torch.Tensor], ...], args: tuple,
         new_output: Callable[[torch.Tensor, Tuple[int, ...], int], torch.Tensor]) -> torch.Tensor:
    """``fn(*inputs, *args)``, replayed from its program where ``key`` (which must determine
    everything ``fn`` decides before looking at data) has a validated one.

    ``inputs``: at most three tensors (or None), contiguous; ``fn`` returns a new contiguous
    tensor, which a replay allocates with ``new_output(inputs[0], shape, numel)``."""
    if not _eligible(inputs):
        return fn(*inputs, *args)
    progs = _programs()
    prog = progs.get(key)
    if type(prog) is Program:
        out = new_output(inputs[0], prog.shape, math.prod(prog.shape))
        if prog.run(inputs, out):
            return out
        del progs[key]  # a check answered otherwise: the normal path decides (recorded again later)
        return fn(*inputs, *args)
    if prog is None:  # the first call: plain, and the output's size noted (one-off shapes pay nothing)
        if len(progs) >= MAX_PROGRAMS:
            progs.clear()
        out = fn(*inputs, *args)
        big = max(t.numel() * t.element_size() for t in inputs if t is not None) + out.numel() * out.element_size()
        progs[key] = _NEVER if big > MAX_VALIDATION_BYTES else out.shape
        return out
    if prog is _NEVER:
        return fn(*inputs, *args)
    generation = getattr(_local, "generation", 0)
    rec = _local.rec = _Recorder()
    with _recording_lock:
        _recording[0] += 1
    try:
        out = fn(*inputs, *args)
    finally:
        with _recording_lock:
            _recording[0] -= 1
        _local.rec = None
    if getattr(_local, "generation", 0) != generation:  # scratch was replaced meanwhile: record the next call
        _programs()[key] = out.shape
        return out
    prog = _finish(rec, inputs, out) if out.is_contiguous() else None
    ok = prog is not None and _validate(prog, fn, inputs, args)
    _programs()[key] = prog if ok else _NEVER
    return out


#: The calling thread's scratch buffers, as raw byte arrays, and how many passes it is running
#: (set by :mod:`fastconv.cpu._scratch`).
scratch_buffers: Callable[[], List[np.ndarray]] = list
scratch_depth: Callable[[], int] = int


def _validate(prog: Program, fn, inputs, args) -> bool:
    """Whether ``prog`` on random inputs gives, bit for bit, what ``fn`` gives on them.

    The inputs are views of one random buffer (they only read it); ``fn``'s result is hashed, then
    filled with NaN and replayed into, with the scratch buffers the program holds filled with NaN
    too: a replay that skips a write of the pass's, or relies on scratch contents written outside
    its regions (which another pass may overwrite before the next replay), gives another hash.
    One input-sized and one output-sized temporary, both on pages of their own, unmapped when the
    validation returns (an output pool keeps nothing of it): the validation runs while a training
    step's activations are alive, and raises the process's peak memory by what it allocates."""
    tensors = [t for t in inputs if t is not None]
    dtype = tensors[0].dtype
    if any(t.dtype != dtype for t in tensors):
        return False
    # (a generator of its own: the validation must not move the user's random stream)
    values = mapped(max(t.numel() for t in tensors), dtype).uniform_(generator=torch.Generator().manual_seed(0))
    alt = tuple(None if t is None else values[:t.numel()].view(t.shape) for t in inputs)
    _local.validating = True
    try:
        ref = fn(*alt, *args)
    finally:
        _local.validating = False
    ok = tuple(ref.shape) == prog.shape and ref.dtype == dtype and ref.is_contiguous()
    if ok:
        want = _digest(ref)
        for buf in scratch_buffers():
            if any(np.may_share_memory(buf, a) for a in prog.keep):
                buf.fill(0xFF)  # every float in it a NaN
        ref.fill_(float("nan"))
        ok = prog.run(alt, ref) and _digest(ref) == want
    del values, alt, ref
    _trim()
    return ok


def validating() -> bool:
    """Whether the calling thread is validating a program: the pass's outputs are then temporaries
    of the validation, which an output pool should not keep (:func:`mapped` serves them)."""
    return getattr(_local, "validating", False)


def mapped(n: int, dtype: torch.dtype) -> torch.Tensor:
    """``n`` elements of ``dtype`` on pages of their own (an anonymous mapping, unmapped when the
    tensor dies): a temporary of many megabytes from glibc's heap leaves a hole there that later
    allocations fragment (a denoiser's training steps kept 136 MB of free heap against 48)."""
    if not n:
        return torch.empty(0, dtype=dtype)
    return torch.frombuffer(mmap.mmap(-1, n * dtype.itemsize), dtype=dtype, count=n)


def _digest(t: torch.Tensor) -> bytes:
    """A hash of contiguous ``t``'s bytes."""
    return hashlib.blake2b(t.detach().numpy().data, digest_size=32).digest()


def _libc_trim() -> Callable[[], None]:
    try:
        fn = ctypes.CDLL(None).malloc_trim
        fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
        return lambda: fn(0) and None
    except (OSError, AttributeError):  # not glibc
        return lambda: None


#: Give the validation's temporaries (inputs and outputs of a pass, several megabytes) back to the
#: system: glibc keeps freed heap memory mapped, and the process's peak would stay higher.
_trim = _libc_trim()
