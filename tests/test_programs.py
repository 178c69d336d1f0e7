"""Recorded passes (fastconv._programs): replays follow new data, checks, validation, invalidation."""
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

from fastconv import _programs, _regions
from fastconv.cpu import _direct, _scratch, conv_plan
from fastconv.cpu import conv2d as C
from fastconv.cpu._scratch import scratch
from fastconv.cpu.conv_plan import forced

pytestmark = pytest.mark.skipif(not _regions.enabled(), reason="native regions are off (no libgomp or no disk cache)")


def _passes(x, w, b, g, pad):
    """Forward, input and weight gradients through the backend (the input gradient with a bias of
    its own: a transposed convolution's)."""
    p4 = (pad, pad, pad, pad)
    y = C.conv2d_forward(x, w, b, (1, 1), p4, (1, 1), 1, tuple(g.shape[2:]))
    dx = C.conv2d_backward_input(g, w, b[:x.shape[1]], (1, 1), p4, (1, 1), 1, tuple(x.shape[2:]))
    dw = C.conv2d_backward_weight(x, g, (1, 1), p4, (1, 1), 1, tuple(w.shape[2:]))
    return y, dx, dw


def _reference(x, w, b, g, pad):
    y = TF.conv2d(x, w, b, padding=pad)
    dx, dw, _ = torch.ops.aten.convolution_backward(g, x, w, None, [1, 1], [pad, pad], [1, 1], False, [0, 0], 1,
                                                    [True, True, False])
    return y, dx + b[:x.shape[1]].view(1, -1, 1, 1), dw


@pytest.mark.parametrize("name, replayed", [(None, 3), ("direct/rows", 3), ("direct/flat", 3), ("direct/gather", 3),
                                            ("direct/lanes", 2), ("winograd/lanes", 3)])
def test_replays_follow_new_data(name, replayed, monkeypatch):
    """Every call gets fresh inputs (and bias): the recorded program (from the second call, validated
    on random data) patches them in, and from the third call on runs with no region set up in Python.
    (The lane layout's weight gradient packs the output gradient through a Python closure: not replayed.)"""
    n, c, h, o = 3, 8, 12, 16
    b = torch.randn(o, dtype=torch.float64)
    replays = []
    with forced(name):
        for it in range(4):
            x = torch.randn(n, c, h, h, dtype=torch.float64)
            w = torch.randn(o, c, 3, 3, dtype=torch.float64)
            g = torch.randn(n, o, h, h, dtype=torch.float64)
            b = b + 1
            if it == 3:
                run = _programs.Program.run
                monkeypatch.setattr(_programs.Program, "run", lambda self, *a: replays.append(1) or run(self, *a))
            got = _passes(x, w, b, g, 1)
            for a, e in zip(got, _reference(x, w, b, g, 1)):
                torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-10)
    assert len(replays) == replayed
    assert sum(type(p) is _programs.Program for p in _programs._programs().values()) == replayed


def test_a_check_answered_otherwise_drops_the_program():
    """A replayed Winograd forward checks its result; a NaN input makes it non-finite there, the
    normal path recomputes directly (NaN where torch has it) and the program is recorded anew."""
    x = torch.randn(4, 16, 12, 12)
    w = torch.randn(32, 16, 3, 3)
    key_of = lambda: [k for k, p in _programs._programs().items() if k[0] == "forward"]  # noqa: E731
    with forced("winograd/lanes"):
        for _ in range(3):
            C.conv2d_forward(x, w, None, (1, 1), (1, 1, 1, 1), (1, 1), 1, (12, 12))
        (key,) = key_of()
        assert type(_programs._programs()[key]) is _programs.Program
        bad = x.clone()
        bad[1, 3, 5, 5] = float("nan")
        got = C.conv2d_forward(bad, w, None, (1, 1), (1, 1, 1, 1), (1, 1), 1, (12, 12))
        assert key not in _programs._programs()
    ref = TF.conv2d(bad, w, padding=1)
    assert torch.equal(torch.isnan(got), torch.isnan(ref))
    torch.testing.assert_close(got[~torch.isnan(ref)], ref[~torch.isnan(ref)], rtol=1e-4, atol=1e-4)


def _copy_pass(x: torch.Tensor, extra: str) -> torch.Tensor:
    """A toy pass: ``x`` (N, O, 1, W) copied by a kernel into a new tensor; ``extra`` adds work
    outside the regions that a replay would miss."""
    out = torch.empty(x.shape[0], x.shape[1], 1, x.shape[3], dtype=x.dtype)
    src = x.numpy()
    if extra == "scratch":  # a constant written into scratch by Python, then read by the kernel
        src = scratch("test_programs", x.shape, np.float32)
        src[...] = 1.0
    C.parallel_for(_direct.crop_planes, x.shape[0] * x.shape[1], src, x.shape[3], out.numpy(), work=1 << 20)
    if extra == "torch":
        out += 1
    return out


