"""Shared fixtures: deterministic seeds and the device parametrisation of the op suite."""
import pytest
import torch

from fastconv._backend import cuda_available

_CUDA = cuda_available()
_CUDA_REASON = "CUDA not available (needs a CUDA device, a CUDA build of torch and cupy: pip install 'fastconv[cuda]')"

#: Devices every op test runs on; 'cuda' skips, saying why, on machines without it.
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not _CUDA, reason=_CUDA_REASON))]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(1234)


@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param)

