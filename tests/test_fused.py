"""Fused conv -> activation [-> max pool] and activation -> conv ops, FusedConv2d, PreActConv2d and
convert_model(fuse=True)."""
import copy
import io
import itertools

import pytest
import torch
import torch.nn.functional as TF
from torch import nn

import fastconv
import fastconv.functional as F
from fastconv import models
from helpers import assert_close, grads

ACTS = [("relu", 0.0), ("leaky_relu", 0.2), ("leaky_relu", -0.3), ("silu", 0.0)]


def _torch_act(z, act, slope):
    if act == "relu":
        return torch.relu(z)
    if act == "leaky_relu":
        return TF.leaky_relu(z, slope)
    return TF.silu(z)


def _same_values_and_grads(out, ref, inputs):
    """``out`` equals ``ref``, and so do their gradients w.r.t. ``inputs`` for a random seed gradient."""
    assert_close(out, ref)
    seed = torch.randn_like(ref)
    for got, want in zip(grads(out, inputs, seed), grads(ref, inputs, seed)):
        assert_close(got, want)


@pytest.mark.parametrize("act,slope", ACTS)
@pytest.mark.parametrize("pool", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_fused_ops_match_unfused_torch(act, slope, pool, bias):
    x = torch.randn(3, 4, 10, 9, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, requires_grad=True) if bias else None
    conv = dict(stride=1, padding=1, dilation=1, groups=2)
    ref = _torch_act(TF.conv2d(x, w, b, **conv), act, slope)
    if pool:
        ref = TF.max_pool2d(ref, 3, 2, 1, ceil_mode=True)
        out = F.conv2d_act_max_pool(x, w, b, **conv, activation=act, negative_slope=slope, pool_kernel_size=3,
                                    pool_stride=2, pool_padding=1, ceil_mode=True)
    else:
        out = F.conv2d_act(x, w, b, **conv, activation=act, negative_slope=slope)
    _same_values_and_grads(out, ref, (x, w, b))


@pytest.mark.parametrize("act,slope", ACTS)
def test_fused_gradcheck_and_double_backward(act, slope):
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    f1 = lambda x, w, b: F.conv2d_act(x, w, b, padding=1, activation=act, negative_slope=slope)  # noqa: E731
    f2 = lambda x, w, b: F.conv2d_act_max_pool(x, w, b, padding=1, activation=act,  # noqa: E731
                                               negative_slope=slope)
    for fn in (f1, f2):
        assert torch.autograd.gradcheck(fn, (x, w, b))
        assert torch.autograd.gradgradcheck(fn, (x, w, b))


def _saved_bytes(fn):
    total = [0]

    def pack(t):
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn().sum().backward()
    return total[0]


def test_fused_pool_keeps_only_the_pooled_outputs():
    """conv -> ReLU -> MaxPool keeps (input, weight, pooled values, indices), not two full-size maps."""
    x = torch.randn(8, 16, 32, 32, requires_grad=True)
    w = torch.randn(32, 16, 3, 3, requires_grad=True)
    fused = _saved_bytes(lambda: F.conv2d_act_max_pool(x, w, padding=1))
    unfused = _saved_bytes(lambda: TF.max_pool2d(torch.relu(TF.conv2d(x, w, padding=1)), 2))
    full = 8 * 32 * 32 * 32 * 4
    assert unfused - fused >= 1.5 * full


def test_bad_activation_is_an_error():
    with pytest.raises(ValueError, match="unsupported fused activation 'gelu'"):
        F.conv2d_act(torch.randn(1, 1, 4, 4), torch.randn(1, 1, 3, 3), activation="gelu")


def _act_module(act, slope):
    return {"relu": nn.ReLU(), "leaky_relu": nn.LeakyReLU(slope), "silu": nn.SiLU()}[act]


@pytest.mark.parametrize("act,slope", ACTS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("geometry", [dict(padding=1, groups=2), dict(stride=(2, 1), padding=(0, 2), dilation=(1, 2))])
def test_act_conv2d_matches_unfused_torch(act, slope, dtype, geometry):
    x = torch.randn(3, 4, 10, 9, dtype=dtype, requires_grad=True)
    w = torch.randn(6, 4 // geometry.get("groups", 1), 3, 3, dtype=dtype, requires_grad=True)
    b = torch.randn(6, dtype=dtype, requires_grad=True)
    ref = TF.conv2d(_torch_act(x, act, slope), w, b, **geometry)
    out = F.act_conv2d(x, w, b, **geometry, activation=act, negative_slope=slope)
    _same_values_and_grads(out, ref, (x, w, b))


@pytest.mark.parametrize("act,slope", ACTS)
def test_act_conv2d_non_finite_inputs_as_torch(act, slope):
    """NaN and infinities go through the activation and its derivative as in torch's layers."""
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    x[0, 0, 2, 2], x[0, 1, 3, 3], x[1, 2, 0, 5] = float("nan"), float("inf"), -float("inf")
    x.requires_grad_()
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    ref = TF.conv2d(_torch_act(x, act, slope), w, padding=1)
    out = F.act_conv2d(x, w, padding=1, activation=act, negative_slope=slope)
    torch.testing.assert_close(out, ref, equal_nan=True)
    seed = torch.randn_like(ref)
    for got, want in zip(grads(out, (x, w), seed), grads(ref, (x, w), seed)):
        torch.testing.assert_close(got, want, equal_nan=True)


@pytest.mark.parametrize("act,slope", ACTS)
def test_act_conv2d_gradcheck_and_double_backward(act, slope):
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    fn = lambda x, w, b: F.act_conv2d(x, w, b, padding=1, stride=2, activation=act, negative_slope=slope)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w, b))
    assert torch.autograd.gradgradcheck(fn, (x, w, b))


def test_act_conv2d_keeps_only_its_input():
    """SiLU -> conv keeps (input, weight): torch's layers also keep the SiLU's output."""
    x = torch.randn(8, 16, 32, 32, requires_grad=True)
    w = torch.randn(32, 16, 3, 3, requires_grad=True)
    fused = _saved_bytes(lambda: F.act_conv2d(x, w, padding=1))
    unfused = _saved_bytes(lambda: TF.conv2d(TF.silu(x), w, padding=1))
    assert fused == x.nbytes + w.nbytes
    assert unfused - fused >= x.nbytes


def test_act_conv2d_unbatched_and_bad_activation():
    x, w = torch.randn(3, 7, 7), torch.randn(2, 3, 3, 3)
    assert_close(F.act_conv2d(x, w, stride=2), TF.conv2d(TF.silu(x), w, stride=2))
    with pytest.raises(ValueError, match="unsupported fused activation 'gelu'"):
        F.act_conv2d(x, w, activation="gelu")


@pytest.mark.parametrize("act,slope", ACTS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("geometry", [dict(stride=2, padding=1, output_padding=1, groups=2),
                                      dict(stride=(1, 2), padding=(2, 0), dilation=(2, 1))])
def test_act_conv_transpose2d_matches_unfused_torch(act, slope, dtype, geometry):
    x = torch.randn(3, 4, 5, 6, dtype=dtype, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, dtype=dtype, requires_grad=True)
    b = torch.randn(3 * geometry.get("groups", 1), dtype=dtype, requires_grad=True)
    ref = TF.conv_transpose2d(_torch_act(x, act, slope), w, b, **geometry)
    out = F.act_conv_transpose2d(x, w, b, **geometry, activation=act, negative_slope=slope)
    _same_values_and_grads(out, ref, (x, w, b))


@pytest.mark.parametrize("act,slope", ACTS[2:])
def test_act_conv_transpose2d_gradcheck_and_memory(act, slope):
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, dtype=torch.float64, requires_grad=True)
    fn = lambda x, w, b: F.act_conv_transpose2d(x, w, b, 2, 1, activation=act, negative_slope=slope)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w, b))
    assert torch.autograd.gradgradcheck(fn, (x, w, b))
    assert _saved_bytes(lambda: fn(x, w, b)) == x.nbytes + w.nbytes
    xu = torch.randn(3, 4, 4, dtype=torch.float64)
    assert_close(F.act_conv_transpose2d(xu, w, stride=2, output_padding=1, activation=act, negative_slope=slope),
                 TF.conv_transpose2d(_torch_act(xu, act, slope), w, stride=2, output_padding=1))
    with pytest.raises(RuntimeError, match="expected bias of shape"):
        F.act_conv_transpose2d(x, w, torch.zeros(3, dtype=torch.float64))


