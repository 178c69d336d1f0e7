"""CPU engine figures against torch/oneDNN in one process: layers, train steps, tiny calls.

The shapes are the ones the CPU-engine issue measures (float32, ``torch.set_num_threads(2)``
on the 2-core machine).  Each figure is the median of ``--repeat`` interleaved samples
(fastconv, then torch, then fastconv...), so both sides see the same machine state.
Run it on a quiet machine (``../shared/bin/quiet python benchmarks/cpu_engine.py``).

    python benchmarks/cpu_engine.py                 # everything
    python benchmarks/cpu_engine.py --only layers   # layers | common | train | tiny | passes | blocks | separate
    python benchmarks/cpu_engine.py --json out.json

``separate`` times each train step in a process of its own (fastconv's and torch's processes
alternate, ``--rounds`` each; the figure is the median of the processes' medians): in one process
each side's memory affects the other's page faults -- fastconv's output pool keeps pages that torch
would otherwise reuse, and torch's frees decide which of fastconv's allocations fault.

The ``asv`` benchmarks ``bench_layers``/``bench_train`` time the same things as ``track_``
ratios; this script prints the whole table at once for the issue notes.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Tuple

import torch
import torch.nn.functional as TF

import fastconv
import fastconv.functional as F
from fastconv import models

#: (name, N, C, H, O, k, stride, padding) -- the issue's eight layers.
LAYERS: List[Tuple[str, int, int, int, int, int, int, int]] = [
    ("128x3x32^2->32 3x3", 128, 3, 32, 32, 3, 1, 1),
    ("128x32x16^2->64 3x3", 128, 32, 16, 64, 3, 1, 1),
    ("128x64x8^2->128 3x3", 128, 64, 8, 128, 3, 1, 1),
    ("64x3x32^2->64 5x5", 64, 3, 32, 64, 5, 1, 0),
    ("64x64x14^2->32 5x5", 64, 64, 14, 32, 5, 1, 0),
    ("4x16x128^2->16 3x3", 4, 16, 128, 16, 3, 1, 1),
    ("4x128x16^2->128 3x3", 4, 128, 16, 128, 3, 1, 1),
    ("128x32x14^2->16 3x3 s2", 128, 32, 14, 16, 3, 2, 1),
]

#: (name, N, C, H, O, k, stride, padding, groups) -- common layers beyond the issue's: ResNet's
#: 3x3 body (and one image of it), downsampling and stem, a bottleneck's 1x1, ResNeXt's grouped
#: 3x3 and MobileNet / ConvNeXt / EfficientNet depthwise layers (``--only common``; asv:
#: ``bench_layers.CommonLayerRatio``).
COMMON: List[Tuple[str, int, int, int, int, int, int, int, int]] = [
    ("resnet 8x64x56^2->64 3x3", 8, 64, 56, 64, 3, 1, 1, 1),
    ("resnet 8x64x56^2->128 3x3 s2", 8, 64, 56, 128, 3, 2, 1, 1),
    ("resnet stem 8x3x224^2->64 7x7 s2", 8, 3, 224, 64, 7, 2, 3, 1),
    ("bottleneck 8x256x56^2->64 1x1", 8, 256, 56, 64, 1, 1, 0, 1),
    ("resnext 8x128x28^2 3x3 g32", 8, 128, 28, 128, 3, 1, 1, 32),
    ("depthwise 8x32x112^2 3x3", 8, 32, 112, 32, 3, 1, 1, 32),
    ("depthwise 8x144x56^2 3x3 s2", 8, 144, 56, 144, 3, 2, 1, 144),
    ("depthwise 8x96x56^2 7x7", 8, 96, 56, 96, 7, 1, 3, 96),
    ("depthwise 8x512x14^2 3x3", 8, 512, 14, 512, 3, 1, 1, 512),
    ("depthwise 32x960x7^2 3x3", 32, 960, 7, 960, 3, 1, 1, 960),
    ("resnet b1 1x64x56^2->64 3x3", 1, 64, 56, 64, 3, 1, 1, 1),
]

#: (name, model factory kwargs, input shape, loss)
TRAIN = [
    ("classifier b128 3x32^2", "Classifier", dict(in_channels=3, image_size=32), (128, 3, 32, 32), "ce"),
    ("cifarnet b64", "CifarNet", dict(), (64, 3, 32, 32), "ce"),
    ("unet c16 b4 3x128^2", "UNet", dict(in_channels=3, base=16), (4, 3, 128, 128), "bce"),
    ("denoiser b128 1x32^2", "Denoiser", dict(in_channels=1), (128, 1, 32, 32), "mse"),
]


def interleaved(fns: Dict[str, Callable[[], object]], repeat: int, warmup: int = 2) -> Dict[str, float]:
    """Median seconds per call of each function, sampled alternately ``repeat`` times."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: Dict[str, List[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            samples[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in samples.items()}


