"""Sample calls of every backend contract function, for runs that must touch every kernel (ASan).

:func:`backend_calls` yields, for one op family and dtype, a call of each function of the
family's ``Backend`` protocol (:func:`fastconv._backend.contract`); it raises when a contract
function has no sample, so a new op cannot slip out of the sanitizer run.  :func:`run_all`
drives them over :data:`fastconv._backend.FAMILIES` on the current CUDA runtime and checks
that every kernel of the runtime's kernel table was launched.
"""
from __future__ import annotations

import contextlib
import inspect
from typing import Any, Callable, Dict, Iterator, List, Sequence, Tuple

import torch

from fastconv import _backend
from fastconv.cuda import _runtime


def _conv(dt: torch.dtype) -> Dict[str, Tuple[Any, ...]]:
    x = torch.randn(2, 4, 9, 10).to(dt)
    w = torch.randn(6, 2, 3, 2).to(dt)
    b = torch.randn(6).to(dt)
    geo = ((2, 1), (1, 1, 2, 2), (1, 2), 2)
    g = torch.randn(2, 6, 5, 12).to(dt)
    return {
        "conv2d_forward": (x, w, b, *geo, (5, 12)),
        "conv2d_backward_input": (g, w, None, *geo, (9, 10)),
        "conv2d_backward_weight": (x, g, *geo, (3, 2)),
        "conv2d_bias_grad": (g,),
    }


def _conv_extra(dt: torch.dtype) -> List[Tuple[str, Tuple[Any, ...]]]:
    x = torch.randn(1, 20, 11, 9).to(dt)
    w = torch.randn(40, 20, 3, 3).to(dt)
    geo = ((1, 2), (2, 1, 0, 3), (1, 1), 1)
    g = torch.randn(1, 40, 11, 5).to(dt)
    return [("conv2d_forward", (x, w, None, *geo, (11, 5))), ("conv2d_backward_input", (g, w, None, *geo, (11, 9))),
            ("conv2d_backward_weight", (x, g, *geo, (3, 3)))]


def _pool(dt: torch.dtype) -> Dict[str, Tuple[Any, ...]]:
    x = torch.randn(2, 4, 9, 10).to(dt)
    y = torch.randn(2, 4, 5, 5).to(dt)
    idx = torch.randint(0, 90, (2, 4, 5, 5))
    return {
        "max_pool2d_forward": (x, (3, 3), (2, 2), (1, 1), (1, 1), (5, 5)),
        "max_pool2d_values_for": (tuple(x.shape), dt, (3, 3), (2, 2), (1, 1), (1, 1), (5, 5), x),
        "max_pool2d_backward": (y, idx, (9, 10)),
        "avg_pool2d_forward": (x, (3, 3), (2, 2), (1, 1), False, 0, (5, 5)),
        "avg_pool2d_forward_for": (tuple(x.shape), dt, (3, 3), (2, 2), (1, 1), False, 0, (5, 5), x),
        "avg_pool2d_backward": (y, (3, 3), (2, 2), (1, 1), False, 0, (9, 10)),
        "adaptive_avg_pool2d_forward": (x, (4, 3)),
        "adaptive_avg_pool2d_backward": (y[:, :, :4, :3].contiguous(), (9, 10)),
    }


def _ssim(dt: torch.dtype) -> Dict[str, Tuple[Any, ...]]:
    x = torch.rand(2, 2, 12, 13).to(dt)
    y = (x.float() * 0.7 + 0.1).to(dt)
    g = torch.randn(2, 2).to(dt)
    return {
        "ssim_stats_forward": (x, y, 7, 1.5, 1e-4, 9e-4),
        "ssim_stats_backward": (g, -g, x, y, 7, 1.5, 1e-4, 9e-4),
    }


