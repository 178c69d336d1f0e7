"""fastconv.dask.filter2d / convolve2d / correlate2d equal the in-memory functions exactly, at chunk edges too."""
from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np
import pytest

from fastconv import filters, signal

da = pytest.importorskip("dask.array")
fdask = pytest.importorskip("fastconv.dask")

BOUNDARIES = [("fill", 0), ("fill", 2.5), ("wrap", 0), ("symm", 0)]
# odd and even kernels; 19 rows: the row-pair kernel (past the register-blocked kernel's 16 rows)
KERNELS = [(3, 3), (5, 7), (4, 4), (2, 6), (6, 3), (19, 5), (1, 1)]
# chunks smaller than the reach of the larger kernels, uneven chunks, a single chunk
CHUNKS = [(7, 6), ((13, 5, 30), (9, 20, 11)), (4, 48), (48, 40)]


def _rand(rng, shape, dtype):
    dt = np.dtype(dtype)
    if dt.kind == "c":
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dt)
    if dt.kind in "iu":
        return rng.integers(-40, 40, shape).astype(dt)
    return rng.standard_normal(shape).astype(dt)


@pytest.fixture(autouse=True)
def _synchronous():
    """Tiny chunks: the synchronous scheduler (one test below uses threads)."""
    import dask

    with dask.config.set(scheduler="synchronous"):
        yield


@pytest.mark.parametrize("boundary,fill", BOUNDARIES)
def test_filter2d_equals_in_memory(boundary, fill):
    rng = np.random.default_rng(0)
    image = rng.standard_normal((48, 40))
    image[0, 5] = np.nan  # non-finite values propagate the same way
    image[30, 39] = -np.inf
    for i, (p, q) in enumerate(KERNELS):
        kernel = rng.standard_normal((p, q))
        sep = np.outer(rng.standard_normal(p), rng.standard_normal(q))
        for chunks in (CHUNKS[i % len(CHUNKS)], CHUNKS[(i + 1) % len(CHUNKS)]):
            x = da.from_array(image, chunks=chunks)
            got = fdask.filter2d(x, kernel, boundary=boundary, fillvalue=fill, method="direct")
            assert got.dtype == np.float64 and got.chunks[1] == x.chunks[1] or p > 6
            want = filters.filter2d(image, kernel, boundary=boundary, fillvalue=fill, method="direct")
            np.testing.assert_array_equal(got.compute(), want, err_msg=f"{p}x{q} {chunks}")
            got = fdask.filter2d(x, sep, boundary=boundary, fillvalue=fill)  # auto: separable here
            np.testing.assert_array_equal(got.compute(scheduler="threads"),
                                          filters.filter2d(image, sep, boundary=boundary, fillvalue=fill,
                                                           method=fdask.filters.choose_method(sep)))


@pytest.mark.parametrize("dtype,kdtype", [("float32", "float32"), ("int16", "int16"), ("uint8", "float64"),
                                          ("complex128", "complex128"), ("float32", "complex64")])
def test_dtypes_equal_in_memory(dtype, kdtype):
    rng = np.random.default_rng(1)
    image = _rand(rng, (37, 29), dtype) if dtype != "uint8" else rng.integers(0, 255, (37, 29)).astype(np.uint8)
    for (p, q), (boundary, fill) in zip([(3, 3), (4, 5), (19, 4), (2, 2)], BOUNDARIES):
        kernel = _rand(rng, (p, q), kdtype)
        x = da.from_array(image, chunks=(6, 11))
        got = fdask.filter2d(x, kernel, boundary=boundary, fillvalue=fill, method="direct").compute()
        want = filters.filter2d(image, kernel, boundary=boundary, fillvalue=fill, method="direct")
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
        for func in ("convolve2d", "correlate2d"):
            got = getattr(fdask, func)(x, kernel, boundary=boundary, fillvalue=fill).compute()
            want = getattr(signal, func)(image, kernel, "same", boundary, fill)
            assert got.dtype == want.dtype
            np.testing.assert_array_equal(got, want, err_msg=f"{func} {p}x{q} {boundary}")


def test_kernel_reaching_past_the_image():
    """wrap and symm repeat the image when the kernel is larger than it (one chunk along that axis)."""
    rng = np.random.default_rng(2)
    image = rng.standard_normal((9, 40))
    kernel = rng.standard_normal((25, 3))
    for boundary, func in itertools.product(("wrap", "symm", "fill"), ("convolve2d", "correlate2d")):
        got = getattr(fdask, func)(da.from_array(image, chunks=(3, 7)), kernel, boundary=boundary).compute()
        np.testing.assert_array_equal(got, getattr(signal, func)(image, kernel, "same", boundary))


