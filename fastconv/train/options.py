"""``fastconv train`` options: the argument parser, its value checks, the per-model defaults
and :func:`resolve_args`, which merges defaults, a resumed checkpoint's options and the
command line."""
from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from .errors import UsageError

#: the models ``fastconv train`` knows, in the order ``--help`` lists them
MODELS = ("classifier", "cifarnet", "unet", "segvit", "denoiser", "vae", "cvae")
#: the classifier's augmentations (``--augment`` with no value: all of them)
AUGMENTATIONS = ("flip", "rot90", "shift", "jitter")

#: defaults shared by every model
COMMON_DEFAULTS: Dict[str, Any] = dict(
    data=None, device="cpu", backend="fastconv", seed=0, out=None, resume=None, dice_weight=1.0,
    ssim_weight=0.0, sigma=0.1, amp=False, limit=None, max_steps=None, image_size=None, patch_size=None,
    base=8, depth=3, no_skip=False, quiet=False, split=[0.6, 0.2, 0.2], augment=[], save_every=100,
    dist_timeout=300.0, latent_dim=8, beta=1.0, digits=None, embed_dim=64, heads=4, vit_patch=4)
#: per-model defaults (small enough that each default run takes a few minutes on 2 CPU cores)
MODEL_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "classifier": dict(epochs=8, batch_size=32, lr=2e-3),
    "cifarnet": dict(epochs=5, batch_size=32, lr=1e-3),
    "unet": dict(epochs=10, batch_size=16, lr=3e-3),
    "segvit": dict(epochs=10, batch_size=16, lr=1e-3, depth=4),
    "denoiser": dict(epochs=6, batch_size=16, lr=3e-3),
    "vae": dict(epochs=20, batch_size=32, lr=2e-3, base=32),
    "cvae": dict(epochs=20, batch_size=32, lr=2e-3, base=32),
}
#: options that define the run's data and model; they cannot change when resuming
RESUME_FIXED = ("data", "seed", "limit", "image_size", "patch_size", "base", "depth", "no_skip", "sigma",
                "split", "latent_dim", "embed_dim", "heads", "vit_patch")
#: options that only say how or where to run; a change of these is not worth a note when resuming
RESUME_QUIET = ("resume", "quiet", "out", "device", "dist_timeout", "save_every", "model")


# --------------------------------------------------------------------------- value checks


def _checked(convert: Callable[[str], Any], ok: Callable[[Any], bool], what: str) -> Callable[[str], Any]:
    """An argparse ``type=``: ``convert`` the text, then reject values for which ``ok`` is false."""
    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value

    parse.__name__ = what  # argparse names the type in some messages
    return parse


