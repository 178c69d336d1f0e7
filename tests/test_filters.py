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
