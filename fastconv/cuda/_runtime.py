"""Kernel sources, module cache, stream and DLPack plumbing for the CUDA backend.

Everything the launchers (:mod:`fastconv.cuda.conv2d`, ``.pool``, ``.ssim``) need
from the outside world goes through a :class:`Runtime`:

* :class:`CupyRuntime` (the default) compiles ``kernels/<family>.cu`` once per
  process with ``cupy.RawModule`` (NVRTC), converts torch tensors to CuPy arrays
  zero-copy through DLPack and launches on torch's current stream.
* :class:`fastconv.testing.emulator.EmulatorRuntime` runs the very same launcher
  code on CPU tensors through the g++ CUDA emulator; tests install it with
  :func:`use_runtime`.

The kernel file location, the NVRTC options and the name expressions (template
instantiations) are defined here once and shared by the launchers, the emulator
and the nvcc/NVRTC compile checks.  CuPy is imported lazily, only when a
:class:`CupyRuntime` is first used.
"""
from __future__ import annotations

import contextlib
import os
import re
import threading
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple

import numpy as np
import torch

#: Environment variable that overrides where the ``.cu`` files are read from.
KERNELS_DIR_ENV = "FASTCONV_KERNELS_DIR"

#: Options handed to NVRTC (through ``cupy.RawModule``), the emulator and the compile checks.
COMPILE_OPTIONS: Tuple[str, ...] = ("--std=c++17",)

#: C++ storage type of each supported dtype, as used in the name expressions.
CTYPES: Dict[torch.dtype, str] = {
    torch.float32: "float",
    torch.float64: "double",
    torch.float16: "fc_half",  # raw binary16 storage, see kernels/fc_common.cuh
    torch.bfloat16: "fc_bf16",
}

#: Kernel templates of every family; each is instantiated for every dtype in :data:`CTYPES`.
FAMILIES: Dict[str, Tuple[str, ...]] = {
    "conv2d": ("conv2d_forward", "conv2d_backward_input", "conv2d_backward_weight", "conv2d_bias_grad"),
    "pool": ("max_pool2d_forward", "max_pool2d_backward", "avg_pool2d_forward", "avg_pool2d_backward",
             "adaptive_avg_pool2d_forward", "adaptive_avg_pool2d_backward"),
    "ssim": ("ssim_stats_forward", "ssim_stats_reduce", "ssim_stats_backward_maps", "ssim_stats_backward"),
}

#: Default dynamic shared memory a launch may request without an opt-in attribute.
MAX_DYNAMIC_SHARED = 48 * 1024

_INCLUDE_RE = re.compile(r'^[ \t]*#[ \t]*include[ \t]+"([^"]+)"[ \t]*$', re.MULTILINE)


def kernels_dir() -> Path:
    """Directory holding the ``.cu`` files: ``$FASTCONV_KERNELS_DIR``, else the checkout's ``kernels/``.

    The repository layout puts ``kernels/`` next to the ``fastconv`` package, which
    covers a source checkout and an editable install; an installed wheel ships
    them as ``fastconv/kernels`` package data.
    """
    env = os.environ.get(KERNELS_DIR_ENV)
    if env:
        return Path(env)
    pkg = Path(__file__).resolve().parent.parent
    for cand in (pkg.parent / "kernels", pkg / "kernels"):
        if (cand / "conv2d.cu").is_file():
            return cand
    raise FileNotFoundError(f"fastconv: cannot find the CUDA kernel sources (looked in {pkg.parent / 'kernels'} "
                            f"and {pkg / 'kernels'}); set {KERNELS_DIR_ENV}")


def kernel_path(family: str) -> Path:
    """Path of ``<family>.cu``."""
    return kernels_dir() / f"{family}.cu"


def kernel_source(family: str) -> str:
    """Source of ``<family>.cu`` with its local ``#include "..."`` files inlined.

    Inlining keeps the code handed to NVRTC self-contained, so CuPy's compile
    cache (keyed on the code) can never serve a module built from a stale header.
    """
    root = kernels_dir()

    def expand(path: Path, seen: Tuple[Path, ...]) -> str:
        text = path.read_text()

        def sub(m: "re.Match[str]") -> str:
            inc = root / m.group(1)
            if not inc.is_file():
                return m.group(0)  # a system header (e.g. <cuda_fp16.h> spelled with quotes): leave it
            if inc in seen:
                return ""
            return f'#line 1 "{m.group(1)}"\n{expand(inc, seen + (inc,))}\n#line 1 "{path.name}"\n'

        return _INCLUDE_RE.sub(lambda m: sub(m), text)

    path = kernel_path(family)
    return f'#line 1 "{path.name}"\n' + expand(path, (path,))


