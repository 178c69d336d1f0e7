"""``fastconv train``: argument parsing, the training loop, checkpoints and resuming."""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch
from torch import Tensor, nn

from .data import DataError
from .tasks import MODELS, Task, make_task

#: defaults shared by every model
COMMON_DEFAULTS: Dict[str, Any] = dict(
    data=None, device="cpu", backend="fastconv", seed=0, out=None, resume=None, dice_weight=1.0,
    ssim_weight=0.0, sigma=0.1, amp=False, limit=None, max_steps=None, image_size=None, patch_size=None,
    base=8, depth=3, no_skip=False, quiet=False)
#: per-model defaults (small enough that each default run takes a few minutes on 2 CPU cores)
MODEL_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "classifier": dict(epochs=8, batch_size=32, lr=2e-3),
    "cifarnet": dict(epochs=5, batch_size=32, lr=1e-3),
    "unet": dict(epochs=10, batch_size=16, lr=3e-3),
    "denoiser": dict(epochs=6, batch_size=16, lr=3e-3),
}
#: arguments that define the run's data and model; they cannot change when resuming
RESUME_FIXED = ("data", "seed", "limit", "image_size", "patch_size", "base", "depth", "no_skip", "sigma")


class UsageError(Exception):
    """A bad combination of options or an unavailable device; reported without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    """The ``fastconv train`` argument parser (unset options are absent from the namespace)."""
    d = {k: v for k, v in COMMON_DEFAULTS.items()}
    p = argparse.ArgumentParser(
        prog="fastconv train", argument_default=argparse.SUPPRESS,
        description="Train a seed model on fastconv kernels with offline data. Writes DIR/metrics.json, "
                    "DIR/checkpoint_epochNNN.pt, DIR/curves.png and DIR/samples.png every epoch.",
        epilog="Per-model defaults (epochs, batch size, lr): " + "; ".join(
            f"{m}: {v['epochs']}, {v['batch_size']}, {v['lr']:g}" for m, v in MODEL_DEFAULTS.items()))
    p.add_argument("model", choices=MODELS, help="which seed model to train")
    p.add_argument("--data", metavar="PATH",
                   help="dataset folder (default: built-in offline data). classifier/cifarnet: MNIST-style idx "
                        "files (train-images-idx3-ubyte[.gz], ...) or class subfolders of images; unet: images/ "
                        "and masks/ with matching file names; denoiser: a folder of images or idx files")
    p.add_argument("--epochs", type=int, help="total number of epochs (when resuming: train up to this many)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="Adam learning rate")
    p.add_argument("--device", choices=("cpu", "cuda"), help=f"default {d['device']}")
    p.add_argument("--backend", choices=("fastconv", "torch"),
                   help="conv/pool layers from fastconv.nn or torch.nn (default fastconv)")
    p.add_argument("--seed", type=int, help="seeds the split, the initial weights and the batch order (default 0)")
    p.add_argument("--out", metavar="DIR", help="output folder (default runs/<model>)")
    p.add_argument("--resume", metavar="CKPT",
                   help="checkpoint file (or run folder: its latest checkpoint) to continue the same run from")
    p.add_argument("--dice-weight", type=float, help="unet: loss = BCE + w * Dice (default 1.0)")
    p.add_argument("--ssim-weight", type=float,
                   help="denoiser: loss = MSE + w * (1 - SSIM), SSIM from fastconv (default 0)")
    p.add_argument("--sigma", type=float, help="denoiser: std of the Gaussian noise on [0, 1] images (default 0.1)")
    p.add_argument("--amp", action="store_true",
                   help="bfloat16 autocast (CUDA only: fastconv's CPU kernels are float32/float64 only)")
    p.add_argument("--limit", type=int, help="use at most this many training samples (validation: limit/4)")
    p.add_argument("--max-steps", type=int, help="at most this many optimizer steps per epoch")
    p.add_argument("--image-size", type=int,
                   help="classifier/cifarnet: resize images to this square size (digits default 8 / 32)")
    p.add_argument("--patch-size", type=int, help="unet/denoiser: patch side (default 32 / 48)")
    p.add_argument("--base", type=int, help="unet: channels of the first level (default 8)")
    p.add_argument("--depth", type=int, help="unet: number of downsamplings (default 3)")
    p.add_argument("--no-skip", action="store_true", help="unet: zero the skip connections (ablation)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _latest_checkpoint(path: Path) -> Path:
    if path.is_dir():
        ckpts = sorted(path.glob("checkpoint_epoch*.pt"))
        if not ckpts:
            raise UsageError(f"--resume: no checkpoint_epoch*.pt in {path}")
        return ckpts[-1]
    if not path.exists():
        raise UsageError(f"--resume: checkpoint {path} does not exist")
    return path


def resolve_args(argv: Optional[List[str]]) -> Dict[str, Any]:
    """Parse ``argv`` into the full argument dict: defaults, then (when resuming) the checkpoint's
    arguments, then the options given on the command line.  Adds ``_checkpoint`` when resuming."""
    given = vars(build_parser().parse_args(argv))
    model = given["model"]
    args: Dict[str, Any] = {**COMMON_DEFAULTS, **MODEL_DEFAULTS[model]}
    ckpt = None
    if given.get("resume"):
        path = _latest_checkpoint(Path(given["resume"]))
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        if ckpt.get("model_name") != model:
            raise UsageError(f"--resume: {path} is a {ckpt.get('model_name')!r} checkpoint, not {model!r}")
        for k in RESUME_FIXED:
            if k in given and given[k] != ckpt["args"].get(k):
                raise UsageError(f"--resume: --{k.replace('_', '-')} {given[k]} differs from the checkpoint's "
                                 f"{ckpt['args'].get(k)}; data and model options cannot change when resuming")
        args.update({k: v for k, v in ckpt["args"].items() if not k.startswith("_")})
        given["resume"] = str(path)
    args.update(given)
    if args["out"] is None:
        args["out"] = os.path.join("runs", model)
    args["_checkpoint"] = ckpt
    return args


def _check_device(args: Dict[str, Any]) -> torch.device:
    if args["device"] == "cuda":
        if not torch.cuda.is_available():
            raise UsageError("--device cuda: no CUDA device is available to torch "
                             "(needs a CUDA build of torch and a GPU); use --device cpu")
        if args["backend"] == "fastconv":
            from .._backend import CUDA_INSTALL_HINT, cuda_available

            if not cuda_available():
                raise UsageError(f"--device cuda with --backend fastconv: {CUDA_INSTALL_HINT}")
    if args["amp"] and args["device"] != "cuda":
        raise UsageError("--amp needs --device cuda: fastconv's CPU kernels are float32/float64 only "
                         "(bfloat16 autocast is not supported on the CPU)")
    for k in ("epochs", "batch_size"):
        if args[k] is None or args[k] < 1:
            raise UsageError(f"--{k.replace('_', '-')} must be >= 1, got {args[k]}")
    return torch.device(args["device"])


def _rng_state() -> Dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _fp32_inputs(module: nn.Module, inputs):
    """Forward pre-hook: fastconv layers get float32 inputs under autocast."""
    return tuple(t.float() if isinstance(t, Tensor) and t.is_floating_point() else t for t in inputs)


def _forward_fn(model: nn.Module, args: Dict[str, Any], device: torch.device) -> Callable[[Tensor], Tensor]:
    if not args["amp"]:
        return model
    if args["backend"] == "fastconv":
        from ..nn.modules import TWINS

        fast = tuple(TWINS.values())
        for m in model.modules():
            if isinstance(m, fast):
                m.register_forward_pre_hook(_fp32_inputs)

    def forward(x: Tensor) -> Tensor:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            return model(x)

    return forward


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator for one epoch's batch order, augmentation and noise: a function of
    (seed, epoch) only, so a resumed run draws exactly what the uninterrupted run drew."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def train(args: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Run (or continue) training as configured by :func:`resolve_args`; returns the per-epoch history."""
    from tqdm.auto import tqdm

    from .plots import plot_curves, plot_samples

    device = _check_device(args)
    ckpt = args.get("_checkpoint")
    seed = int(args["seed"])
    out = Path(args["out"])
    out.mkdir(parents=True, exist_ok=True)

    task: Task = make_task(args["model"], args)
    split = task.load_data()
    torch.manual_seed(seed)
    np.random.seed(seed % 2 ** 32)
    random.seed(seed)
    model = task.build_model(args["backend"]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=args["lr"])
    history: List[Dict[str, Any]] = []
    start = 0
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        for group in opt.param_groups:
            group["lr"] = args["lr"]
        history, start = list(ckpt["history"]), int(ckpt["epoch"])
        _set_rng_state(ckpt["rng"])

    for name in ("x_train", "y_train", "x_val", "y_val"):
        setattr(split, name, getattr(split, name).to(device))
    if hasattr(task, "to"):
        task.to(device)
    forward = _forward_fn(model, args, device)
    n_train, bs = len(split.x_train), int(args["batch_size"])
    steps = (n_train + bs - 1) // bs
    if args["max_steps"]:
        steps = min(steps, int(args["max_steps"]))
    saved = {k: v for k, v in args.items() if not k.startswith("_")}
    if not args["quiet"]:
        print(f"fastconv train {args['model']}: {split.source}; {n_train} train / {len(split.x_val)} val "
              f"samples of {tuple(split.x_train.shape[1:])}; backend {args['backend']} on {device}; "
              f"output in {out}", file=sys.stderr)

    for epoch in range(start, int(args["epochs"])):
        t0 = time.perf_counter()
        g = _epoch_generator(seed, epoch)
        order = torch.randperm(n_train, generator=g).to(device)
        model.train()
        total, seen = 0.0, 0
        bar = tqdm(total=min(n_train, steps * bs), desc=f"epoch {epoch + 1}/{args['epochs']}", unit="img",
                   disable=args["quiet"], leave=False, dynamic_ncols=True)
        for step in range(steps):
            idx = order[step * bs:(step + 1) * bs]
            xb, yb = task.batch(split.x_train[idx], split.y_train[idx], g)
            loss = task.loss(forward(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
            elapsed = time.perf_counter() - t0
            bar.update(len(idx))
            bar.set_postfix(loss=f"{total / seen:.4f}", **{"samples/s": f"{seen / elapsed:.0f}"})
        bar.close()
        train_time = time.perf_counter() - t0
        model.eval()
        record: Dict[str, Any] = {"epoch": epoch + 1, "train_loss": total / max(seen, 1)}
        record.update(task.evaluate(model, forward))
        record["samples_per_s"] = seen / train_time
        record["time"] = time.perf_counter() - t0
        history.append(record)

        _write_json(out / "metrics.json", history)
        torch.save({"model_name": args["model"], "epoch": epoch + 1, "model": model.state_dict(),
                    "optimizer": opt.state_dict(), "args": saved, "history": history, "rng": _rng_state()},
                   out / f"checkpoint_epoch{epoch + 1:03d}.pt")
        plot_curves(history, out / "curves.png", f"fastconv train {args['model']} ({args['backend']})")
        plot_samples(args["model"], split, forward, out / "samples.png",
                     noisy_val=getattr(task, "noisy_val", None), classes=split.classes)
        if not args["quiet"]:
            shown = ", ".join(f"{k} {v:.4f}" for k, v in record.items() if k not in ("epoch", "time",
                                                                                     "samples_per_s"))
            print(f"epoch {epoch + 1}/{args['epochs']}: {shown} ({record['samples_per_s']:.0f} samples/s, "
                  f"{record['time']:.1f} s)", file=sys.stderr)
    return history


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``fastconv train`` / ``python -m fastconv.train``; returns the exit code
    (2 for bad options, unusable data or an unavailable device, with a one-line message)."""
    try:
        args = resolve_args(argv)
        train(args)
    except (UsageError, DataError) as exc:
        print(f"fastconv train: error: {exc}", file=sys.stderr)
        return 2
    return 0
