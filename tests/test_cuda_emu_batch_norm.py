"""The fused BatchNorm + activation CUDA kernels (``kernels/batch_norm.cu``) without a GPU, through the emulator.

The production launchers of :mod:`fastconv.cuda.batch_norm` run on CPU tensors through
:class:`fastconv.testing.emulator.EmulatorRuntime`; results are compared with the CPU backend
:mod:`fastconv.cpu.batch_norm` (float32/float64) and with torch's unfused layers in float64 on the
dtype-rounded inputs (16-bit storage types).  The nvcc / NVRTC compile checks and the ASan run
live in ``tests/test_cuda_emu.py`` (they enumerate every family of ``_runtime.FAMILIES``).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as TF

from fastconv.cpu import batch_norm as cpu_bn
from fastconv.cuda import _runtime
from fastconv.cuda import batch_norm as cuda_bn
from fastconv.testing.emulator import EmulatorRuntime

pytestmark = pytest.mark.cuda_emu

ACTS = ["relu", "leaky_relu", "silu", "identity"]
TOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}


@pytest.fixture(scope="module")
def emu():
    rt = EmulatorRuntime()
    with _runtime.use_runtime(rt):
        yield rt


def _act(z, act):
    return {"relu": torch.relu, "leaky_relu": lambda t: TF.leaky_relu(t, 0.2), "silu": TF.silu,
            "identity": lambda t: t}[act](z)


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 2, 1, 300), (3, 1, 17, 19)])
def test_matches_cpu_backend(emu, act, dtype, shape):
    torch.manual_seed(0)
    x = (torch.randn(shape) * 2 + 1).to(dtype)
    w, b = (torch.rand(shape[1]) + 0.5).to(dtype), torch.randn(shape[1]).to(dtype)
    slope = 0.2 if act == "leaky_relu" else 0.0
    got = cuda_bn.batch_norm_act_forward(x, w, b, 1e-5, act, slope)
    want = cpu_bn.batch_norm_act_forward(x, w, b, 1e-5, act, slope)
    tol = TOL[dtype]
    for g, r in zip(got, want):
        torch.testing.assert_close(g, r, rtol=tol, atol=tol)
    dy = torch.randn(shape).to(dtype)
    got = cuda_bn.batch_norm_act_backward(dy, x, w, None, want[1], want[2], 1e-5, act, slope)
    want = cpu_bn.batch_norm_act_backward(dy, x, w, None, want[1], want[2], 1e-5, act, slope)
    for g, r in zip(got, want):
        scale = r.abs().max().item() + 1
        torch.testing.assert_close(g, r, rtol=tol, atol=tol * scale)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_storage_against_torch(emu, dtype):
    torch.manual_seed(1)
    x = (torch.randn(2, 4, 6, 5) * 3).to(dtype)
    w, b = torch.rand(4).to(dtype) + 0.5, torch.randn(4).to(dtype)
    y, mean, var = cuda_bn.batch_norm_act_forward(x, w, b, 1e-5, "silu", 0.0)
    xr = x.double().requires_grad_(True)
    ref = TF.silu(TF.batch_norm(xr, None, None, w.double(), b.double(), True, 0.0, 1e-5))
    tol = TOL[dtype]
    torch.testing.assert_close(y.double(), ref.detach(), rtol=tol, atol=tol * 4)
    dy = torch.randn(2, 4, 6, 5).to(dtype)
    dx, _, _ = cuda_bn.batch_norm_act_backward(dy, x, w, b, mean, var, 1e-5, "silu", 0.0)
    ref.backward(dy.double())
    torch.testing.assert_close(dx.double(), xr.grad, rtol=tol, atol=tol * 4 * xr.grad.abs().max().item())


def test_nan_propagates_like_cpu(emu):
    x = torch.randn(2, 3, 4, 4)
    x[1, 2, 0, 0] = float("inf")
    x[0, 0, 1, 1] = float("nan")
    got = cuda_bn.batch_norm_act_forward(x, None, None, 1e-5, "relu", 0.0)
    want = cpu_bn.batch_norm_act_forward(x, None, None, 1e-5, "relu", 0.0)
    for g, r in zip(got, want):
        torch.testing.assert_close(g, r, equal_nan=True)
    assert torch.isnan(got[0][:, 0]).all() and torch.isnan(got[0][:, 2]).all()