def _same_models_in_train_and_eval(model, ref, x):
    """The fused ``model`` gives ``ref``'s outputs and parameter gradients, in train and eval mode."""
    for mode in ("train", "eval"):
        getattr(ref, mode)()
        getattr(model, mode)()
        out, want = model(x), ref(x)
        torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-5)
        seed = torch.randn_like(want)
        for a, b in zip(grads(out, list(model.parameters()), seed), grads(want, list(ref.parameters()), seed)):
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)


MODEL_CASES = {  # model, input shape, (FusedConv2d, PreActConv2d, PreActConvTranspose2d) layers after fusing
    "classifier": (lambda b: models.Classifier(3, 10, 32, backend=b), (4, 3, 32, 32), (3, 0, 0)),
    "unet": (lambda b: models.UNet(3, 1, 8, 2, backend=b), (2, 3, 32, 32), (10, 0, 0)),
    "denoiser": (lambda b: models.Denoiser(1, backend=b), (4, 1, 32, 32), (0, 3, 2)),
}


@pytest.mark.parametrize("name", sorted(MODEL_CASES))
def test_convert_model_fuse_equals_torch_in_train_and_eval(name):
    make, shape, expected = MODEL_CASES[name]
    torch.manual_seed(0)
    ref = make("torch")
    torch.manual_seed(0)
    model = make("torch")
    keys = list(model.state_dict())
    fastconv.convert_model(model, fuse=True)
    assert list(model.state_dict()) == keys
    assert tuple(sum(isinstance(m, cls) for m in model.modules()) for cls in (
        fastconv.nn.FusedConv2d, fastconv.nn.PreActConv2d, fastconv.nn.PreActConvTranspose2d)) == expected
    x = torch.randn(*shape)
    _same_models_in_train_and_eval(model, ref, x)


