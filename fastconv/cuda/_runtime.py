"""Module cache, stream handling and the one host-side tensor conversion of the CUDA backend.

Everything the launchers (:mod:`fastconv.cuda.conv2d`, ``.pool``, ``.ssim``) need from the
outside world goes through a :class:`Runtime`, whose :meth:`Runtime.launch` is shared by every
device library:

1. the keyword arguments are bound to the kernel's parameters as its ``.cu`` source declares
   them (:meth:`fastconv.cuda._source.Signature.bind`): names, order, scalar C types;
2. the block is checked against the kernel's ``__launch_bounds__``;
3. every tensor goes through :func:`host_array` (detach, contiguity, bfloat16 as int16, DLPack);
4. the device library's kernel is called on the right stream.

Only step 4 and the array library of step 3 differ between the runtimes:

* :class:`CupyRuntime` (the default) compiles ``kernels/<family>.cu`` once per process and
  device with fastconv's own NVRTC call (:mod:`fastconv.cuda._nvrtc`: subnormals kept), loads
  the cubin into ``cupy.RawModule``, converts with ``cupy.from_dlpack`` and launches on
  torch's current stream;
* :class:`fastconv.testing.emulator.EmulatorRuntime` converts with ``numpy.from_dlpack`` and
  runs the g++ CUDA emulator on CPU tensors; tests install it with :func:`use_runtime`.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import tempfile
import threading
from pathlib import Path
from types import ModuleType
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch

from . import _nvrtc, _source
from ._source import CTYPES, LaunchError, kernel_path, kernel_source, kernels_dir  # noqa: F401  (re-exported)

#: Options shared by NVRTC, nvcc and the emulator (the language; device flags: :func:`_nvrtc.options`).
COMPILE_OPTIONS: Tuple[str, ...] = _nvrtc.LANGUAGE_OPTIONS

#: The op families with a ``kernels/<family>.cu`` and a ``fastconv/cuda/<family>.py``.
FAMILIES: Tuple[str, ...] = ("conv2d", "pool", "ssim", "batch_norm")

#: Default dynamic shared memory a launch may request without an opt-in attribute.
MAX_DYNAMIC_SHARED = 48 * 1024

Grid = Tuple[int, int, int]


def dim3(v: Sequence[int]) -> Grid:
    """Pad a 1-3 element size to three ints."""
    t = tuple(int(i) for i in v) + (1, 1, 1)
    return t[0], t[1], t[2]


def launcher(family: str) -> ModuleType:
    """The launcher module :mod:`fastconv.cuda.<family>`."""
    if family not in FAMILIES:
        raise ValueError(f"unknown CUDA kernel family {family!r}; families are {FAMILIES}")
    return importlib.import_module(f"fastconv.cuda.{family}")


def name_expressions(family: str) -> Tuple[str, ...]:
    """Every name expression (template instantiation) the launchers of ``family`` use."""
    return tuple(launcher(family).instantiations())


def dtype_instantiations(family: str) -> Tuple[str, ...]:
    """Each kernel of ``<family>.cu`` for each dtype of :data:`CTYPES` (once if it is no template)."""
    out = []
    for decl in _source.kernels(family).values():
        if not decl.template:
            out.append(decl.expression())
        elif decl.template == (("typename", "T"),):
            out += [decl.expression(dt) for dt in CTYPES]
    return tuple(out)


def kernel_table() -> Dict[str, Tuple[str, ...]]:
    """Family -> the kernels its ``.cu`` file defines (read from the source)."""
    return {fam: tuple(sorted(_source.kernels(fam))) for fam in FAMILIES}


def host_array(t: torch.Tensor, xp: Any, writable: bool = True) -> Any:
    """The one conversion of a launch argument: torch tensor -> ``xp`` array over the same memory.

    ``xp`` is the device library (``cupy``, or ``numpy`` for CPU tensors under the emulator).
    The tensor is detached first (torch refuses to export a tensor that requires grad), a
    non-contiguous input (``writable=False``) is made contiguous (the kernels index densely),
    and so is a lazily negated one resolved (``is_neg()``: its memory holds the negatives); a
    non-contiguous or negated output is an error, and bfloat16 travels as int16 (neither CuPy
    nor NumPy has bfloat16).  Export goes through DLPack.
    """
    t = t.detach()
    if not t.is_contiguous() or t.is_neg():
        if writable:
            raise LaunchError("fastconv CUDA launch: an output tensor must be contiguous and not a negated view")
        t = t.resolve_neg().contiguous()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return xp.from_dlpack(t)


class Runtime:
    """Where kernels come from and how they are launched; see the module docstring."""

    #: The array library of :func:`host_array` (``cupy`` or ``numpy``).
    xp: Any = None

    def function(self, family: str, expression: str, device: Any) -> Any:
        """The compiled kernel for name expression ``expression`` of ``family`` on ``device``."""
        raise NotImplementedError

    def device_of(self, tensors: Sequence[torch.Tensor]) -> Any:
        """The device the launch runs on (checks that the tensors live where this runtime runs)."""
        raise NotImplementedError

    def stream(self, device: Any) -> Any:
        """Context manager that makes the device library launch on torch's current stream."""
        return contextlib.nullcontext()

    def tensor_cores(self, device: Any) -> bool:
        """Whether ``device`` runs the WMMA kernels (bf16 / TF32 need compute capability 8.0)."""
        return True

    def call(self, fn: Any, expression: str, grid: Grid, block: Grid, args: List[Any], shared_mem: int) -> None:
        """Call ``fn`` with CuPy's call shape."""
        fn(grid, block, tuple(args), shared_mem=shared_mem)

    def launch(self, family: str, kernel: str, targs: Sequence[Any], grid: Sequence[int], block: Sequence[int],
               shared_mem: int = 0, /, **args: Any) -> None:
        """Launch ``kernel<targs...>`` of ``family`` with its parameters given by name.

        ``targs`` are the template arguments (dtypes become their C types).  Raises
        :class:`~fastconv.cuda._source.LaunchError` when ``args`` do not match the parameter
        names of the ``.cu`` signature or the block exceeds the kernel's ``__launch_bounds__``.
        """
        decls = _source.kernels(family)
        if kernel not in decls:
            raise LaunchError(f"{family}.cu has no kernel {kernel!r}; its kernels are {sorted(decls)}")
        expression = decls[kernel].expression(*targs)
        sig = _source.signature(family, expression)
        values = sig.bind(args)
        g, b = dim3(grid), dim3(block)
        if sig.launch_bounds is not None and b[0] * b[1] * b[2] > sig.launch_bounds:
            raise LaunchError(f"{expression}: block {b} exceeds its __launch_bounds__({sig.launch_bounds})")
        device = self.device_of([v for v in values if isinstance(v, torch.Tensor)])
        fn = self.function(family, expression, device)
        with self.stream(device):
            conv = [host_array(v, self.xp, writable=not p.const) if p.pointer else v
                    for p, v in zip(sig.params, values)]
            self.call(fn, expression, g, b, conv, int(shared_mem))


