"""Static evidence about the CUDA kernels without a GPU: resources per instantiation, tensor-core SASS.

For every family and architecture, :func:`report` compiles ``kernels/<family>.cu`` with nvcc
(``-Xptxas -v``, the runtime's options, every name expression the launchers use) and returns
one :class:`Row` per instantiation: registers, static shared memory, spills, the block size the
kernel is bounded to (``__launch_bounds__``, which the runtime enforces at launch) and whether
its SASS holds tensor-core ``HMMA`` instructions (``cuobjdump -sass``).

``python -m fastconv.testing.static_evidence`` prints the table; ``tests/test_cuda_static.py``
asserts on it.
"""
from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional

from fastconv.cuda import _runtime, _source
from fastconv.testing import compile_check

#: Registers of one SM (sm_80 and sm_90) and the default shared memory per block.
REGISTERS_PER_SM = 65536
SHARED_PER_BLOCK = 48 * 1024
ARCHS = ("sm_80", "sm_90")


@dataclass(frozen=True)
class Row:
    """Resources of one kernel instantiation on one architecture."""

    family: str
    arch: str
    expression: str
    registers: int
    shared: int
    spill_stores: int
    spill_loads: int
    stack: int
    threads: Optional[int]  # the __launch_bounds__ bound
    hmma: Optional[bool]  # None when cuobjdump is unavailable


def tensor_core_instantiation(expression: str) -> bool:
    """Whether a conv2d GEMM name expression (``conv2d_forward<T, TC, BM, BN>``) uses tensor cores (TC = 1)."""
    name, _, targs = expression.partition("<")
    args = [a.strip() for a in targs.rstrip(">").split(",")]
    return name in ("conv2d_forward", "conv2d_backward_input", "conv2d_backward_weight") and args[1:2] == ["1"]


@functools.lru_cache(maxsize=None)
def compiled(family: str, arch: str) -> compile_check.NvccResult:
    """nvcc build of ``family`` for ``arch`` (cached per process)."""
    return compile_check.nvcc_compile(family, arch)


@functools.lru_cache(maxsize=None)
def lowered(family: str, arch: str) -> Dict[str, str]:
    """Name expression -> mangled symbol, from NVRTC with the runtime's options."""
    return compile_check.nvrtc_compile(family, arch).lowered


def report(family: str, arch: str) -> List[Row]:
    """One :class:`Row` per name expression of ``family`` compiled for ``arch``."""
    res = compiled(family, arch)
    names = lowered(family, arch)
    sass = None
    if compile_check.cuobjdump_path() is not None:
        sass = compile_check.sass(res.cubin)
    rows = []
    for expr in _runtime.name_expressions(family):
        sym = names[expr]
        r = res.resources[sym]
        sig = _source.signature(family, expr)
        hmma = None if sass is None else ("HMMA" in sass.get(sym, ""))
        rows.append(Row(family, arch, expr, r.registers, r.shared, r.spill_stores, r.spill_loads, r.stack,
                        sig.launch_bounds, hmma))
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    """Print the resource table of every family on sm_80 and sm_90."""
    print(f"{'arch':6} {'kernel':62} {'regs':>4} {'threads':>7} {'regs*thr':>8} {'smem':>6} {'spill':>5} hmma")
    for fam in _runtime.FAMILIES:
        for arch in ARCHS:
            for r in report(fam, arch):
                thr = r.threads or 0
                print(f"{arch:6} {r.expression:62} {r.registers:4d} {thr:7d} {r.registers * thr:8d} {r.shared:6d} "
                      f"{r.spill_stores + r.spill_loads:5d} {'' if r.hmma is None else ('yes' if r.hmma else '-')}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
