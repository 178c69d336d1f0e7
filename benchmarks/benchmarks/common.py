"""Shared helpers for the fastconv asv suite (imported by every bench_*.py).

* ``require_*`` raise ``NotImplementedError`` from a benchmark's ``setup`` when a peer
  library or a device is missing; asv then reports the benchmark as skipped (n/a)
  instead of failed, so the whole suite runs on a CPU-only box without OpenCV.
* ``best_time`` is the small timer behind the ``track_speedup_*`` benchmarks: both
  sides of a ratio are measured in the same call, alternating, best of ``k``.
* ``sync`` makes GPU timings honest: CUDA launches are asynchronous, so every timed
  call on a CUDA device ends with ``torch.cuda.synchronize()``.
"""
from __future__ import annotations

import importlib
import time
from typing import Callable, Dict

import numpy as np

SEED = 1234

#: the image-convolution grid of the seed report (Table 1 / Figure 1)
IMAGE_SIZES = [64, 128, 256, 512]
KERNEL_SIZES = [3, 7, 15]
DTYPES = ["float64", "float32"]


def rng(offset: int = 0) -> np.random.Generator:
    return np.random.default_rng(SEED + offset)


def torch_seed(offset: int = 0):
    import torch
    torch.manual_seed(SEED + offset)
    return torch


def require_module(name: str):
    """Import ``name`` or raise NotImplementedError (asv: skipped)."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise NotImplementedError(f"{name} is not installed ({exc})") from None


def require_cv2():
    return require_module("cv2")


def require_msssim():
    return require_module("pytorch_msssim")


def require_device(device: str) -> None:
    """Skip unless ``device`` is usable: 'cpu' always; 'cuda' needs torch CUDA and CuPy."""
    if device == "cpu":
        return
    if device != "cuda":
        raise ValueError(f"unknown device {device!r}")
    import torch
    if not torch.cuda.is_available():
        raise NotImplementedError("CUDA is not available")


def require_fastconv_device(device: str) -> None:
    """Like :func:`require_device`, and for CUDA also fastconv's CuPy backend."""
    require_device(device)
    if device == "cuda":
        from fastconv import _backend
        if not _backend.cuda_available():
            raise NotImplementedError("fastconv's CUDA backend (CuPy) is not available")


def sync(device: str) -> None:
    if device == "cuda":
        import torch
        torch.cuda.synchronize()


def best_time(fn: Callable[[], object], k: int = 5, budget: float = 0.05) -> float:
    """Best-of-``k`` seconds per call of ``fn``; each sample loops ``fn`` for about ``budget`` s."""
    fn()  # warm (JIT, caches, allocator)
    t0 = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t0, 1e-7)
    number = max(1, min(1000, int(budget / one)))
    best = float("inf")
    for _ in range(k):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - t0) / number)
    return best


def speedup(fast: Callable[[], object], peer: Callable[[], object], k: int = 5, budget: float = 0.05) -> float:
    """``time(peer) / time(fast)``, both measured now, interleaved (>1: fastconv is faster)."""
    fast()
    peer()
    best: Dict[str, float] = {"fast": float("inf"), "peer": float("inf")}
    for _ in range(k):
        best["fast"] = min(best["fast"], best_time(fast, k=1, budget=budget))
        best["peer"] = min(best["peer"], best_time(peer, k=1, budget=budget))
    return best["peer"] / best["fast"]


def fastconv_filters():
    """``fastconv.filters`` (written by another team); NotImplementedError while it is missing."""
    return require_module("fastconv.filters")


def fastconv_models():
    return require_module("fastconv.models")


# Import the peers once at module level: asv's fork server pre-imports the suite, so
# every forked benchmark process starts with them loaded.  Do NOT run torch or
# fastconv kernels here: that starts OpenMP / Numba worker threads in the fork server,
# and a child forked from a multi-threaded parent deadlocks in its first parallel region.
try:  # pragma: no cover - optional peer
    import cv2 as _cv2  # noqa: F401,E402
except ImportError:
    pass
