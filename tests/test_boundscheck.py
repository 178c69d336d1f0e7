"""Kernel memory safety: the CPU kernel tests again, with every Numba array index bounds-checked.

Numba does not check indices, so an out-of-range read or write corrupts memory silently.  With
``NUMBA_BOUNDSCHECK=1`` every kernel is recompiled (in a private cache) so that such an index
raises ``IndexError`` instead; the CPU twin of the CUDA ASan pass.  Slow (every kernel compiles
afresh): ``pytest -m slow tests/test_boundscheck.py``, which ``.ci/run`` runs.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent

#: The test files that run the CPU kernels (conv engine, pools, SSIM, the image engine), fuzzers included.
CPU_KERNEL_TESTS = ["cpu", "test_conv.py", "test_conv_transpose.py", "test_pool.py", "test_ssim.py",
                    "test_fused.py", "test_batch_norm.py", "test_edge_shapes.py", "test_errors.py",
                    "test_signal.py", "test_filters.py", "test_fuzz_ops.py", "test_fuzz_image.py"]


def test_boundscheck_env_makes_an_out_of_range_index_raise(tmp_path):
    """The switch works: a deliberately out-of-range kernel raises under NUMBA_BOUNDSCHECK=1."""
    script = ("from fastconv._numba import njit\nimport numpy as np\n"
              "@njit\ndef f(a):\n    return a[a.shape[0]]\n"
              "try:\n    f(np.zeros(3))\nexcept IndexError:\n    print('raised')\n")
    env = dict(os.environ, NUMBA_BOUNDSCHECK="1", NUMBA_CACHE_DIR=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert proc.stdout.strip() == "raised", proc.stderr[-2000:]


@pytest.mark.slow
def test_cpu_kernel_tests_pass_with_bounds_checking(tmp_path):
    env = dict(os.environ, NUMBA_BOUNDSCHECK="1", NUMBA_CACHE_DIR=str(tmp_path / "numba-cache"))
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-m", "not slow",
           *(str(TESTS / t) for t in CPU_KERNEL_TESTS)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600, cwd=TESTS.parent)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout
