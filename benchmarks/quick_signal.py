"""Quick timing of fastconv.signal.convolve2d(mode='same') against SciPy and OpenCV, and of SSIM.

Run standalone:  PYTHONPATH=. python benchmarks/quick_signal.py [--ssim-only|--conv-only] [--cpu-time]

For each image size (64..512 px square) x kernel size (3, 7, 15) x dtype it prints the
time per call of ``scipy.signal.convolve2d(a, k, 'same')``, ``cv2.filter2D`` (same
output: flipped kernel, BORDER_CONSTANT, anchor chosen to match SciPy's centring) and
fastconv, and the ratios.  Then SSIM forward+backward on 16x1x256x256 float32 against
pytorch-msssim.  Numba compilation happens before timing.

The contenders are timed in interleaved rounds (min over rounds) so that load changes
on a shared machine hit all of them alike.  ``--cpu-time`` measures the calling
thread's CPU time instead of wall time, with every library limited to one thread
(Numba, OpenCV, torch): a stable single-core comparison on a busy machine.
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


CLOCK = time.perf_counter


def race(fns, budget: float = 0.03, rounds: int = 5):
    """Min time per call of each function, timed in interleaved rounds of ~``budget`` s each."""
    counts = []
    for fn in fns:
        fn()
        t = CLOCK()
        fn()
        counts.append(max(1, min(2000, int(budget / max(CLOCK() - t, 1e-7)))))
    best = [float("inf")] * len(fns)
    for _ in range(rounds):
        for i, (fn, n) in enumerate(zip(fns, counts)):
            t = CLOCK()
            for _ in range(n):
                fn()
            best[i] = min(best[i], (CLOCK() - t) / n)
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
                fns = [lambda: ss.convolve2d(a, w, "same"), lambda: fsig.convolve2d(a, w, "same")]
                if cv2 is not None:
                    wf = np.ascontiguousarray(w[::-1, ::-1])
                    anchor = ((k - 1) - k // 2, (k - 1) - k // 2)
                    fns.append(lambda: cv2.filter2D(a, -1, wf, anchor=anchor, borderType=cv2.BORDER_CONSTANT))
                t_s, t_f, t_c = (race(fns) + [float("nan")])[:3]
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

    fns = [lambda: run(lambda a, b: fssim.ssim(a, b, data_range=1.0))]
    if pytorch_msssim is not None:
        fns.append(lambda: run(lambda a, b: pytorch_msssim.ssim(a, b, data_range=1.0)))
    times = race(fns, budget=0.2, rounds=3)
    print(f"ssim fwd+bwd 16x1x256x256 float32: fastconv {times[0] * 1e3:.2f} ms", end="")
    if pytorch_msssim is not None:
        print(f", pytorch-msssim {times[1] * 1e3:.1f} ms, ratio {times[1] / times[0]:.1f}x")
    else:
        print()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ssim-only", action="store_true")
    ap.add_argument("--conv-only", action="store_true")
    ap.add_argument("--cpu-time", action="store_true", help="thread CPU time, one thread everywhere")
    args = ap.parse_args()
    if args.cpu_time:
        global CLOCK
        CLOCK = time.thread_time
        import numba
        import torch
        numba.set_num_threads(1)
        torch.set_num_threads(1)
        try:
            import cv2
            cv2.setNumThreads(1)
        except ImportError:
            pass
    print("clock:", "thread CPU time, single-threaded" if args.cpu_time else "wall time, default threads")
    fsig, fssim = _import_fastconv()
    if not args.ssim_only:
        bench_conv(fsig)
    if not args.conv_only:
        bench_ssim(fssim)


if __name__ == "__main__":
    main()
