"""fastconv.filters: kernel builders and filter2d vs scipy.ndimage / scipy.signal, and the method choice."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.ndimage as ndi
import scipy.signal as ss

from fastconv import filters as F

ND_MODE = {"symm": "reflect", "wrap": "wrap", "fill": "constant"}


@pytest.fixture
def img():
    return np.random.default_rng(0).standard_normal((33, 41))


def test_kernel_builders():
    g = F.gaussian_kernel(7, 1.2)
    assert g.shape == (7, 7) and g.dtype == np.float64
    assert abs(g.sum() - 1) < 1e-15
    np.testing.assert_array_equal(g, g.T)
    np.testing.assert_array_equal(g, g[::-1, ::-1])
    assert g[3, 3] == g.max()
    ga = F.gaussian_kernel((5, 9), (1.0, 2.0))
    assert ga.shape == (5, 9) and abs(ga.sum() - 1) < 1e-15
    assert ga[2, 2] > ga[0, 4]  # offset 2 along columns (sigma 2) outweighs offset 2 along rows (sigma 1)
    b = F.box_kernel((2, 3))
    np.testing.assert_array_equal(b, np.full((2, 3), 1 / 6))
    np.testing.assert_array_equal(F.sobel(1), F.sobel(0).T)
    np.testing.assert_array_equal(F.sharpen().sum(), 1.0)
    for bad in (0, -2, 2.5, (3, 0)):
        with pytest.raises(ValueError, match="size"):
            F.box_kernel(bad)
    with pytest.raises(ValueError, match="sigma"):
        F.gaussian_kernel(3, 0)
    with pytest.raises(ValueError, match="axis"):
        F.sobel(2)


@pytest.mark.parametrize("boundary", ["symm", "wrap", "fill"])
@pytest.mark.parametrize("method", ["auto", "direct", "separable", "fft"])
def test_classic_filters_match_ndimage(img, boundary, method):
    mode = ND_MODE[boundary]
    for axis in (0, 1):
        np.testing.assert_allclose(F.filter2d(img, F.sobel(axis), boundary=boundary, method=method),
                                   ndi.sobel(img, axis, mode=mode), rtol=0, atol=1e-12)
        np.testing.assert_allclose(F.filter2d(img, F.prewitt(axis), boundary=boundary, method=method),
                                   ndi.prewitt(img, axis, mode=mode), rtol=0, atol=1e-12)
    for radius, sigma in ((4, 1.5), (2, 0.7)):
        np.testing.assert_allclose(
            F.filter2d(img, F.gaussian_kernel(2 * radius + 1, sigma), boundary=boundary, method=method),
            ndi.gaussian_filter(img, sigma, mode=mode, truncate=radius / sigma), rtol=0, atol=1e-12)
    np.testing.assert_allclose(F.filter2d(img, F.box_kernel(5), boundary=boundary, method=method),
                               ndi.uniform_filter(img, 5, mode=mode), rtol=0, atol=1e-12)


def test_sharpen_matches_ndimage(img):
    for boundary in ("symm", "wrap", "fill"):
        for method in ("auto", "direct", "fft"):
            np.testing.assert_allclose(F.filter2d(img, F.sharpen(), boundary=boundary, method=method),
                                       ndi.convolve(img, F.sharpen(), mode=ND_MODE[boundary]), atol=1e-12)


@pytest.mark.parametrize("method", ["direct", "separable", "fft"])
def test_filter2d_matches_convolve2d(method):
    rng = np.random.default_rng(1)
    for (h, w), (p, q), mode, boundary, dtype in itertools.product(
            [(20, 17), (5, 6)], [(3, 4), (7, 7), (9, 2)], ["full", "same", "valid"], ["fill", "wrap", "symm"],
            [np.float64, np.float32, np.complex128]):
        if mode == "valid" and (p > h or q > w):
            continue
        image = rng.standard_normal((h, w)).astype(dtype)
        if dtype == np.complex128:
            image = image + 1j * rng.standard_normal((h, w))
        kernel = np.outer(rng.standard_normal(p), rng.standard_normal(q)).astype(dtype)
        want = ss.convolve2d(image, kernel, mode, boundary, fillvalue=0.5)
        got = F.filter2d(image, kernel, mode, boundary, fillvalue=0.5, method=method)
        assert got.dtype == want.dtype and got.shape == want.shape
        tol = 2e-5 if dtype == np.float32 else 1e-11
        scale = np.abs(image).max() * np.abs(kernel).sum() + 1
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * scale)


def test_multichannel_images():
    rng = np.random.default_rng(2)
    image = rng.standard_normal((24, 19, 3)).astype(np.float32)
    kernel = rng.standard_normal((5, 4)).astype(np.float32)
    for method, mode in itertools.product(["direct", "fft"], ["same", "full"]):
        got = F.filter2d(image, kernel, mode, "symm", method=method)
        want = np.stack([ss.convolve2d(image[:, :, c], kernel, mode, "symm") for c in range(3)], axis=2)
        assert got.shape == want.shape and got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    sep = F.filter2d(image, F.gaussian_kernel(5, 1.0), method="separable")
    want = np.stack([ss.convolve2d(image[:, :, c], F.gaussian_kernel(5, 1.0), "same") for c in range(3)], axis=2)
    np.testing.assert_allclose(sep, want, rtol=1e-6, atol=1e-6)


def test_integer_filtering_is_exact():
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (30, 30)).astype(np.uint8)
    got = F.filter2d(image, F.sobel(0).astype(np.int16), boundary="symm")
    want = ss.convolve2d(image, F.sobel(0).astype(np.int16), "same", "symm")
    assert got.dtype == want.dtype == np.int16
    np.testing.assert_array_equal(got, want)
    assert F.choose_method(image.shape, F.sobel(0).astype(np.int16), dtype=np.int16) == "direct"
    for method in ("fft", "separable"):
        with pytest.raises(ValueError, match="integer|floating"):
            F.filter2d(image, F.sobel(0).astype(np.int16), method=method)
    # float kernel on an 8-bit image: float64 output, any method
    np.testing.assert_allclose(F.filter2d(image, F.gaussian_kernel(5, 1.0), method="separable"),
                               ss.convolve2d(image, F.gaussian_kernel(5, 1.0), "same"), atol=1e-10)


# --------------------------------------------------------------------------- separability and method choice


def test_separable_factors_exact_and_strict():
    for k in (F.sobel(0), F.sobel(1), F.prewitt(0), F.gaussian_kernel(9, 2.0), F.box_kernel((3, 5)),
              np.array([[2.0, -4.0, 6.0]]), np.array([[1.0], [3.0]])):
        u, v = F.separable_factors(k)
        np.testing.assert_allclose(np.outer(u, v), k, rtol=0, atol=1e-15 * np.abs(k).max())
    u, v = F.separable_factors(F.sobel(0))
    np.testing.assert_array_equal(np.outer(u, v), F.sobel(0))  # integer kernels factor exactly
    rng = np.random.default_rng(4)
    assert F.separable_factors(F.sharpen()) is None
    assert F.separable_factors(rng.standard_normal((5, 5))) is None
    near = F.gaussian_kernel(9, 2.0)
    near[4, 4] += 1e-9  # rank 2, however slightly: must not be treated as separable
    assert F.separable_factors(near) is None
    assert F.separable_factors(np.zeros((3, 3))) is None
    cplx = np.outer([1, 2j, 3], [1j, 1, 0.5])
    u, v = F.separable_factors(cplx)
    np.testing.assert_allclose(np.outer(u, v), cplx, atol=1e-14)


def test_choose_method():
    rng = np.random.default_rng(5)
    big_gauss = F.gaussian_kernel(15, 3.0)
    assert F.choose_method((512, 512), big_gauss) == "separable"
    assert F.choose_method((256, 256, 3), F.gaussian_kernel(9, 2.0)) == "separable"
    near = big_gauss.copy()
    near[0, 0] += 1e-6
    assert F.choose_method((512, 512), near) != "separable"
    assert F.choose_method((256, 256), F.sharpen()) == "direct"
    assert F.choose_method((64, 64), rng.standard_normal((3, 3))) == "direct"
    assert F.choose_method((1024, 1024), rng.standard_normal((63, 63))) == "fft"
    costs = F.estimate_costs((512, 512), big_gauss)
    assert set(costs) == {"direct", "separable", "fft"} and all(c > 0 for c in costs.values())
    assert set(F.estimate_costs((512, 512), F.sharpen())) == {"direct", "fft"}
    # the auto result equals the forced method it reports
    image = rng.standard_normal((80, 90))
    for k in (big_gauss, F.sharpen(), rng.standard_normal((31, 31))):
        m = F.choose_method(image.shape, k)
        np.testing.assert_array_equal(F.filter2d(image, k), F.filter2d(image, k, method=m))


def test_forced_separable_needs_rank_one(img):
    with pytest.raises(ValueError, match="not separable"):
        F.filter2d(img, F.sharpen(), method="separable")


# --------------------------------------------------------------------------- errors and edge cases


def test_bad_arguments(img):
    with pytest.raises(ValueError, match="2-D array"):
        F.filter2d(img, np.ones((3, 3, 3)))
    with pytest.raises(ValueError, match="2-D array"):
        F.choose_method(img.shape, np.ones(3))
    with pytest.raises(ValueError, match="empty"):
        F.filter2d(img, np.ones((0, 3)))
    with pytest.raises(ValueError, match=r"2-D \(H, W\) or 3-D"):
        F.filter2d(np.ones((2, 3, 4, 5)), np.ones((3, 3)))
    with pytest.raises(ValueError, match="method"):
        F.filter2d(img, np.ones((3, 3)), method="winograd")
    with pytest.raises(ValueError, match="mode"):
        F.filter2d(img, np.ones((3, 3)), mode="bogus")
    with pytest.raises(ValueError, match="boundary"):
        F.filter2d(img, np.ones((3, 3)), boundary="bogus")
    with pytest.raises(ValueError, match="larger than"):
        F.filter2d(np.ones((4, 4)), np.ones((5, 3)), mode="valid")


def test_nan_propagates_like_scipy(img):
    a = img.copy()
    a[10, 10] = np.nan
    for method in ("direct", "separable"):
        got = F.filter2d(a, F.gaussian_kernel(3, 1.0), method=method)
        want = ss.convolve2d(a, F.gaussian_kernel(3, 1.0), "same")
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_allclose(got[~np.isnan(got)], want[~np.isnan(want)], atol=1e-12)


# --------------------------------------------------------------------------- FFT: non-finite input, precision


def _assert_like_direct(got, want, bound):
    """NaN, +inf and -inf exactly where ``want`` has them; finite values within ``bound``."""
    for part in ((lambda a: a.real), (lambda a: a.imag)) if want.dtype.kind == "c" else ((lambda a: a),):
        g, w = part(got), part(want)
        np.testing.assert_array_equal(np.isnan(g), np.isnan(w))
        np.testing.assert_array_equal(np.isposinf(g), np.isposinf(w))
        np.testing.assert_array_equal(np.isneginf(g), np.isneginf(w))
        fin = np.isfinite(w)
        np.testing.assert_allclose(g[fin], w[fin], rtol=0, atol=bound)


def _fft_bound(image, kernel, dtype=np.float64):
    from fastconv.image import plan

    fin = np.abs(image[np.isfinite(image)])
    n = np.prod(plan.fft_shape(image.shape[0], image.shape[1], *kernel.shape))
    return 2 * plan.fft_error_bound(fin.max(initial=0), np.abs(kernel).sum(), n, dtype) + 1e-300


@pytest.mark.parametrize("ksize", [41, 31])
@pytest.mark.parametrize("method", ["auto", "fft"])
def test_fft_nonfinite_input_gives_the_direct_pattern(ksize, method):
    """Issue 16: one NaN made the whole FFT output NaN (SciPy: 1681 pixels), one inf gave 65536 NaNs
    (SciPy: 1681 infinities and NaNs, no NaN where the kernel is nonzero)."""
    rng = np.random.default_rng(7)
    image = rng.standard_normal((256, 256))
    kernel = rng.standard_normal((ksize, ksize))
    kernel[3, 5] = 0.0  # inf * 0 is NaN in the direct sum
    assert F.choose_method(image.shape, kernel) == "fft"
    cases = [((100, 100), np.nan), ((100, 100), np.inf), ((40, 200), -np.inf), ((0, 3), np.inf), ((255, 255), np.nan)]
    for boundary in ("fill", "symm", "wrap"):
        for where, value in cases:
            a = image.copy()
            a[where] = value
            a[200, 20] = -np.inf if value == np.inf else np.inf  # opposite infinities meet: NaN
            want = ss.convolve2d(a, kernel, "same", boundary)
            got = F.filter2d(a, kernel, boundary=boundary, method=method)
            _assert_like_direct(got, want, _fft_bound(a, kernel))
            assert np.isfinite(got).sum() > 0.9 * got.size


def test_fft_nonfinite_fill_channels_and_fallback():
    rng = np.random.default_rng(8)
    kernel = rng.standard_normal((21, 21))
    image = rng.standard_normal((96, 80, 2)).astype(np.float32)
    image[10, 70, 1] = np.nan
    image[50, 5, 0] = -np.inf
    for mode in ("same", "full", "valid"):
        want = np.stack([ss.convolve2d(image[:, :, c], kernel, mode) for c in range(2)], axis=2)
        got = F.filter2d(image, kernel, mode, method="fft")
        _assert_like_direct(got, want, _fft_bound(image.astype(np.float64), kernel, np.float32))
    # a NaN fill value: the border is NaN, as SciPy's
    plane = image[:, :, 0]
    want = ss.convolve2d(plane, kernel, "full", fillvalue=np.nan)
    _assert_like_direct(F.filter2d(plane, kernel, "full", fillvalue=np.nan, method="fft"), want, 1e-3)
    # many non-finite samples: the direct method instead (same pattern, direct's rounding)
    dense = rng.standard_normal((64, 64))
    dense[rng.random(dense.shape) < 0.05] = np.inf
    want = ss.convolve2d(dense, kernel, "same", "wrap")
    _assert_like_direct(F.filter2d(dense, kernel, boundary="wrap", method="fft"), want, 1e-12)
    # a non-finite kernel tap reaches every output: direct
    bad_kernel = kernel.copy()
    bad_kernel[0, 0] = np.inf
    with np.errstate(invalid="ignore"):
        want = ss.convolve2d(dense[:20, :20], bad_kernel, "same")
    _assert_like_direct(F.filter2d(dense[:20, :20], bad_kernel, method="fft"), want, 1e-12)
    # complex input
    cplx = (rng.standard_normal((70, 60)) + 1j * rng.standard_normal((70, 60)))
    cplx[30, 30] = complex(np.inf, 0)
    want = ss.convolve2d(cplx, kernel, "same", "symm")
    _assert_like_direct(F.filter2d(cplx, kernel, boundary="symm", method="fft"), want, _fft_bound(np.abs(cplx), kernel))


def test_fft_overflow_falls_back_to_direct():
    image = np.full((64, 64), 3e38, np.float32)
    kernel = np.ones((21, 21), np.float32)
    with np.errstate(over="ignore"):
        want = ss.convolve2d(image, kernel, "same")
        got = F.filter2d(image, kernel, method="fft")
    np.testing.assert_array_equal(np.isposinf(got), np.isposinf(want))


def test_fft_error_within_the_stated_bound():
    from fastconv.image import plan

    rng = np.random.default_rng(9)
    for (n, p), dtype, data in itertools.product([(64, 31), (200, 9), (256, 41), (131, 64)], [np.float64, np.float32],
                                                 ["normal", "uniform", "spikes"]):
        image = rng.standard_normal((n, n + 7)) if data == "normal" else rng.random((n, n + 7))
        if data == "spikes":
            image[rng.integers(0, n, 9), rng.integers(0, n, 9)] = 1e5
        kernel = rng.standard_normal((p, p - 2)) if data == "normal" else rng.random((p, p - 2))
        image, kernel = image.astype(dtype), kernel.astype(dtype)
        for boundary in ("fill", "symm"):
            exact = ss.convolve2d(image.astype(np.float64), kernel.astype(np.float64), "same", boundary)
            got = F.filter2d(image, kernel, boundary=boundary, method="fft")
            ext = plan.fft_shape(n, n + 7, p, p - 2)
            bound = plan.fft_error_bound(np.abs(image).max(), np.abs(kernel).sum(), ext[0] * ext[1], dtype)
            err = np.abs(got - exact).max()
            assert err <= bound, (n, p, dtype, data, boundary, err / bound)


def test_auto_weighs_the_dynamic_range():
    """Issue 16: values near 1e-3 beside values near 1e9 lost 8.3e-4 relative precision under 'auto'."""
    rng = np.random.default_rng(10)
    image = 1e-3 + 1e-4 * rng.standard_normal((256, 256))
    image[:, 128:] = 1e9 * (1 + 0.1 * rng.standard_normal((256, 128)))
    kernel = np.abs(rng.standard_normal((31, 31)))
    assert F.choose_method(image.shape, kernel) == "fft"          # by cost alone
    assert F.choose_method(image.shape, kernel, image=image) == "direct"
    want = ss.convolve2d(image, kernel, "same")
    got = F.filter2d(image, kernel)
    small = slice(0, 100)
    rel = np.abs(got[:, small] - want[:, small]) / np.abs(want[:, small])
    assert rel.max() < 1e-12
    # a modest range keeps the FFT; exact zeros (a black border) do not count
    calm = rng.random((256, 256)) + 0.01
    calm[:40] = 0.0
    assert F.choose_method(calm.shape, kernel, image=calm) == "fft"
    np.testing.assert_array_equal(F.filter2d(calm, kernel), F.filter2d(calm, kernel, method="fft"))
    # a non-finite sample is patched, not a reason to leave the FFT
    calm[100, 100] = np.nan
    assert F.choose_method(calm.shape, kernel, image=calm) == "fft"
    with pytest.raises(ValueError, match="image_shape"):
        F.choose_method((10, 10), kernel, image=calm)


@pytest.mark.parametrize("method", ["auto", "direct", "separable", "fft"])
def test_zero_channels(method):
    """Issue 16: an (H, W, 0) image leaked NumPy's 'need at least one array to stack'."""
    for mode, shape in (("same", (7, 9, 0)), ("full", (11, 12, 0)), ("valid", (3, 6, 0))):
        got = F.filter2d(np.ones((7, 9, 0)), F.gaussian_kernel((5, 4), 1.0), mode, method=method)
        assert got.shape == shape and got.dtype == np.float64
    got = F.filter2d(np.ones((7, 9, 0), np.int16), np.ones((3, 3), np.int16), method="direct")
    assert got.shape == (7, 9, 0) and got.dtype == np.int16
