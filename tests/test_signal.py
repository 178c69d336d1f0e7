"""fastconv.signal.convolve2d / correlate2d against scipy.signal, including SciPy's error cases."""
from __future__ import annotations

import itertools
import zlib

import numpy as np
import pytest
import scipy.signal as ss

from fastconv import signal as fs
from fastconv.image import direct, plan

MODES = ("full", "same", "valid")
BOUNDARIES = ("fill", "wrap", "symm")
FUNCS = ("convolve2d", "correlate2d")
# (image shape, kernel shape): odd/even kernels, kernel larger than the image, 1-wide, in2 larger (valid swap)
SHAPES = [((7, 9), (3, 3)), ((6, 5), (2, 4)), ((3, 4), (8, 9)), ((5, 6), (5, 6)), ((1, 7), (1, 3)),
          ((4, 3), (6, 2)), ((2, 2), (5, 5))]


def _rand(rng, shape, dtype):
    dt = np.dtype(dtype)
    if dt.kind == "c":
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dt)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        return rng.integers(max(info.min, -50), min(info.max, 50), size=shape, endpoint=True).astype(dt)
    return rng.standard_normal(shape).astype(dt)


def _call(mod, func, *args, **kw):
    try:
        return getattr(mod, func)(*args, **kw)
    except Exception as exc:  # noqa: BLE001 - the exception itself is compared
        return exc


def _assert_same_result(got, want, a, k):
    if isinstance(want, Exception):
        assert type(got) is type(want), (got, want)
        assert str(got) == str(want)
        return
    assert not isinstance(got, Exception), got
    assert got.shape == want.shape
    assert got.dtype == want.dtype
    if want.dtype.kind in "iu":
        np.testing.assert_array_equal(got, want)
    else:
        single = want.dtype in (np.float32, np.complex64)
        scale = float(np.abs(a).max(initial=0) * np.abs(k).sum()) + 1.0
        np.testing.assert_allclose(got, want, rtol=1e-5 if single else 1e-12,
                                   atol=(5e-6 if single else 1e-13) * scale)


@pytest.mark.parametrize("dtypes", [("float64", "float64"), ("float32", "float32"), ("complex128", "complex128"),
                                    ("int64", "int64"), ("uint8", "int8"), ("int16", "float32"),
                                    ("float32", "complex64"), ("int32", "complex128")])
@pytest.mark.parametrize("func", FUNCS)
def test_matches_scipy_grid(dtypes, func):
    rng = np.random.default_rng(zlib.crc32(repr(dtypes).encode()))
    for (ashape, kshape), mode, boundary in itertools.product(SHAPES, MODES, BOUNDARIES):
        a = _rand(rng, ashape, dtypes[0])
        k = _rand(rng, kshape, dtypes[1])
        for fill in (0, 2):
            want = _call(ss, func, a, k, mode, boundary, fill)
            got = _call(fs, func, a, k, mode, boundary, fill)
            _assert_same_result(got, want, a, k)


def test_hand_computed_values():
    a = [[1, 2], [3, 4]]
    np.testing.assert_array_equal(fs.convolve2d(a, [[1, 1], [1, 1]]), [[1, 3, 2], [4, 10, 6], [3, 7, 4]])
    # convolution flips the kernel, correlation does not
    np.testing.assert_array_equal(fs.convolve2d([[0, 0, 0], [0, 1, 0], [0, 0, 0]], [[1, 2], [3, 4]], "same"),
                                  [[0, 0, 0], [0, 1, 2], [0, 3, 4]])
    np.testing.assert_array_equal(fs.correlate2d([[0, 0, 0], [0, 1, 0], [0, 0, 0]], [[1, 2], [3, 4]], "same"),
                                  [[4, 3, 0], [2, 1, 0], [0, 0, 0]])
    # SciPy's documented complex behaviour: correlate2d conjugates in2
    assert fs.correlate2d([[1]], [[2j]])[0, 0] == -2j
    assert fs.correlate2d([[2j]], [[3j]])[0, 0] == 6
    assert fs.correlate2d([[3j]], [[4]])[0, 0] == 12j
    # wrap / symm with a 1x1 image: every extended sample is that pixel
    np.testing.assert_array_equal(fs.convolve2d([[2.0]], np.ones((3, 3)), "same", "wrap"), [[18.0]])
    np.testing.assert_array_equal(fs.convolve2d([[2.0]], np.ones((3, 3)), "full", "symm"), np.full((3, 3), 18.0))
    # fill value enters 'full' mode outputs
    assert fs.convolve2d([[1.0]], [[1.0, 1.0]], fillvalue=5)[0, 0] == 6.0