def test_fused_model_loads_a_torch_checkpoint_and_pickles():
    torch.manual_seed(1)
    src = models.UNet(3, 1, 8, 2, backend="torch")
    src.eval()
    for m in src.modules():  # non-trivial running statistics to fold
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    buf = io.BytesIO()
    torch.save(src.state_dict(), buf)
    buf.seek(0)
    torch.manual_seed(2)
    dst = fastconv.convert_model(models.UNet(3, 1, 8, 2, backend="torch"), fuse=True)
    dst.load_state_dict(torch.load(buf))
    dst.eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(dst(x), src(x), rtol=1e-4, atol=1e-5)
    buf = io.BytesIO()
    torch.save(dst, buf)
    buf.seek(0)
    again = torch.load(buf, weights_only=False)
    torch.testing.assert_close(again(x), src(x), rtol=1e-4, atol=1e-5)


class _Branchy(nn.Module):
    """Not a Sequential: the fx path must find conv -> act -> pool here."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.LeakyReLU(0.1)
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Conv2d(8, 4, 1)
        self.shared = nn.ReLU()

    def forward(self, x):
        y = self.pool(self.act(self.conv(x)))
        return self.shared(self.head(y)) + self.shared(y[:, :4])


def test_fx_finds_runs_outside_sequential_and_leaves_shared_modules():
    torch.manual_seed(0)
    ref = _Branchy()
    model = _Branchy()
    model.load_state_dict(ref.state_dict())
    fastconv.convert_model(model, fuse=True)
    assert isinstance(model.conv, fastconv.nn.FusedConv2d) and model.conv.fused_pool is model.pool
    assert not isinstance(model.head, fastconv.nn.FusedConv2d)  # its ReLU is shared
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(model(x), ref(x), rtol=1e-5, atol=1e-6)


def test_fused_model_compiles():
    torch.manual_seed(0)
    model = fastconv.convert_model(models.Classifier(3, 10, 32, backend="torch"), fuse=True)
    x = torch.randn(2, 3, 32, 32)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), model(x))


@pytest.mark.parametrize("act,slope", ACTS[:2])
def test_fused_ops_under_torch_func(act, slope):
    x = torch.randn(3, 3, 6, 6, dtype=torch.float64)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    f = lambda x: F.conv2d_act_max_pool(x, w, padding=1, activation=act, negative_slope=slope).sum()  # noqa: E731
    g = lambda x: TF.max_pool2d(_torch_act(TF.conv2d(x, w, padding=1), act, slope), 2).sum()  # noqa: E731
    assert_close(torch.func.grad(f)(x), torch.func.grad(g)(x))
    xs = torch.randn(2, 3, 3, 6, 6, dtype=torch.float64)
    assert_close(torch.func.vmap(lambda x: F.conv2d_act(x, w, padding=1, activation=act, negative_slope=slope))(xs),
                 torch.stack([_torch_act(TF.conv2d(v, w, padding=1), act, slope) for v in xs]))


def test_unfuse_batchnorm_before_type_based_conversions():
    """SyncBatchNorm conversion swaps BatchNorm layers by type: the folded ones are unfused first."""
    from fastconv.fuse import unfuse_batchnorm
    torch.manual_seed(0)
    model = models.UNet(3, 1, 8, 2, backend="fastconv")
    torch.manual_seed(0)
    ref = models.UNet(3, 1, 8, 2, backend="torch")
    unfuse_batchnorm(model)
    assert not any(isinstance(m, fastconv.nn.FusedConv2d) for m in model.modules())
    assert all(type(m) is nn.BatchNorm2d for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    model.eval()
    ref.eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model(x), ref(x), rtol=1e-4, atol=1e-5)


def _chain():
    """Every kind of run, in the order fuse_model settles them."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.SiLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),   # input run; ReLU left
        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.SiLU(),                          # BatchNorm run first
        nn.Conv2d(8, 8, 3, padding=1), nn.LeakyReLU(-0.2),                                    # its conv: a Conv2d run
        nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect"), nn.LeakyReLU(0.1), nn.MaxPool2d(2),  # pooled run first
        nn.SiLU(), nn.Conv2d(8, 4, 3, padding=1, padding_mode="circular"),                    # input run, circular
        nn.LeakyReLU(-0.1), nn.ConvTranspose2d(4, 3, 3, stride=2, padding=1, output_padding=1))  # transposed


