"""Every backend module implements its family's ``Backend`` protocol, with identical parameter lists."""
import importlib
import inspect
import re

import pytest

from fastconv import _backend


def _protocol_functions(proto):
    return {name: fn for name, fn in vars(proto).items() if inspect.isfunction(fn) and not name.startswith("_")}


def _params(fn, drop_self=False):
    params = list(inspect.signature(fn).parameters.values())
    if drop_self:
        params = params[1:]
    return [(p.name, p.kind, p.default) for p in params]


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("family", _backend.FAMILIES)
def test_backend_implements_contract(family, device):
    proto = _backend.contract(family)
    wanted = _protocol_functions(proto)
    assert wanted, f"{family}: the Backend protocol lists no functions"
    mod = importlib.import_module(f"fastconv.{device}.{family}")  # the CUDA launchers import without CuPy
    assert sorted(mod.__all__) == sorted(wanted), f"fastconv.{device}.{family}.__all__ is not the contract"
    for name, ref in wanted.items():
        fn = getattr(mod, name)
        assert _params(fn) == _params(ref, drop_self=True), f"fastconv.{device}.{family}.{name}: parameters differ"


@pytest.mark.parametrize("family", _backend.FAMILIES)
def test_ops_call_only_the_contract(family):
    """The op module reaches its backend only through contract functions (no private helpers)."""
    src = inspect.getsource(importlib.import_module(f"fastconv.ops.{family}"))
    called = set(re.findall(r'kernels\("' + family + r'", [^)]*\)\.(\w+)\(', src))
    assert called and called <= set(_protocol_functions(_backend.contract(family)))


def test_unknown_family():
    with pytest.raises(ValueError, match="families are"):
        _backend.contract("conv3d")
