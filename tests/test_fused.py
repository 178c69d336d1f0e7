"""Fused conv -> activation [-> max pool] ops, FusedConv2d and convert_model(fuse=True)."""
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
    assert_close(out, ref)
    seed = torch.randn_like(ref)
    for got, want in zip(grads(out, (x, w, b), seed), grads(ref, (x, w, b), seed)):
        assert_close(got, want)


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


MODEL_CASES = {
    "classifier": (lambda b: models.Classifier(3, 10, 32, backend=b), (4, 3, 32, 32), 3),
    "unet": (lambda b: models.UNet(3, 1, 8, 2, backend=b), (2, 3, 32, 32), 10),
    "denoiser": (lambda b: models.Denoiser(1, backend=b), (4, 1, 32, 32), 3),
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
    assert sum(isinstance(m, fastconv.nn.FusedConv2d) for m in model.modules()) == expected
    x = torch.randn(*shape)
    for mode in ("train", "eval"):
        getattr(ref, mode)()
        getattr(model, mode)()
        out, want = model(x), ref(x)
        torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-5)
        seed = torch.randn_like(want)
        for a, b in zip(grads(out, list(model.parameters()), seed), grads(want, list(ref.parameters()), seed)):
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)


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