def _tiny_loop(fn: Callable[[], object], n: int = 200) -> Callable[[], None]:
    def run():
        for _ in range(n):
            fn()
    return run


def bench_layers(repeat: int, layers=LAYERS) -> List[dict]:
    rows = []
    for name, n, c, h, o, k, s, p, *groups in layers:
        g = groups[0] if groups else 1
        torch.manual_seed(0)
        x0, w0, b0 = torch.randn(n, c, h, h), torch.randn(o, c // g, k, k), torch.randn(o)

        def make(conv):
            # each side its own leaves: freeing the other side's gradients (torch's are fresh
            # mappings, a millisecond to unmap at 6 MB) is not this side's time
            x, w, b = (t.clone().requires_grad_(True) for t in (x0, w0, b0))

            def fwd():
                with torch.no_grad():
                    conv(x, w, b, stride=s, padding=p, groups=g)

            def fwd_bwd():
                x.grad = w.grad = b.grad = None
                y = conv(x, w, b, stride=s, padding=p, groups=g)
                y.backward(torch.ones_like(y))
            return fwd, fwd_bwd

        ff, fb = make(F.conv2d)
        tf, tb = make(TF.conv2d)
        fwd = interleaved({"fastconv": ff, "torch": tf}, repeat)
        both = interleaved({"fastconv": fb, "torch": tb}, repeat)
        plan = None
        try:
            from fastconv.cpu.conv_plan import plan_name
            plan = " ".join(plan_name((n, c, h, h), (o, c // g, k, k), (s, s), (p, p, p, p), (1, 1), g, torch.float32, ps)
                            for ps in ("forward", "backward_input", "backward_weight"))
        except Exception:  # older engines have no planner
            pass
        rows.append(dict(layer=name, plan=plan, torch_fwd_ms=fwd["torch"] * 1e3, fastconv_fwd_ms=fwd["fastconv"] * 1e3,
                         torch_fb_ms=both["torch"] * 1e3, fastconv_fb_ms=both["fastconv"] * 1e3,
                         ratio_fwd=fwd["fastconv"] / fwd["torch"], ratio_fb=both["fastconv"] / both["torch"]))
    return rows


def bench_passes(repeat: int) -> List[dict]:
    """Each pass of each layer alone: fastconv's CPU backend functions against aten's
    ``convolution``/``convolution_backward`` with one output of the mask (ms)."""
    from fastconv.cpu import conv2d as C
    rows = []
    for name, n, c, h, o, k, s, p in LAYERS:
        torch.manual_seed(0)
        x, w, b = torch.randn(n, c, h, h), torch.randn(o, c, k, k), torch.randn(o)
        g = torch.randn_like(TF.conv2d(x, w, b, stride=s, padding=p))
        pad4, hw = [p, p, p, p], list(x.shape[2:])

        def aten_bwd(mask):
            return lambda: torch.ops.aten.convolution_backward(g, x, w, [o], [s, s], [p, p], [1, 1], False, [0, 0], 1,
                                                               mask)
        cases = {
            "fwd": (lambda: C.conv2d_forward(x, w, b, [s, s], pad4, [1, 1], 1, tuple(g.shape[2:])),
                    lambda: torch.ops.aten.convolution(x, w, b, [s, s], [p, p], [1, 1], False, [0, 0], 1)),
            "bwd_input": (lambda: C.conv2d_backward_input(g, w, None, [s, s], pad4, [1, 1], 1, hw),
                          aten_bwd([True, False, False])),
            "bwd_weight": (lambda: C.conv2d_backward_weight(x, g, [s, s], pad4, [1, 1], 1, (k, k)),
                           aten_bwd([False, True, False])),
        }
        row = dict(layer=name)
        for part, (f, t) in cases.items():
            r = interleaved({"fastconv": f, "torch": t}, repeat)
            row[f"{part}_torch_ms"] = r["torch"] * 1e3
            row[f"{part}_fastconv_ms"] = r["fastconv"] * 1e3
            row[f"{part}_ratio"] = r["fastconv"] / r["torch"]
        rows.append(row)
    return rows


def _step(model_name: str, kwargs: dict, shape, loss: str, backend: str):
    torch.manual_seed(0)
    model = getattr(models, model_name)(backend=backend, **kwargs).train()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(*shape, generator=g)
    if loss == "ce":
        target = torch.randint(0, 10, (shape[0],), generator=g)
        loss_fn = TF.cross_entropy
    elif loss == "bce":
        target = (torch.rand(shape[0], 1, *shape[2:], generator=g) > 0.5).float()
        loss_fn = TF.binary_cross_entropy_with_logits
    else:
        target = torch.rand(*shape, generator=g)
        loss_fn = TF.mse_loss
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), target).backward()
        opt.step()
    return step


#: (name, N, C, H) -- the UNet's conv -> BatchNorm -> ReLU blocks in training (C -> C channels, 3x3).
BLOCKS: List[Tuple[str, int, int, int]] = [
    ("4x16x128^2", 4, 16, 128),
    ("4x32x64^2", 4, 32, 64),
    ("4x128x16^2", 4, 128, 16),
]


def bench_blocks(repeat: int) -> List[dict]:
    """Conv -> BatchNorm2d -> ReLU in training mode, forward+backward: torch's three modules against the
    converted block (``convert_model(fuse=True)``: the conv, then the fused batch-norm + ReLU op)."""
    rows = []
    for name, n, c, h in BLOCKS:
        torch.manual_seed(0)
        ref = torch.nn.Sequential(torch.nn.Conv2d(c, c, 3, padding=1, bias=False), torch.nn.BatchNorm2d(c),
                                  torch.nn.ReLU(inplace=True))
        mods = {"torch": ref, "fastconv": fastconv.convert_model(copy.deepcopy(ref), fuse=True)}
        x = torch.randn(n, c, h, h, requires_grad=True)
        g = torch.randn(n, c, h, h)

        def step(m):
            def run():
                x.grad = None
                m(x).backward(g)
            return run
        t = interleaved({k: step(m) for k, m in mods.items()}, repeat)
        rows.append(dict(block=name, torch_ms=t["torch"] * 1e3, fastconv_ms=t["fastconv"] * 1e3,
                         ratio=t["fastconv"] / t["torch"]))
    return rows


def bench_train(repeat: int) -> List[dict]:
    rows = []
    for name, model_name, kwargs, shape, loss in TRAIN:
        fns = {b: _step(model_name, kwargs, shape, loss, b) for b in ("fastconv", "torch")}
        t = interleaved(fns, repeat)
        rows.append(dict(model=name, torch_ms=t["torch"] * 1e3, fastconv_ms=t["fastconv"] * 1e3,
                         ratio=t["fastconv"] / t["torch"]))
    return rows


def _train_row(name: str) -> tuple:
    for row in TRAIN:
        if row[0] == name:
            return row
    raise ValueError(f"no train step named {name!r}")


def step_seconds(name: str, backend: str, repeat: int) -> float:
    """Median seconds of ``repeat`` train steps of ``name`` on ``backend`` (after three warm-up steps)."""
    _, model_name, kwargs, shape, loss = _train_row(name)
    step = _step(model_name, kwargs, shape, loss, backend)
    for _ in range(3):
        step()
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        step()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def bench_train_separate(repeat: int, rounds: int, threads: int) -> List[dict]:
    """:func:`bench_train` with each side in processes of its own, alternating (see the module notes)."""
    rows = []
    for name, *_ in TRAIN:
        t: Dict[str, List[float]] = {"fastconv": [], "torch": []}
        for _ in range(rounds):
            for backend in t:
                out = subprocess.run([sys.executable, __file__, "--step", name, backend, "--repeat", str(repeat),
                                      "--threads", str(threads)], capture_output=True, text=True, check=True)
                t[backend].append(float(out.stdout.split()[-1]))
        fc, tc = statistics.median(t["fastconv"]), statistics.median(t["torch"])
        rows.append(dict(model=name, torch_ms=tc * 1e3, fastconv_ms=fc * 1e3, ratio=fc / tc))
    return rows


def bench_tiny(repeat: int) -> List[dict]:
    x = torch.randn(1, 1, 4, 4)
    w = torch.randn(1, 1, 3, 3)
    xg = x.clone().requires_grad_(True)
    cases = {
        "conv2d fwd 1x1x4x4": (lambda: F.conv2d(x, w, padding=1), lambda: TF.conv2d(x, w, padding=1)),
        "conv2d fwd+bwd 1x1x4x4": (lambda: F.conv2d(xg, w, padding=1).sum().backward(),
                                   lambda: TF.conv2d(xg, w, padding=1).sum().backward()),
        "max_pool2d fwd 1x1x4x4": (lambda: F.max_pool2d(x, 2), lambda: TF.max_pool2d(x, 2)),
        "avg_pool2d fwd 1x1x4x4": (lambda: F.avg_pool2d(x, 2), lambda: TF.avg_pool2d(x, 2)),
    }
    rows = []
    for name, (f, t) in cases.items():
        r = interleaved({"fastconv": _tiny_loop(f), "torch": _tiny_loop(t)}, repeat)
        rows.append(dict(call=name, torch_us=r["torch"] / 200 * 1e6, fastconv_us=r["fastconv"] / 200 * 1e6,
                         ratio=r["fastconv"] / r["torch"]))
    return rows


def _print(title: str, rows: List[dict]) -> None:
    print(f"\n## {title}")
    if not rows:
        return
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in r.values()) + " |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=["layers", "common", "train", "tiny", "passes", "blocks", "separate"],
                    action="append")
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--rounds", type=int, default=3, help="processes per side for 'separate'")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json")
    ap.add_argument("--step", nargs=2, metavar=("MODEL", "BACKEND"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.step:  # one side of 'separate', in its own process: print the median seconds
        print(step_seconds(a.step[0], a.step[1], a.repeat))
        return 0
    parts = a.only or ["layers", "train", "tiny"]
    out = {"fastconv": fastconv.__version__, "torch": torch.__version__, "threads": a.threads}
    print(f"fastconv {fastconv.__version__}, torch {torch.__version__}, {a.threads} threads, median of {a.repeat}",
          flush=True)
    if "tiny" in parts:
        out["tiny"] = bench_tiny(a.repeat)
        _print("tiny calls (us per call)", out["tiny"])
    if "layers" in parts:
        out["layers"] = bench_layers(a.repeat)
        _print("conv layers, float32 (fastconv/torch time ratio; < 1 is faster)", out["layers"])
    if "common" in parts:
        out["common"] = bench_layers(a.repeat, COMMON)
        _print("common layers beyond the issue's, float32 (fastconv/torch time ratio; < 1 is faster)", out["common"])
    if "passes" in parts:
        out["passes"] = bench_passes(a.repeat)
        _print("conv passes, float32, backend functions (ms; fastconv/torch)", out["passes"])
    if "blocks" in parts:
        out["blocks"] = bench_blocks(a.repeat)
        _print("conv -> BatchNorm -> ReLU blocks, training, forward+backward (fastconv/torch)", out["blocks"])
    if "train" in parts:
        out["train"] = bench_train(a.repeat)
        _print("train steps (fastconv/torch)", out["train"])
    if "separate" in parts:
        out["separate"] = bench_train_separate(a.repeat, a.rounds, a.threads)
        _print(f"train steps, each side in its own processes ({a.rounds} each; fastconv/torch)", out["separate"])
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(out, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
