"""``fastconv bench``: time 2-D image convolution against SciPy, OpenCV and torch, without asv.

For each image size x kernel size it times ``convolve2d(image, kernel, 'same')`` (zero
fill) with

* ``fastconv``: :func:`fastconv.signal.convolve2d`;
* ``scipy``: :func:`scipy.signal.convolve2d`;
* ``cv2``: ``cv2.filter2D`` -- a correlation, so the kernel is flipped, the anchor set to
  SciPy's centring and the border set to ``BORDER_CONSTANT`` (zeros);
* ``torch``: ``torch.nn.functional.conv2d`` on a 1x1xHxW tensor with the flipped kernel
  and ``padding='same'`` (explicit asymmetric zero padding for even kernels);

and with ``--device cuda`` also ``fastconv.functional.conv2d`` and ``F.conv2d`` on CUDA
tensors (``fastconv-cuda``, ``torch-cuda``; synchronized).  Every implementation's result
is checked against fastconv's before it is timed.  The times are best-of-``--repeat``
seconds per call (each sample loops the call for about ``--budget`` seconds).

It prints the table (times in ms, then fastconv's speedup over each peer: peer time /
fastconv time), writes ``bench.json`` (all numbers) and ``bench.png`` (time vs image
size, log scale, one line per implementation and kernel size) under ``--out``.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

CPU_IMPLS = ("fastconv", "scipy", "cv2", "torch")
CUDA_IMPLS = ("fastconv-cuda", "torch-cuda")


def _int_list(text: str) -> List[int]:
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastconv bench", description=(
        "Time fastconv.signal.convolve2d(mode='same') against scipy.signal.convolve2d, "
        "cv2.filter2D and torch conv2d; print the speedup table and write bench.png and bench.json."))
    p.add_argument("--sizes", type=_int_list, default=[64, 128, 256, 512],
                   help="square image sizes in px, comma-separated (default: 64,128,256,512)")
    p.add_argument("--kernels", type=_int_list, default=[3, 7, 15],
                   help="square kernel sizes, comma-separated (default: 3,7,15)")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32", help="default: float32")
    p.add_argument("--repeat", type=int, default=3, help="best of this many samples per time (default: 3)")
    p.add_argument("--budget", type=float, default=0.02,
                   help="seconds each sample loops the call for (default: 0.02)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="'cuda' adds fastconv-cuda and torch-cuda columns (needs CUDA and CuPy)")
    p.add_argument("--out", type=Path, default=Path("fastconv-bench"),
                   help="directory for bench.png and bench.json (default: ./fastconv-bench)")
    p.add_argument("--seed", type=int, default=0, help="RNG seed for the images and kernels (default: 0)")
    return p


def best_time(fn: Callable[[], object], repeat: int, budget: float) -> float:
    """Best-of-``repeat`` seconds per call; each sample runs ``fn`` enough times to last ~``budget``."""
    fn()  # warm-up: JIT, caches
    t0 = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t0, 1e-7)
    number = max(1, min(10_000, int(budget / one)))
    best = float("inf")
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - t0) / number)
    return best


def _torch_same_pad(k: int):
    """(left, right, top, bottom) zero padding that makes a flipped-kernel correlation equal
    ``convolve2d(..., 'same')``: SciPy takes the full output from offset ``k // 2``."""
    lo, hi = k // 2, k - 1 - k // 2
    return (lo, hi, lo, hi)


