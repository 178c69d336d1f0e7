"""Checkpoints of ``fastconv train``: atomic writes, the random-number state, and loading
with errors that name the file.

A checkpoint is a dict saved by :func:`torch.save` that :func:`torch.load` reads back with
``weights_only=True``: tensors, numbers, strings, lists, tuples and dicts only (the NumPy
random state is stored as a tensor).  ``format`` is :data:`FORMAT`; ``epoch`` counts the
finished epochs and ``position`` the samples already drawn in the next one, so a checkpoint
written mid-epoch (``position > 0``) continues from the very next batch.
"""
from __future__ import annotations

import io
import os
import pickle
import random
import zipfile
from pathlib import Path
from typing import Any, Callable, Dict

import numpy as np
import torch

from .errors import UsageError, first_line

FORMAT = "fastconv-train-checkpoint"
VERSION = 1
#: the rolling resume checkpoint, written at the start, every ``--save-every`` steps and at epoch ends
LAST = "checkpoint_last.pt"
REQUIRED = ("model_name", "epoch", "position", "model", "optimizer", "args", "history", "rng")


# --------------------------------------------------------------------------- atomic files


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[io.BufferedWriter], None]) -> None:
    """Write ``path`` all or nothing: ``write(fh)`` fills a temporary file in the same folder,
    which is flushed to disk and then renamed over ``path`` (:func:`os.replace`).  A process
    killed at any moment leaves either the old file or the new one, never a part."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    """:func:`atomic_write` of UTF-8 text."""
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def atomic_link(source: Path, path: Path) -> None:
    """Make ``path`` a second name of the finished file ``source`` (a copy where hard links
    are not possible), replacing ``path`` atomically."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
        os.replace(tmp, path)
    except OSError:
        atomic_write(path, lambda fh: fh.write(Path(source).read_bytes()))


def remove_stale_temporaries(folder: Path) -> None:
    """Delete the temporary files a killed run left in ``folder``."""
    for tmp in Path(folder).glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


def save_checkpoint(state: Dict[str, Any], path: Path) -> None:
    """Atomically save ``state`` (see the module docstring) to ``path``."""
    atomic_write(path, lambda fh: torch.save({"format": FORMAT, "version": VERSION, **state}, fh))


# --------------------------------------------------------------------------- random state


def rng_state() -> Dict[str, Any]:
    """The global random state of torch (and CUDA), NumPy and Python, as checkpoint-safe values."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: Dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------- loading


def _describe(obj: Any) -> str:
    if isinstance(obj, dict):
        keys = ", ".join(repr(k) for k in list(obj)[:5])
        return f"a dict with keys {keys}{', ...' if len(obj) > 5 else ''}"
    return f"a {type(obj).__name__}"


def load_checkpoint(path: Path) -> Dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises
    ------
    UsageError
        naming ``path``, when the file is missing, truncated or corrupt, not a checkpoint of
        ``fastconv train`` (say a bare ``state_dict`` or another program's pickle) or from a
        newer version of fastconv.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--resume: checkpoint {path} does not exist")
    if not zipfile.is_zipfile(path):
        raise UsageError(f"--resume: {path} is truncated or corrupt, or not a checkpoint at all: its "
                         f"{path.stat().st_size} bytes are not the zip archive torch.save writes")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = first_line(exc)
        raise UsageError(f"--resume: {path} is not a fastconv train checkpoint: it holds Python objects a "
                         f"checkpoint never holds, and is not loaded ({first})") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, IndexError, KeyError) as exc:
        first = first_line(exc)
        raise UsageError(f"--resume: {path} is truncated or corrupt ({path.stat().st_size} bytes); "
                         f"torch.load failed: {first}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UsageError(f"--resume: {path} is not a fastconv train checkpoint: it is a torch file holding "
                         f"{_describe(ckpt)}, without format {FORMAT!r}")
    if int(ckpt.get("version", 0)) > VERSION:
        raise UsageError(f"--resume: {path} has checkpoint format version {ckpt['version']}; this fastconv "
                         f"reads up to version {VERSION} (upgrade fastconv)")
    missing = [k for k in REQUIRED if k not in ckpt]
    if missing:
        raise UsageError(f"--resume: {path} is an incomplete fastconv train checkpoint: no {', '.join(missing)}")
    return ckpt


def _progress(path: Path) -> tuple:
    ckpt = load_checkpoint(path)
    return int(ckpt["epoch"]), int(ckpt["position"])


def find_checkpoint(path: Path) -> Path:
    """The checkpoint ``--resume PATH`` means: ``PATH`` itself, or in a run folder the one that
    got furthest of ``checkpoint_last.pt`` and the newest ``checkpoint_epochNNN.pt``."""
    path = Path(path)
    if not path.is_dir():
        if not path.exists():
            raise UsageError(f"--resume: checkpoint {path} does not exist")
        return path
    candidates = sorted(path.glob("checkpoint_epoch*.pt"))[-1:]
    if (path / LAST).is_file():
        candidates.append(path / LAST)
    if not candidates:
        raise UsageError(f"--resume: no {LAST} or checkpoint_epoch*.pt in {path}")
    if len(candidates) == 1:
        return candidates[0]
    return max(candidates, key=_progress)