def kernel_name(base: str, dtype: torch.dtype) -> str:
    """Name expression of kernel template ``base`` instantiated for ``dtype``."""
    try:
        return f"{base}<{CTYPES[dtype]}>"
    except KeyError:
        raise TypeError(f"fastconv CUDA kernels support float32, float64, float16 and bfloat16, got {dtype}") from None


def name_expressions(family: str) -> Tuple[str, ...]:
    """Every name expression compiled for ``family``."""
    return tuple(kernel_name(base, dt) for base in FAMILIES[family] for dt in CTYPES)


Grid = Tuple[int, int, int]


def dim3(v: Sequence[int]) -> Grid:
    """Pad a 1-3 element size to three ints."""
    t = tuple(int(i) for i in v) + (1, 1, 1)
    return t[0], t[1], t[2]


class Runtime:
    """Where kernels come from and how they are launched; see the module docstring."""

    def function(self, family: str, name: str) -> Any:
        """The compiled kernel for name expression ``name`` of ``family``."""
        raise NotImplementedError

    def launch(self, family: str, name: str, grid: Sequence[int], block: Sequence[int], args: Sequence[Any],
               shared_mem: int = 0) -> None:
        """Launch ``name`` with CuPy's call shape; torch tensors in ``args`` are converted zero-copy."""
        raise NotImplementedError


class CupyRuntime(Runtime):
    """Real GPU: ``cupy.RawModule`` per (family, device), DLPack views, torch's current stream."""

    def __init__(self) -> None:
        import cupy  # noqa: F401  (fail early with ImportError when absent)

        self._modules: Dict[Tuple[str, int], Any] = {}
        self._lock = threading.Lock()

    def module(self, family: str, device: int) -> Any:
        """Compile (first call) and cache the module of ``family`` for CUDA device ``device``."""
        import cupy

        key = (family, device)
        with self._lock:
            mod = self._modules.get(key)
            if mod is None:
                with cupy.cuda.Device(device):
                    mod = cupy.RawModule(code=kernel_source(family), options=COMPILE_OPTIONS,
                                         name_expressions=name_expressions(family))
                self._modules[key] = mod
        return mod

    def function(self, family: str, name: str, device: Optional[int] = None) -> Any:
        dev = torch.cuda.current_device() if device is None else device
        return self.module(family, dev).get_function(name)

    @staticmethod
    def _array(t: torch.Tensor) -> Any:
        import cupy

        if t.dtype == torch.bfloat16:  # CuPy has no bfloat16: hand over the same bytes as int16
            t = t.view(torch.int16)
        return cupy.from_dlpack(t)

    def launch(self, family: str, name: str, grid: Sequence[int], block: Sequence[int], args: Sequence[Any],
               shared_mem: int = 0) -> None:
        import cupy

        device = next((a.device for a in args if isinstance(a, torch.Tensor)), None)
        if device is None or device.type != "cuda":
            raise ValueError("fastconv CUDA launch without a CUDA tensor argument")
        dev = device.index if device.index is not None else torch.cuda.current_device()
        kernel = self.function(family, name, dev)
        stream = torch.cuda.current_stream(dev)
        with cupy.cuda.Device(dev), cupy.cuda.ExternalStream(stream.cuda_stream, dev):
            conv = tuple(self._array(a) if isinstance(a, torch.Tensor) else a for a in args)
            kernel(dim3(grid), dim3(block), conv, shared_mem=int(shared_mem))


_default: Optional[Runtime] = None
_local = threading.local()


def current() -> Runtime:
    """The runtime in effect: the one installed by :func:`use_runtime`, else a process-wide CuPy runtime."""
    rt = getattr(_local, "runtime", None)
    if rt is not None:
        return rt
    global _default
    if _default is None:
        _default = CupyRuntime()
    return _default


@contextlib.contextmanager
def use_runtime(rt: Runtime) -> Iterator[Runtime]:
    """Run the CUDA launchers of this thread on ``rt`` (e.g. the emulator) inside the block."""
    prev = getattr(_local, "runtime", None)
    _local.runtime = rt
    try:
        yield rt
    finally:
        _local.runtime = prev


def i64(v: int) -> np.int64:
    """Kernel size/index argument (all kernels take ``long long``)."""
    return np.int64(v)


def i32(v: int) -> np.int32:
    """Kernel flag argument (``int``)."""
    return np.int32(v)
