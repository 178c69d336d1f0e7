"""Plots of the committed asv results (``benchmarks/results/``), drawn when the docs are built.

asv writes one JSON file per (machine, commit, environment): ``results[name][0]`` holds the
values of a benchmark for every combination of its parameters (``results[name][1]``, the
lists whose product is taken in order), ``NaN``/``None`` for combinations that did not run
(e.g. CUDA on a CPU-only machine).  ``benchmarks.json`` next to the machine folders gives
each benchmark's parameter names and unit.  Nothing here is specific to one benchmark, so
results added later are plotted too.
"""
from __future__ import annotations

import ast
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import matplotlib.pyplot as plt

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


@dataclass
class Run:
    """One benchmark at one commit: ``values[combo]`` for each parameter combination."""
    name: str
    commit: str
    date: int
    param_names: List[str]
    params: List[List[str]]
    values: Dict[Tuple[str, ...], float] = field(default_factory=dict)
    unit: str = ""


def _label(raw: str) -> str:
    """asv stores parameter values as Python reprs: "'fastconv'" -> fastconv."""
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw
    return str(value)


def _finite(v) -> Optional[float]:
    if v is None:
        return None
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def load(results: Path = RESULTS) -> Tuple[List[Run], Dict[str, dict]]:
    """Every run of every machine, oldest first, and the benchmark metadata."""
    meta_file = results / "benchmarks.json"
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    runs: List[Run] = []
    for machine in sorted(p for p in results.iterdir() if p.is_dir()):
        for f in sorted(machine.glob("*.json")):
            if f.name == "machine.json":
                continue
            data = json.loads(f.read_text())
            columns = data.get("result_columns", ["result", "params"])
            i_res, i_par = columns.index("result"), columns.index("params")
            for name, entry in data.get("results", {}).items():
                raw, params = entry[i_res], [[_label(p) for p in ps] for ps in (entry[i_par] or [])]
                info = meta.get(name, {})
                names = list(info.get("param_names") or [f"param {i}" for i in range(len(params))])
                run = Run(name, data["commit_hash"], int(data.get("date") or 0), names, params,
                          unit=info.get("unit", ""))
                values = raw if isinstance(raw, list) else [raw]
                combos = list(itertools.product(*params)) if params else [()]
                for combo, v in zip(combos, values):
                    if _finite(v) is not None:
                        run.values[combo] = float(v)
                runs.append(run)
    runs.sort(key=lambda r: r.date)
    return runs, meta


def latest(runs: Sequence[Run]) -> Dict[str, Run]:
    """The newest run of each benchmark that has at least one value."""
    out: Dict[str, Run] = {}
    for run in runs:
        if run.values:
            out[run.name] = run
    return out


def _short(name: str) -> str:
    """bench_signal.Convolve2dSpeedup.track_speedup -> Convolve2dSpeedup (bench_signal)."""
    parts = name.split(".")
    return f"{parts[1]} ({parts[0]})" if len(parts) >= 3 else name


