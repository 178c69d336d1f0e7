"""NVRTC driven by fastconv itself (ctypes), with the one option list every GPU build uses.

CuPy's ``RawModule(code=...)`` appends ``-ftz=true`` after the caller's options, and the last
flag wins, so a kernel compiled through it flushes subnormals (``fma.rn.ftz.f32``), unlike
torch, the CPU backend and the emulator.  fastconv therefore compiles with NVRTC itself using
:func:`options` -- the final list, with ``--ftz=false`` in effect -- and hands CuPy the binary
(``cupy.RawModule(path=...)``).  :mod:`fastconv.testing.compile_check` compiles with the very
same list and asserts that the PTX holds no ``.ftz.`` instruction.

libnvrtc comes from the ``nvidia-cuda-nvrtc`` wheel (CUDA 13), ``$CUDA_HOME`` or
``/usr/local/cuda``.  The WMMA kernels include ``<mma.h>``, which NVRTC does not ship: the
toolkit's ``include/`` directory is found the same way (:func:`include_dirs`).
"""
from __future__ import annotations

import ctypes
import glob
import os
import threading
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

#: Language options shared by NVRTC, nvcc and the emulator's g++ build.
LANGUAGE_OPTIONS: Tuple[str, ...] = ("--std=c++17",)

#: Floating-point options: IEEE subnormals, correctly rounded division and square root, as torch.
FLOAT_OPTIONS: Tuple[str, ...] = ("--ftz=false", "--prec-div=true", "--prec-sqrt=true")


class CompileError(RuntimeError):
    """nvcc or NVRTC rejected a kernel source; the message carries the compiler log."""


def _roots() -> List[str]:
    roots: List[str] = []
    try:
        import nvidia  # namespace package of the NVIDIA wheels

        for root in nvidia.__path__:
            roots += sorted(glob.glob(os.path.join(root, "*")))
    except ImportError:
        pass
    for env in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(env):
            roots.append(os.environ[env])
    roots.append("/usr/local/cuda")
    return roots


def library() -> Optional[str]:
    """Path of libnvrtc: the nvidia-cuda-nvrtc wheel first, then a CUDA toolkit; None if absent."""
    cands: List[str] = []
    for root in _roots():
        for sub in ("lib", "lib64"):
            cands += sorted(glob.glob(os.path.join(root, sub, "libnvrtc.so*")))
    cands = [c for c in cands if "builtins" not in c and "alt" not in os.path.basename(c)]
    return cands[0] if cands else None


def include_dirs() -> List[str]:
    """Directories holding the toolkit's ``mma.h`` and ``cuda_fp16.h`` (needed by the WMMA kernels)."""
    out = []
    for root in _roots():
        inc = os.path.join(root, "include")
        if os.path.isfile(os.path.join(inc, "mma.h")) and os.path.isfile(os.path.join(inc, "cuda_fp16.h")):
            out.append(inc)
            break
    return out


def options(arch: str) -> Tuple[str, ...]:
    """The final NVRTC option list for ``arch`` (``sm_90`` for a cubin, ``compute_90`` for PTX only)."""
    return (*LANGUAGE_OPTIONS, *FLOAT_OPTIONS, f"--gpu-architecture={arch}", *(f"-I{d}" for d in include_dirs()))


@dataclass(frozen=True)
class Program:
    """What one NVRTC compilation produced."""

    ptx: str
    cubin: Optional[bytes]  # None when compiled for a virtual (compute_XX) architecture
    lowered: Dict[str, str]  # name expression -> mangled symbol
    options: Tuple[str, ...]
    log: str


_LIB: Optional[ctypes.CDLL] = None
_LOCK = threading.Lock()


def _lib() -> ctypes.CDLL:
    global _LIB
    with _LOCK:
        if _LIB is None:
            path = library()
            if path is None:
                raise FileNotFoundError("libnvrtc not found: pip install 'nvidia-cuda-nvrtc>=13,<14' "
                                        "(or set CUDA_HOME)")
            lib = ctypes.CDLL(path)
            lib.nvrtcGetErrorString.restype = ctypes.c_char_p
            _LIB = lib
        return _LIB


def _check(lib: ctypes.CDLL, rc: int, what: str) -> None:
    if rc != 0:
        raise CompileError(f"{what}: {lib.nvrtcGetErrorString(rc).decode()}")


def version() -> Tuple[int, int]:
    """(major, minor) of the libnvrtc in use."""
    lib = _lib()
    a, b = ctypes.c_int(), ctypes.c_int()
    _check(lib, lib.nvrtcVersion(ctypes.byref(a), ctypes.byref(b)), "nvrtcVersion")
    return a.value, b.value


def supported_archs() -> List[int]:
    """The real architectures (e.g. 80, 90) this NVRTC can build cubins for."""
    lib = _lib()
    n = ctypes.c_int()
    _check(lib, lib.nvrtcGetNumSupportedArchs(ctypes.byref(n)), "nvrtcGetNumSupportedArchs")
    arr = (ctypes.c_int * n.value)()
    _check(lib, lib.nvrtcGetSupportedArchs(arr), "nvrtcGetSupportedArchs")
    return list(arr)


def arch_for(capability: Tuple[int, int]) -> str:
    """``sm_XY`` for a device of compute capability ``capability``, or ``compute_XY`` PTX for a newer one."""
    cc = capability[0] * 10 + capability[1]
    archs = supported_archs()
    if cc in archs:
        return f"sm_{cc}"
    older = [a for a in archs if a <= cc]
    if not older:
        raise RuntimeError(f"fastconv: this NVRTC cannot build for compute capability {capability}")
    return f"compute_{max(older)}"


def compile_program(source: str, names: Sequence[str], opts: Sequence[str], filename: str = "kernel.cu") -> Program:
    """Compile ``source`` with exactly ``opts``; return its PTX, cubin and the lowered ``names``."""
    lib = _lib()
    prog = ctypes.c_void_p()
    _check(lib, lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), filename.encode(), 0, None, None),
           "nvrtcCreateProgram")
    try:
        for n in names:
            _check(lib, lib.nvrtcAddNameExpression(prog, n.encode()), f"nvrtcAddNameExpression({n})")
        arr = (ctypes.c_char_p * max(1, len(opts)))(*[o.encode() for o in opts])
        rc = lib.nvrtcCompileProgram(prog, len(opts), arr)
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        logbuf = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(prog, logbuf)
        log = logbuf.value.decode(errors="replace")
        if rc != 0:
            raise CompileError(f"NVRTC {' '.join(opts)} {filename} failed:\n{log}")
        _check(lib, lib.nvrtcGetPTXSize(prog, ctypes.byref(size)), "nvrtcGetPTXSize")
        ptx = ctypes.create_string_buffer(size.value)
        _check(lib, lib.nvrtcGetPTX(prog, ptx), "nvrtcGetPTX")
        cubin = None
        if any(o.startswith("--gpu-architecture=sm_") for o in opts):
            _check(lib, lib.nvrtcGetCUBINSize(prog, ctypes.byref(size)), "nvrtcGetCUBINSize")
            buf = ctypes.create_string_buffer(size.value)
            _check(lib, lib.nvrtcGetCUBIN(prog, buf), "nvrtcGetCUBIN")
            cubin = buf.raw
        lowered = {}
        for n in names:
            out = ctypes.c_char_p()
            _check(lib, lib.nvrtcGetLoweredName(prog, n.encode(), ctypes.byref(out)), f"nvrtcGetLoweredName({n})")
            lowered[n] = out.value.decode()
        return Program(ptx.value.decode(), cubin, lowered, tuple(opts), log)
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))
