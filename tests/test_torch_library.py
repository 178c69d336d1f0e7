"""torch.library integration: every op registered in the fastconv namespace passes torch.library.opcheck.

The list of ops comes from torch's dispatcher (what ``import fastconv`` registered), not from
this file: an op added without samples here fails :func:`test_opcheck` by name.
"""
import pytest
import torch

import fastconv  # noqa: F401  (registers the ops)

ops = torch.ops.fastconv
f64 = dict(dtype=torch.float64)


def _rg(*shape):
    return torch.randn(*shape, **f64, requires_grad=True)


def _distinct(*shape):
    """Distinct values (no max-pool ties), requiring grad."""
    n = 1
    for s in shape:
        n *= s
    return (torch.randperm(n, **f64) / 7).reshape(shape).requires_grad_()


def _max_pool2d_backward():
    x = _distinct(2, 3, 5, 4).detach()
    _, idx = ops.max_pool2d(x, [2, 2], [2, 2], [0, 0], [1, 1], False)
    return [(_rg(2, 3, 2, 2), idx, [5, 4])]


def _ssim_pair():
    x = torch.rand(2, 2, 12, 13, **f64)
    y = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    return x, y


#: op name -> the argument tuples opcheck runs it on.
SAMPLES = {
    "conv2d": lambda: [(_rg(2, 4, 7, 6), _rg(6, 2, 3, 2), _rg(6), [2, 1], [1, 1, 0, 0], [1, 2], 2),
                       (_rg(1, 3, 5, 5), _rg(2, 3, 3, 3), None, [1, 1], [1, 0, 1, 0], [1, 1], 1)],
    "conv2d_backward_input": lambda: [(_rg(2, 6, 4, 4), _rg(6, 2, 3, 2), None, [2, 1], [1, 1, 0, 0], [1, 2], 2,
                                       [7, 6])],
    "conv2d_backward_weight": lambda: [(_rg(2, 4, 7, 6), _rg(2, 6, 4, 4), [2, 1], [1, 1, 0, 0], [1, 2], 2, [3, 2])],
    "conv2d_bias_grad": lambda: [(_rg(2, 3, 4, 5),)],
    "conv_transpose2d": lambda: [(_rg(2, 4, 4, 5), _rg(4, 3, 3, 2), _rg(6), [2, 2], [1, 0], [1, 1], [1, 1], 2)],
    "max_pool2d": lambda: [(_distinct(2, 2, 9, 5), [3, 2], [2, 1], [1, 1], [1, 2], True)],
    "max_pool2d_backward": _max_pool2d_backward,
    "avg_pool2d": lambda: [(_rg(2, 3, 7, 6), [3, 2], [2, 2], [1, 1], False, 0, True),
                           (_rg(1, 2, 6, 6), [2, 2], [1, 1], [1, 0], True, 3, False)],
    "avg_pool2d_backward": lambda: [(_rg(2, 3, 4, 4), [3, 2], [2, 2], [1, 1], False, 0, True, [7, 6])],
    "adaptive_avg_pool2d": lambda: [(_rg(2, 3, 7, 6), [3, 4])],
    "adaptive_avg_pool2d_backward": lambda: [(_rg(2, 3, 3, 4), [7, 6])],
    "ssim_stats": lambda: [(*_ssim_pair(), 7, 1.5, 1e-4, 9e-4),
                           tuple(t.requires_grad_() for t in _ssim_pair()) + (7, 1.5, 1e-4, 9e-4)],
    "ssim_stats_backward": lambda: [(torch.randn(2, 2, **f64), torch.randn(2, 2, **f64), *_ssim_pair(), 7, 1.5,
                                     1e-4, 9e-4)],
    "act_conv2d": lambda: [(_rg(2, 4, 7, 6), _rg(6, 2, 3, 2), _rg(6), [2, 1], [1, 1, 0, 0], [1, 2], 2, "silu", 0.0),
                           (_rg(2, 4, 7, 6), _rg(6, 4, 3, 3), None, [1, 1], [1, 1, 1, 1], [1, 1], 1, "leaky_relu",
                            -0.2)],
    "act_conv_transpose2d": lambda: [(_rg(2, 4, 4, 5), _rg(4, 3, 3, 2), _rg(6), [2, 2], [1, 0], [1, 1], [1, 1], 2,
                                      "silu", 0.0)],
    "conv2d_act": lambda: [(_rg(2, 4, 7, 6), _rg(6, 2, 3, 2), _rg(6), [2, 1], [1, 1, 0, 0], [1, 2], 2, "silu", 0.0),
                           (_rg(2, 4, 7, 6), _rg(6, 2, 3, 2), None, [1, 1], [1, 1, 1, 1], [1, 1], 2, "relu", 0.0)],
    "batch_norm_act": lambda: [(_rg(2, 3, 4, 5), _rg(3), _rg(3), 1e-5, "relu", 0.0),
                               (_rg(3, 2, 1, 3), None, _rg(2), 1e-3, "silu", 0.0)],
    # not differentiable (double backward through batch_norm_act recomputes in torch ops): no grad inputs
    "batch_norm_act_backward": lambda: [(torch.randn(2, 3, 4, 5, **f64), torch.randn(2, 3, 4, 5, **f64),
                                         torch.rand(3, **f64), None, torch.randn(3, **f64), torch.rand(3, **f64), 1e-5,
                                         "leaky_relu", 0.1)],
    "conv2d_act_pool": lambda: [(_rg(2, 4, 7, 6), _rg(6, 2, 3, 2), _rg(6), [1, 1], [1, 1, 0, 0], [1, 2], 2,
                                 "leaky_relu", 0.1, [2, 2], [1, 1], [1, 0], [1, 1], True)],
}


def _registered():
    return sorted(name.split("::")[1] for name in torch._C._dispatch_get_all_op_names()
                  if name.startswith("fastconv::"))


@pytest.mark.parametrize("name", _registered())
def test_opcheck(name):
    assert name in SAMPLES, f"fastconv::{name} is registered but has no opcheck samples in {__file__}"
    op = getattr(ops, name)
    for args in SAMPLES[name]():
        torch.library.opcheck(op, args)


def test_samples_cover_only_registered_ops():
    assert sorted(SAMPLES) == _registered()