def test_fuse_settles_runs_in_order_and_equals_torch():
    torch.manual_seed(0)
    ref = _chain()
    model = _chain()
    model.load_state_dict(ref.state_dict())
    fastconv.convert_model(model, fuse=True)
    assert [type(m).__name__ for m in model] == [
        "Conv2d", "AbsorbedSiLU", "PreActConv2d", "ReLU", "FusedConv2d", "AbsorbedBatchNorm2d", "AbsorbedSiLU",
        "FusedConv2d", "AbsorbedLeakyReLU", "FusedConv2d", "AbsorbedLeakyReLU", "AbsorbedMaxPool2d", "AbsorbedSiLU",
        "PreActConv2d", "AbsorbedLeakyReLU", "PreActConvTranspose2d"]
    assert model[13].input_activation == "silu" and model[7].fused_slope == -0.2
    x = torch.randn(2, 3, 16, 16)
    _same_models_in_train_and_eval(model, ref, x)
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    torch.testing.assert_close(torch.load(buf, weights_only=False)(x), ref(x), rtol=1e-4, atol=1e-5)
    from fastconv.nn.fused import release
    release(model[13])
    release(model[15])
    assert [type(m).__name__ for m in model][12:] == ["SiLU", "Conv2d", "LeakyReLU", "ConvTranspose2d"]
    torch.testing.assert_close(model(x), ref(x), rtol=1e-4, atol=1e-5)


def test_preact_conv_transpose2d_takes_output_size():
    torch.manual_seed(0)
    ref = nn.Sequential(nn.SiLU(), nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1))
    model = fastconv.convert_model(copy.deepcopy(ref), fuse=True)
    assert isinstance(model[1], fastconv.nn.PreActConvTranspose2d)
    x = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(model[1](model[0](x), output_size=[10, 10]), ref[1](ref[0](x), output_size=[10, 10]))


def test_fuse_leaves_activations_that_appear_twice():
    act = nn.SiLU()
    model = fastconv.convert_model(nn.Sequential(nn.Conv2d(3, 4, 3), act, nn.Conv2d(4, 4, 3), act, nn.Flatten()),
                                   fuse=True)
    assert [type(m).__name__ for m in model] == ["Conv2d", "SiLU", "Conv2d", "SiLU", "Flatten"]


