"""The host side of a CUDA launch, shared by CuPy and the emulator: binding by name, conversion, NVRTC options.

* Every launch passes its arguments by the parameter names of the ``.cu`` signature
  (:mod:`fastconv.cuda._source`); a misnamed, missing or mistyped one is rejected before any
  device library is touched, on the emulator path and on the CuPy path (a fake CuPy here).
* :func:`fastconv.cuda._runtime.host_array` is the one tensor conversion; tensors that require
  grad, non-contiguous inputs and bfloat16 go through it on both paths.
* The GPU build uses fastconv's own NVRTC call with ``--ftz=false`` in effect.
"""
from __future__ import annotations

import contextlib
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fastconv import _backend
from fastconv.cuda import _nvrtc, _runtime, _source
from fastconv.cuda import pool as cuda_pool
from fastconv.testing import compile_check
from fastconv.testing.emulator import EmulatorRuntime

pytestmark = pytest.mark.cuda_emu

TOY = r"""
#define TOY_THREADS 64
#define TOY_SMEM(TH, TW) ((TH) * ((TW) + 2) + 7)
template <typename T, int TILE>
__global__ void __launch_bounds__(TOY_THREADS) toy(const T* __restrict__ x, typename Acc<T>::type* out,
                                                  long long n, int flag, double scale) {}
__global__ void plain(const long long* idx, unsigned int u, float f) {}
"""


@pytest.fixture(scope="module")
def emu():
    rt = EmulatorRuntime()
    with _runtime.use_runtime(rt):
        yield rt


# --------------------------------------------------------------------------- the source parser


def test_parse_kernels_and_instantiate():
    decls = _source.parse_kernels(TOY)
    assert sorted(decls) == ["plain", "toy"]
    toy = decls["toy"]
    assert toy.template == (("typename", "T"), ("int", "TILE"))
    assert [p.name for p in toy.params] == ["x", "out", "n", "flag", "scale"]
    assert toy.expression(torch.bfloat16, 32) == "toy<fc_bf16, 32>"
    sig = _source._instantiate(toy, "toy<double, 32>", _source._defines(TOY))
    assert sig.codes == "p8,p8,i8,i4,f8" and sig.launch_bounds == 64
    sig16 = _source._instantiate(toy, "toy<fc_half, 32>", _source._defines(TOY))
    assert sig16.codes == "p2,p4,i8,i4,f8"  # Acc<fc_half>::type is float
    assert [(p.name, p.const) for p in sig16.params if p.pointer] == [("x", True), ("out", False)]
    assert _source.evaluate("TOY_SMEM(3, 4)".replace("TOY_SMEM(3, 4)", "((3) * ((4) + 2) + 7)"), {}) == 25


def test_bind_by_name_converts_scalars_and_rejects_mismatches():
    toy = _source.parse_kernels(TOY)["toy"]
    sig = _source._instantiate(toy, "toy<float, 8>", _source._defines(TOY))
    x, out = torch.zeros(3), torch.zeros(3)
    vals = sig.bind(dict(scale=2, flag=True, n=5, out=out, x=x))  # any keyword order
    assert vals[0] is x and vals[1] is out
    assert type(vals[2]) is np.int64 and type(vals[3]) is np.int32 and type(vals[4]) is np.float64
    assert (vals[2], vals[3], vals[4]) == (5, 1, 2.0)
    with pytest.raises(_source.LaunchError, match=r"missing \['scale'\], unknown \['scal'\]"):
        sig.bind(dict(x=x, out=out, n=5, flag=1, scal=2.0))
    with pytest.raises(_source.LaunchError, match="needs a tensor"):
        sig.bind(dict(x=1, out=out, n=5, flag=1, scale=2.0))
    with pytest.raises(_source.LaunchError, match="needs a torch.float32 tensor"):
        sig.bind(dict(x=x.double(), out=out, n=5, flag=1, scale=2.0))
    with pytest.raises(_source.LaunchError, match="does not fit int"):
        sig.bind(dict(x=x, out=out, n=5, flag=2 ** 31, scale=2.0))
    with pytest.raises(_source.LaunchError, match="is a scalar"):
        sig.bind(dict(x=x, out=out, n=torch.tensor(5), flag=1, scale=2.0))