#: Environment variable naming the directory of compiled cubins (default ``~/.cache/fastconv/nvrtc``).
NVRTC_CACHE_ENV = "FASTCONV_NVRTC_CACHE"


def _cache_dir() -> Path:
    d = Path(os.environ.get(NVRTC_CACHE_ENV) or Path.home() / ".cache" / "fastconv" / "nvrtc")
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError:
        d = Path(tempfile.gettempdir()) / "fastconv-nvrtc"
        d.mkdir(parents=True, exist_ok=True)
    return d


class CupyRuntime(Runtime):
    """Real GPU: NVRTC cubins loaded into ``cupy.RawModule``, DLPack views, torch's current stream."""

    def __init__(self, cupy_module: Optional[ModuleType] = None) -> None:
        if cupy_module is None:
            import cupy as cupy_module  # fail early with ImportError when absent
        self.xp = cupy_module
        self._modules: Dict[Tuple[str, int], Tuple[Any, Dict[str, str]]] = {}
        self._lock = threading.Lock()

    def binary(self, family: str, arch: str) -> Tuple[Path, Dict[str, str]]:
        """Compile ``family`` for ``arch`` with :func:`_nvrtc.options` (cached on disk); (file, lowered names)."""
        names = name_expressions(family)
        opts = _nvrtc.options(arch)
        src = kernel_source(family)
        key = hashlib.sha256("\0".join([src, *names, *opts, repr(_nvrtc.version())]).encode()).hexdigest()[:24]
        d = _cache_dir() / key
        ext = "cubin" if arch.startswith("sm_") else "ptx"
        path, table = d / f"{family}.{ext}", d / "lowered.txt"
        if not (path.is_file() and table.is_file()):
            prog = _nvrtc.compile_program(src, names, opts, f"{family}.cu")
            d.mkdir(parents=True, exist_ok=True)
            tmp = d / f"{family}.{threading.get_ident()}.tmp"
            tmp.write_bytes(prog.cubin if prog.cubin is not None else prog.ptx.encode())
            tmp.replace(path)
            table.write_text("".join(f"{n}\t{m}\n" for n, m in prog.lowered.items()))
        lowered = dict(line.split("\t") for line in table.read_text().splitlines())
        return path, lowered

    def module(self, family: str, device: int) -> Tuple[Any, Dict[str, str]]:
        """Compile (first call) and cache the module of ``family`` for CUDA device ``device``."""
        key = (family, device)
        with self._lock:
            entry = self._modules.get(key)
            if entry is None:
                arch = _nvrtc.arch_for(torch.cuda.get_device_capability(device))
                path, lowered = self.binary(family, arch)
                with self.xp.cuda.Device(device):
                    entry = (self.xp.RawModule(path=str(path)), lowered)
                self._modules[key] = entry
        return entry

    def function(self, family: str, expression: str, device: Any) -> Any:
        mod, lowered = self.module(family, device)
        return mod.get_function(lowered[expression])

    def device_of(self, tensors: Sequence[torch.Tensor]) -> int:
        devs = {t.device for t in tensors}
        if not devs or any(d.type != "cuda" for d in devs) or len(devs) > 1:
            raise ValueError(f"fastconv CUDA launch needs its tensors on one CUDA device, got {sorted(map(str, devs))}")
        dev = next(iter(devs))
        return dev.index if dev.index is not None else torch.cuda.current_device()

    def tensor_cores(self, device: Any) -> bool:
        dev = device.index if isinstance(device, torch.device) else device
        return torch.cuda.get_device_capability(dev) >= (8, 0)

    @contextlib.contextmanager
    def stream(self, device: Any) -> Iterator[None]:
        s = torch.cuda.current_stream(device)
        with self.xp.cuda.Device(device), self.xp.cuda.ExternalStream(s.cuda_stream, device):
            yield


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


def launch(family: str, kernel: str, targs: Sequence[Any], grid: Sequence[int], block: Sequence[int],
           shared_mem: int = 0, /, **args: Any) -> None:
    """:meth:`Runtime.launch` on the :func:`current` runtime."""
    current().launch(family, kernel, targs, grid, block, shared_mem, **args)
