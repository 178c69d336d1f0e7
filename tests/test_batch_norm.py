"""``fastconv::batch_norm_act`` (training-mode BatchNorm fused with its activation) and the
``FusedConv2d`` training path that uses it, against torch's unfused layers."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as TF
from torch import nn

import fastconv
from fastconv.cpu import batch_norm as cpu_bn
from fastconv.nn.fused import FusedConv2d
from fastconv.ops import batch_norm as ob

ACTS = ["relu", "leaky_relu", "silu", "identity"]


def torch_act(z, act, slope=0.1):
    if act == "relu":
        return torch.relu(z)
    if act == "leaky_relu":
        return TF.leaky_relu(z, slope)
    if act == "silu":
        return TF.silu(z)
    return z


def reference(x, w, b, act, eps=1e-5, slope=0.1):
    return torch_act(TF.batch_norm(x, None, None, w, b, True, 0.0, eps), act, slope)


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("shape", [(4, 16, 9, 13), (2, 3, 1, 2), (1, 5, 7, 33), (3, 2, 17, 16), (5, 40, 2, 3)])
@pytest.mark.parametrize("affine", [True, False])
def test_values_and_gradients_match_torch(act, shape, affine):
    torch.manual_seed(0)
    x = (torch.randn(shape) * 3 + 1).requires_grad_(True)
    c = shape[1]
    w = (torch.rand(c) + 0.5).requires_grad_(True) if affine else None
    b = (torch.randn(c)).requires_grad_(True) if affine else None
    xr = x.detach().clone().requires_grad_(True)
    wr = w.detach().clone().requires_grad_(True) if affine else None
    br = b.detach().clone().requires_grad_(True) if affine else None
    y, mean, var = ob.batch_norm_act_op(x, w, b, 1e-5, act, 0.1 if act == "leaky_relu" else 0.0)
    ref = reference(xr, wr, br, act)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mean, xr.detach().double().mean((0, 2, 3)), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(var, xr.detach().double().var((0, 2, 3), unbiased=False), rtol=1e-5, atol=1e-6)
    g = torch.randn(shape)
    y.backward(g)
    ref.backward(g)
    scale = xr.grad.abs().max().clamp_min(1)
    torch.testing.assert_close(x.grad / scale, xr.grad / scale, rtol=0, atol=2e-5)
    if affine:
        torch.testing.assert_close(w.grad, wr.grad, rtol=1e-4, atol=1e-4 * wr.grad.abs().max().item())
        torch.testing.assert_close(b.grad, br.grad, rtol=1e-4, atol=1e-4 * br.grad.abs().max().item())


@pytest.mark.parametrize("act", ACTS)
def test_gradcheck_and_gradgradcheck_float64(act):
    torch.manual_seed(1)
    x = torch.randn(3, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    w = (torch.rand(2, dtype=torch.float64) + 0.5).requires_grad_(True)
    b = torch.randn(2, dtype=torch.float64, requires_grad=True)
    slope = 0.1 if act == "leaky_relu" else 0.0

    def f(x, w, b):
        return ob.batch_norm_act_op(x, w, b, 1e-5, act, slope)[0]
    assert torch.autograd.gradcheck(f, (x, w, b))
    assert torch.autograd.gradgradcheck(f, (x, w, b))


def test_nan_and_inf_behave_as_torch():
    x = torch.randn(2, 3, 4, 4)
    x[0, 1, 2, 2] = float("nan")
    x[1, 2, 0, 0] = float("inf")
    y, _, _ = ob.batch_norm_act_op(x, None, None, 1e-5, "relu", 0.0)
    ref = torch.relu(TF.batch_norm(x, None, None, training=True))
    torch.testing.assert_close(y, ref, equal_nan=True)
    assert torch.isnan(y[:, 1]).all() and torch.isfinite(y[:, 0]).all()


def test_kernel_is_deterministic_and_thread_independent():
    import numba
    x = torch.randn(4, 8, 31, 29)
    a = cpu_bn.batch_norm_act_forward(x, None, None, 1e-5, "relu", 0.0)
    old = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        b = cpu_bn.batch_norm_act_forward(x, None, None, 1e-5, "relu", 0.0)
    finally:
        numba.set_num_threads(old)
    for u, v in zip(a, b):
        assert torch.equal(u, v)


def test_functional_updates_running_stats_like_torch():
    torch.manual_seed(2)
    x = torch.randn(4, 3, 5, 6) * 2 + 3
    rm, rv = torch.randn(3), torch.rand(3) + 0.5
    rm2, rv2 = rm.clone(), rv.clone()
    y = ob.batch_norm_act(x, rm, rv, None, None, 0.3, 1e-3, "identity")
    ref = TF.batch_norm(x, rm2, rv2, None, None, True, 0.3, 1e-3)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rm, rm2)
    torch.testing.assert_close(rv, rv2)


def test_errors_match_torch():
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        ob.batch_norm_act(torch.randn(1, 3, 1, 1), None, None)
    with pytest.raises(ValueError, match="expected 4D input"):
        ob.batch_norm_act(torch.randn(3, 4, 4), None, None)
    with pytest.raises(ValueError, match="unsupported activation"):
        ob.batch_norm_act(torch.randn(2, 3, 4, 4), None, None, activation="gelu")
    with pytest.raises(ValueError, match="weight must be a"):
        ob.batch_norm_act(torch.randn(2, 3, 4, 4), None, None, torch.ones(4))
    with pytest.raises(TypeError, match="float32/float64"):
        ob.batch_norm_act(torch.randn(2, 3, 4, 4).half(), None, None)


def test_opcheck_and_compile():
    x = torch.randn(2, 3, 4, 5, requires_grad=True)
    w = torch.rand(3, requires_grad=True)
    b = torch.randn(3, requires_grad=True)
    torch.library.opcheck(torch.ops.fastconv.batch_norm_act, (x, w, b, 1e-5, "relu", 0.0))
    f = torch.compile(lambda x: ob.batch_norm_act_op(x, w, b, 1e-5, "leaky_relu", 0.2)[0], backend="eager",
                      fullgraph=True)
    torch.testing.assert_close(f(x), reference(x, w, b, "leaky_relu", slope=0.2), rtol=1e-5, atol=1e-5)


def _block(act: nn.Module, pool: bool, momentum=0.1, affine=True, track=True) -> nn.Sequential:
    layers = [nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6, momentum=momentum, affine=affine,
                                                                       track_running_stats=track), act]
    if pool:
        layers.append(nn.MaxPool2d(2))
    layers += [nn.Conv2d(6, 4, 3), nn.BatchNorm2d(4, track_running_stats=track), copy.deepcopy(act)]
    return nn.Sequential(*layers)


@pytest.mark.parametrize("act", [nn.ReLU(inplace=True), nn.LeakyReLU(0.2), nn.SiLU()])
@pytest.mark.parametrize("pool", [False, True])
@pytest.mark.parametrize("bn", [dict(), dict(momentum=None), dict(affine=False), dict(track=False)])
def test_fused_training_matches_torch_over_steps(act, pool, bn):
    torch.manual_seed(3)
    ref = _block(act, pool, **bn)
    net = fastconv.convert_model(copy.deepcopy(ref), fuse=True)
    assert isinstance(net[0], FusedConv2d) and net[0].batch_stats_fused()
    opt_r = torch.optim.SGD(ref.parameters(), lr=0.1)
    opt_f = torch.optim.SGD(net.parameters(), lr=0.1)
    x = torch.randn(4, 3, 12, 10)
    for _ in range(3):
        for m, opt in ((ref, opt_r), (net, opt_f)):
            opt.zero_grad()
            m(x).square().mean().backward()
            opt.step()
        for (name, p), q in zip(ref.named_parameters(), net.parameters()):
            torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5, msg=name)
        for (name, u), v in zip(ref.named_buffers(), net.buffers()):
            torch.testing.assert_close(v, u, rtol=1e-5, atol=1e-6, msg=name)
    ref.eval()
    net.eval()
    torch.testing.assert_close(net(x), ref(x), rtol=1e-4, atol=1e-5)


def test_fused_training_falls_back_where_the_op_does_not_run():
    torch.manual_seed(4)
    ref = _block(nn.ReLU(), False)
    net = fastconv.convert_model(copy.deepcopy(ref), fuse=True)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():  # unbatched-like geometry errors as torch's BatchNorm does
        with pytest.raises(ValueError, match="expected 4D input"):
            net(x[0])
    ref.eval()
    net.eval()
    net[1].train()  # BN in training inside an eval conv: batch statistics, fused
    ref[1].train()
    assert net[0].batch_stats_fused()
    torch.testing.assert_close(net(x), ref(x), rtol=1e-4, atol=1e-5)
    net.double()
    ref.double()
    torch.testing.assert_close(net(x.double()), ref(x.double()))
    # under a torch.func transform the modules run unfused (the fused op has no batching rule)
    ref = _block(nn.ReLU(), False, track=False).double()
    net = fastconv.convert_model(copy.deepcopy(ref), fuse=True)

    def loss(module):
        return lambda p: torch.func.functional_call(module, p, (x.double(),)).square().sum()
    seen = []
    hook = net[0].register_forward_hook(lambda m, i, o: seen.append(m.batch_stats_fused()))
    g = torch.func.grad(loss(net))(dict(net.named_parameters()))
    hook.remove()
    g_ref = torch.func.grad(loss(ref))(dict(ref.named_parameters()))
    assert seen == [False]
    for k in g_ref:
        torch.testing.assert_close(g[k], g_ref[k])


def test_fused_training_under_torch_compile():
    torch.manual_seed(5)
    ref = _block(nn.ReLU(), True)
    net = fastconv.convert_model(copy.deepcopy(ref), fuse=True)
    compiled = torch.compile(net, backend="aot_eager")
    x = torch.randn(4, 3, 12, 10)
    y_ref, y = ref(x), compiled(x)
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-5)
    y_ref.square().sum().backward()
    y.square().sum().backward()
    for p, q in zip(ref.parameters(), net.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-4)
    for u, v in zip(ref.buffers(), net.buffers()):
        torch.testing.assert_close(v, u, rtol=1e-5, atol=1e-6)


def test_empty_batch_behaves_as_torch():
    """No images: an empty output, zero parameter gradients and untouched running statistics, as
    torch's layers give (the kernels never see the empty input); the fused module counts the batch."""
    x = torch.randn(0, 3, 4, 4, requires_grad=True)
    w = torch.rand(3, requires_grad=True)
    b = torch.randn(3, requires_grad=True)
    rm, rv = torch.randn(3), torch.rand(3) + 0.5
    rm0, rv0 = rm.clone(), rv.clone()
    y = ob.batch_norm_act(x, rm, rv, w, b, 0.1, 1e-5, "relu")
    assert y.shape == x.shape
    y.sum().backward()
    assert torch.equal(rm, rm0) and torch.equal(rv, rv0)
    assert x.grad.shape == x.shape and torch.count_nonzero(w.grad) == 0 and torch.count_nonzero(b.grad) == 0
    ref = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU())
    fused = fastconv.convert_model(copy.deepcopy(ref), fuse=True)
    inp = torch.randn(0, 2, 4, 4)
    assert fused(inp).shape == ref(inp).shape == (0, 3, 4, 4)
    assert int(fused[1].num_batches_tracked) == int(ref[1].num_batches_tracked) == 1
    torch.testing.assert_close(fused[1].running_mean, ref[1].running_mean)


def test_statistics_of_offset_data_and_outliers():
    """The one-pass float64 statistics (shifted by each channel's first element) keep their accuracy
    on data far from zero and when that first element is an outlier."""
    x = 1e4 + 1e-2 * torch.randn(4, 3, 8, 8, dtype=torch.float64)
    x[0, 1, 0, 0] += 100.0  # the shift of channel 1 is an outlier
    w, b = torch.ones(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    y, mean, var = cpu_bn.batch_norm_act_forward(x, w, b, 1e-5, "identity", 0.0)
    torch.testing.assert_close(mean, x.mean((0, 2, 3)), rtol=1e-14, atol=0)
    torch.testing.assert_close(var, x.var((0, 2, 3), unbiased=False), rtol=1e-9, atol=0)
    torch.testing.assert_close(y, TF.batch_norm(x, None, None, w, b, True, 0.0, 1e-5), rtol=1e-9, atol=1e-9)
