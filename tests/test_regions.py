"""Native parallel regions (:mod:`fastconv._regions`): a Numba kernel's ranges on torch's OpenMP
team from a compiled entry point -- the same results as one call on the calling thread, the
Python path for whatever it cannot take, and nothing kept alive per call."""
import numba
import numpy as np
import pytest
from numba import njit

from fastconv import _regions, _threads

pytestmark = pytest.mark.skipif(not _regions.enabled(),
                                reason="native regions need torch's GNU OpenMP (libgomp) and a writable Numba cache")


@njit(nogil=True)
def _affine(out, x, idx, scale, shift, add, t0, t1):
    """out[t] = x[t // w, t % w] * scale + shift (+ idx[t] when ``add``) for t in [t0, t1)."""
    w = x.shape[1]
    for t in range(t0, t1):
        v = x[t // w, t % w] * scale + shift
        out[t] = v + idx[t] if add else v


def _args(dtype, n=1001):
    x = np.random.default_rng(0).standard_normal((n // 7 + 1, 7)).astype(dtype)
    return np.zeros(n, dtype=dtype), x, np.arange(n, dtype=np.int64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("chunks", [2, 3, 7])
def test_native_region_matches_one_call(dtype, chunks):
    """Every argument kind (arrays of 1 and 2 dimensions and three dtypes, int, float, bool); uneven ranges."""
    out, x, idx = _args(dtype)
    want = out.copy()
    _affine(want, x, idx, 1.5, -2, True, 0, out.size)
    assert _regions.run(_affine, out.size, chunks, (out, x, idx, 1.5, -2, True))
    np.testing.assert_array_equal(out, want)
    assert _regions.run(_affine, out.size, chunks, (out, x, idx, 0.25, 3, False))
    _affine(want, x, idx, 0.25, 3, False, 0, out.size)
    np.testing.assert_array_equal(out, want)


def test_entry_point_is_built_once_per_signature(monkeypatch):
    out, x, idx = _args(np.float64)
    _regions.run(_affine, out.size, 2, (out, x, idx, 1.0, 0, False))
    built = []
    monkeypatch.setattr(_regions, "_build", lambda *a: built.append(a))
    assert _regions.run(_affine, out.size, 2, (out, x, idx, 2.0, 1, True))
    assert built == []


def test_python_path_takes_what_native_cannot():
    """Strided arrays, NumPy float32 scalars, closures: run() declines; parallel_for still computes."""
    out, x, idx = _args(np.float64)
    entries = len(_regions._entries)
    assert not _regions.run(_affine, out.size, 2, (out, x[:, ::-1], idx, 1.0, 0, False))
    assert not _regions.run(_affine, out.size, 2, (out, x, idx, np.float32(1), 0, False))
    assert not _regions.run(lambda *a: _affine(out, x, idx, 1.0, 0, False, *a), out.size, 2, ())
    assert len(_regions._entries) <= entries + 1  # closures are never cached (they would keep their tensors)
    want = np.empty_like(out)
    _affine(want, x[:, ::-1], idx, 1.0, 0, False, 0, out.size)
    _threads.parallel_for(_affine, out.size, out, x[:, ::-1], idx, 1.0, 0, False, work=1 << 30)
    np.testing.assert_array_equal(out, want)


def test_a_fill_that_fails_leaves_the_kernel_to_the_python_path(monkeypatch):
    """The compiled fill writes a call's arguments into the slots; if it cannot run, run() declines
    (and remembers it), and parallel_for computes the kernel on the Python path."""
    out, x, idx = _args(np.float32)
    _regions.run(_affine, out.size, 2, (out, x, idx, 1.0, 0, False))
    key = next(k for k in _regions._entries if k[0] is _affine and k[1][0] == "af1")
    address, nslots, fill = _regions._entries[key]

    def broken(*a):
        raise TypeError("no matching definition")
    monkeypatch.setitem(_regions._entries, key, (address, nslots, broken))
    assert not _regions.run(_affine, out.size, 2, (out, x, idx, 1.0, 0, False))
    assert _regions._entries[key] is None
    want = np.empty_like(out)
    _affine(want, x, idx, 0.5, 2, True, 0, out.size)
    _threads.parallel_for(_affine, out.size, out, x, idx, 0.5, 2, True, work=1 << 30)
    np.testing.assert_array_equal(out, want)


def test_bounds_checking_keeps_the_python_path(monkeypatch):
    """A cfunc cannot raise the IndexError that NUMBA_BOUNDSCHECK=1 turns an out-of-range index into."""
    out, x, idx = _args(np.float64)
    monkeypatch.setattr(numba.config, "BOUNDSCHECK", True)
    assert not _regions.run(_affine, out.size, 2, (out, x, idx, 1.0, 0, False))


def test_parallel_for_runs_kernels_natively(monkeypatch):
    calls = []
    real = _regions.run
    monkeypatch.setattr(_regions, "run", lambda *a: calls.append(real(*a)) or calls[-1])
    out, x, idx = _args(np.float32)
    _threads.parallel_for(_affine, out.size, out, x, idx, 1.0, 0, False, work=1 << 30)
    if _threads.num_threads() > 1:
        assert calls == [True]
    want = np.empty_like(out)
    _affine(want, x, idx, 1.0, 0, False, 0, out.size)
    np.testing.assert_array_equal(out, want)