def test_1d_consistency_with_numpy():
    a, b = np.arange(5), np.array([3.2, 1.4, 3])
    for mode in MODES:
        np.testing.assert_allclose(fs.correlate2d([a], [b], mode)[0], np.correlate(a, b, mode), rtol=1e-14)
        np.testing.assert_allclose(fs.convolve2d([a], [b], mode)[0], np.convolve(a, b, mode), rtol=1e-14)
    # in2 larger than in1 in 'valid' mode: SciPy swaps the inputs (and correlation flips back)
    np.testing.assert_allclose(fs.correlate2d([b], [a], "valid")[0], np.correlate(b, a, "valid"), rtol=1e-14)
    np.testing.assert_allclose(fs.convolve2d([b], [a], "valid")[0], np.convolve(b, a, "valid"), rtol=1e-14)


@pytest.mark.parametrize("func", FUNCS)
def test_large_problem_uses_threads_and_matches(func, monkeypatch):
    rng = np.random.default_rng(1)
    monkeypatch.setattr(plan, "PARALLEL_MIN_MACS", 1_000_000)  # the row-split, multi-threaded path
    monkeypatch.setattr(plan, "num_threads", lambda: 3)  # uneven row ranges, even on one core
    for dtype in (np.float64, np.float32):
        a = rng.standard_normal((150, 170)).astype(dtype)
        k = rng.standard_normal((13, 14)).astype(dtype)
        assert a.size * k.size >= plan.PARALLEL_MIN_MACS
        for boundary in BOUNDARIES:
            _assert_same_result(getattr(fs, func)(a, k, "same", boundary),
                                getattr(ss, func)(a, k, "same", boundary), a, k)


def test_integer_wraparound_matches_scipy():
    a = np.full((4, 5), 100, np.int8)
    k = np.full((3, 2), 100, np.int8)
    for func in FUNCS:
        want = getattr(ss, func)(a, k)
        got = getattr(fs, func)(a, k)
        assert got.dtype == np.int8
        np.testing.assert_array_equal(got, want)
    big = np.full((3, 3), 2 ** 62, np.int64)
    np.testing.assert_array_equal(fs.convolve2d(big, [[3]]), ss.convolve2d(big, [[3]]))
    u = np.array([[2 ** 63 + 5]], np.uint64)
    np.testing.assert_array_equal(fs.convolve2d(u, np.array([[3]], np.uint64)),
                                  ss.convolve2d(u, np.array([[3]], np.uint64)))


def test_long_double_fallback():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((6, 7)).astype(np.longdouble)
    k = rng.standard_normal((3, 2))
    for func, mode, boundary in itertools.product(FUNCS, MODES, BOUNDARIES):
        got = getattr(fs, func)(a, k, mode, boundary, 1.5)
        want = getattr(ss, func)(a, k, mode, boundary, 1.5)
        assert got.dtype == want.dtype == np.longdouble
        np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=1e-12, atol=1e-12)
    c = (a + 1j).astype(np.clongdouble)
    np.testing.assert_allclose(fs.correlate2d(c, k, "same", "wrap").astype(np.complex128),
                               ss.correlate2d(c, k, "same", "wrap").astype(np.complex128), rtol=1e-12)


def test_layouts_and_array_likes():
    rng = np.random.default_rng(3)
    base = rng.standard_normal((20, 30))
    views = [base[::2, ::3], np.asfortranarray(base), base.T, base[5:12, 7:19]]
    k = rng.standard_normal((4, 3))[::-1]
    for a in views:
        np.testing.assert_allclose(fs.convolve2d(a, k, "same", "symm"), ss.convolve2d(a, k, "same", "symm"),
                                   rtol=1e-12, atol=1e-12)
    lst = [[1, 2, 3], [4, 5, 6]]
    got = fs.correlate2d(lst, [[1, 0], [0, -1]])
    assert got.dtype == ss.correlate2d(lst, [[1, 0], [0, -1]]).dtype
    np.testing.assert_array_equal(got, ss.correlate2d(lst, [[1, 0], [0, -1]]))


