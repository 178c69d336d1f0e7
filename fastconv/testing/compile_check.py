"""Compile the CUDA kernels without a GPU: nvcc for real architectures, NVRTC as the launchers do.

* :func:`nvcc_compile` builds ``<family>.cu`` (as :func:`fastconv.cuda._runtime.kernel_source`
  hands it to NVRTC) into a cubin for ``sm_XX`` with every name expression explicitly
  instantiated by a generated tail (the kernel file itself is untouched), and returns
  the kernel symbols found in the cubin.
* :func:`nvrtc_compile` drives libnvrtc through ctypes with exactly the launchers'
  :data:`~fastconv.cuda._runtime.COMPILE_OPTIONS` and name expressions, and returns
  the lowered (mangled) name of every expression.  libnvrtc comes from the
  ``nvidia-cuda-nvrtc`` wheel (CUDA 13) or a CUDA toolkit.
"""
from __future__ import annotations

import ctypes
import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from fastconv.cuda import _runtime


class CompileError(RuntimeError):
    """nvcc or NVRTC rejected a kernel source; the message carries the compiler log."""


def nvcc_path() -> Optional[str]:
    """The nvcc executable (PATH, then $CUDA_HOME/bin, then /usr/local/cuda/bin), or None."""
    found = shutil.which("nvcc")
    if found:
        return found
    for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if root and os.path.isfile(os.path.join(root, "bin", "nvcc")):
            return os.path.join(root, "bin", "nvcc")
    return None


def instantiation_tail(names: Sequence[str]) -> str:
    """Host code taking each kernel's address, which makes nvcc instantiate the templates."""
    lines = ["", "// fastconv compile check: instantiate every name expression"]
    lines += [f"void* fastconv_instance_{i} = (void*)&{n};" for i, n in enumerate(names)]
    return "\n".join(lines) + "\n"


def nvcc_compile(family: str, arch: str = "sm_80", workdir: Optional[str] = None) -> List[str]:
    """Compile ``family`` for ``arch`` (e.g. ``'sm_90'``); returns the kernel symbols of the cubin."""
    nvcc = nvcc_path()
    if nvcc is None:
        raise FileNotFoundError("nvcc not found")
    names = _runtime.name_expressions(family)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        src = Path(tmp) / f"{family}_check.cu"
        src.write_text(_runtime.kernel_source(family) + instantiation_tail(names))
        out = Path(tmp) / f"{family}.cubin"
        opts = [o.replace("--std=", "-std=") for o in _runtime.COMPILE_OPTIONS]
        proc = subprocess.run([nvcc, *opts, f"-arch={arch}", "-cubin", "-Werror", "all-warnings", "-o", str(out),
                               str(src)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise CompileError(f"nvcc -arch={arch} {family}.cu failed:\n{proc.stdout}\n{proc.stderr}")
        return _cubin_kernels(out)


def _cubin_kernels(cubin: Path) -> List[str]:
    """Names of the kernel (.text.*) sections in a cubin (ELF)."""
    import struct

    data = cubin.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2:
        raise CompileError(f"{cubin} is not a 64-bit ELF file")
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
    str_off = sections[shstrndx][4]

    def name(off: int) -> str:
        end = data.index(b"\0", str_off + off)
        return data[str_off + off:end].decode()

    return sorted(name(s[0])[len(".text."):] for s in sections if name(s[0]).startswith(".text."))


def nvrtc_library() -> Optional[str]:
    """Path of libnvrtc: the nvidia-cuda-nvrtc wheel first, then a CUDA toolkit; None if absent."""
    cands: List[str] = []
    try:
        import nvidia  # namespace package of the NVIDIA wheels

        for root in nvidia.__path__:
            cands += sorted(glob.glob(os.path.join(root, "*", "lib", "libnvrtc.so*")))
    except ImportError:
        pass
    for root in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if root:
            cands += sorted(glob.glob(os.path.join(root, "lib64", "libnvrtc.so*")))
    cands = [c for c in cands if "builtins" not in c and "alt" not in os.path.basename(c)]
    return cands[0] if cands else None


def _check(lib: ctypes.CDLL, rc: int, what: str) -> None:
    if rc != 0:
        lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        raise CompileError(f"{what}: {lib.nvrtcGetErrorString(rc).decode()}")


def nvrtc_compile(family: str, arch: str = "sm_80", extra_options: Sequence[str] = ()) -> Dict[str, str]:
    """Compile ``family`` with NVRTC exactly as the launchers do; map each name expression to its lowered name."""
    path = nvrtc_library()
    if path is None:
        raise FileNotFoundError("libnvrtc not found (pip install nvidia-cuda-nvrtc)")
    lib = ctypes.CDLL(path)
    prog = ctypes.c_void_p()
    src = _runtime.kernel_source(family).encode()
    _check(lib, lib.nvrtcCreateProgram(ctypes.byref(prog), src, f"{family}.cu".encode(), 0, None, None),
           "nvrtcCreateProgram")
    try:
        names = _runtime.name_expressions(family)
        for n in names:
            _check(lib, lib.nvrtcAddNameExpression(prog, n.encode()), f"nvrtcAddNameExpression({n})")
        opts = [*_runtime.COMPILE_OPTIONS, f"--gpu-architecture={arch}", *extra_options]
        arr = (ctypes.c_char_p * len(opts))(*[o.encode() for o in opts])
        rc = lib.nvrtcCompileProgram(prog, len(opts), arr)
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(prog, log)
        if rc != 0:
            raise CompileError(f"NVRTC {' '.join(opts)} {family}.cu failed:\n{log.value.decode(errors='replace')}")
        lowered = {}
        for n in names:
            out = ctypes.c_char_p()
            _check(lib, lib.nvrtcGetLoweredName(prog, n.encode(), ctypes.byref(out)), f"nvrtcGetLoweredName({n})")
            lowered[n] = out.value.decode()
        return lowered
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))