def _callables(a: np.ndarray, w: np.ndarray, impls: Sequence[str]) -> Dict[str, Callable[[], object]]:
    import torch
    import torch.nn.functional as F

    from fastconv.signal import convolve2d
    k = w.shape[0]
    wf = np.ascontiguousarray(w[::-1, ::-1])  # convolution = correlation with the flipped kernel
    fns: Dict[str, Callable[[], object]] = {}
    for impl in impls:
        if impl == "fastconv":
            fns[impl] = lambda: convolve2d(a, w, "same")
        elif impl == "scipy":
            import scipy.signal as ss
            fns[impl] = lambda: ss.convolve2d(a, w, "same")
        elif impl == "cv2":
            import cv2
            anchor = (k // 2, k // 2)  # SciPy's 'same' centring: full output from offset k // 2
            fns[impl] = lambda: cv2.filter2D(a, -1, wf, anchor=anchor, borderType=cv2.BORDER_CONSTANT)
        elif impl in ("torch", "fastconv-cuda", "torch-cuda"):
            device = "cuda" if impl.endswith("cuda") else "cpu"
            x = torch.from_numpy(a)[None, None].to(device)
            wt = torch.from_numpy(wf)[None, None].to(device)
            if impl == "fastconv-cuda":
                import fastconv.functional as FF
                conv = FF.conv2d
            else:
                conv = F.conv2d
            if k % 2:
                def fn(conv=conv, x=x, wt=wt, device=device):
                    with torch.no_grad():
                        y = conv(x, wt, padding="same")
                    if device == "cuda":
                        torch.cuda.synchronize()
                    return y
            else:
                pad = _torch_same_pad(k)

                def fn(conv=conv, x=x, wt=wt, device=device, pad=pad):
                    with torch.no_grad():
                        y = conv(F.pad(x, pad), wt)
                    if device == "cuda":
                        torch.cuda.synchronize()
                    return y
            fns[impl] = fn
        else:  # pragma: no cover - internal
            raise ValueError(impl)
    return fns


def _as_numpy(out) -> np.ndarray:
    if hasattr(out, "detach"):
        out = out.detach().cpu().numpy()
    out = np.asarray(out)
    return out.reshape(out.shape[-2:])


def available_impls(device: str) -> List[str]:
    impls = ["fastconv", "scipy"]
    try:
        import cv2  # noqa: F401
        impls.append("cv2")
    except ImportError:
        print("fastconv bench: OpenCV (cv2) is not installed; skipping its column "
              "(pip install opencv-python-headless)", file=sys.stderr)
    impls.append("torch")
    if device == "cuda":
        impls += list(CUDA_IMPLS)
    return impls


def run(sizes: Sequence[int], kernels: Sequence[int], dtype: str = "float32", repeat: int = 3,
        budget: float = 0.02, device: str = "cpu", seed: int = 0) -> dict:
    """Measure the grid; returns the JSON-ready result dictionary."""
    impls = available_impls(device)
    rng = np.random.default_rng(seed)
    rows = []
    for size in sizes:
        for k in kernels:
            a = rng.standard_normal((size, size)).astype(dtype)
            w = rng.standard_normal((k, k)).astype(dtype)
            fns = _callables(a, w, impls)
            ref = _as_numpy(fns["fastconv"]())
            scale = max(float(np.abs(ref).max()), 1e-30)
            tol = 64 * k * k * float(np.finfo(dtype).eps)
            max_err = {}
            for impl, fn in fns.items():
                got = _as_numpy(fn())
                if got.shape != ref.shape:
                    raise RuntimeError(f"{impl} returned shape {got.shape}, expected {ref.shape}")
                err = float(np.abs(got - ref).max()) / scale
                if not err <= tol:
                    raise RuntimeError(f"{impl} disagrees with fastconv at {size}px, k={k}: rel. error {err:.3g}")
                max_err[impl] = err
            times = {impl: best_time(fn, repeat, budget) for impl, fn in fns.items()}
            speedups = {impl: times[impl] / times["fastconv"] for impl in impls if impl != "fastconv"}
            if device == "cuda":
                speedups["torch-cuda vs fastconv-cuda"] = times["torch-cuda"] / times["fastconv-cuda"]
            rows.append({"size": size, "kernel": k, "times_s": times, "speedup": speedups,
                         "max_rel_error": max_err})
    return {"benchmark": "convolve2d(image, kernel, mode='same', boundary='fill')",
            "dtype": dtype, "device": device, "repeat": repeat, "budget_s": budget, "seed": seed,
            "implementations": impls, "sizes": list(sizes), "kernels": list(kernels),
            "speedup_definition": "peer time / fastconv time (> 1: fastconv is faster)",
            "environment": _environment(), "rows": rows}


def _environment() -> dict:
    import numpy
    import scipy
    import torch

    import fastconv
    env = {"python": platform.python_version(), "machine": platform.machine(), "platform": platform.platform(),
           "fastconv": fastconv.__version__, "numpy": numpy.__version__, "scipy": scipy.__version__,
           "torch": torch.__version__, "torch_threads": torch.get_num_threads()}
    try:
        import cv2
        env["opencv"] = cv2.__version__
    except ImportError:
        pass
    try:
        import numba
        env["numba"] = numba.__version__
    except ImportError:
        pass
    return env


def format_table(result: dict) -> str:
    impls = result["implementations"]
    peers = [i for i in impls if i != "fastconv"]
    cols = ["size", "kernel"] + [f"{i}(ms)" for i in impls] + [f"x{p}" for p in peers]
    if result["device"] == "cuda":
        cols.append("xtorch-cuda (fastconv-cuda)")
    widths = [max(6, len(c)) for c in cols]
    lines = [f"convolve2d(mode='same'), {result['dtype']}, best of {result['repeat']}; "
             f"xPEER = PEER time / fastconv time (> 1: fastconv is faster)",
             "  ".join(c.rjust(wd) for c, wd in zip(cols, widths))]
    lines.append("  ".join("-" * wd for wd in widths))
    for row in result["rows"]:
        cells = [str(row["size"]), str(row["kernel"])]
        cells += [f"{row['times_s'][i] * 1e3:.3f}" for i in impls]
        cells += [f"{row['speedup'][p]:.2f}" for p in peers]
        if result["device"] == "cuda":
            cells.append(f"{row['speedup']['torch-cuda vs fastconv-cuda']:.2f}")
        lines.append("  ".join(c.rjust(wd) for c, wd in zip(cells, widths)))
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    impls = result["implementations"]
    styles = ["-", "--", ":", "-.", (0, (1, 1)), (0, (5, 1))]
    markers = ["o", "s", "^", "D", "v", "P"]
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for ki, k in enumerate(result["kernels"]):
        for ii, impl in enumerate(impls):
            rows = [r for r in result["rows"] if r["kernel"] == k]
            ax.plot([r["size"] for r in rows], [r["times_s"][impl] for r in rows],
                    color=f"C{ii}", linestyle=styles[ki % len(styles)], marker=markers[ki % len(markers)],
                    label=f"{impl}, {k}x{k}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(result["sizes"])
    ax.set_xticklabels([str(s) for s in result["sizes"]])
    ax.set_xlabel("image size (px, square)")
    ax.set_ylabel("time per call (s)")
    ax.set_title(f"convolve2d(mode='same'), {result['dtype']}, {result['device']}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=max(1, len(result["kernels"])), loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.repeat < 1:
        print("fastconv bench: --repeat must be at least 1", file=sys.stderr)
        return 2
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("fastconv bench: the figure needs matplotlib: pip install 'fastconv[bench]'", file=sys.stderr)
        return 2
    if args.device == "cuda":
        from fastconv._backend import CUDA_INSTALL_HINT, cuda_available
        import torch
        if not torch.cuda.is_available():
            print("fastconv bench: --device cuda requested but torch sees no CUDA device "
                  "(this torch build or machine has no CUDA).", file=sys.stderr)
            return 2
        if not cuda_available():
            print(f"fastconv bench: --device cuda requested but fastconv's CUDA backend is unavailable. "
                  f"{CUDA_INSTALL_HINT}", file=sys.stderr)
            return 2
    result = run(args.sizes, args.kernels, dtype=args.dtype, repeat=args.repeat, budget=args.budget,
                 device=args.device, seed=args.seed)
    print(format_table(result))
    args.out.mkdir(parents=True, exist_ok=True)
    png, js = args.out / "bench.png", args.out / "bench.json"
    result["figure"] = png.name
    plot(result, png)
    js.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {png} and {js}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