def test_empty_inputs_match_scipy():
    for a, k, mode in [(np.ones((0, 3)), np.ones((2, 2)), "full"), (np.ones((3, 3)), np.ones((0, 2)), "full"),
                       (np.ones((3, 3)), np.ones((0, 2)), "same")]:
        got, want = fs.convolve2d(a, k, mode), ss.convolve2d(a, k, mode)
        assert got.shape == want.shape
        np.testing.assert_array_equal(got, want)


def test_nan_and_inf_propagate_like_scipy():
    a = np.arange(20.0).reshape(4, 5)
    a[1, 2] = np.nan
    a[3, 4] = np.inf
    k = np.ones((2, 2))
    for boundary in BOUNDARIES:
        np.testing.assert_array_equal(fs.convolve2d(a, k, "same", boundary), ss.convolve2d(a, k, "same", boundary))


ERROR_CASES = [
    ((3, 4), {}),
    (([3], [4]), {}),
    (([[[3]]], [[[4]]]), {}),
    ((np.ones((3, 3)), np.ones((2, 2)), "bad"), {}),
    ((np.ones((3, 3)), np.ones((2, 2)), "full", "bad"), {}),
    ((np.ones((3, 3)), np.ones((2, 2)), "same", "reflect"), {}),
    ((np.arange(1, 7).reshape(2, 3), np.arange(-6, 0).reshape(3, 2), "valid"), {}),
    ((np.arange(-6, 0).reshape(3, 2), np.arange(1, 7).reshape(2, 3), "valid"), {}),
    (([[1]], [[1, 2]]), {"fillvalue": 1j}),
    (([[1.0]], [[1, 2]]), {"fillvalue": 1 + 2j}),
    (([[1]], [[1, 2]]), {"fillvalue": [1, 2]}),
    (([[1]], [[1, 2]]), {"fillvalue": []}),
    ((np.ones((2, 2), np.int8), np.ones((2, 2), np.int8)), {"fillvalue": 300}),
    ((np.ones((2, 2), np.int8), np.ones((2, 2), np.int8)), {"fillvalue": np.nan}),
    ((np.ones((2, 2), bool), np.ones((2, 2), bool)), {}),
    ((np.ones((2, 2), np.float16), np.ones((2, 2), np.float16)), {}),
    ((np.ones((2, 2), object), np.ones((2, 2), object)), {}),
]


@pytest.mark.filterwarnings("ignore")  # SciPy warns (ComplexWarning, invalid cast) before raising
@pytest.mark.parametrize("func", FUNCS)
@pytest.mark.parametrize("args,kwargs", ERROR_CASES)
def test_error_cases_match_scipy(func, args, kwargs):
    want = _call(ss, func, *args, **kwargs)
    assert isinstance(want, ValueError), want  # the case list only holds SciPy errors
    got = _call(fs, func, *args, **kwargs)
    assert type(got) is ValueError
    assert str(got) == str(want)


FILL_VALUES = [1.5, "3", np.int64(300), np.float64(300), 300.0, -1, 255, 2 + 0j, np.complex128(2), 1 + 2j,
               np.array(2.0), np.array([3], np.int8), np.nan, None, "abc", [[5]], True, np.uint64(2 ** 63), 1e300]


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("fill", FILL_VALUES, ids=repr)
def test_fillvalue_conversion_matches_scipy(fill):
    for dtype in (np.int8, np.uint8, np.int64, np.uint64, np.float32, np.float64, np.complex64):
        a, k = np.ones((1, 2), dtype), np.ones((2, 2), dtype)
        want = _call(ss, "convolve2d", a, k, fillvalue=fill)
        got = _call(fs, "convolve2d", a, k, fillvalue=fill)
        if isinstance(want, Exception):
            assert type(got) is type(want) and str(got) == str(want)
        else:
            assert got.dtype == want.dtype
            np.testing.assert_array_equal(got, want)


