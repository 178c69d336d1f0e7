"""Helpers shared by the ``fastconv train`` tests: launching runs in other processes (plain,
killed at a chosen step, or under torchrun) and comparing finished runs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

REPO = Path(__file__).resolve().parents[1]

#: runs ``fastconv.train.main(argv)``; with KILL_STEP set, the process whose RANK is KILL_RANK
#: (default 0) sends itself KILL_SIGNAL (default KILL) as it starts its KILL_STEP-th optimizer
#: step; with KILL_SAVE set, the KILL_SAVE-th checkpoint write is cut off half-way by SIGKILL.
KILLER = r'''
import os, signal, sys
import torch
from fastconv.train import checkpoint, engine

me = int(os.environ.get("RANK", "0")) == int(os.environ.get("KILL_RANK", "0"))
sig = getattr(signal, "SIG" + os.environ.get("KILL_SIGNAL", "KILL"))
steps, saves = [0], [0]
step_at, save_at = int(os.environ.get("KILL_STEP", "0")), int(os.environ.get("KILL_SAVE", "0"))
original_step, original_save = engine.Trainer._step, torch.save

def _step(self, idx, g):
    steps[0] += 1
    if me and steps[0] == step_at:
        os.kill(os.getpid(), sig)
    return original_step(self, idx, g)

def _save(obj, fh, *args, **kwargs):
    saves[0] += 1
    if me and saves[0] == save_at and hasattr(fh, "write"):
        import io
        buf = io.BytesIO()
        original_save(obj, buf, *args, **kwargs)
        fh.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        fh.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return original_save(obj, fh, *args, **kwargs)

engine.Trainer._step = _step
checkpoint.torch.save = _save
sys.exit(engine.main(sys.argv[1:]))
'''


def env(**extra: str) -> Dict[str, str]:
    """The test's environment with this checkout first on PYTHONPATH, plus ``extra``."""
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in e.get("PYTHONPATH", "").split(os.pathsep) if p])
    e.update(extra)
    return e


def killer_script(folder: Path) -> Path:
    path = folder / "killer.py"
    path.write_text(KILLER)
    return path


def run_killed(folder: Path, argv: Sequence[str], timeout: float = 120, **kill: str) -> subprocess.CompletedProcess:
    """Run ``fastconv train argv`` in a new process that kills itself as ``kill`` says (see KILLER).

    The child gets this process's torch and Numba thread counts: bit-identical resumes compare
    runs with the same threads (torch's reductions round differently with another count).
    """
    import numba
    import torch

    threads = dict(OMP_NUM_THREADS=str(torch.get_num_threads()), NUMBA_NUM_THREADS=str(numba.get_num_threads()))
    return subprocess.run([sys.executable, str(killer_script(folder))] + list(argv), env=env(**threads, **kill),
                          capture_output=True, text=True, timeout=timeout)


def torchrun(nproc: int, argv: Sequence[str], script: Optional[Path] = None, timeout: float = 180,
             **extra: str) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node nproc -m fastconv.train argv`` (or ``script argv``)."""
    target = [str(script)] if script else ["-m", "fastconv.train"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
           "--nproc_per_node", str(nproc)] + target + list(argv)
    return subprocess.run(cmd, env=env(OMP_NUM_THREADS="1", **extra), capture_output=True, text=True,
                          timeout=timeout)


def metrics(out: Path) -> dict:
    return json.loads((Path(out) / "metrics.json").read_text())


def deterministic(history: List[dict]) -> List[dict]:
    """Epoch records without their wall-clock fields."""
    return [{k: v for k, v in r.items() if k not in ("time", "samples_per_s")} for r in history]


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_state(a: dict, b: dict) -> None:
    """Two state dicts (or checkpoints' ``model``) are bit-identical."""
    assert list(a) == list(b)
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs: max |diff| {(a[k].double() - b[k].double()).abs().max()}"


def assert_close_state(a: dict, b: dict, rtol: float, atol: float) -> None:
    assert list(a) == list(b)
    for k in a:
        torch.testing.assert_close(a[k].double(), b[k].double(), rtol=rtol, atol=atol, msg=lambda m: f"{k}: {m}")
