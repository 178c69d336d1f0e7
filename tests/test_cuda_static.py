"""Static evidence for every kernel instantiation the launchers use, on sm_80 and sm_90 (no GPU needed).

nvcc ``-Xptxas -v`` with the runtime's options: every kernel declares ``__launch_bounds__``;
registers x threads fit the 65,536 registers of an SM, static shared memory fits a block, the hot
kernels do not spill to local memory; the tensor-core kernels hold ``HMMA`` instructions in their SASS.
"""
from __future__ import annotations

import pytest

from fastconv.cuda import _runtime
from fastconv.testing import compile_check, static_evidence as se

pytestmark = [pytest.mark.skipif(compile_check.nvcc_path() is None, reason="nvcc not found (CUDA toolkit)"),
              pytest.mark.skipif(compile_check.nvrtc_library() is None,
                                 reason="libnvrtc not found: pip install 'nvidia-cuda-nvrtc>=13,<14'")]


@pytest.mark.parametrize("arch", se.ARCHS)
@pytest.mark.parametrize("family", _runtime.FAMILIES)
def test_nvcc_compiles_every_instantiation(family, arch):
    res = se.compiled(family, arch)
    low = se.lowered(family, arch)
    assert set(low) == set(_runtime.name_expressions(family))
    assert set(low.values()) <= set(res.symbols), sorted(set(low.values()) - set(res.symbols))


@pytest.mark.parametrize("arch", se.ARCHS)
@pytest.mark.parametrize("family", _runtime.FAMILIES)
def test_resources_fit_the_launch_contracts(family, arch):
    rows = se.report(family, arch)
    assert rows
    for r in rows:
        assert r.threads is not None, f"{r.expression}: no __launch_bounds__"
        assert r.registers * r.threads <= se.REGISTERS_PER_SM, (
            f"{r.expression} on {arch}: {r.registers} registers x {r.threads} threads")
        assert r.shared <= se.SHARED_PER_BLOCK, f"{r.expression} on {arch}: {r.shared} bytes of static shared memory"
        # The hot kernels (convolution, SSIM) never touch local memory; a pooling kernel may keep a small call
        # frame around the IEEE division slow path (a few bytes per element, not a loop's working set).
        limit = 128 if family == "pool" else 0  # avg_pool2d_backward<double>: 84 bytes around __ddiv_rn
        assert r.spill_stores + r.spill_loads <= limit, f"{r.expression} on {arch} spills to local memory"


@pytest.mark.parametrize("arch", se.ARCHS)
def test_tensor_core_kernels_use_hmma(arch):
    if compile_check.cuobjdump_path() is None:
        pytest.skip("cuobjdump not found: pip install 'nvidia-cuda-cuobjdump>=13,<14' 'nvidia-cuda-nvdisasm>=13,<14'")
    rows = se.report("conv2d", arch)
    tc = {r.expression for r in rows if se.tensor_core_instantiation(r.expression)}
    assert len(tc) == 3 * 3 * 2, sorted(tc)  # 3 GEMM kernels x (TF32, fp16, bf16) x 2 tiles
    for r in rows:
        assert r.hmma == (r.expression in tc), f"{r.expression} on {arch}: HMMA={r.hmma}"


def test_ptxas_log_parser():
    log = """ptxas info    : Compiling entry function '_Z3fooIfEvPKT_' for 'sm_80'
ptxas info    : Function properties for _Z3fooIfEvPKT_
    8 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads
ptxas info    : Used 40 registers, used 1 barriers, 1024 bytes smem, 380 bytes cmem[0]
"""
    (sym, r), = compile_check.parse_ptxas(log).items()
    assert sym == "_Z3fooIfEvPKT_" and (r.registers, r.shared, r.stack, r.spill_stores, r.spill_loads) == (
        40, 1024, 8, 4, 4)
