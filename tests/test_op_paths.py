"""The two ways into every op (fastconv.ops._op): eager calls skip the custom-op machinery, traced
calls use the registered custom op, and both give the same values and gradients; torch.func's
transforms (grad, jacrev, jvp, vmap) work over every public op like over torch's own."""
import warnings

import pytest
import torch
import torch.nn.functional as TF
from torch.func import grad, jacrev, jvp, vmap

import fastconv
import fastconv.functional as F
from fastconv.ops import _op
from helpers import assert_close

f64 = dict(dtype=torch.float64)


def _count_custom_calls(monkeypatch):
    calls = []
    for op in (fastconv.ops.conv2d.conv2d_op, fastconv.ops.pool.max_pool2d_op):
        original = op.custom

        def wrapped(*args, _original=original, _name=op.name):
            calls.append(_name)
            return _original(*args)

        monkeypatch.setattr(op, "custom", wrapped)
    return calls


def test_eager_calls_do_not_use_the_custom_op(monkeypatch):
    calls = _count_custom_calls(monkeypatch)
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    F.max_pool2d(F.conv2d(x, w, padding=1), 2).sum().backward()
    with torch.no_grad():
        F.conv2d(x, w)
    assert calls == []


def test_traced_calls_use_the_custom_op():
    x = torch.randn(2, 3, 8, 8)
    w = torch.randn(4, 3, 3, 3)
    gm = torch.fx.experimental.proxy_tensor.make_fx(lambda x, w: F.max_pool2d(F.conv2d(x, w, padding=1), 2))(x, w)
    targets = {str(n.target) for n in gm.graph.nodes if n.op == "call_function"}
    assert "fastconv.conv2d.default" in targets and "fastconv.max_pool2d.default" in targets
    assert_close(gm(x, w), F.max_pool2d(F.conv2d(x, w, padding=1), 2))


def test_both_paths_give_the_same_gradients():
    x = torch.randn(2, 3, 8, 8, **f64, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, **f64, requires_grad=True)
    eager = torch.autograd.grad(F.conv2d(x, w, padding=1).square().sum(), (x, w))
    traced = torch.autograd.grad(fastconv.ops.conv2d.conv2d_op.custom(x, w, None, [1, 1], [1, 1, 1, 1], [1, 1], 1)
                                 .square().sum(), (x, w))
    for a, b in zip(eager, traced):
        assert torch.equal(a, b)


def test_tracing_detection():
    x = torch.randn(2)
    assert not _op.tracing((x, 1))
    with torch._subclasses.fake_tensor.FakeTensorMode():
        assert _op.tracing((torch.empty(2),))


def test_plain_calls_and_the_ops_agree(monkeypatch):
    """``Op.plain`` is true exactly when no gradient can flow on plain eager tensors; the pooling
    functions then call their backend directly (not the op), with the op's answer (torch's)."""
    x = torch.randn(2, 3, 9, 8)
    op = fastconv.ops.pool.max_pool2d_op
    assert op.plain(x) and op.plain(x, torch.nn.Parameter(x, requires_grad=False))
    assert not op.plain(x.clone().requires_grad_())
    with torch.no_grad():
        assert op.plain(x.clone().requires_grad_())
    with torch._subclasses.fake_tensor.FakeTensorMode():
        assert not op.plain(torch.empty(2))
    seen = []
    torch.func.grad(lambda t: (seen.append(op.plain(t)), t.sum())[1])(torch.ones(()))
    assert seen == [False]
    calls = []

    class Counted:  # the op, counting calls that reach it
        def __init__(self, op):
            self.op, self.plain = op, op.plain

        def __call__(self, *args):
            calls.append(self.op.name)
            return self.op(*args)

    for name in ("max_pool2d_op", "avg_pool2d_op"):
        monkeypatch.setattr(fastconv.ops.pool, name, Counted(getattr(fastconv.ops.pool, name)))
    xg = x.clone().requires_grad_()
    for args in ((3, 2, 1, 1, True), (2, None, 0, 2, False)):
        direct, idx = F.max_pool2d(x, *args, return_indices=True)
        routed, ridx = F.max_pool2d(xg, *args, return_indices=True)
        assert torch.equal(direct, routed) and torch.equal(idx, ridx)
        assert torch.equal(direct, TF.max_pool2d(x, *args))
    for args in ((3, 2, 1, True, False, None), (2, 1, 0, False, True, 3)):
        direct = F.avg_pool2d(x, *args)
        assert torch.equal(direct, F.avg_pool2d(xg, *args))
        assert_close(direct, TF.avg_pool2d(x, *args))
    assert calls == ["max_pool2d", "max_pool2d", "avg_pool2d", "avg_pool2d"]  # the requires-grad calls only


def _zero_fills(run) -> list:
    """The shapes of the zero tensors torch creates or fills while ``run()`` runs."""
    with torch.profiler.profile(record_shapes=True) as prof:
        run()
    return [e.input_shapes[0] for e in prof.events() if e.name in ("aten::zeros", "aten::zero_", "aten::fill_")]


def test_no_zero_gradients_for_non_differentiable_outputs():
    """The ops with non-differentiable outputs (max pooling's indices, batch-norm statistics, the
    fused ops' pre-activations) do not have autograd materialise zero gradients for them: a
    fill of an output's size per backward."""
    from fastconv.ops.batch_norm import batch_norm_act
    from fastconv.ops.fused import conv2d_act, conv2d_act_max_pool
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    cases = {"max_pool2d": lambda: F.max_pool2d(x, 2),
             "batch_norm_act": lambda: batch_norm_act(x, torch.zeros(3), torch.ones(3)),
             "conv2d_act": lambda: conv2d_act(x, w, padding=1),
             "conv2d_act_max_pool": lambda: conv2d_act_max_pool(x, w, padding=1, pool_kernel_size=2)}
    for name, op in cases.items():
        out = op()
        seed = torch.randn_like(out)
        fills = _zero_fills(lambda: out.backward(seed))
        assert not [s for s in fills if list(s) in (list(out.shape), [3], [4])], (name, fills)
        assert x.grad is not None and torch.isfinite(x.grad).all()
        x.grad = None


# --------------------------------------------------------------------------- torch.func

CASES = {
    "conv2d": (lambda m, x: m.conv2d(x, _W, _B, padding=1, stride=(1, 2)), (2, 3, 6, 7)),
    "conv_transpose2d": (lambda m, x: m.conv_transpose2d(x, _WT, None, stride=2, padding=1, output_padding=1),
                         (2, 3, 4, 5)),
    "max_pool2d": (lambda m, x: m.max_pool2d(x, 3, 2, 1), (2, 3, 7, 6)),
    "avg_pool2d": (lambda m, x: m.avg_pool2d(x, 3, 2, 1, count_include_pad=False), (2, 3, 7, 6)),
    "adaptive_avg_pool2d": (lambda m, x: m.adaptive_avg_pool2d(x, (3, 2)), (2, 3, 7, 6)),
    "ssim": (lambda m, x: (fastconv.ssim(x.sigmoid(), _Y[:x.shape[0]], size_average=False) if m is F else
                           _torch_ssim(x.sigmoid(), _Y[:x.shape[0]])), (2, 1, 13, 12)),
}
torch.manual_seed(0)
_W = torch.randn(4, 3, 3, 3, **f64)
_B = torch.randn(4, **f64)
_WT = torch.randn(3, 2, 3, 3, **f64)
_Y = torch.rand(2, 1, 13, 12, **f64)


def _torch_ssim(x, y):
    from fastconv.testing.ssim_reference import ssim_stats_reference
    return ssim_stats_reference(x, y, 11, 1.5)[0].mean(1)


def _distinct(shape):
    n = 1
    for s in shape:
        n *= s
    return (torch.randperm(n, **f64) / n).reshape(shape)


@pytest.mark.parametrize("name", sorted(CASES))
def test_grad_and_jacrev_match_torch(name):
    fn, shape = CASES[name]
    x = _distinct(shape)
    ours = lambda x: fn(F, x).square().sum()  # noqa: E731
    theirs = lambda x: fn(TF, x).square().sum()  # noqa: E731
    assert_close(grad(ours)(x), grad(theirs)(x))
    x1 = x[:1]
    assert_close(jacrev(lambda x: fn(F, x))(x1), jacrev(lambda x: fn(TF, x))(x1))


@pytest.mark.parametrize("name", sorted(CASES))
def test_jvp_matches_torch(name):
    fn, shape = CASES[name]
    x, t = _distinct(shape), torch.randn(shape, **f64)
    out, tangent = jvp(lambda x: fn(F, x), (x,), (t,))
    ref_out, ref_tangent = jvp(lambda x: fn(TF, x), (x,), (t,))
    assert_close(out, ref_out)
    assert_close(tangent, ref_tangent)


@pytest.mark.parametrize("name", sorted(CASES))
def test_vmap_matches_torch_without_fallback(name):
    fn, shape = CASES[name]
    xs = torch.stack([_distinct(shape), _distinct(shape) * 2])
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*batching rule.*")  # the slow per-sample fallback warns
        got = vmap(lambda x: fn(F, x))(xs)
    assert_close(got, vmap(lambda x: fn(TF, x))(xs))


def test_vmap_over_weights_and_per_sample_gradients():
    """Batched weights (model ensembles) and per-sample gradients, the usual torch.func uses."""
    x = torch.randn(5, 3, 8, 8, **f64)
    ws = torch.randn(4, 6, 3, 3, 3, **f64)
    assert_close(vmap(lambda w: F.conv2d(x, w, padding=1))(ws), vmap(lambda w: TF.conv2d(x, w, padding=1))(ws))

    def loss(w, sample, conv):
        return conv(sample.unsqueeze(0), w, padding=1).square().sum()

    w = ws[0]
    ours = vmap(grad(lambda w, s: loss(w, s, F.conv2d)), in_dims=(None, 0))(w, x)
    theirs = vmap(grad(lambda w, s: loss(w, s, TF.conv2d)), in_dims=(None, 0))(w, x)
    assert_close(ours, theirs)