def _batch_norm(dt: torch.dtype) -> Dict[str, Tuple[Any, ...]]:
    x = torch.randn(3, 5, 6, 7).to(dt)
    w, b = torch.rand(5).to(dt), torch.randn(5).to(dt)
    mean, var = x.double().mean((0, 2, 3)), x.double().var((0, 2, 3), unbiased=False)
    return {
        "batch_norm_act_forward": (x, w, b, 1e-5, "relu", 0.0),
        "batch_norm_act_backward": (torch.randn_like(x), x, None, b, mean, var, 1e-5, "leaky_relu", 0.1),
    }


_SAMPLES: Dict[str, Callable[[torch.dtype], Dict[str, Tuple[Any, ...]]]] = {"conv2d": _conv, "pool": _pool,
                                                                             "ssim": _ssim, "batch_norm": _batch_norm}

#: Extra samples that reach kernels the basic ones do not (e.g. a special-cased output size).
_EXTRA: Dict[str, Callable[[torch.dtype], List[Tuple[str, Tuple[Any, ...]]]]] = {
    "pool": lambda dt: [("adaptive_avg_pool2d_forward", (torch.randn(3, 5, 7, 6).to(dt), (1, 1)))],
    "conv2d": _conv_extra,  # more than 16 rows: the 64 x 64 tile
}


@contextlib.contextmanager
def allow_tf32(flag: bool) -> Iterator[None]:
    """Set ``torch.backends.cudnn.allow_tf32`` inside the block (through ``cudnn.flags``, which torch's test
    utilities require once they froze the global flags), keeping the other cuDNN flags."""
    c = torch.backends.cudnn
    with c.flags(enabled=c.enabled, benchmark=c.benchmark, deterministic=c.deterministic, allow_tf32=flag):
        yield


def backend_calls(family: str, dtype: torch.dtype) -> Iterator[Tuple[str, Tuple[Any, ...]]]:
    """(contract function name, arguments) for every function of ``family``'s Backend protocol.

    A ``*_for`` function returns a per-signature function; its arguments are followed by that
    function's input (see :func:`call`)."""
    contract = [n for n, f in vars(_backend.contract(family)).items()
                if inspect.isfunction(f) and not n.startswith("_")]
    samples = _SAMPLES[family](dtype)
    missing = sorted(set(contract) - set(samples))
    if missing:
        raise KeyError(f"fastconv.testing.samples has no sample call for {family}: {missing}")
    for name in contract:
        yield name, samples[name]
    yield from _EXTRA.get(family, lambda dt: [])(dtype)


def call(module: Any, name: str, args: Tuple[Any, ...]) -> Any:
    """One sample call of backend ``module``'s ``name``: a ``*_for`` function builds its
    per-signature function from all arguments but the last, which that function then runs on."""
    if name.endswith("_for"):
        return getattr(module, name)(*args[:-1])(args[-1])
    return getattr(module, name)(*args)


def run_all(dtypes: Sequence[torch.dtype] = (torch.float32, torch.float16, torch.float64, torch.bfloat16)) -> None:
    """Call every contract function of every family on the current runtime; every instantiation must launch.

    The runtime must record its launches in ``launches`` (:class:`fastconv.testing.emulator.EmulatorRuntime`).
    """
    import importlib

    rt = _runtime.current()
    start = len(rt.launches)
    for family in _backend.FAMILIES:
        mod = importlib.import_module(f"fastconv.cuda.{family}")
        for dt in dtypes:
            for tf32 in ((False, True) if dt == torch.float32 else (True,)):  # float32: exact and TF32 paths
                with allow_tf32(tf32):
                    for name, args in backend_calls(family, dt):
                        call(mod, name, args)
    launched = {expr for expr, *_ in rt.launches[start:]}
    ctypes = {_runtime.CTYPES[dt] for dt in dtypes}
    table = {e for fam in _backend.FAMILIES for e in _runtime.name_expressions(fam)
             if "<" not in e or e.split("<", 1)[1].split(",")[0].rstrip(">").strip() in ctypes}
    if table - launched:
        raise AssertionError(f"instantiations never launched by the sample calls: {sorted(table - launched)}")
