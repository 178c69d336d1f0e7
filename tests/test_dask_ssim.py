"""fastconv.dask.ssim_map / ssim: the in-memory map exactly, chunk by chunk; the mean is fastconv.ssim."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import fastconv
from fastconv.image.ssim import ssim_map as ssim_map_numpy

da = pytest.importorskip("dask.array")
fdask = pytest.importorskip("fastconv.dask")


def _pair(rng, shape, dtype):
    x = rng.random(shape)
    y = np.clip(x + 0.1 * rng.standard_normal(shape), 0, 1)
    return x.astype(dtype), y.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_map_equals_in_memory_at_every_chunking(dtype):
    rng = np.random.default_rng(0)
    x, y = _pair(rng, (61, 47), dtype)
    want = ssim_map_numpy(x, y)
    for chunks in [(3, 4), ((5, 30, 26), (20, 27)), (61, 47), (16, 47)]:  # chunks under win // 2, uneven, one
        got = fdask.ssim_map(da.from_array(x, chunks=chunks), da.from_array(y, chunks=chunks))
        assert got.shape == want.shape == (51, 37) and got.dtype == dtype
        np.testing.assert_array_equal(got.compute(scheduler="sync"), want, err_msg=str(chunks))
    # the mean is fastconv.ssim of the pair (its per-column float64 sums: rounding apart)
    s = fastconv.ssim(torch.from_numpy(x)[None, None], torch.from_numpy(y)[None, None]).item()
    m = fdask.ssim(da.from_array(x, chunks=16), da.from_array(y, chunks=16)).compute()
    assert m.dtype == np.float64
    assert abs(float(m) - s) <= (1e-14 if dtype == np.float64 else 1e-6)


def test_stacks_windows_and_integers():
    rng = np.random.default_rng(1)
    x, y = _pair(rng, (2, 40, 33), np.float64)
    got = fdask.ssim_map(da.from_array(x, chunks=(1, 9, 10)), da.from_array(y, chunks=(1, 9, 10)),
                         win_size=7, win_sigma=1.0, K=(0.02, 0.05), data_range=2.0).compute()
    for i in range(2):
        np.testing.assert_array_equal(got[i], ssim_map_numpy(x[i], y[i], 7, 1.0, ((0.02 * 2) ** 2, (0.05 * 2) ** 2)))
    xs = da.from_array(np.moveaxis(x, 0, 2), chunks=(8, 8, 1))  # (H, W, N) with axes=(0, 1)
    ys = da.from_array(np.moveaxis(y, 0, 2), chunks=(8, 8, 1))
    np.testing.assert_array_equal(fdask.ssim_map(xs, ys, axes=(0, 1)).compute()[:, :, 1], ssim_map_numpy(x[1], y[1]))
    xi, yi = (np.round(a * 255).astype(np.uint8) for a in (x[0], y[0]))
    with pytest.raises(ValueError, match="data_range"):
        fdask.ssim_map(xi, yi)
    got = fdask.ssim(da.from_array(xi, chunks=12), da.from_array(yi, chunks=12), data_range=255).compute()
    want = fastconv.ssim(torch.from_numpy(xi)[None, None], torch.from_numpy(yi)[None, None], data_range=255).item()
    assert abs(float(got) - want) < 1e-6


def test_errors():
    x = da.ones((20, 20), chunks=10)
    with pytest.raises(ValueError, match="same shape"):
        fdask.ssim_map(x, da.ones((20, 21), chunks=10))
    with pytest.raises(TypeError, match="same dtype"):
        fdask.ssim_map(x, x.astype(np.float32))
    with pytest.raises(ValueError, match="too small"):
        fdask.ssim_map(x[:9], x[:9])
    with pytest.raises(ValueError, match="odd"):
        fdask.ssim_map(x, x, win_size=4)
    with pytest.raises(ValueError, match="data_range"):
        fdask.ssim_map(x, x, data_range=-1)
