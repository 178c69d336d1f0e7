"""Property-based fuzzing of the NumPy image API against SciPy (hypothesis).

* ``signal.convolve2d``/``correlate2d`` equal ``scipy.signal``'s over all modes, boundaries
  (and aliases), fill values and dtypes -- ints, floats, complex, bool/float16 (errors) --
  on odd shapes, empty arrays, kernels larger than the image and non-contiguous views:
  the same values (integers exactly, floats within summation-order rounding, NaN/inf
  exactly where SciPy has them) and dtype, or the same exception type and message.
* ``filters.filter2d`` with each method forced equals ``scipy.signal.convolve2d`` per channel
  and, for odd kernels, ``scipy.ndimage.convolve``; the FFT within its stated error bound
  (:func:`fastconv.image.plan.fft_error_bound`) and with SciPy's non-finite pattern.

Each property runs twice: under the derandomized, bounded "ci" profile (tests/conftest.py)
in the default run, and under the "slow" profile (20 times as many examples) with
``pytest -m slow``.
"""
from __future__ import annotations

import warnings

import numpy as np
import scipy.ndimage as ndi
import scipy.signal as ss
from hypothesis import assume
from hypothesis import strategies as st

from fastconv import filters, signal
from fastconv.image import plan
from helpers import fuzz_tests

SIGNAL_DTYPES = ["int8", "uint8", "int16", "int32", "int64", "uint64", "float32", "float64", "complex64",
                 "complex128", "bool", "float16", "longdouble"]
MODES = ["full", "same", "valid"]
BOUNDARIES = ["fill", "pad", "wrap", "circular", "symm", "symmetric"]
FILLS = [0, 1, -3, 2.5, 300, np.nan, np.inf, 1 + 2j, np.float32(0.25), np.int64(-7)]
ND_MODE = {"fill": "constant", "wrap": "wrap", "symm": "reflect"}


def _values(data, shape, dtype: np.dtype, nonfinite: bool) -> np.ndarray:
    """An array of ``shape`` and ``dtype`` with small integers, floats of mixed scale and, for real
    floats when ``nonfinite``, a few NaN and infinities."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1), label="seed"))
    n = int(np.prod(shape))
    if dtype.kind == "b":
        return rng.integers(0, 2, shape).astype(bool)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        wide = data.draw(st.booleans(), label="wide ints")  # wrap-around of the output width
        lo, hi = (info.min, info.max) if wide else (max(info.min, -9), min(info.max, 9))
        return rng.integers(lo, hi, shape, endpoint=True, dtype=dtype)
    scale = 10.0 ** data.draw(st.integers(-3, 3), label="scale")
    a = rng.standard_normal(shape) * scale
    if dtype.kind == "c":
        a = a + 1j * rng.standard_normal(shape) * scale
    a = a.astype(dtype)
    if nonfinite and dtype.kind == "f" and n and data.draw(st.booleans(), label="non-finite"):
        flat = a.reshape(-1)
        for v in (np.nan, np.inf, -np.inf)[:data.draw(st.integers(1, 3), label="kinds")]:
            flat[rng.integers(0, n)] = v
    return a


def _layout(data, a: np.ndarray) -> np.ndarray:
    """``a`` itself or the same values in a non-contiguous / Fortran / reversed view."""
    kind = data.draw(st.sampled_from(["c", "fortran", "transposed", "strided", "reversed"]), label="layout")
    if kind == "fortran":
        return np.asfortranarray(a)
    if kind == "transposed":
        return np.ascontiguousarray(a.T).T
    if kind == "strided":
        big = np.zeros((a.shape[0] * 2, a.shape[1] * 3), dtype=a.dtype)
        big[::2, ::3] = a
        return big[::2, ::3]
    if kind == "reversed":
        return np.ascontiguousarray(a[::-1, ::-1])[::-1, ::-1]
    return a


def _call(fn, *args, **kw):
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            return fn(*args, **kw)
    except Exception as exc:  # noqa: BLE001 - the exception is compared
        return exc


def _eps(dt: np.dtype) -> float:
    if dt.kind in "fc":
        return float(np.finfo(dt).eps)
    return 0.0


def assert_like(got, want, tol: float, label: str = "") -> None:
    """Same dtype and shape; NaN/+inf/-inf where ``want`` has them (per component for real results,
    finiteness for complex); finite values within ``tol`` (exact for integers)."""
    assert got.dtype == want.dtype, (label, got.dtype, want.dtype)
    assert got.shape == want.shape, (label, got.shape, want.shape)
    if want.dtype.kind in "iub":
        np.testing.assert_array_equal(got, want, err_msg=label)
        return
    if want.dtype.kind == "c":
        np.testing.assert_array_equal(np.isfinite(got), np.isfinite(want), err_msg=label)
    else:
        for test in (np.isnan, np.isposinf, np.isneginf):
            np.testing.assert_array_equal(test(got), test(want), err_msg=f"{label} {test.__name__}")
    fin = np.isfinite(want)
    np.testing.assert_allclose(got[fin].astype(np.clongdouble if want.dtype.kind == "c" else np.longdouble),
                               want[fin], rtol=0, atol=tol, err_msg=label)


def _scale(a: np.ndarray, k: np.ndarray, fill) -> float:
    """max |x| (image and fill) times sum |k| over finite values: the size of any output's sum."""
    a, k = (x.astype(np.complex128 if x.dtype.kind == "c" else np.float64) for x in (a, k))  # no int overflow
    fa = np.abs(a[np.isfinite(a)]).max(initial=0.0) if a.size else 0.0
    ff = abs(complex(fill)) if np.isfinite(complex(fill)) else 0.0
    fk = np.abs(k[np.isfinite(k)]).sum() if k.size else 0.0
    return float(max(fa, ff) * fk)