def test_constants_and_size_formulas_come_from_the_source():
    assert cuda_pool.THREADS == _source.constant("pool", "FC_POOL_THREADS")
    from fastconv.cuda import ssim as cuda_ssim

    th, tw, win = 8, 32, 11
    ih, iw = th + win - 1, tw + win - 1
    assert cuda_ssim._smem("forward", th, tw, win, 4) == (win + 2 * ih * iw + 5 * ih * tw) * 4
    with pytest.raises(_source.LaunchError, match="takes"):
        _source.macro("ssim", "FC_SSIM_FWD_SMEM", TH=1, TW=2)


def test_kernel_table_is_read_from_the_sources():
    table = _runtime.kernel_table()
    assert set(table) == set(_backend.FAMILIES) == set(_runtime.FAMILIES)
    for fam, names in table.items():
        # every contract function of the family is computed by the CUDA kernel of the same name
        # (but ``*_for``, which returns a per-signature function built on them)
        contract = [n for n in vars(_backend.contract(fam)) if not n.startswith("_") and not n.endswith("_for")]
        assert fam != "pool" or {"max_pool2d_forward", "avg_pool2d_forward"} <= set(contract)
        assert set(contract) <= set(names), (fam, sorted(set(contract) - set(names)))
        exprs = _runtime.name_expressions(fam)
        assert {e.split("<")[0] for e in exprs} == set(names)


# --------------------------------------------------------------------------- the emulator path


def _avg_args(x, y, **over):
    n, c, h, w = x.shape
    args = dict(x=x, y=y, NC=n * c, H=h, W=w, OH=y.shape[2], OW=y.shape[3], kh=2, kw=2, sh=2, sw=2, ph=0, pw=0,
                count_include_pad=1, divisor_override=0)
    args.update(over)
    return args


def test_misnamed_or_missing_keyword_is_rejected_on_the_emulator(emu):
    x, y = torch.randn(1, 2, 4, 6), torch.empty(1, 2, 2, 3)
    grid = cuda_pool.plane_grid(y[0, 0].numel(), y.shape[0] * y.shape[1])
    _runtime.launch("pool", "avg_pool2d_forward", (torch.float32,), grid, (256,), 0, **_avg_args(x, y))
    torch.testing.assert_close(y, F.avg_pool2d(x, 2))
    bad = _avg_args(x, y)
    bad["p_h"] = bad.pop("ph")
    with pytest.raises(_source.LaunchError, match=r"missing \['ph'\], unknown \['p_h'\]"):
        _runtime.launch("pool", "avg_pool2d_forward", (torch.float32,), grid, (256,), 0, **bad)
    with pytest.raises(_source.LaunchError, match="launch_bounds"):
        _runtime.launch("pool", "avg_pool2d_forward", (torch.float32,), grid, (512,), 0, **_avg_args(x, y))
    with pytest.raises(_source.LaunchError, match="no kernel"):
        _runtime.launch("pool", "avg_pool_forward", (torch.float32,), grid, (256,), 0, **_avg_args(x, y))


def test_keyword_order_is_irrelevant_and_a_swap_is_seen(emu):
    """Binding is by name: shuffling the keywords changes nothing; swapping two values changes the result."""
    x = torch.randn(1, 1, 7, 9)
    y1, y2, y3 = (torch.empty(1, 1, 3, 4) for _ in range(3))
    grid = cuda_pool.plane_grid(12, 1)
    a = _avg_args(x, y1, kh=3, kw=2, sh=2, sw=2)
    _runtime.launch("pool", "avg_pool2d_forward", (torch.float32,), grid, (256,), 0, **a)
    _runtime.launch("pool", "avg_pool2d_forward", (torch.float32,), grid, (256,), 0,
                    **dict(reversed(list(_avg_args(x, y2, kh=3, kw=2, sh=2, sw=2).items()))))
    torch.testing.assert_close(y1, F.avg_pool2d(x, (3, 2), 2), rtol=0, atol=0)
    assert torch.equal(y1, y2)
    _runtime.launch("pool", "avg_pool2d_forward", (torch.float32,), grid, (256,), 0,
                    **_avg_args(x, y3, kh=2, kw=3, sh=2, sw=2))  # kh and kw swapped
    assert not torch.allclose(y1, y3)


