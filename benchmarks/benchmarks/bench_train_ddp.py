"""Training throughput of ``fastconv train classifier`` on 1 and 2 CPU processes (torchrun, gloo).

Both runs happen in the same ``setup_cache`` call, one after the other, on the same data:
the classifier on sklearn's digits resized to 16 px (1797 * 0.6 training images), global
batch 64, two epochs; the figure is the second (warm) epoch's training samples per second
as ``fastconv train`` records it in ``metrics.json`` (evaluation excluded).  With two
processes each gets half of the cores (``fastconv.train.distributed.share_cpu_threads``),
so ``track_speedup_2_vs_1`` says what data parallelism buys over threads on this machine.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from .common import require_module

ARGS = ["classifier", "--image-size", "16", "--batch-size", "64", "--epochs", "2", "--quiet", "--save-every", "0"]


def train_throughput(processes: int, out: Path) -> float:
    """Samples/s of the second epoch of a ``torchrun --nproc_per_node processes`` classifier run."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
           "--nproc_per_node", str(processes), "-m", "fastconv.train"] + ARGS + ["--out", str(out)]
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)  # let fastconv.train share the cores between the processes
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return float(json.loads((out / "metrics.json").read_text())["epochs"][-1]["samples_per_s"])


class TrainProcesses:
    """Classifier training samples/s with 1 and 2 processes, and their ratio (>1: 2 are faster)."""

    timeout = 1200
    unit = "samples/s"

    def setup_cache(self):
        require_module("torch.distributed")
        require_module("sklearn")
        with tempfile.TemporaryDirectory() as tmp:
            return {n: train_throughput(n, Path(tmp) / f"p{n}") for n in (1, 2)}

    def track_samples_per_s_1_process(self, rates):
        return rates[1]

    def track_samples_per_s_2_processes(self, rates):
        return rates[2]

    def track_speedup_2_vs_1(self, rates):
        return rates[2] / rates[1]

    track_speedup_2_vs_1.unit = "ratio"