class _PreActBranchy(nn.Module):
    """Not a Sequential: the fx path must find act -> conv here, and leave the shared one."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.SiLU()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.act2 = nn.LeakyReLU(-0.1)
        self.head = nn.Conv2d(8, 8, 1)

    def forward(self, x):
        z = self.stem(x)
        a = self.act2(z)
        return self.conv(self.act(z)) + self.head(a) + a


def test_fx_finds_input_runs_outside_sequential():
    torch.manual_seed(0)
    ref = _PreActBranchy()
    model = _PreActBranchy()
    model.load_state_dict(ref.state_dict())
    fastconv.convert_model(model, fuse=True)
    assert isinstance(model.conv, fastconv.nn.PreActConv2d)
    assert type(model.head) is fastconv.nn.Conv2d and type(model.act2) is nn.LeakyReLU  # act2's output is shared
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    out, want = model(x), ref(x)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-6)
    seed = torch.randn_like(want)
    torch.testing.assert_close(grads(out, [x], seed)[0], grads(want, [x], seed)[0], rtol=1e-4, atol=1e-5)


def test_act_conv2d_under_torch_func_and_compile():
    x = torch.randn(3, 3, 6, 6, dtype=torch.float64)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    f = lambda x: F.act_conv2d(x, w, padding=1).sum()  # noqa: E731
    assert_close(torch.func.grad(f)(x), torch.func.grad(lambda x: TF.conv2d(TF.silu(x), w, padding=1).sum())(x))
    xs = torch.randn(2, 3, 3, 6, 6, dtype=torch.float64)
    assert_close(torch.func.vmap(lambda x: F.act_conv2d(x, w, padding=1))(xs),
                 torch.stack([TF.conv2d(TF.silu(v), w, padding=1) for v in xs]))
    torch.manual_seed(0)
    model = fastconv.convert_model(models.Denoiser(1, backend="torch"), fuse=True)
    x = torch.randn(2, 1, 16, 16)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), model(x))
    seed = torch.randn_like(model(x))
    for a, b in zip(grads(compiled(x), list(model.parameters()), seed), grads(model(x), list(model.parameters()), seed)):
        torch.testing.assert_close(a, b)
    exported = torch.export.export(model, (x,))
    targets = {str(n.target) for n in exported.graph.nodes if n.op == "call_function"}
    assert {"fastconv.act_conv2d.default", "fastconv.act_conv_transpose2d.default"} <= targets
    torch.testing.assert_close(exported.module()(x), model(x))


class _InPlaceShared(nn.Module):
    """An in-place SiLU whose input is also read afterwards: torch's result depends on it running."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.SiLU(inplace=True)
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        z = self.stem(x)
        return self.conv(self.act(z)) + z


def test_fx_leaves_in_place_activations_whose_input_is_shared():
    torch.manual_seed(0)
    ref = _InPlaceShared()
    model = _InPlaceShared()
    model.load_state_dict(ref.state_dict())
    fastconv.convert_model(model, fuse=True)
    assert type(model.conv) is fastconv.nn.Conv2d and type(model.act) is nn.SiLU
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(model(x), ref(x), rtol=1e-5, atol=1e-6)


class _Reused(nn.Module):
    """Modules of a would-be run that are used elsewhere too: fusing them would change that use."""

    def __init__(self, case):
        super().__init__()
        self.case = case
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        inplace = case in ("inplace-input", "inplace-view")
        self.seq = nn.Sequential(nn.SiLU(inplace=inplace), nn.Conv2d(4, 4, 3, padding=1))
        self.shared = self.seq[1] if case == "registered-twice" else nn.Identity()

    def forward(self, x):
        z = self.stem(x)
        if self.case == "conv-called-twice":
            return self.seq(z) + self.seq[1](z)
        if self.case == "act-called-twice":
            return self.seq(z) + self.seq[0](z)
        if self.case == "inplace-input":
            return self.seq(z) + z
        if self.case == "inplace-view":
            return self.seq(z[:, :4]) + z
        return self.seq(z) + self.shared(z)


@pytest.mark.parametrize("case", ["conv-called-twice", "act-called-twice", "inplace-input", "inplace-view",
                                  "registered-twice"])
