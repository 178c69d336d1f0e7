"""Images beyond memory: a zarr image filtered to zarr stores by dask workers that cannot hold it.

:func:`blur_and_sobel` reads a 2-D zarr array chunk by chunk, and writes its Gaussian blur
and its Sobel gradient magnitude ``sqrt(d/drow**2 + d/dcol**2)`` (one :func:`fastconv.dask.filter2d_stack`
pass, boundary 'symm') to two new zarr arrays of the same shape and chunks (uncompressed: the
synthetic data does not compress).  Nothing is ever held whole: the outputs are written one
row of chunks at a time, each task reading one chunk and its overlap, filtering it and
writing the result, so a worker holds a few chunks (memory grows with the image's width in
chunks, not with its size).

:func:`run` is the whole example on a local ``dask.distributed`` cluster of worker
*processes* with a memory limit: it writes a synthetic image (random values, chunk by
chunk), filters it, and reports the image size against each worker's peak resident
memory.  Spilling to disk and pausing are off, so a worker that needed more than its limit
would be restarted by its nanny -- :func:`run` reports restarts, and a run without any, its
peak below a limit below the image size, has streamed.  From the command line::

    python -m fastconv.dask.stream --shape 32768 32768 --chunk 2048 --workers 2 --memory-limit 2GiB

filters an 8 GiB float64 image with two workers of 2 GiB each (``--help`` lists the options).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import sys
import tempfile
import time
from typing import Dict, Iterator, Optional, Sequence

import numpy as np

from ..filters import gaussian_kernel, sobel
from .chunks import require_dask
from .filters import filter2d_stack

__all__ = ["make_image", "blur_and_sobel", "run", "main"]


def _create(path: str, shape, chunks, dtype):
    """A new uncompressed zarr array at ``path`` (zarr 3's ``create_array``, or zarr 2's ``open_array``)."""
    import zarr

    if hasattr(zarr, "create_array"):
        return zarr.create_array(path, shape=shape, chunks=chunks, dtype=dtype, compressors=None, overwrite=True)
    return zarr.open_array(path, mode="w", shape=shape, chunks=chunks, dtype=dtype, compressor=None)


def _store_by_bands(arrays, paths: Sequence[str]) -> None:
    """Write the lazy 2-D ``arrays`` (one shape and chunking) to new zarr arrays at ``paths``, one row of
    chunks at a time: each band is one dask computation, so the workers hold a band and its overlap,
    never the image (one computation of the whole graph let the scheduler read ahead of the writes)."""
    da = require_dask()
    first = arrays[0]
    targets = [_create(p, first.shape, tuple(c[0] for c in first.chunks), a.dtype) for a, p in zip(arrays, paths)]
    r0 = 0
    for rows in first.chunks[0]:
        band = (slice(r0, r0 + rows), slice(None))
        da.store([a[band] for a in arrays], targets, regions=[band] * len(arrays), lock=False)
        r0 += rows


def make_image(path: str, shape: Sequence[int], chunks: int, dtype: str = "float64", seed: int = 0):
    """Write a random (H, W) image of ``dtype`` to a new zarr array at ``path``, chunk by chunk.

    Returns the zarr array.
    """
    da = require_dask()
    _store_by_bands([da.random.default_rng(seed).random(tuple(shape), chunks=chunks).astype(dtype)], [path])
    import zarr

    return zarr.open_array(path, mode="r")


def blur_and_sobel(src: str, blur_path: str, sobel_path: str, sigma: float = 2.0, boundary: str = "symm") -> None:
    """Gaussian blur (``sigma``, truncated at 3 sigma) and Sobel magnitude of the zarr array ``src``,
    written to new zarr arrays at ``blur_path`` and ``sobel_path`` (one pass over the input)."""
    da = require_dask()
    x = da.from_zarr(src, inline_array=True)  # chunk reads as root tasks: the scheduler queues them
    radius = max(1, math.ceil(3 * sigma))
    out = filter2d_stack(x, [gaussian_kernel(2 * radius + 1, sigma), sobel(0), sobel(1)], boundary=boundary)
    blur, magnitude = out[0], da.sqrt(out[1] * out[1] + out[2] * out[2])
    _store_by_bands([blur, magnitude], [blur_path, sobel_path])


def _peak_rss() -> int:
    """Peak resident memory of this process in bytes: Linux's ``VmHWM``, the high-water mark of this
    process image (``ru_maxrss`` would count the parent's memory at the fork before the exec of a
    spawned worker), elsewhere ``ru_maxrss``."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) * (1 if sys.platform == "darwin" else 1024)


