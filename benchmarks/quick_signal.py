"""Quick timing of fastconv.signal.convolve2d(mode='same') against SciPy and OpenCV, and of SSIM.

Run standalone:  PYTHONPATH=. python benchmarks/quick_signal.py [--ssim-only|--conv-only]

For each image size (64..512 px square) x kernel size (3, 7, 15) x dtype it prints the
best-of-3 time per call of ``scipy.signal.convolve2d(a, k, 'same')``,
``cv2.filter2D`` (same output: flipped kernel, BORDER_CONSTANT, anchor chosen to match
SciPy's centring) and fastconv, and the ratios.  Then SSIM forward+backward on
16x1x256x256 float32 against pytorch-msssim.  Numba compilation happens before timing.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

import numpy as np


def _import_fastconv():
    try:
        return importlib.import_module("fastconv.signal"), importlib.import_module("fastconv.ops.ssim")
    except ImportError:
        # package __init__ not importable yet: load the submodules without it
        import types
        pkg = types.ModuleType("fastconv")
        pkg.__path__ = [str(Path(__file__).resolve().parents[1] / "fastconv")]
        sys.modules["fastconv"] = pkg
        return importlib.import_module("fastconv.signal"), importlib.import_module("fastconv.ops.ssim")


def best_time(fn, budget: float = 0.15, repeats: int = 3) -> float:
    fn()
    t = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t, 1e-7)
    n = max(1, min(500, int(budget / one)))
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t) / n)
    return best


def bench_conv(fsig) -> None:
    import scipy.signal as ss
    try:
        import cv2
    except ImportError:
        cv2 = None
    rng = np.random.default_rng(0)
    print(f"{'dtype':8} {'size':>5} {'k':>3} {'scipy us':>10} {'cv2 us':>9} {'fastconv us':>12} "
          f"{'x scipy':>8} {'x cv2':>7}")
    for dt in (np.float64, np.float32):
        for s in (64, 128, 256, 512):
            for k in (3, 7, 15):
                a = rng.standard_normal((s, s)).astype(dt)
                w = rng.standard_normal((k, k)).astype(dt)
                ref = ss.convolve2d(a, w, "same")
                got = fsig.convolve2d(a, w, "same")
                assert np.allclose(got, ref, rtol=1e-3 if dt == np.float32 else 1e-9,
                                   atol=1e-3 if dt == np.float32 else 1e-9)
                t_s = best_time(lambda: ss.convolve2d(a, w, "same"), budget=0.1, repeats=2)
                t_f = best_time(lambda: fsig.convolve2d(a, w, "same"))
                t_c = float("nan")
                if cv2 is not None:
                    wf = np.ascontiguousarray(w[::-1, ::-1])
                    anchor = ((k - 1) - k // 2, (k - 1) - k // 2)
                    t_c = best_time(lambda: cv2.filter2D(a, -1, wf, anchor=anchor, borderType=cv2.BORDER_CONSTANT))
                print(f"{np.dtype(dt).name:8} {s:5d} {k:3d} {t_s * 1e6:10.1f} {t_c * 1e6:9.1f} {t_f * 1e6:12.1f} "
                      f"{t_s / t_f:8.1f} {t_c / t_f:7.2f}")


def bench_ssim(fssim) -> None:
    import torch
    try:
        import pytorch_msssim
    except ImportError:
        pytorch_msssim = None
    torch.manual_seed(0)
    x = torch.rand(16, 1, 256, 256)
    y = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)

    def run(fn):
        xr, yr = x.clone().requires_grad_(), y.clone().requires_grad_()
        fn(xr, yr).backward()

    t_f = best_time(lambda: run(lambda a, b: fssim.ssim(a, b, data_range=1.0)), budget=0.5)
    print(f"ssim fwd+bwd 16x1x256x256 float32: fastconv {t_f * 1e3:.2f} ms", end="")
    if pytorch_msssim is not None:
        t_p = best_time(lambda: run(lambda a, b: pytorch_msssim.ssim(a, b, data_range=1.0)), budget=1.0, repeats=2)
        print(f", pytorch-msssim {t_p * 1e3:.1f} ms, ratio {t_p / t_f:.1f}x")
    else:
        print()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ssim-only", action="store_true")
    ap.add_argument("--conv-only", action="store_true")
    args = ap.parse_args()
    fsig, fssim = _import_fastconv()
    if not args.ssim_only:
        bench_conv(fsig)
    if not args.conv_only:
        bench_ssim(fssim)


if __name__ == "__main__":
    main()