# --------------------------------------------------------------------------- the CuPy path, with a fake CuPy


class _FakeFunction:
    def __init__(self):
        self.calls = []

    def __call__(self, grid, block, args, shared_mem=0):
        self.calls.append((grid, block, args, shared_mem))


class _FakeCupyRuntime(_runtime.CupyRuntime):
    """The real CupyRuntime host path; only the device lookup, stream and compiled function are faked."""

    def __init__(self):
        fake = types.SimpleNamespace(from_dlpack=np.from_dlpack)  # CuPy's DLPack import, on CPU tensors
        super().__init__(cupy_module=fake)
        self.fn = _FakeFunction()

    def device_of(self, tensors):
        return 0

    def stream(self, device):
        return contextlib.nullcontext()

    def function(self, family, expression, device):
        self.expression = expression
        return self.fn


def test_misnamed_keyword_is_rejected_on_the_cupy_path():
    rt = _FakeCupyRuntime()
    x, y = torch.randn(1, 2, 4, 6), torch.empty(1, 2, 2, 3)
    bad = _avg_args(x, y)
    bad["pww"] = bad.pop("pw")
    with pytest.raises(_source.LaunchError, match=r"missing \['pw'\], unknown \['pww'\]"):
        rt.launch("pool", "avg_pool2d_forward", (torch.float32,), (1,), (256,), 0, **bad)
    assert rt.fn.calls == []
    rt.launch("pool", "avg_pool2d_forward", (torch.float32,), (1,), (256,), 0, **_avg_args(x, y))
    (grid, block, args, shared), = rt.fn.calls
    assert rt.expression == "avg_pool2d_forward<float>" and grid == (1, 1, 1) and block == (256, 1, 1)
    names = _source.signature("pool", rt.expression).names
    assert [type(a).__name__ for a in args[2:]] == ["int64"] + ["int32"] * 12  # NC, then in-plane sizes
    assert dict(zip(names, args))["kw"] == 2 and dict(zip(names, args))["count_include_pad"] == 1


# --------------------------------------------------------------------------- one host-side conversion


@pytest.mark.parametrize("path", ["cupy", "emulator"])
def test_requires_grad_noncontiguous_and_bf16_pass_the_conversion(path):
    """Both runtimes hand tensors that require grad, non-contiguous inputs and bf16 to the kernel."""
    rt = _FakeCupyRuntime() if path == "cupy" else EmulatorRuntime()
    w = torch.nn.Parameter(torch.randn(2, 3, 8, 12))  # an nn.Parameter: requires grad
    x = w[:, :, :, ::2]  # non-contiguous view of it
    assert x.requires_grad and not x.is_contiguous()
    for dt in (torch.float32, torch.bfloat16):
        xd = x.to(dt) if dt != torch.float32 else x
        y = torch.empty(2, 3, 4, 3, dtype=dt)
        args = _avg_args(xd, y)
        if path == "cupy":
            rt.launch("pool", "avg_pool2d_forward", (dt,), (1,), (256,), 0, **args)
            got_x, got_y = rt.fn.calls[-1][2][:2]
            want = xd.detach().contiguous()
            want = want.view(torch.int16) if dt == torch.bfloat16 else want
            np.testing.assert_array_equal(got_x, want.numpy())
            got_y[...] = 7  # the output array is the tensor's own memory
            assert (y.float() != 0).all() and torch.equal(y.view(torch.int16) if dt == torch.bfloat16 else y,
                                                         torch.from_numpy(got_y.copy()))
        else:
            with _runtime.use_runtime(rt):
                _runtime.launch("pool", "avg_pool2d_forward", (dt,), cuda_pool.plane_grid(y[0, 0].numel(), y.shape[0] * y.shape[1]), (256,),
                                0, **args)
            torch.testing.assert_close(y.float(), F.avg_pool2d(xd.detach().float(), 2), rtol=1e-2, atol=1e-2)
    with pytest.raises(_source.LaunchError, match="must be contiguous"):
        _runtime.host_array(torch.empty(4, 6)[:, ::2], np, writable=True)


