"""Compile the CUDA kernels without a GPU: nvcc for real architectures, NVRTC exactly as the runtime does.

* :func:`nvcc_compile` builds ``<family>.cu`` (as :func:`fastconv.cuda._source.kernel_source`
  hands it to NVRTC) into a cubin for ``sm_XX`` with every name expression the launchers use
  explicitly instantiated by a generated tail (the kernel file itself is untouched), with
  ``-Xptxas -v``; it returns the kernel symbols and each one's resource usage
  (:class:`Resources`: registers, spills, static shared memory), and keeps the cubin so that
  :func:`sass` can disassemble it with ``cuobjdump`` (from the ``nvidia-cuda-cuobjdump`` wheel
  or a toolkit).
* :func:`nvrtc_compile` compiles with :func:`fastconv.cuda._nvrtc.compile_program` and the
  runtime's final option list :func:`fastconv.cuda._nvrtc.options`, so what it checks (the
  lowered names, the PTX) is what a GPU run loads.
"""
from __future__ import annotations

import functools
import glob
import os
import re
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from fastconv.cuda import _nvrtc, _runtime, _source
from fastconv.cuda._nvrtc import CompileError, Program  # noqa: F401  (re-exported)


def nvcc_path() -> Optional[str]:
    """The nvcc executable (PATH, then $CUDA_HOME/bin, then /usr/local/cuda/bin), or None."""
    found = shutil.which("nvcc")
    if found:
        return found
    for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if root and os.path.isfile(os.path.join(root, "bin", "nvcc")):
            return os.path.join(root, "bin", "nvcc")
    return None


def _tool(name: str) -> Optional[str]:
    found = shutil.which(name)
    if found:
        return found
    cands: List[str] = []
    try:
        import nvidia

        for root in nvidia.__path__:
            cands += sorted(glob.glob(os.path.join(root, "*", "bin", name)))
    except ImportError:
        pass
    for root in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if root:
            cands.append(os.path.join(root, "bin", name))
    return next((c for c in cands if os.path.isfile(c)), None)


def cuobjdump_path() -> Optional[str]:
    """cuobjdump and the nvdisasm it runs (PATH, the nvidia-cuda-cuobjdump/-nvdisasm wheels, a toolkit), or None."""
    tool = _tool("cuobjdump")
    return tool if tool and _tool("nvdisasm") else None


nvrtc_library = _nvrtc.library


def instantiation_tail(names: List[str]) -> str:
    """Host code taking each kernel's address, which makes nvcc instantiate the templates."""
    lines = ["", "// fastconv compile check: instantiate every name expression"]
    lines += [f"void* fastconv_instance_{i} = (void*)&{n};" for i, n in enumerate(names)]
    return "\n".join(lines) + "\n"


@dataclass
class Resources:
    """ptxas's report for one kernel on one architecture."""

    registers: int = 0
    shared: int = 0  # static shared memory, bytes
    stack: int = 0
    spill_stores: int = 0
    spill_loads: int = 0


@dataclass
class NvccResult:
    """Symbols and per-symbol resources of one nvcc build, plus the cubin."""

    symbols: List[str]
    resources: Dict[str, Resources] = field(default_factory=dict)
    cubin: bytes = b""
    log: str = ""


_ENTRY_RE = re.compile(r"Compiling entry function '(\w+)' for '(\w+)'")
_PROPS_RE = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED_RE = re.compile(r"Used (\d+) registers(?:.*?(\d+) bytes smem)?")


def parse_ptxas(log: str) -> Dict[str, Resources]:
    """Per-entry resources from ``ptxas -v`` output."""
    out: Dict[str, Resources] = {}
    cur: Optional[Resources] = None
    for line in log.splitlines():
        m = _ENTRY_RE.search(line)
        if m:
            cur = out.setdefault(m.group(1), Resources())
            continue
        if cur is None:
            continue
        m = _PROPS_RE.search(line)
        if m:
            cur.stack, cur.spill_stores, cur.spill_loads = (int(v) for v in m.groups())
            continue
        m = _USED_RE.search(line)
        if m:
            cur.registers = int(m.group(1))
            cur.shared = int(m.group(2) or 0)
    return out


def nvcc_options(arch: str) -> List[str]:
    """nvcc's spelling of the runtime's NVRTC options for ``arch``."""
    opts = []
    for o in _nvrtc.options(arch):
        if o.startswith("--gpu-architecture="):
            opts.append(f"-arch={o.split('=', 1)[1]}")
        else:
            opts.append(o.replace("--std=", "-std="))
    return opts


def nvcc_compile(family: str, arch: str = "sm_80", workdir: Optional[str] = None) -> NvccResult:
    """Compile ``family`` for ``arch`` (e.g. ``'sm_90'``) with ``-Xptxas -v``; symbols, resources and cubin."""
    nvcc = nvcc_path()
    if nvcc is None:
        raise FileNotFoundError("nvcc not found")
    names = list(_runtime.name_expressions(family))
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        src = Path(tmp) / f"{family}_check.cu"
        src.write_text(_source.kernel_source(family) + instantiation_tail(names))
        out = Path(tmp) / f"{family}.cubin"
        proc = subprocess.run([nvcc, *nvcc_options(arch), "-cubin", "-Xptxas", "-v", "-Werror", "all-warnings",
                               "-o", str(out), str(src)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise CompileError(f"nvcc -arch={arch} {family}.cu failed:\n{proc.stdout}\n{proc.stderr}")
        log = proc.stdout + proc.stderr
        return NvccResult(_cubin_kernels(out), parse_ptxas(log), out.read_bytes(), log)


def sass(cubin: bytes) -> Dict[str, str]:
    """``cuobjdump -sass`` of a cubin, split per kernel symbol."""
    tool = cuobjdump_path()
    if tool is None:
        raise FileNotFoundError("cuobjdump/nvdisasm not found (pip install 'nvidia-cuda-cuobjdump>=13,<14' "
                                "'nvidia-cuda-nvdisasm>=13,<14')")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "k.cubin"
        path.write_bytes(cubin)
        env = dict(os.environ, NVDISASM_PATH=os.path.dirname(_tool("nvdisasm") or ""))
        proc = subprocess.run([tool, "-sass", str(path)], capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise CompileError(f"cuobjdump failed: {proc.stderr}")
    out: Dict[str, str] = {}
    cur = None
    for line in proc.stdout.splitlines():
        m = re.search(r"Function : (\w+)", line)
        if m:
            cur = m.group(1)
            out[cur] = ""
        elif cur is not None:
            out[cur] += line + "\n"
    return out


def _cubin_kernels(cubin: Path) -> List[str]:
    """Names of the kernel (.text.*) sections in a cubin (ELF)."""
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


@functools.lru_cache(maxsize=None)
def nvrtc_compile(family: str, arch: str = "sm_80") -> Program:
    """Compile ``family`` with NVRTC exactly as the runtime does (:func:`fastconv.cuda._nvrtc.options`); cached."""
    return _nvrtc.compile_program(_source.kernel_source(family), _runtime.name_expressions(family),
                                  _nvrtc.options(arch), f"{family}.cu")