def test_channels_and_stacks():
    rng = np.random.default_rng(3)
    rgb = rng.standard_normal((30, 26, 3)).astype(np.float32)
    kernel = rng.standard_normal((5, 4)).astype(np.float32)
    got = fdask.filter2d(da.from_array(rgb, chunks=(8, 9, 2)), kernel, boundary="symm", method="direct").compute()
    np.testing.assert_array_equal(got, filters.filter2d(rgb, kernel, boundary="symm", method="direct"))
    stack = rng.standard_normal((2, 3, 21, 17))
    x = da.from_array(stack, chunks=(1, 2, 5, 6))
    for func in ("convolve2d", "correlate2d"):
        got = getattr(fdask, func)(x, kernel, boundary="wrap").compute()
        for i, j in itertools.product(range(2), range(3)):
            np.testing.assert_array_equal(got[i, j], getattr(signal, func)(stack[i, j], kernel, "same", "wrap"))
    # other axes: an (N, H, W) stack filtered with filter2d along axes (1, 2)
    got = fdask.filter2d(x[0], kernel, boundary="symm", method="direct", axes=(1, 2)).compute()
    for j in range(3):
        np.testing.assert_array_equal(got[j], filters.filter2d(stack[0, j], kernel, boundary="symm", method="direct"))


def test_auto_method():
    assert fdask.filters.choose_method(filters.gaussian_kernel(9, 2.0)) == "separable"
    assert fdask.filters.choose_method(filters.sharpen()) == "direct"
    assert fdask.filters.choose_method(np.ones((31, 31), np.int16), np.int16) == "direct"


def test_result_keeps_chunks_and_is_lazy():
    x = da.ones((64, 50), chunks=(16, 25))
    out = fdask.filter2d(x, np.ones((3, 3)))
    assert out.chunks == x.chunks and out.shape == x.shape
    out = fdask.convolve2d(da.ones((20, 20), chunks=2), np.ones((5, 5)))
    assert out.shape == (20, 20) and min(out.chunks[0]) >= 3  # merged up to the overlap depth
    np.testing.assert_array_equal(out.compute(), signal.convolve2d(np.ones((20, 20)), np.ones((5, 5)), "same"))


def test_errors():
    x = da.ones((10, 10), chunks=5)
    with pytest.raises(ValueError, match="mode='same'"):
        fdask.filter2d(x, np.ones((3, 3)), mode="full")
    with pytest.raises(ValueError, match="boundary"):
        fdask.convolve2d(x, np.ones((3, 3)), boundary="bogus")
    with pytest.raises(ValueError, match="not separable"):
        fdask.filter2d(x, filters.sharpen(), method="separable")
    with pytest.raises(ValueError, match="integer"):
        fdask.filter2d(x.astype(int), np.ones((3, 3), int), method="fft")
    with pytest.raises(ValueError, match="axes"):
        fdask.convolve2d(x, np.ones((3, 3)), axes=(0, 0))
    with pytest.raises(ValueError, match="2-D array"):
        fdask.filter2d(x, np.ones(3))
    with pytest.raises(ValueError, match="not available"):
        fdask.correlate2d(x.astype(bool), np.ones((3, 3), bool))


def test_fft_method_within_the_bound():
    rng = np.random.default_rng(4)
    image = rng.standard_normal((64, 64))
    image[10, 10] = np.nan
    kernel = rng.standard_normal((15, 15))
    got = fdask.filter2d(da.from_array(image, chunks=32), kernel, method="fft").compute()
    want = filters.filter2d(image, kernel, method="direct")
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    fin = np.isfinite(want)
    np.testing.assert_allclose(got[fin], want[fin], rtol=0, atol=1e-11)


def test_tasks_run_nogil_kernels_on_one_thread():
    """The chunk tasks call nogil Numba kernels (so dask's threads run in parallel) on one engine thread each."""
    import numba

    from fastconv.dask.chunks import one_thread
    from fastconv.image import direct, separable, tiles

    for kern in (direct.filter_ext, direct.filter_small, separable.filter_separable_ext,
                 tiles.tile_kernel((5, 5), np.dtype(np.float64))):
        assert kern.targetoptions.get("nogil") is True, kern
    before = numba.get_num_threads()
    with one_thread():
        assert numba.get_num_threads() == 1
    assert numba.get_num_threads() == before


def test_without_dask_says_what_to_install():
    code = ("import sys; sys.modules['dask'] = None; sys.modules['dask.array'] = None\n"
            "import numpy as np, fastconv.dask as fd\n"
            "try:\n    fd.filter2d(np.ones((4, 4)), np.ones((3, 3)))\n"
            "except ImportError as e:\n    print('ERR', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "ERR" in out.stdout and "pip install 'fastconv[dask]'" in out.stdout, out.stdout + out.stderr