@contextlib.contextmanager
def kept_environ() -> Iterator[None]:
    """Restore ``os.environ`` on exit: a LocalCluster's nanny leaves ``OMP_NUM_THREADS=1``,
    ``MKL_NUM_THREADS=1`` and others in the parent's environment, which would silently give
    every later subprocess (a DataLoader worker, torchrun) one thread."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _memory_config() -> Dict[str, object]:
    """Workers that neither spill nor pause: exceeding the limit can only end in a restart."""
    return {"distributed.worker.memory.target": False, "distributed.worker.memory.spill": False,
            "distributed.worker.memory.pause": False, "distributed.worker.memory.terminate": 0.95}


def run(shape: Sequence[int] = (4096, 4096), chunks: int = 1024, dtype: str = "float64", workers: int = 2,
        memory_limit: str = "1GiB", sigma: float = 2.0, workdir: Optional[str] = None,
        client=None) -> Dict[str, object]:
    """The beyond-memory example: write, filter and measure.

    Parameters
    ----------
    shape : (int, int)
        Image shape.
    chunks : int
        Chunk side (zarr and dask).
    dtype : str
        Image dtype.
    workers : int
        Worker processes of the local cluster, one thread each.
    memory_limit : str
        Memory limit of each worker (dask's syntax: '1GiB', '700MB'...).
    sigma : float
        Gaussian blur sigma.
    workdir : str, optional
        Where the zarr stores go (a temporary directory, removed afterwards, by default).
    client : distributed.Client, optional
        Run on this client's cluster instead of starting a local one (``workers`` and
        ``memory_limit`` are then the cluster's).

    Returns
    -------
    dict
        ``image_bytes``, ``memory_limit_bytes``, ``peak_worker_rss`` (bytes, per worker),
        ``restarts`` (worker processes replaced during the run), ``seconds`` and the output
        paths (``None`` once a temporary directory is gone).
    """
    require_dask()
    import dask
    from dask.utils import parse_bytes
    from distributed import Client, LocalCluster

    tmp = tempfile.TemporaryDirectory(prefix="fastconv-stream-") if workdir is None else None
    root = tmp.name if tmp is not None else workdir
    paths = {name: os.path.join(root, f"{name}.zarr") for name in ("image", "blur", "sobel")}
    own = client is None
    try:
        with dask.config.set(_memory_config()), kept_environ():
            if own:
                cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                       memory_limit=memory_limit, dashboard_address=None)
                client = Client(cluster)
            try:
                pids = client.run(os.getpid)
                t0 = time.perf_counter()
                make_image(paths["image"], shape, chunks, dtype)
                blur_and_sobel(paths["image"], paths["blur"], paths["sobel"], sigma)
                seconds = time.perf_counter() - t0
                peaks = client.run(_peak_rss)
                restarts = sum(1 for w, pid in client.run(os.getpid).items() if pids.get(w) != pid) \
                    + abs(len(pids) - len(peaks))
                limits = [w["memory_limit"] for w in client.scheduler_info()["workers"].values()]
            finally:
                if own:
                    client.close()
                    cluster.close()
        return {"image_bytes": int(np.prod(shape)) * np.dtype(dtype).itemsize,
                "memory_limit_bytes": min(limits) if limits else parse_bytes(memory_limit),
                "peak_worker_rss": sorted(peaks.values()), "restarts": restarts, "seconds": seconds,
                "paths": None if tmp is not None else paths}
    finally:
        if tmp is not None:
            tmp.cleanup()


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line of :func:`run`; prints its report as JSON."""
    ap = argparse.ArgumentParser(prog="python -m fastconv.dask.stream", description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", type=int, nargs=2, default=(8192, 8192), metavar=("H", "W"))
    ap.add_argument("--chunk", type=int, default=1024)
    ap.add_argument("--dtype", default="float64")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--memory-limit", default="1GiB")
    ap.add_argument("--sigma", type=float, default=2.0)
    ap.add_argument("--workdir", help="keep the zarr stores here (default: a temporary directory)")
    args = ap.parse_args(argv)
    report = run(args.shape, args.chunk, args.dtype, args.workers, args.memory_limit, args.sigma, args.workdir)
    print(json.dumps(report, indent=2))
    return 0 if report["restarts"] == 0 else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
