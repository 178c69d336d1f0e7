"""Shared fixtures: deterministic seeds and the device parametrisation of the op suite."""
import pytest
import torch
from hypothesis import HealthCheck, settings

from fastconv import _programs
from fastconv._backend import cuda_available

_CUDA = cuda_available()
_CUDA_REASON = "CUDA not available (needs a CUDA device, a CUDA build of torch and cupy: pip install 'fastconv[cuda]')"

#: Devices every op test runs on; 'cuda' skips, saying why, on machines without it.
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not _CUDA, reason=_CUDA_REASON))]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(1234)
    _programs.clear()  # each test records its own passes (tests that count a pass's calls see the same)


@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param)


# Hypothesis profiles of the property-based (fuzz) tests: "ci" -- derandomized and bounded -- is
# the default; tests marked slow run the "slow" profile, 20 times as many examples.
_FUZZ = dict(deadline=None, database=None, print_blob=True,
             suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("ci", max_examples=100, derandomize=True, **_FUZZ)
settings.register_profile("slow", max_examples=2000, derandomize=False, **_FUZZ)
settings.load_profile("ci")