def test_fuse_leaves_runs_whose_modules_are_used_elsewhere(case):
    torch.manual_seed(0)
    ref = _Reused(case)
    model = copy.deepcopy(ref)
    fastconv.convert_model(model, fuse=True)
    assert type(model.seq[1]) is fastconv.nn.Conv2d
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(model(x), ref(x), rtol=1e-5, atol=1e-6)


def test_fuse_in_place_activation_after_a_convolution():
    """In a Sequential, an in-place SiLU's input is the previous convolution's fresh output: absorbed."""
    torch.manual_seed(0)
    ref = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.SiLU(inplace=True), nn.Conv2d(4, 4, 3, padding=1))
    model = fastconv.convert_model(copy.deepcopy(ref), fuse=True)
    assert isinstance(model[2], fastconv.nn.PreActConv2d)
    _same_models_in_train_and_eval(model, ref, torch.randn(2, 3, 8, 8))


@pytest.mark.parametrize("op", ["act_conv2d", "act_conv_transpose2d"])
def test_act_conv_forward_mode(op):
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    if op == "act_conv2d":
        w, b = torch.randn(4, 3, 3, 3, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
        f = lambda x, w, b: F.act_conv2d(x, w, b, padding=1, activation="leaky_relu", negative_slope=-0.2)  # noqa: E731
        g = lambda x, w, b: TF.conv2d(TF.leaky_relu(x, -0.2), w, b, padding=1)  # noqa: E731
    else:
        w, b = torch.randn(3, 4, 3, 3, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
        f = lambda x, w, b: F.act_conv_transpose2d(x, w, b, 2, 1, 1)  # noqa: E731
        g = lambda x, w, b: TF.conv_transpose2d(TF.silu(x), w, b, 2, 1, 1)  # noqa: E731
    for tangents in [(torch.randn_like(x), torch.randn_like(w), torch.randn_like(b)),
                     (torch.zeros_like(x), torch.zeros_like(w), torch.randn_like(b))]:
        assert_close(torch.func.jvp(f, (x, w, b), tangents)[1], torch.func.jvp(g, (x, w, b), tangents)[1])
    assert_close(torch.func.jacfwd(f)(x, w, b), torch.func.jacfwd(g)(x, w, b))


def test_act_conv2d_without_input_channels_as_torch():
    x, w, b = torch.randn(2, 0, 5, 5), torch.randn(4, 0, 3, 3), torch.randn(4)
    assert F.act_conv2d(x, w, b).shape == F.conv2d_act(x, w, b).shape == TF.conv2d(x, w, b).shape == (2, 0, 3, 3)


@pytest.mark.parametrize("act,slope", ACTS)
def test_fused_ops_forward_mode(act, slope):
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    w, b = torch.randn(4, 3, 3, 3, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    tangents = (torch.randn_like(x), torch.randn_like(w), torch.randn_like(b))
    pool = dict(pool_kernel_size=3, pool_stride=2, pool_padding=1, ceil_mode=True)
    pairs = [(lambda x, w, b: F.conv2d_act(x, w, b, padding=1, activation=act, negative_slope=slope),
              lambda x, w, b: _torch_act(TF.conv2d(x, w, b, padding=1), act, slope)),
             (lambda x, w, b: F.conv2d_act_max_pool(x, w, b, padding=1, activation=act, negative_slope=slope, **pool),
              lambda x, w, b: TF.max_pool2d(_torch_act(TF.conv2d(x, w, b, padding=1), act, slope), 3, 2, 1,
                                            ceil_mode=True))]
    for fused, ref in pairs:
        assert_close(torch.func.jvp(fused, (x, w, b), tangents)[1], torch.func.jvp(ref, (x, w, b), tangents)[1])


def test_fused_model_forward_mode():
    torch.manual_seed(0)
    ref = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.SiLU(),
                        nn.Conv2d(8, 4, 3, padding=1), nn.SiLU()).double()
    model = fastconv.convert_model(copy.deepcopy(ref), fuse=True)
    assert [type(m).__name__ for m in model][::2] == ["FusedConv2d", "AbsorbedMaxPool2d", "PreActConv2d"]
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    t = torch.randn_like(x)
    assert_close(torch.func.jvp(model, (x,), (t,))[1], torch.func.jvp(ref, (x,), (t,))[1])