def test_boundary_aliases():
    a, k = np.arange(12.0).reshape(3, 4), np.arange(6.0).reshape(2, 3)
    for alias, name in (("circular", "wrap"), ("symmetric", "symm"), ("pad", "fill")):
        np.testing.assert_array_equal(fs.convolve2d(a, k, "same", alias), fs.convolve2d(a, k, "same", name))
        np.testing.assert_allclose(fs.convolve2d(a, k, "same", alias), ss.convolve2d(a, k, "same", alias),
                                   rtol=1e-14)


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int64, np.complex128])
def test_flat_and_row_correlation_kernels_agree(dtype):
    """Every inner kernel (flat strips, even/odd row pairs, the fused 3x3) on every tap-block
    remainder (P, Q mod 3), odd heights and strips that end mid-image."""
    rng = np.random.default_rng(5)
    for (h, w) in [(1, 1), (5, 9), (33, 40), (700, 7), (9, 2100)]:
        for (p, q) in [(1, 1), (2, 3), (3, 2), (3, 3), (4, 5), (5, 4), (6, 7), (7, 6), (8, 8)]:
            ext = (rng.standard_normal((h + p - 1, w + q - 1)) * 8).astype(dtype)
            k = (rng.standard_normal((p, q)) * 8).astype(dtype)
            if np.dtype(dtype).kind == "c":
                ext = ext + 1j * rng.standard_normal(ext.shape)
                k = k - 2j * rng.standard_normal(k.shape)
            want = sum(ext[i:i + h, j:j + w] * k[i, j] for i in range(p) for j in range(q))
            kernels = [direct.correlate_flat, direct.correlate_pairs]
            if (p, q) == (3, 3):
                kernels.append(direct.correlate33)
            for kern in kernels:
                out = np.full((h, w), np.nan if dtype != np.int64 else -1).astype(dtype)
                kern(ext, k, out, w) if kern is direct.correlate33 else kern(ext, k, out)
                tol = 1e-4 if dtype == np.float32 else 1e-12
                np.testing.assert_allclose(out, want, rtol=tol, atol=tol * 10, err_msg=kern.__name__)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_same_3x3_zero_fill_without_extension(dtype):
    """The extension-free 3x3 'same' zero-fill path: heights around the switch between its
    N-wide and (N - 2)-wide interior rows, down to 3x3, small (one Numba call) and large images;
    edge rows, columns and corners."""
    rng = np.random.default_rng(12)
    tol = 2e-6 if dtype == np.float32 else 1e-14
    for shape in [(3, 3), (3, 4), (4, 3), (5, 7), (6, 3), (7, 8), (8, 5), (64, 64), (64, 65), (257, 300),
                  (300, 257), (403, 3)]:
        a = rng.standard_normal(shape).astype(dtype)
        k = rng.standard_normal((3, 3)).astype(dtype)
        for func in FUNCS:
            want = getattr(ss, func)(a, k, "same")
            got = getattr(fs, func)(a, k, "same")
            assert got.dtype == want.dtype
            np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max(), err_msg=f"{func} {shape}")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_register_blocked_tiles_match_scipy(dtype):
    """The register-blocked kernel (fastconv.image.tiles) on both halves of its unrolled tap loop
    (heights up to 8 and past 8), images wider than a tile and taller than a band, heights not
    a multiple of its eight register rows, every boundary, convolution and correlation, and
    output-row slices as the threads use them."""
    from fastconv.image import tiles

    rng = np.random.default_rng(11)
    tol = 2e-5 if dtype == np.float32 else 1e-12
    cases = [((13, 11), (2, 5)), ((70, 300), (5, 1)), ((41, 9), (8, 7)), ((9, 37), (9, 4)), ((100, 530), (16, 21)),
             ((3, 2), (3, 6))]
    for (h, w), (p, q) in cases:
        a = rng.standard_normal((h, w)).astype(dtype)
        k = rng.standard_normal((p, q)).astype(dtype)
        kern = tiles.tile_kernel(k.shape, a.dtype)
        assert kern is not None
        for boundary, bcode in (("fill", 0), ("symm", 1), ("wrap", 2)):
            for flip, func in ((True, "convolve2d"), (False, "correlate2d")):
                want = getattr(ss, func)(a, k, "full", boundary, fillvalue=0.5)
                out = np.full(want.shape, np.nan, dtype)
                r0 = want.shape[0] // 3  # a row slice, as one thread's share
                kern(a, k, flip, p - 1, q - 1, bcode, dtype(0.5), out[:r0])
                kern(a, k, flip, p - 1 - r0, q - 1, bcode, dtype(0.5), out[r0:])
                scale = np.abs(want).max()
                np.testing.assert_allclose(out, want, rtol=tol, atol=tol * scale, err_msg=f"{func} {boundary} {p}x{q}")
    assert tiles.tile_kernel((3, 3), np.dtype(dtype)) is None  # the fused 3x3 kernel is faster
    assert tiles.tile_kernel((1, 9), np.dtype(dtype)) is None
    assert tiles.tile_kernel((17, 5), np.dtype(dtype)) is None
    assert tiles.tile_kernel((5, 5), np.dtype(np.int64)) is None


