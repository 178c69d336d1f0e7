"""Measure the cost model behind ``fastconv.filters.filter2d(method='auto')``.

Run:  PYTHONPATH=. python benchmarks/calibrate_filter2d.py [--quick]

For float32 and float64 (and complex128 on a small grid) it times the three methods of
``filter2d`` ('direct', 'separable' on a rank-1 kernel, 'fft') in 'same' mode over square
images of 64..1024 px and square kernels of 3..31 taps, then

* fits, per method and dtype, ``time = overhead + c * work`` (``work`` = out pixels x taps
  for direct, out pixels x (P + Q) for separable, n log2 n for fft, n the padded FFT size;
  ``c`` is the median of (time - overhead) / work over the grid, ``overhead`` the time on
  an 8x8 image with a 3x3 kernel);
* prints the measured crossovers (smallest kernel size where fft beats direct, per image
  size) next to the ones the fitted model predicts, and the constants to paste into
  ``fastconv/image/plan.py`` (record the run in ``benchmarks/CALIBRATION.md``).

Timings are best-of-3 wall clock; keep the machine otherwise idle.
"""
from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np

from fastconv import filters as F
from fastconv.image import plan


def best(fn, repeats: int = 3) -> float:
    fn()
    t = time.perf_counter()
    fn()
    one = time.perf_counter() - t
    n = max(1, min(50, int(0.05 / max(one, 1e-7))))
    out = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        out = min(out, (time.perf_counter() - t) / n)
    return out


def work(method: str, s: int, k: int) -> float:
    if method == "direct":
        return s * s * k * k
    if method == "separable":
        return s * s * 2 * k
    n = math.prod(plan.fft_shape(s, s, k, k))
    return n * math.log2(n) * 2  # image + kernel transforms (the model's channels + 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller grid")
    args = ap.parse_args()
    sizes = (64, 256, 512) if args.quick else (64, 128, 256, 512, 1024)
    ksizes = (3, 7, 15, 31) if args.quick else (3, 5, 7, 11, 15, 21, 31)
    rng = np.random.default_rng(0)
    consts = {m: {} for m in plan.METHODS}
    overheads = {m: [] for m in plan.METHODS}
    for dtname in ("float32", "float64", "complex128"):
        dt = np.dtype(dtname)
        grid_s = sizes if dt.kind == "f" else sizes[:3]
        grid_k = ksizes if dt.kind == "f" else ksizes[::2]

        def make(shape):
            x = rng.standard_normal(shape)
            if dt.kind == "c":
                x = x + 1j * rng.standard_normal(shape)
            return x.astype(dt)

        tiny, tk = make((8, 8)), make((3, 3))
        tsep = np.outer(make(3), make(3)).astype(dt)
        oh = {"direct": best(lambda: F.filter2d(tiny, tk, method="direct")),
              "separable": best(lambda: F.filter2d(tiny, tsep, method="separable")),
              "fft": best(lambda: F.filter2d(tiny, tk, method="fft"))}
        for m in plan.METHODS:
            overheads[m].append(oh[m])
        ratios = {m: [] for m in plan.METHODS}
        times = {}
        print(f"\n{dtname}: time per call in us (direct / separable / fft)")
        for s in grid_s:
            img = make((s, s))
            for k in grid_k:
                ker = make((k, k))
                sep = np.outer(make(k), make(k)).astype(dt)
                t = {"direct": best(lambda: F.filter2d(img, ker, method="direct")),
                     "separable": best(lambda: F.filter2d(img, sep, method="separable")),
                     "fft": best(lambda: F.filter2d(img, ker, method="fft"))}
                times[s, k] = t
                for m in plan.METHODS:
                    ratios[m].append(max(t[m] - oh[m], 0.0) / work(m, s, k))
                print(f"  {s:5d} px  k={k:2d}: {t['direct'] * 1e6:10.1f} {t['separable'] * 1e6:10.1f} "
                      f"{t['fft'] * 1e6:10.1f}")
        for m in plan.METHODS:
            consts[m][dtname] = float(np.median(ratios[m]) * 1e9)
        print(f"  measured crossover (smallest kernel where fft < direct), per image size:")
        for s in grid_s:
            ks = [k for k in grid_k if times[s, k]["fft"] < times[s, k]["direct"]]
            pred = [k for k in grid_k if F.choose_method((s, s), make((k, k)), dtype=dt) == "fft"]
            print(f"    {s:5d} px: measured {ks[0] if ks else '>' + str(grid_k[-1])}, "
                  f"current model {pred[0] if pred else '>' + str(grid_k[-1])}")
    print("\nFitted constants (ns per unit of work; overheads in ns):")
    print("DIRECT_NS =", {k: round(v, 3) for k, v in consts["direct"].items()})
    print("SEPARABLE_NS =", {k: round(v, 3) for k, v in consts["separable"].items()})
    print("FFT_NS =", {k: round(v, 3) for k, v in consts["fft"].items()})
    print("OVERHEAD_NS =", {m: round(float(np.median(v)) * 1e9, -2) for m, v in overheads.items()})


if __name__ == "__main__":
    main()
