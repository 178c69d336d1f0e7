"""``fastconv train``: the training loop, its checkpoints and resuming, on one or many processes.

Where a run stands is ``(epoch, position)``: the finished epochs and the samples already
drawn in the next one.  Everything random in an epoch (the sample order, augmentation, noise)
comes from one generator seeded by ``(seed, epoch)`` and advanced batch by batch; a
checkpoint keeps its state together with the model, the optimizer, the partial loss sums
and the global random state, so a run resumed from any checkpoint (an epoch end, or
``checkpoint_last.pt`` written every ``--save-every`` steps) makes exactly the updates the
uninterrupted run made and ends bit-identical to it.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from . import checkpoint as C
from . import distributed as dist
from .base import Forward, Task
from .data import DataError
from .errors import JobError, UsageError
from .options import resolve_args
from .tasks import make_task


def _check_device(args: Dict[str, Any]) -> None:
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


def _fp32_inputs(module: nn.Module, inputs):
    """Forward pre-hook: fastconv layers get float32 inputs under autocast."""
    return tuple(t.float() if isinstance(t, Tensor) and t.is_floating_point() else t for t in inputs)


def _amp_forward(model: nn.Module, device: torch.device) -> Forward:
    def forward(*inputs: Any) -> Any:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            return model(*inputs)

    return forward


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator of one epoch's sample order, augmentation and noise: a function of
    ``(seed, epoch)`` only, so every process and every resumed run draws the same."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def _shard(tensors: Sequence[Optional[Tensor]], info: dist.Dist) -> Tuple[List[Optional[Tensor]], bool]:
    """This process's piece of a global batch (``None`` entries pass through), and whether the
    piece is a zero-weight stand-in (the batch has fewer samples than there are processes)."""
    present = [t for t in tensors if t is not None]
    pieces = iter(dist.shard(present, info))
    out = [None if t is None else next(pieces) for t in tensors]
    if len(next(t for t in out if t is not None)) > 0:
        return out, False
    return [None if t is None else t[:1] for t in tensors], True


def _write_metrics(out: Path, model_name: str, history: List[Dict[str, Any]], test: Optional[Dict[str, float]]) -> None:
    C.atomic_write_text(out / "metrics.json",
                        json.dumps({"model": model_name, "epochs": history, "test": test}, indent=2))


class Trainer:
    """One run of ``fastconv train`` (see :func:`train`)."""

    def __init__(self, args: Dict[str, Any], info: dist.Dist) -> None:
        self.args, self.info = args, info
        self.seed = int(args["seed"])
        self.out = Path(args["out"])
        self.task: Task = make_task(args["model"], args)
        self.task.check()
        self.split = self.task.load_data()
        torch.manual_seed(self.seed)
        np.random.seed(self.seed % 2 ** 32)
        random.seed(self.seed)
        self.model = self.task.build_model(args["backend"]).to(info.device)
        self.history: List[Dict[str, Any]] = []
        self.epoch, self.position, self.steps, self.seen = 0, 0, 0, 0
        self.sums: Dict[str, float] = {}
        self.generator_state: Optional[Tensor] = None
        ckpt = args.get("_checkpoint")
        if ckpt is not None:
            self._restore_model(ckpt)
        self.wrapped = dist.wrap_model(self.model, info)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=args["lr"])
        if ckpt is not None:
            self._restore_run(ckpt)
        self.task.to(info.device)
        self.forward: Forward = self.model
        self.train_forward: Forward = self.wrapped
        if args["amp"]:
            if args["backend"] == "fastconv":
                from ..nn.modules import TWINS

                for m in self.model.modules():
                    if isinstance(m, tuple(TWINS.values())):
                        m.register_forward_pre_hook(_fp32_inputs)
            self.forward = _amp_forward(self.model, info.device)
            self.train_forward = _amp_forward(self.wrapped, info.device)
        self.saved_args = {k: v for k, v in args.items() if not k.startswith("_")}

    # ------------------------------------------------------------------ checkpoints

    def _restore_model(self, ckpt: Dict[str, Any]) -> None:
        path = self.args["_checkpoint_path"]
        try:
            self.model.load_state_dict(ckpt["model"])
        except RuntimeError as exc:
            detail = "; ".join(line.strip() for line in str(exc).splitlines()[1:4])
            raise UsageError(f"--resume: the weights in {path} do not fit the {self.args['model']} model these "
                             f"options build ({detail})") from None

    def _restore_run(self, ckpt: Dict[str, Any]) -> None:
        path = self.args["_checkpoint_path"]
        try:
            self.opt.load_state_dict(ckpt["optimizer"])
        except (ValueError, KeyError) as exc:
            raise UsageError(f"--resume: the optimizer state in {path} does not fit the model ({exc})") from None
        for group in self.opt.param_groups:
            group["lr"] = self.args["lr"]
        self.history = list(ckpt["history"])
        self.epoch, self.position = int(ckpt["epoch"]), int(ckpt["position"])
        if self.position:
            self.steps, self.seen = int(ckpt["steps"]), int(ckpt["seen"])
            self.sums = dict(ckpt["sums"])
            self.generator_state = ckpt["generator"]
        C.set_rng_state(ckpt["rng"])

    def save(self, path: Path, generator: Optional[torch.Generator] = None) -> None:
        """Write the run's state as it is now (rank 0 only)."""
        if not self.info.main:
            return
        C.save_checkpoint({
            "model_name": self.args["model"], "epoch": self.epoch, "position": self.position,
            "steps": self.steps, "seen": self.seen, "sums": dict(self.sums),
            "generator": None if generator is None else generator.get_state(),
            "model": self.model.state_dict(), "optimizer": self.opt.state_dict(), "args": self.saved_args,
            "history": self.history, "rng": C.rng_state(), "world_size": self.info.world_size,
        }, path)

    # ------------------------------------------------------------------ training

    def _say(self, text: str) -> None:
        if self.info.main:
            print(text, file=sys.stderr)

    def _step(self, idx: Tensor, g: torch.Generator) -> int:
        """One optimizer step on the global batch ``idx``; returns its size."""
        s, info = self.split, self.info
        inputs, target = self.task.batch(s.x_train[idx], s.y_train[idx], g)
        n_global = len(target)
        pieces, stand_in = _shard([*inputs, target], info)
        local_inputs, local_target = pieces[:-1], pieces[-1]
        with dist.empty_shard() if stand_in else contextlib.nullcontext():
            out = self.train_forward(*local_inputs)
        loss = self.task.loss(out, local_target)
        n_local = 0 if stand_in else len(local_target)
        if info.active:  # DDP averages the processes' gradients: weight each by its share of the batch
            loss_for_grad = loss * (n_local * info.world_size / n_global)
        else:
            loss_for_grad = loss
        self.opt.zero_grad(set_to_none=True)
        loss_for_grad.backward()
        self.opt.step()
        with torch.no_grad():
            terms = {"loss": loss, **self.task.loss_terms(out, local_target)}
            stats = torch.stack([t.detach().double().cpu() for t in terms.values()]) * n_local
        stats = dist.all_sum(stats, info)
        for name, value in zip(terms, stats.tolist()):
            self.sums[name] = self.sums.get(name, 0.0) + value
        return n_global

    def _epoch_end(self) -> int:
        max_steps = self.args["max_steps"]
        n = len(self.split.x_train)
        return n if not max_steps else min(n, int(max_steps) * int(self.args["batch_size"]))

    def train_epoch(self) -> None:
        """Train from the current position to the end of the epoch, then evaluate and save."""
        args, info = self.args, self.info
        from tqdm.auto import tqdm

        g = epoch_generator(self.seed, self.epoch)
        order = torch.randperm(len(self.split.x_train), generator=g).to(info.device)
        if self.position and self.generator_state is not None:
            g.set_state(self.generator_state)
        else:
            self.position, self.steps, self.seen, self.sums = 0, 0, 0, {}
        self.generator_state = None
        bs, end, save_every = int(args["batch_size"]), self._epoch_end(), int(args["save_every"])
        max_steps = args["max_steps"]
        t0, seen0 = time.perf_counter(), self.seen
        self.wrapped.train()
        bar = tqdm(total=end, initial=self.position, desc=f"epoch {self.epoch + 1}/{args['epochs']}", unit="img",
                   disable=args["quiet"] or not info.main, leave=False, dynamic_ncols=True)
        while self.position < end and not (max_steps and self.steps >= max_steps):
            n = self._step(order[self.position:self.position + bs], g)
            self.position += n
            self.steps += 1
            self.seen += n
            bar.update(n)
            bar.set_postfix(loss=f"{self.sums['loss'] / self.seen:.4f}",
                            **{"samples/s": f"{(self.seen - seen0) / (time.perf_counter() - t0):.0f}"})
            if save_every and self.steps % save_every == 0 and self.position < end:
                self.save(self.out / C.LAST, g)
        bar.close()
        train_time = time.perf_counter() - t0
        record: Dict[str, Any] = {"epoch": self.epoch + 1}
        record.update({f"train_{k}": v / max(self.seen, 1) for k, v in self.sums.items()})
        self.epoch, self.position = self.epoch + 1, 0
        if info.main:
            self.model.eval()
            record.update(self.task.evaluate(self.model, self.forward, "val"))
            record["samples_per_s"] = (self.seen - seen0) / max(train_time, 1e-9)
            record["time"] = time.perf_counter() - t0
            self.history.append(record)
            path = self.out / f"checkpoint_epoch{self.epoch:03d}.pt"
            self.save(path)
            C.atomic_link(path, self.out / C.LAST)
            self.report(final=False)
            shown = ", ".join(f"{k} {v:.4f}" for k, v in record.items() if k not in ("epoch", "time", "samples_per_s"))
            if not args["quiet"]:
                self._say(f"epoch {self.epoch}/{args['epochs']}: {shown} ({record['samples_per_s']:.0f} samples/s, "
                          f"{record['time']:.1f} s)")
        dist.barrier(info)

    def report(self, final: bool) -> Optional[Dict[str, float]]:
        """Write metrics.json and the figures (rank 0); ``final`` adds the test-set metrics."""
        if not self.info.main:
            return None
        from .plots import plot_curves

        self.model.eval()
        test = self.task.evaluate(self.model, self.forward, "test") if final else None
        _write_metrics(self.out, self.args["model"], self.history, test)
        if self.history:
            plot_curves(self.history, self.out / "curves.png", f"fastconv train {self.args['model']} "
                                                               f"({self.args['backend']})")
        with torch.no_grad():
            self.task.write_figures(self.model, self.forward, self.out, final)
        return test

    def run(self) -> List[Dict[str, Any]]:
        """Train up to ``--epochs``, then evaluate on the test set; returns the per-epoch history."""
        args, info = self.args, self.info
        if info.main:
            self.out.mkdir(parents=True, exist_ok=True)
            C.remove_stale_temporaries(self.out)
            if args.get("_changed"):
                self._say(f"fastconv train: note: resuming {args['_checkpoint_path']} with changed options: "
                          + "; ".join(args["_changed"]))
            if not args["quiet"]:
                s = self.split
                where = f"epoch {self.epoch + 1}" + (f", sample {self.position}" if self.position else "")
                self._say(f"fastconv train {args['model']}: {s.source}; {len(s.x_train)} train / {len(s.x_val)} val "
                          f"/ {len(s.x_test)} test samples of {tuple(s.x_train.shape[1:])}; backend "
                          f"{args['backend']} on {info.device}"
                          + (f" x {info.world_size} processes" if info.active else "")
                          + f"; output in {self.out}"
                          + (f"; resuming at {where}" if args.get("_checkpoint") is not None else ""))
        if args.get("_checkpoint") is None:
            self.save(self.out / C.LAST)
        while self.epoch < int(args["epochs"]):
            self.train_epoch()
        test = self.report(final=True)
        if test is not None and not args["quiet"]:
            self._say("test: " + ", ".join(f"{k} {v:.4f}" for k, v in test.items()))
        return self.history