@pytest.mark.parametrize("shape", [(5, 5), (7, 4), (3, 3), (2, 2)])
def test_infinities_propagate_like_scipy(shape):
    """Only genuine taps touch each output: an inf just outside a window leaves it finite."""
    a = np.zeros((12, 11))
    a[6, 5] = np.inf
    a[0, 10] = -np.inf
    k = np.arange(1, shape[0] * shape[1] + 1, dtype=float).reshape(shape)
    for mode in ("full", "same", "valid"):
        for func in FUNCS:
            with np.errstate(invalid="ignore"):
                want = getattr(ss, func)(a, k, mode)
            got = getattr(fs, func)(a, k, mode)
            np.testing.assert_array_equal(np.isfinite(got), np.isfinite(want))
            np.testing.assert_array_equal(got[~np.isfinite(got)], want[~np.isfinite(want)])


@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
def test_thread_count_does_not_change_the_result(dtype, monkeypatch):
    """The row-pair kernel sums even and odd output rows in different orders: thread ranges start at
    even rows, so one thread and three give the same bits (and fastconv.dask equals the in-memory
    result whatever the chunking)."""
    rng = np.random.default_rng(13)
    a = _rand(rng, (100, 90), dtype)
    k = _rand(rng, (19, 7), dtype)  # 19 rows: the row-pair kernel (past the register-blocked kernel's 16)
    assert plan.direct_kernel(19, 7, np.dtype(dtype)) == plan.Kernel.PAIRS
    one = fs.convolve2d(a, k, "same", "symm")
    monkeypatch.setattr(plan, "PARALLEL_MIN_MACS", 1000)
    monkeypatch.setattr(plan, "num_threads", lambda: 3)  # ranges of 33/34 rows: odd starts before the fix
    np.testing.assert_array_equal(fs.convolve2d(a, k, "same", "symm"), one)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_same_3x3_zero_fill_rounds_as_the_general_path(dtype):
    """The extension-free 3x3 path sums its first and last rows as the fused kernel sums them next to
    a zero row, so small and large images (and fastconv.dask's chunks) round alike."""
    from fastconv.image import engine

    rng = np.random.default_rng(14)
    for shape in [(3, 3), (5, 7), (64, 65)]:
        a = rng.standard_normal(shape).astype(dtype)
        k = rng.standard_normal((3, 3)).astype(dtype)
        assert plan.zero_fill_route(*shape, 3, 3, 1, np.dtype(dtype)) == plan.Route.SAME33
        for flip, func in ((True, "convolve2d"), (False, "correlate2d")):
            general = engine.filter_valid(a, k, 1, 1, 0, dtype(0), shape[0], shape[1], np.dtype(dtype), flip)
            np.testing.assert_array_equal(getattr(fs, func)(a, k, "same"), general, err_msg=f"{func} {shape}")


def test_empty_full_mode_negative_size_is_scipys_error():
    """Fuzzing found: 'full' mode of two arrays both empty along one axis has size -1 there; SciPy raises
    NumPy's 'negative dimensions are not allowed', fastconv returned an empty array."""
    for s1, s2 in [((0, 0), (0, 0)), ((0, 2), (0, 2)), ((2, 0), (1, 0)), ((0, 3), (0, 1))]:
        for func in FUNCS:
            want = _call(ss, func, np.ones(s1), np.ones(s2), "full")
            got = _call(fs, func, np.ones(s1), np.ones(s2), "full")
            assert isinstance(want, ValueError)
            assert type(got) is ValueError and str(got) == str(want)
    assert fs.convolve2d(np.ones((2, 0)), np.ones((1, 1))).shape == (2, 0)  # size 0, not negative: no error