positive_int = _checked(int, lambda v: v >= 1, "an integer >= 1")
nonnegative_int = _checked(int, lambda v: v >= 0, "an integer >= 0")
positive_float = _checked(float, lambda v: math.isfinite(v) and v > 0, "a finite number > 0")
nonnegative_float = _checked(float, lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")
fraction = _checked(float, lambda v: math.isfinite(v) and 0 < v < 1, "a fraction between 0 and 1")


class _SplitAction(argparse.Action):
    """``--split TRAIN VAL TEST``: three fractions in (0, 1) that add up to 1."""

    def __call__(self, parser, namespace, values, option_string=None):
        if abs(sum(values) - 1.0) > 1e-6:
            parser.error(f"argument --split: the fractions must add up to 1, got "
                         f"{' + '.join(f'{v:g}' for v in values)} = {sum(values):g}")
        setattr(namespace, self.dest, list(values))


def build_parser() -> argparse.ArgumentParser:
    """The ``fastconv train`` argument parser (unset options are absent from the namespace)."""
    d = COMMON_DEFAULTS
    p = argparse.ArgumentParser(
        prog="fastconv train", argument_default=argparse.SUPPRESS,
        description="Train a seed model on fastconv kernels with offline data. Writes DIR/metrics.json, "
                    "DIR/checkpoint_epochNNN.pt, DIR/checkpoint_last.pt, DIR/curves.png and DIR/samples.png "
                    "every epoch, and the test-set metrics at the end. Under torchrun it trains with "
                    "DistributedDataParallel (--batch-size is then the global batch).",
        epilog="Per-model defaults (epochs, batch size, lr): " + "; ".join(
            f"{m}: {v['epochs']}, {v['batch_size']}, {v['lr']:g}" for m, v in MODEL_DEFAULTS.items()))
    p.add_argument("model", choices=MODELS, help="which seed model to train")
    p.add_argument("--data", metavar="PATH",
                   help="dataset folder (default: built-in offline data). classifier/cifarnet/vae/cvae: "
                        "MNIST-style idx files (train-images-idx3-ubyte[.gz], ...) or class subfolders of "
                        "images; unet/segvit: images/ and masks/ with matching file names; denoiser: a "
                        "folder of images or idx files")
    p.add_argument("--epochs", type=positive_int, help="total number of epochs (when resuming: train up to this many)")
    p.add_argument("--batch-size", type=positive_int, help="the global batch size (summed over processes)")
    p.add_argument("--lr", type=positive_float, help="Adam learning rate")
    p.add_argument("--device", choices=("cpu", "cuda"), help=f"default {d['device']}")
    p.add_argument("--backend", choices=("fastconv", "torch"),
                   help="conv/pool layers from fastconv.nn or torch.nn (default fastconv)")
    p.add_argument("--seed", type=nonnegative_int,
                   help="seeds the split, the initial weights, the batch order and the augmentation (default 0)")
    p.add_argument("--split", nargs=3, type=fraction, action=_SplitAction, metavar=("TRAIN", "VAL", "TEST"),
                   help="train/validation/test fractions (default 0.6 0.2 0.2); an idx folder's t10k files "
                        "are the test set and its train files are split TRAIN:VAL")
    p.add_argument("--out", metavar="DIR", help="output folder (default runs/<model>)")
    p.add_argument("--resume", metavar="CKPT",
                   help="checkpoint file, or run folder (its checkpoint_last.pt or latest epoch checkpoint), "
                        "to continue the same run from; it continues bit-identically")
    p.add_argument("--save-every", type=nonnegative_int, metavar="STEPS",
                   help=f"also write DIR/checkpoint_last.pt every STEPS optimizer steps within an epoch "
                        f"(0: only at epoch ends; default {d['save_every']})")
    p.add_argument("--dist-timeout", type=positive_float, metavar="SECONDS",
                   help=f"under torchrun: how long a process waits for the others before the job fails "
                        f"(default {d['dist_timeout']:g})")
    p.add_argument("--dice-weight", type=nonnegative_float, help="unet/segvit: loss = BCE + w * Dice (default 1.0)")
    p.add_argument("--ssim-weight", type=nonnegative_float,
                   help="denoiser: loss = MSE + w * (1 - SSIM), SSIM from fastconv (default 0)")
    p.add_argument("--sigma", type=nonnegative_float,
                   help="denoiser: std of the Gaussian noise on [0, 1] images (default 0.1)")
    p.add_argument("--amp", action="store_true",
                   help="bfloat16 autocast (CUDA only: fastconv's CPU kernels are float32/float64 only)")
    p.add_argument("--limit", type=positive_int,
                   help="use at most this many training samples (validation and test: limit/4 each)")
    p.add_argument("--max-steps", type=positive_int, help="at most this many optimizer steps per epoch")
    p.add_argument("--image-size", type=positive_int,
                   help="classifier/cifarnet/vae/cvae: resize images to this square size (digits default "
                        "8 / 32 / 16 / 16)")
    p.add_argument("--patch-size", type=positive_int, help="unet/segvit/denoiser: patch side (default 32 / 32 / 48)")
    p.add_argument("--base", type=positive_int,
                   help="unet: channels of the first level (default 8); vae/cvae: channels of the first conv "
                        "(default 32)")
    p.add_argument("--depth", type=positive_int,
                   help="unet: number of downsamplings (default 3); segvit: transformer blocks (default 4)")
    p.add_argument("--no-skip", action="store_true", help="unet: zero the skip connections (ablation)")
    p.add_argument("--embed-dim", type=positive_int, help=f"segvit: token width (default {d['embed_dim']})")
    p.add_argument("--heads", type=positive_int, help=f"segvit: attention heads (default {d['heads']})")
    p.add_argument("--vit-patch", type=positive_int,
                   help=f"segvit: side of the square patches the strided conv embeds (default {d['vit_patch']})")
    p.add_argument("--augment", nargs="*", choices=AUGMENTATIONS, metavar="KIND",
                   help="classifier/cifarnet: augment each training batch with random KINDs, drawn from the "
                        "run's seed: " + ", ".join(AUGMENTATIONS) + " (no KIND: all four)")
    p.add_argument("--latent-dim", type=positive_int, help=f"vae/cvae: latent size (default {d['latent_dim']})")
    p.add_argument("--beta", type=nonnegative_float, help="vae/cvae: loss = reconstruction + beta * KL (default 1)")
    p.add_argument("--digits", nargs="+", type=nonnegative_int, metavar="D",
                   help="cvae: the classes of the sample grid DIR/digits.png, 5 samples each (default all)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def parse_given(argv: Optional[List[str]]) -> Dict[str, Any]:
    """The options given on the command line (argparse errors exit with status 2)."""
    given = vars(build_parser().parse_args(argv))
    if given.get("augment") == []:
        given["augment"] = list(AUGMENTATIONS)
    return given


def defaults(model: str) -> Dict[str, Any]:
    """Every option's default for ``model``."""
    return {**COMMON_DEFAULTS, **MODEL_DEFAULTS[model]}


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value) if value else "(none)"
    return "(not set)" if value is None else str(value)


def option_differences(saved: Dict[str, Any], args: Dict[str, Any]) -> Tuple[List[str], List[str]]:
    """``(fixed, changed)``: lines ``--opt NEW (checkpoint: OLD)`` for the options in ``args`` that
    differ from a checkpoint's ``saved`` options; ``fixed`` holds those that define the data or
    the model (:data:`RESUME_FIXED`), ``changed`` the others worth a note."""
    fixed, changed = [], []
    for key in sorted(args):
        if key.startswith("_") or key in RESUME_QUIET or key not in saved or saved[key] == args[key]:
            continue
        line = f"{_flag(key)} {_show(args[key])} (checkpoint: {_show(saved[key])})"
        (fixed if key in RESUME_FIXED else changed).append(line)
    return fixed, changed


def resolve_args(argv: Optional[List[str]]) -> Dict[str, Any]:
    """Parse ``argv`` into the full argument dict: defaults, then (when resuming) the checkpoint's
    options, then the options given on the command line.

    When resuming, adds ``_checkpoint`` (the loaded checkpoint), ``_checkpoint_path`` and
    ``_changed`` (the notes from :func:`option_differences`).  Raises :class:`UsageError` when the
    checkpoint is unusable or was made by another model or with other data/model options.
    """
    from .checkpoint import find_checkpoint, load_checkpoint

    given = parse_given(argv)
    model = given["model"]
    args = defaults(model)
    ckpt, changed = None, []
    if given.get("resume"):
        path = find_checkpoint(Path(given["resume"]))
        ckpt = load_checkpoint(path)
        if ckpt["model_name"] != model:
            raise UsageError(f"--resume: {path} is a {ckpt['model_name']!r} checkpoint, not {model!r}")
        saved = {**args, **ckpt["args"]}
        fixed, changed = option_differences(saved, {k: v for k, v in given.items() if k in saved})
        if fixed:
            raise UsageError(f"--resume: {path} was trained with other data or model options; these cannot "
                             f"change when resuming (drop them, or start a new run with another --out): "
                             + "; ".join(fixed))
        args.update(saved)
        given["resume"] = str(path)
        args["_checkpoint_path"] = str(path)
    args.update(given)
    if args["out"] is None:
        args["out"] = os.path.join("runs", model)
    args["_checkpoint"] = ckpt
    args["_changed"] = changed
    return args
