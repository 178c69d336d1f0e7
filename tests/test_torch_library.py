"""torch.library integration: every fastconv custom op passes torch.library.opcheck."""
import pytest
import torch

import fastconv  # noqa: F401  (registers the ops)

ops = torch.ops.fastconv
f64 = dict(dtype=torch.float64)


def _rg(*shape):
    return torch.randn(*shape, **f64, requires_grad=True)


CASES = {
    "conv2d": lambda: (ops.conv2d, (_rg(2, 4, 7, 6), _rg(6, 2, 3, 2), _rg(6), [2, 1], [1, 1, 0, 0], [1, 2], 2)),
    "conv2d_nobias": lambda: (ops.conv2d, (_rg(1, 3, 5, 5), _rg(2, 3, 3, 3), None, [1, 1], [1, 0, 1, 0], [1, 1], 1)),
    "conv2d_backward_input": lambda: (ops.conv2d_backward_input,
                                      (_rg(2, 6, 4, 4), _rg(6, 2, 3, 2), None, [2, 1], [1, 1, 0, 0], [1, 2], 2, [7, 6])),
    "conv2d_backward_weight": lambda: (ops.conv2d_backward_weight,
                                       (_rg(2, 4, 7, 6), _rg(2, 6, 4, 4), [2, 1], [1, 1, 0, 0], [1, 2], 2, [3, 2])),
    "conv2d_bias_grad": lambda: (ops.conv2d_bias_grad, (_rg(2, 3, 4, 5),)),
    "conv_transpose2d": lambda: (ops.conv_transpose2d,
                                 (_rg(2, 4, 4, 5), _rg(4, 3, 3, 2), _rg(6), [2, 2], [1, 0], [1, 1], [1, 1], 2)),
    "max_pool2d": lambda: (ops.max_pool2d,
                           ((torch.randperm(180, **f64) / 7).reshape(2, 2, 9, 5).requires_grad_(), [3, 2], [2, 1],
                            [1, 1], [1, 2], True)),
    "avg_pool2d": lambda: (ops.avg_pool2d, (_rg(2, 3, 7, 6), [3, 2], [2, 2], [1, 1], False, 0, True)),
    "avg_pool2d_divisor": lambda: (ops.avg_pool2d, (_rg(1, 2, 6, 6), [2, 2], [1, 1], [1, 0], True, 3, False)),
    "adaptive_avg_pool2d": lambda: (ops.adaptive_avg_pool2d, (_rg(2, 3, 7, 6), [3, 4])),
    "adaptive_avg_pool2d_backward": lambda: (ops.adaptive_avg_pool2d_backward, (_rg(2, 3, 3, 4), [7, 6])),
    "avg_pool2d_backward": lambda: (ops.avg_pool2d_backward,
                                    (_rg(2, 3, 4, 4), [3, 2], [2, 2], [1, 1], False, 0, True, [7, 6])),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_opcheck(name):
    op, args = CASES[name]()
    torch.library.opcheck(op, args)


def test_every_registered_op_is_opchecked():
    """No custom op in the fastconv namespace escapes an opcheck (here, or in test_ssim.py for the SSIM ops)."""
    import fastconv.functional  # noqa: F401
    registered = {name.split("::")[1] for name in torch._C._dispatch_get_all_op_names()
                  if name.startswith("fastconv::")}
    covered = {CASES[c]()[0]._qualified_op_name.split("::")[1] for c in CASES}
    covered |= {"max_pool2d_backward", "ssim_stats", "ssim_stats_backward"}
    missing = registered - covered
    assert not missing, f"ops without an opcheck case: {sorted(missing)}"


def test_max_pool2d_backward_opcheck():
    x = (torch.randperm(120, **f64) / 7).reshape(2, 3, 5, 4)
    _, idx = ops.max_pool2d(x, [2, 2], [2, 2], [0, 0], [1, 1], False)
    grad = _rg(2, 3, 2, 2)
    torch.library.opcheck(ops.max_pool2d_backward, (grad, idx, [5, 4]))
