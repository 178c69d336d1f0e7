"""Scratch memory (fastconv.cpu._scratch): a pass's slots in the thread's arena, nesting, growth."""
import threading

import numpy as np
import pytest
import torch

from fastconv import _programs, _regions
from fastconv.cpu import _direct, _scratch
from fastconv.cpu import conv2d as C
from fastconv.cpu._scratch import scoped, scratch


@pytest.fixture(autouse=True)
def _fresh_thread_memory():
    _scratch.release()
    yield
    _scratch.release()


def _span(a: np.ndarray):
    return a.ctypes.data, a.ctypes.data + a.nbytes


def _disjoint(*arrays: np.ndarray) -> bool:
    spans = sorted(_span(a) for a in arrays)
    return all(end <= start for (_, end), (start, _) in zip(spans, spans[1:]))


def _arena_span():
    buf = _scratch._local.arena.buf
    return buf.ctypes.data, buf.ctypes.data + buf.nbytes


def _inside(a: np.ndarray, span) -> bool:
    lo, hi = _span(a)
    return span[0] <= lo and hi <= span[1]


@scoped
def _pass(sizes, out: list, inner=None):
    """Takes the slots ``sizes`` (name -> bytes), writes a marker into each, records them in ``out``;
    runs ``inner`` (another pass) while they are in use, then checks the markers survived."""
    arrays = {}
    for i, (slot, n) in enumerate(sizes.items()):
        a = scratch(slot, n, np.uint8)
        a[...] = i + 1
        arrays[slot] = a
    out.append(arrays)
    if inner is not None:
        inner()
    for i, a in enumerate(arrays.values()):
        assert (a == i + 1).all(), "a nested pass overwrote the outer pass's scratch"
    return arrays


def test_a_pass_takes_disjoint_slots_from_one_arena_reused_by_the_next():
    seen = []
    _pass({"a": 3000, "b": 5000, "c": 100}, seen)  # first pass: the arena is empty, its own buffers
    assert _scratch._local.arena.buf.nbytes >= 8100
    _pass({"a": 3000, "b": 5000, "c": 100}, seen)
    _pass({"x": 8000}, seen)
    first, second, third = seen
    assert _disjoint(*second.values())
    span = _arena_span()
    assert all(_inside(a, span) for a in second.values()) and _inside(third["x"], span)
    assert second["a"].ctypes.data == span[0]  # every pass starts at the arena's start ...
    assert third["x"].ctypes.data == span[0]  # ... whatever its slots are called
    assert all(a.ctypes.data % 64 == 0 for a in second.values())
    # the memory held is the most one pass took, not the sum over the slots ever used
    assert _scratch._local.arena.buf.nbytes < 8100 + 3 * 64 + 8000


def test_the_same_slot_twice_in_a_pass_reuses_its_memory_and_a_larger_request_moves_it():
    @scoped
    def run():
        a = scratch("s", 1000, np.uint8)
        b = scratch("s", 200, np.float32)  # 800 bytes: the same memory
        other = scratch("t", 64, np.uint8)
        c = scratch("s", 5000, np.uint8)  # larger: new memory, past the others
        return a, b, other, c
    run()
    a, b, other, c = run()
    assert a.ctypes.data == b.ctypes.data
    assert _disjoint(a, other, c)


def test_a_nested_pass_takes_memory_past_the_outer_one():
    seen = []
    _pass({"a": 4096, "b": 4096}, seen, inner=lambda: _pass({"a": 4096, "b": 100}, seen))
    _pass({"a": 4096, "b": 4096}, seen, inner=lambda: _pass({"a": 4096, "b": 100}, seen))  # in the arena now
    outer, inner = seen[2], seen[3]
    assert _disjoint(*outer.values(), *inner.values())
    span = _arena_span()
    assert all(_inside(a, span) for a in (*outer.values(), *inner.values()))
    assert _scratch.depth() == 0


def test_an_arena_too_small_grows_after_the_outermost_pass_and_drops_the_programs():
    seen = []
    _pass({"a": 1 << 12}, seen)
    small = _arena_span()
    _programs._programs()["marker"] = "never"
    grown = []

    def inner():
        _pass({"big": 3 << 20}, grown)  # past the arena's end: a buffer of the call's own
        assert not _inside(grown[0]["big"], small)
        assert _programs._programs().get("marker") == "never", "the arena was replaced during a pass"
    _pass({"a": 1 << 12}, seen, inner=inner)
    assert _scratch._local.arena.buf.nbytes >= (3 << 20) + (1 << 12)
    assert "marker" not in _programs._programs()  # the programs held the old arena
    _pass({"a": 1 << 12}, seen, inner=lambda: _pass({"big": 3 << 20}, grown))
    assert _inside(grown[1]["big"], _arena_span())


def test_outside_a_pass_and_persistent_slots_keep_buffers_of_their_own():
    a = scratch("loose", 256, np.uint8)
    a[...] = 7

    @scoped
    def run():
        p = scratch("patch", 512, np.uint8)  # (its contents are read again by a later call)
        p[...] = 9
        scratch("other", 4096, np.uint8)[...] = 0
        return p
    p1 = run()
    p2 = run()
    assert p1.ctypes.data == p2.ctypes.data and not _inside(p1, _arena_span())
    assert (scratch("loose", 256, np.uint8) == 7).all()
    assert (scratch("patch", 512, np.uint8) == 9).all()


def test_release_frees_the_arena():
    _pass({"a": 1 << 20}, [])
    assert sum(b.nbytes for b in _scratch.buffers()) >= 1 << 20
    _scratch.release()
    assert _scratch.buffers() == []


def test_threads_have_arenas_of_their_own():
    spans = {}
    alive = threading.Barrier(2)  # both arenas exist at once (a finished thread's memory may be reused)

    def work(i):
        seen = []
        for _ in range(2):
            _pass({"a": 1 << 16}, seen)
        spans[i] = _span(seen[1]["a"])
        alive.wait(timeout=60)
    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert spans[0] != spans[1]


@pytest.mark.skipif(not _regions.enabled(), reason="native regions are off (no libgomp or no disk cache)")
def test_a_recording_during_which_the_arena_grows_is_taken_again():
    """The arena replaced while a pass records (the pass outgrew it): the program would hold the
    call's own buffers, so it is not kept; the next call records again (and is replayed after)."""
    sizes = iter([1 << 12, 4 << 20, 4 << 20, 4 << 20, 4 << 20])

    @scoped
    def copy(x):
        out = torch.empty_like(x)
        src = scratch("copy", next(sizes), np.uint8)[:x.numel() * 4].view(np.float32).reshape(x.shape)
        C.parallel_for(_direct.crop_planes, x.shape[0] * x.shape[1], x.numpy(), x.shape[3], src, work=1 << 20)
        C.parallel_for(_direct.crop_planes, x.shape[0] * x.shape[1], src, x.shape[3], out.numpy(), work=1 << 20)
        return out

    def call():
        x = torch.randn(2, 3, 1, 40)
        assert torch.equal(_programs.call(copy, "grow", (x,), (), lambda like, shape, n: like.new_empty(shape)), x)
    call()  # plain
    call()  # recorded, but the arena grew: not kept
    assert _programs._programs()["grow"] == (2, 3, 1, 40)
    call()  # recorded (and validated: its fifth size)
    assert type(_programs._programs()["grow"]) is _programs.Program