def check_signal(data):
    """signal.convolve2d / correlate2d equal scipy.signal's: values and dtype, or the same error."""
    func = data.draw(st.sampled_from(["convolve2d", "correlate2d"]), label="func")
    dt1, dt2 = (np.dtype(data.draw(st.sampled_from(SIGNAL_DTYPES), label=f"dtype{i}")) for i in (1, 2))
    s1 = (data.draw(st.integers(0, 9), label="M"), data.draw(st.integers(0, 9), label="N"))
    s2 = (data.draw(st.integers(0, 6), label="P"), data.draw(st.integers(0, 6), label="Q"))
    a = _layout(data, _values(data, s1, dt1, True))
    k = _layout(data, _values(data, s2, dt2, True))
    mode = data.draw(st.sampled_from(MODES), label="mode")
    boundary = data.draw(st.sampled_from(BOUNDARIES), label="boundary")
    fill = data.draw(st.sampled_from(FILLS), label="fill")
    # SciPy dies of SIGFPE (a division by zero in its C loop) on an empty image with a wrap or
    # symm boundary in 'full' mode; fastconv returns zeros there, as for every empty input
    assume(not (a.size == 0 and mode == "full" and boundary not in ("fill", "pad")
                and a.shape[0] + k.shape[0] > 1 and a.shape[1] + k.shape[1] > 1))
    want = _call(getattr(ss, func), a, k, mode, boundary, fill)
    got = _call(getattr(signal, func), a, k, mode, boundary, fill)
    label = f"{func} {a.shape}{dt1} {k.shape}{dt2} {mode} {boundary} {fill!r}"
    if isinstance(want, Exception):
        assert type(got) is type(want), (label, got, want)
        assert str(got) == str(want), (label, got, want)
        return
    assert not isinstance(got, Exception), (label, got)
    eps = max(_eps(want.dtype), 2 * _eps(np.dtype(np.longdouble)) if want.dtype == np.longdouble else 0)
    terms = (k.shape[0] * k.shape[1] + 1) if k.size else 1
    assert_like(got, want, 4 * terms * eps * _scale(a, k, fill), label)


test_signal_matches_scipy, test_signal_matches_scipy_slow = fuzz_tests(check_signal)


def check_filter2d(data):
    """filters.filter2d with a forced method equals scipy.signal.convolve2d per channel (and
    scipy.ndimage.convolve for odd kernels); the FFT within its stated bound."""
    method = data.draw(st.sampled_from(["direct", "separable", "fft"]), label="method")
    dt = np.dtype(data.draw(st.sampled_from(["float32", "float64", "complex128"]), label="dtype"))
    h, w = data.draw(st.integers(1, 12), label="H"), data.draw(st.integers(1, 12), label="W")
    channels = data.draw(st.sampled_from([None, 0, 1, 3]), label="C")
    p, q = data.draw(st.integers(1, 7), label="P"), data.draw(st.integers(1, 7), label="Q")
    shape = (h, w) if channels is None else (h, w, channels)
    image = _values(data, shape, dt, True)
    if method == "separable":
        u, v = _values(data, (p, 1), dt, False), _values(data, (1, q), dt, False)
        kernel = u * v
        if filters.separable_factors(kernel) is None:  # a zero or tiny factor: not exactly rank 1
            method = "direct"
    else:
        kernel = _values(data, (p, q), dt, False)
    mode = data.draw(st.sampled_from(MODES if p <= h and q <= w else ["full", "same"]), label="mode")
    boundary = data.draw(st.sampled_from(["fill", "wrap", "symm"]), label="boundary")
    fill = data.draw(st.sampled_from([0, 1.5, -2, np.nan]), label="fill")
    label = f"{method} {shape}{dt} {kernel.shape} {mode} {boundary} {fill!r}"
    got = _call(filters.filter2d, image, kernel, mode, boundary, fill, method)
    assert not isinstance(got, Exception), (label, got)
    planes = [image] if image.ndim == 2 else [image[:, :, c] for c in range(image.shape[2])]
    with np.errstate(all="ignore"):
        wants = [ss.convolve2d(c, kernel, mode, boundary, fill) for c in planes]
    oh, ow = ss.convolve2d(np.ones((h, w)), np.ones((p, q)), mode).shape
    want = wants[0] if image.ndim == 2 else (np.stack(wants, axis=2) if wants else np.zeros((oh, ow, 0), dt))
    eps = _eps(dt)
    scale = _scale(image, kernel, fill if boundary == "fill" else 0)
    tol = 4 * (p * q + 1) * eps * scale
    if method == "fft":
        n = int(np.prod(plan.fft_shape(oh, ow, p, q)))
        tol += plan.fft_error_bound(scale / max(np.abs(kernel).sum(), 1e-300), np.abs(kernel).sum(), n, dt)
    assert_like(got, want, tol, label)
    if p % 2 and q % 2 and mode == "same" and p <= h and q <= w and image.ndim == 2 and dt.kind == "f":
        cval = 0.0 if np.isnan(fill) else float(fill)  # ndimage: only finite constants compared
        if boundary != "fill" or not np.isnan(fill):
            nd = ndi.convolve(image.astype(np.float64), kernel.astype(np.float64), mode=ND_MODE[boundary], cval=cval)
            assert_like(got.astype(np.float64), nd, tol + 8 * (p * q + 1) * np.finfo(np.float64).eps * scale,
                        "ndimage " + label)


test_filter2d_matches_scipy, test_filter2d_matches_scipy_slow = fuzz_tests(check_filter2d)