@pytest.mark.parametrize("extra", ["", "torch", "scratch"])
def test_validation_rejects_work_outside_the_regions(extra):
    """A pass whose result depends on work outside its regions -- a torch op on the output, scratch
    written by Python (which another pass may overwrite between two replays) -- fails the
    validation and keeps the normal path; a pure one is replayed."""
    key = ("test", extra)
    for _ in range(4):
        x = torch.randn(2, 3, 1, 40)
        got = _programs.call(_copy_pass, key, (x,), (extra,), lambda like, shape, n: like.new_empty(shape))
        want = torch.ones_like(x) if extra == "scratch" else x + (1 if extra == "torch" else 0)
        assert torch.equal(got, want)
    entry = _programs._programs()[key]
    assert (type(entry) is _programs.Program) == (extra == "")


def test_a_replaced_scratch_buffer_drops_the_programs():
    x = torch.randn(2, 3, 1, 40)
    for _ in range(2):
        _programs.call(_copy_pass, "k", (x,), ("",), lambda like, shape, n: like.new_empty(shape))
    assert type(_programs._programs()["k"]) is _programs.Program
    held = sum(b.nbytes for b in _scratch.buffers())
    scratch("test_programs_grow", held + (1 << 20), np.uint8)
    assert _programs._programs() == {}


def test_programs_are_per_thread():
    """Two threads run the same layer at once, each on its own data (and its own scratch and programs)."""
    w = torch.randn(16, 8, 3, 3)
    errors = []

    def work(seed):
        gen = torch.Generator().manual_seed(seed)
        try:
            for _ in range(5):
                x = torch.randn(4, 8, 16, 16, generator=gen)
                y = C.conv2d_forward(x, w, None, (1, 1), (1, 1, 1, 1), (1, 1), 1, (16, 16))
                torch.testing.assert_close(y, TF.conv2d(x, w, padding=1), rtol=1e-4, atol=1e-4)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
    threads = [threading.Thread(target=work, args=(s,)) for s in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_replan_and_the_environment_turn_programs_off():
    """Recalibrated rules (:func:`conv_plan.replan`) drop the recorded passes; ``FASTCONV_PROGRAMS=0``
    records none."""
    x = torch.randn(2, 3, 1, 40)
    for _ in range(2):
        _programs.call(_copy_pass, "k", (x,), ("",), lambda like, shape, n: like.new_empty(shape))
    assert _programs._programs()
    conv_plan.replan()
    assert _programs._programs() == {}
    code = ("import torch; from fastconv import _programs; from fastconv.cpu import conv2d as C\n"
            "x, w = torch.randn(4, 8, 16, 16), torch.randn(16, 8, 3, 3)\n"
            "ys = [C.conv2d_forward(x, w, None, (1, 1), (1, 1, 1, 1), (1, 1), 1, (16, 16)) for _ in range(4)]\n"
            "assert all(torch.equal(y, ys[0]) for y in ys)\n"
            "print(_programs.ENABLED, len(_programs._programs()))")
    env = dict(os.environ, FASTCONV_PROGRAMS="0")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "0"]


def test_large_passes_are_not_recorded(monkeypatch):
    """A pass whose validation would allocate more than MAX_VALIDATION_BYTES keeps the normal path."""
    x = torch.randn(2, 3, 1, 40)
    monkeypatch.setattr(_programs, "MAX_VALIDATION_BYTES", 2 * x.numel() * 4 - 1)
    for _ in range(3):
        got = _programs.call(_copy_pass, "big", (x,), ("",), lambda like, shape, n: like.new_empty(shape))
        assert torch.equal(got, x)
    assert _programs._programs()["big"] is _programs._NEVER
    monkeypatch.setattr(_programs, "MAX_VALIDATION_BYTES", 2 * x.numel() * 4)
    for _ in range(3):
        _programs.call(_copy_pass, "small", (x,), ("",), lambda like, shape, n: like.new_empty(shape))
    assert type(_programs._programs()["small"]) is _programs.Program


def test_recording_leaves_the_random_stream_alone():
    """The validation's random inputs come from a generator of its own: seeded runs draw the same
    numbers with or without fastconv's recordings."""
    x, w = torch.randn(4, 8, 16, 16), torch.randn(16, 8, 3, 3)
    torch.manual_seed(7)
    for _ in range(3):
        C.conv2d_forward(x, w, None, (1, 1), (1, 1, 1, 1), (1, 1), 1, (16, 16))
    drawn = torch.rand(4)
    assert any(type(p) is _programs.Program for p in _programs._programs().values())
    torch.manual_seed(7)
    assert torch.equal(torch.rand(4), drawn)


def test_the_validation_leaves_nothing_in_the_output_pool():
    """The validation's output is a temporary on pages of its own: the pool (which keeps its
    storages for the process's life) holds the outputs the caller got, and no more."""
    from fastconv.cpu import _outputs
    x = torch.randn(4, 8, 61, 67)  # outputs of 523,136 bytes: pooled, a size no other test uses
    w = torch.randn(8, 8, 3, 3)
    held = _outputs.held_bytes()
    def forward():
        return C.conv2d_forward(x, w, None, (1, 1), (1, 1, 1, 1), (1, 1), 1, (61, 67))
    outs = [forward(), forward()]  # plain, recorded
    assert [type(p) for p in _programs._programs().values()] == [_programs.Program]
    assert _outputs.held_bytes() - held == 2 * outs[0].untyped_storage().nbytes()
    outs.append(forward())  # replayed
    for y in outs:
        torch.testing.assert_close(y, TF.conv2d(x, w, padding=1), rtol=1e-4, atol=1e-4)