def train(args: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Run (or continue) training as configured by :func:`~fastconv.train.options.resolve_args`;
    returns the per-epoch history (on every process; complete on rank 0).

    Under ``torchrun`` with more than one process, joins the process group first and leaves
    it at the end; a collective that fails because another process died or timed out
    raises :class:`JobError`.
    """
    _check_device(args)
    info = dist.setup(args["device"], float(args["dist_timeout"]))
    finished = False
    try:
        history = Trainer(args, info).run()
        finished = True
        return history
    except Exception as exc:
        if info.active and dist.is_collective_failure(exc):
            raise dist.failure(exc, info, float(args["dist_timeout"])) from exc
        raise
    finally:
        if info.active:
            with contextlib.suppress(Exception):
                if finished:
                    dist.teardown(info)
                else:
                    dist.dist.destroy_process_group()


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``fastconv train`` / ``python -m fastconv.train``; returns the exit code:
    2 for bad options, unusable data or checkpoints or an unavailable device (one line, on
    rank 0 only), 1 when a multi-process job lost a process (on every surviving process)."""
    rank = int(os.environ.get("RANK", "0"))
    try:
        train(resolve_args(argv))
    except (UsageError, DataError) as exc:
        if rank == 0:
            print(f"fastconv train: error: {exc}", file=sys.stderr)
        return 2
    except JobError as exc:
        print(f"fastconv train: error: {exc}", file=sys.stderr)
        return 1
    return 0


__all__ = ["main", "train", "resolve_args", "epoch_generator", "Trainer"]