@pytest.mark.filterwarnings("ignore")
def test_fillvalue_ignored_off_fill_and_scipys_order_of_errors():
    """Fuzzing found: SciPy casts ``fillvalue`` only for boundary='fill' (a complex or list fill with 'wrap'
    on a real image is no error there), and checks the fill, then the output size, then the dtype."""
    cases = [((np.ones((3, 3)), np.ones((2, 2)), "same", "wrap", 1 + 2j), None),
             ((np.ones((3, 3), np.int8), np.ones((2, 2), np.int8), "full", "symm", [1, 2]), None),
             ((np.ones((1, 1), np.float16), np.ones((0, 0), np.int16), "full", "wrap", 1 + 2j), None),
             ((np.ones((0, 0), np.int8), np.ones((0, 0), bool), "full", "wrap", 300), "negative"),
             ((np.ones((0, 0), bool), np.ones((0, 0), bool), "same", "fill", [1, 2]), "scalar"),
             ((np.ones((0, 3), bool), np.ones((2, 2), bool), "same", "symm", 0), "not available")]
    for args, error in cases:
        for func in FUNCS:
            want, got = _call(ss, func, *args), _call(fs, func, *args)
            if error is None:
                assert not isinstance(want, Exception) and not isinstance(got, Exception), (got, want)
                assert got.dtype == want.dtype
                np.testing.assert_array_equal(got, want)
            else:
                assert isinstance(want, ValueError) and error in str(want)
                assert type(got) is ValueError and str(got) == str(want)


def test_empty_image_full_mode_is_the_filtered_fill():
    """Fuzzing found: an empty image in 'full' mode with boundary='fill' gives SciPy's fill * sum(kernel)
    (the whole extension is fill), not zeros."""
    for s1, s2, dtype in [((0, 0), (2, 2), np.int8), ((0, 3), (2, 2), np.float64), ((2, 0), (2, 3), np.complex128)]:
        a, k = np.ones(s1, dtype), (np.arange(np.prod(s2)).reshape(s2) + 1).astype(dtype)
        for func in FUNCS:
            want = getattr(ss, func)(a, k, "full", fillvalue=2)
            got = getattr(fs, func)(a, k, "full", fillvalue=2)
            assert got.dtype == want.dtype and want.size and want.any()
            np.testing.assert_array_equal(got, want)
    from fastconv import filters
    np.testing.assert_array_equal(filters.filter2d(np.ones((0, 3)), np.ones((2, 2)), "full", fillvalue=1.5),
                                  ss.convolve2d(np.ones((0, 3)), np.ones((2, 2)), "full", fillvalue=1.5))


def test_empty_image_long_double_fill():
    """Fuzzing found: the NumPy (long double) extension indexed an empty image (IndexError)."""
    a, k = np.ones((0, 0), np.int8), np.ones((2, 2), np.longdouble)
    for func in FUNCS:
        got, want = getattr(fs, func)(a, k, "full", fillvalue=3), getattr(ss, func)(a, k, "full", fillvalue=3)
        assert got.dtype == want.dtype == np.longdouble
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_same_3x3_non_finite_kernel_tap_meets_the_fill(dtype):
    """The extension-free 3x3 path skipped the zero fill's taps, so an infinite or NaN tap outside the
    image gave finite borders where SciPy's direct sum has 0 * inf = NaN."""
    rng = np.random.default_rng(15)
    a = rng.standard_normal((6, 7)).astype(dtype)
    for pos in [(0, 0), (0, 1), (1, 1), (2, 2), (1, 0), (2, 1)]:
        for value in (np.inf, -np.inf, np.nan):
            k = np.ones((3, 3), dtype)
            k[pos] = value
            for func in FUNCS:
                with np.errstate(invalid="ignore"):
                    want = getattr(ss, func)(a, k, "same")
                got = getattr(fs, func)(a, k, "same")
                for test in (np.isnan, np.isposinf, np.isneginf):
                    np.testing.assert_array_equal(test(got), test(want), err_msg=f"{func} {pos} {value}")
