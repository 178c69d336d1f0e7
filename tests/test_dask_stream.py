"""fastconv.dask on a dask.distributed LocalCluster of 2 worker processes, and a zarr image larger than
the workers' memory limit filtered to zarr stores (fastconv.dask.stream)."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

from fastconv import filters, signal
from fastconv.image.ssim import ssim_map as ssim_map_numpy

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")
zarr = pytest.importorskip("zarr")
fdask = pytest.importorskip("fastconv.dask")
from fastconv.dask import stream  # noqa: E402

#: Each worker's limit, and the streamed image: 640 MiB of float64, 40 x 2 chunks of 1024^2.
MEMORY_LIMIT = "600MiB"
SHAPE, CHUNK = (40960, 2048), 1024


@pytest.fixture(scope="module")
def client():
    """Two worker processes, one thread each, that neither spill nor pause: over the limit, the nanny
    restarts them.  Workers get no setup: they import fastconv when they unpickle the first task."""
    import dask

    with dask.config.set(stream._memory_config()), stream.kept_environ():
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                           memory_limit=MEMORY_LIMIT, dashboard_address=None)
        with distributed.Client(cluster) as c:
            yield c
        cluster.close()


def test_local_cluster_leaves_the_environment_alone():
    """A LocalCluster started by fastconv leaves no OMP_NUM_THREADS=1 behind (it broke the bit-identical
    resume tests of fastconv.train, whose subprocesses then trained on one torch thread)."""
    import os

    before = dict(os.environ)
    with stream.kept_environ():
        cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                           dashboard_address=None)
        cluster.close()
        assert os.environ.get("OMP_NUM_THREADS") == "1"  # what the nanny does
    assert dict(os.environ) == before


def test_cluster_results_equal_in_memory(client):
    rng = np.random.default_rng(0)
    image = rng.standard_normal((45, 38))
    for boundary, (p, q), chunks in [("fill", (5, 5), (7, 6)), ("wrap", (4, 6), (9, 10)), ("symm", (19, 4), (6, 38)),
                                     ("symm", (2, 3), (45, 5))]:
        kernel = rng.standard_normal((p, q))
        x = da.from_array(image, chunks=chunks)
        got = fdask.filter2d(x, kernel, boundary=boundary, fillvalue=1.5, method="direct").compute()
        want = filters.filter2d(image, kernel, boundary=boundary, fillvalue=1.5, method="direct")
        np.testing.assert_array_equal(got, want)
        got = fdask.correlate2d(x, kernel, boundary=boundary).compute()
        np.testing.assert_array_equal(got, signal.correlate2d(image, kernel, "same", boundary))
    y = np.clip(image + 0.1 * rng.standard_normal(image.shape), -3, 3)
    got = fdask.ssim_map(da.from_array(image, chunks=8), da.from_array(y, chunks=8), data_range=6.0).compute()
    np.testing.assert_array_equal(got, ssim_map_numpy(image, y, c=((0.01 * 6) ** 2, (0.03 * 6) ** 2)))
    # the graph pickles as a whole (what the scheduler ships to workers)
    lazy = fdask.convolve2d(da.from_array(image, chunks=10), np.ones((3, 4)), boundary="symm")
    again = pickle.loads(pickle.dumps(lazy))
    np.testing.assert_array_equal(again.compute(scheduler="sync"), signal.convolve2d(image, np.ones((3, 4)), "same",
                                                                                      "symm"))


def test_zarr_image_larger_than_worker_memory_streams(client, tmp_path):
    report = stream.run(SHAPE, CHUNK, "float64", workdir=str(tmp_path), client=client)
    limit, image_bytes = report["memory_limit_bytes"], report["image_bytes"]
    print(f"\nimage {image_bytes / 2**20:.0f} MiB, worker limit {limit / 2**20:.0f} MiB, peak worker RSS "
          f"{[round(p / 2**20) for p in report['peak_worker_rss']]} MiB, {report['seconds']:.1f} s")
    assert limit < image_bytes
    assert report["restarts"] == 0
    assert max(report["peak_worker_rss"]) < limit
    # values: rows around a chunk edge and the image's last rows, against filtering a crop in memory
    src = zarr.open_array(report["paths"]["image"], mode="r")
    blur = zarr.open_array(report["paths"]["blur"], mode="r")
    mag = zarr.open_array(report["paths"]["sobel"], mode="r")
    gauss = filters.gaussian_kernel(13, 2.0)
    for r0, r1 in [(CHUNK - 20, CHUNK + 20), (SHAPE[0] - 30, SHAPE[0])]:
        lo, hi = max(r0 - 6, 0), min(r1 + 6, SHAPE[0])
        crop = src[lo:hi]
        keep = slice(r0 - lo, r0 - lo + (r1 - r0))
        want = filters.filter2d(crop, gauss, boundary="symm", method=fdask.filters.choose_method(gauss))[keep]
        np.testing.assert_array_equal(blur[r0:r1], want)
        d0, d1 = (filters.filter2d(crop, filters.sobel(a), boundary="symm",
                                   method=fdask.filters.choose_method(filters.sobel(a)))[keep] for a in (0, 1))
        np.testing.assert_array_equal(mag[r0:r1], np.sqrt(d0 * d0 + d1 * d1))