def _geomean(values: Sequence[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def _is_ratio(run: Run) -> bool:
    return run.unit == "ratio" or ".track_speedup" in run.name


def speedup_summary(results: Path = RESULTS):
    """For each speedup benchmark's newest run: every ratio (dots) and their geometric mean
    (bar) per value of the first parameter.  Ratio = peer time / fastconv time."""
    runs = [r for r in latest(load(results)[0]).values() if _is_ratio(r) and all(v > 0 for v in r.values.values())]
    if not runs:
        return _empty("no speedup benchmarks in benchmarks/results/")
    fig, axes = plt.subplots(len(runs), 1, figsize=(8, 1.2 + 0.42 * sum(len(r.params[0]) for r in runs) + 0.6 * len(runs)),
                             squeeze=False)
    for ax, run in zip(axes[:, 0], runs):
        groups = [g for g in run.params[0] if any(c[0] == g for c in run.values)]
        for y, g in enumerate(groups):
            vals = [v for c, v in run.values.items() if c[0] == g]
            ax.barh(y, _geomean(vals), color="C0", alpha=0.35, height=0.7)
            ax.plot(vals, [y] * len(vals), "o", color="C0", markersize=3, alpha=0.8)
            ax.text(max(vals) * 1.15, y, f"{_geomean(vals):.2f}x (n={len(vals)})", va="center", fontsize=7)
        ax.axvline(1.0, color="k", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_yticks(range(len(groups)))
        ax.set_yticklabels(groups, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(f"{_short(run.name)} by {run.param_names[0]}, commit {run.commit[:8]}", fontsize=9)
        ax.grid(True, axis="x", which="both", alpha=0.3)
        lo = min(min(run.values.values()), 0.5)
        ax.set_xlim(lo / 1.5, max(run.values.values()) * 6)
    axes[-1, 0].set_xlabel("speedup of fastconv = peer time / fastconv time (log; > 1: fastconv is faster)")
    fig.tight_layout()
    return fig


def speedup_vs_size(results: Path = RESULTS, benchmark: str = "bench_signal.Convolve2dSpeedup.track_speedup"):
    """Geometric-mean speedup against the numeric parameter ``size``, a line per first parameter
    (peer), a panel per remaining numeric parameter value (kernel size)."""
    run = latest(load(results)[0]).get(benchmark)
    if run is None or "size" not in run.param_names:
        return _empty(f"{benchmark} has no results with a 'size' parameter")
    i_size = run.param_names.index("size")
    i_kernel = run.param_names.index("kernel") if "kernel" in run.param_names else None
    kernels = run.params[i_kernel] if i_kernel is not None else [None]
    fig, axes = plt.subplots(1, len(kernels), figsize=(3.6 * len(kernels), 4.0), sharey=True, squeeze=False)
    sizes = sorted(run.params[i_size], key=float)
    for ax, k in zip(axes[0], kernels):
        for j, peer in enumerate(run.params[0]):
            xs, ys = [], []
            for s in sizes:
                vals = [v for c, v in run.values.items()
                        if c[0] == peer and c[i_size] == s and (i_kernel is None or c[i_kernel] == k) and v > 0]
                if vals:
                    xs.append(float(s))
                    ys.append(_geomean(vals))
            if xs:
                ax.plot(xs, ys, marker="o", color=f"C{j}", label=peer)
        ax.axhline(1.0, color="k", linewidth=0.8)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks([float(s) for s in sizes])
        ax.set_xticklabels(sizes)
        ax.set_xlabel("image size (px)")
        ax.set_title(f"kernel {k}x{k}" if k is not None else "", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
    axes[0, 0].set_ylabel("speedup (peer / fastconv)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(5, len(labels)), fontsize=7)
    fig.suptitle(f"{_short(benchmark)}, commit {run.commit[:8]} (geometric mean over the other parameters)",
                 fontsize=9)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def speedup_history(results: Path = RESULTS):
    """Geometric-mean speedup of each speedup benchmark at every commit that ran it, in date order."""
    runs = [r for r in load(results)[0] if _is_ratio(r) and r.values and all(v > 0 for v in r.values.values())]
    if not runs:
        return _empty("no speedup results")
    commits: List[str] = []
    for r in runs:
        if r.commit not in commits:
            commits.append(r.commit)
    fig, ax = plt.subplots(figsize=(8, 3.8))
    names = sorted({r.name for r in runs})
    for j, name in enumerate(names):
        pts = sorted((commits.index(r.commit), _geomean(list(r.values.values()))) for r in runs if r.name == name)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", color=f"C{j}", label=_short(name))
    ax.axhline(1.0, color="k", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xticks(range(len(commits)))
    ax.set_xticklabels([c[:8] for c in commits], rotation=45, ha="right", fontsize=7)
    ax.set_xlabel("commit (oldest first)")
    ax.set_ylabel("geometric-mean speedup")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def peak_memory(results: Path = RESULTS):
    """Peak resident memory (MB) of the newest run of each ``peakmem_*`` benchmark."""
    runs = [r for r in latest(load(results)[0]).values() if r.unit == "bytes" or ".peakmem_" in r.name]
    if not runs:
        return _empty("no peak-memory results")
    labels, values, colors = [], [], []
    for j, run in enumerate(runs):
        for combo, v in run.values.items():
            labels.append(f"{_short(run.name).split(' ')[0]}: {', '.join(combo)}")
            values.append(v / 2 ** 20)
            colors.append(f"C{j}")
    fig, ax = plt.subplots(figsize=(8, 0.8 + 0.28 * len(values)))
    ax.barh(range(len(values)), values, color=colors, alpha=0.8)
    ax.set_yticks(range(len(values)))
    ax.set_yticklabels(labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("peak resident memory of the process (MB; importing torch alone takes ~250 MB)")
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def _empty(text: str):
    fig, ax = plt.subplots(figsize=(6, 1))
    ax.text(0.5, 0.5, text, ha="center", va="center")
    ax.axis("off")
    return fig
