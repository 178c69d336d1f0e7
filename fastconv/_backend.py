"""The single device dispatch point.

Every op asks :func:`kernels` for the backend module that implements its family on the
device of its input; the CPU modules live in :mod:`fastconv.cpu`, the CUDA ones in
:mod:`fastconv.cuda`, one file per family in each.  What a backend module must provide is
the family's ``Backend`` protocol in ``fastconv/ops/<family>.py`` (:func:`contract`), so the
ops, their autograd formulas and their fake (meta) kernels are shared by every device.

Names: the custom op ``fastconv::X`` is computed by the backend function, the Numba kernel
(``_X``) and the CUDA kernel all named ``X``, or ``X_forward`` when ``X`` is a forward op
(``fastconv::conv2d`` -> ``conv2d_forward``).
"""
from __future__ import annotations

import importlib
from types import ModuleType

import torch

CUDA_INSTALL_HINT = (
    "fastconv's CUDA backend needs CuPy. Install it with `pip install 'fastconv[cuda]'` "
    "(or `pip install cupy-cuda13x` matching your CUDA toolkit)."
)


#: The op families; each has ``fastconv/ops/<family>.py``, ``fastconv/cpu/<family>.py`` and
#: ``fastconv/cuda/<family>.py`` (+ ``kernels/<family>.cu``).
FAMILIES = ("conv2d", "pool", "ssim", "batch_norm")


def contract(family: str) -> type:
    """The ``typing.Protocol`` that every backend module of ``family`` implements."""
    if family not in FAMILIES:
        raise ValueError(f"unknown op family {family!r}; families are {FAMILIES}")
    return importlib.import_module(f"fastconv.ops.{family}").Backend


def cuda_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    try:
        import cupy  # noqa: F401
    except Exception:
        return False
    return torch.cuda.is_available()


_resolved: dict = {}


def kernels(family: str, device: torch.device) -> ModuleType:
    """Return the backend module for op ``family`` (e.g. ``'conv2d'``) on ``device``."""
    key = (family, device.type)
    mod = _resolved.get(key)
    if mod is not None:
        return mod
    mod = _resolve(family, device)
    _resolved[key] = mod
    return mod


def _resolve(family: str, device: torch.device) -> ModuleType:
    if device.type == "cpu":
        return importlib.import_module(f"fastconv.cpu.{family}")
    if device.type == "cuda":
        try:
            import cupy  # noqa: F401
        except ImportError as exc:
            raise RuntimeError(f"fastconv received a CUDA tensor but the CUDA backend is not installed. "
                               f"{CUDA_INSTALL_HINT}") from exc
        return importlib.import_module(f"fastconv.cuda.{family}")
    raise RuntimeError(f"fastconv has no backend for device type {device.type!r}; "
                       f"supported devices are 'cpu' and 'cuda'")