def test_host_array_detaches_and_shares_memory():
    p = torch.nn.Parameter(torch.arange(6.0))
    a = _runtime.host_array(p, np, writable=True)
    a[0] = 42.0
    assert p[0].item() == 42.0
    b = _runtime.host_array(torch.ones(3, dtype=torch.bfloat16, requires_grad=True), np, writable=False)
    assert b.dtype == np.int16 and (b == 0x3F80).all()
    x = torch.arange(6.0)
    assert (_runtime.host_array(torch._neg_view(x), np, writable=False) == -x.numpy()).all()  # values, not memory
    with pytest.raises(_source.LaunchError, match="negated view"):
        _runtime.host_array(torch._neg_view(x), np, writable=True)


# --------------------------------------------------------------------------- NVRTC with subnormals kept


def test_runtime_compiles_with_its_own_nvrtc_and_loads_the_binary(tmp_path, monkeypatch):
    """CuPy's ``RawModule(code=...)`` appends ``-ftz=true``; the runtime must hand it a binary instead."""
    if _nvrtc.library() is None:
        pytest.skip("libnvrtc not found: pip install 'nvidia-cuda-nvrtc>=13,<14'")
    monkeypatch.setenv(_runtime.NVRTC_CACHE_ENV, str(tmp_path))
    made = []

    class RawModule:
        def __init__(self, **kw):
            if "code" in kw:  # what CuPy would do with source code: its options, then -ftz=true
                opts = (*kw.get("options", ()), "--gpu-architecture=compute_80", "-ftz=true")
                prog = _nvrtc.compile_program(kw["code"], kw.get("name_expressions", ()), opts)
                assert ".ftz." not in prog.ptx, "CuPy's source path flushes subnormals"
            made.append(kw)

    fake = types.SimpleNamespace(RawModule=RawModule, cuda=types.SimpleNamespace(Device=lambda d: contextlib.nullcontext()))
    rt = _runtime.CupyRuntime(cupy_module=fake)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (8, 0))
    mod, lowered = rt.module("pool", 0)
    (kw,), = [made]
    assert set(kw) == {"path"} and kw["path"].endswith(".cubin")
    assert set(lowered) == set(_runtime.name_expressions("pool"))


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("family", _runtime.FAMILIES)
def test_final_nvrtc_options_keep_subnormals(family, arch):
    if _nvrtc.library() is None:
        pytest.skip("libnvrtc not found: pip install 'nvidia-cuda-nvrtc>=13,<14'")
    prog = compile_check.nvrtc_compile(family, arch)
    assert prog.options == _nvrtc.options(arch) and "--ftz=false" in prog.options
    assert "-ftz=true" not in prog.options and "--ftz=true" not in prog.options
    assert ".ftz." not in prog.ptx
    assert prog.cubin and set(prog.lowered) == set(_runtime.name_expressions(family))


def test_sample_calls_cover_every_contract_function_and_kernel(emu):
    """The ASan run's op list comes from the registry: every contract function, every kernel of the table."""
    from fastconv.testing import samples

    for fam in _backend.FAMILIES:
        names = [n for n, _ in samples.backend_calls(fam, torch.float32)]
        contract = {n for n in vars(_backend.contract(fam)) if not n.startswith("_")}
        assert contract <= set(names)
    samples.run_all((torch.float32,))
