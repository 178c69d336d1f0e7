"""max_pool2d, avg_pool2d and adaptive_avg_pool2d against torch.nn.functional."""
import pytest
import torch
import torch.nn.functional as TF

import fastconv.functional as F
from helpers import assert_close, grads, leaf

DTYPES = [torch.float64, torch.float32]
INPUTS = [(1, 1, 7, 7), (2, 3, 8, 9), (3, 5, 10, 6), (2, 3, 5, 4)]
MAX_GEOMETRY = [  # kernel, stride, padding, dilation, ceil_mode
    (2, None, 0, 1, False), (3, 2, 1, 1, False), (3, 2, 1, 1, True), (2, 3, 1, 1, True),
    ((3, 2), (2, 1), (1, 1), (2, 1), False), (3, 1, 0, 2, True), (2, 2, 1, 2, False), (3, 3, 0, 1, True),
]
AVG_GEOMETRY = [  # kernel, stride, padding, ceil_mode, count_include_pad, divisor_override
    (2, None, 0, False, True, None), (3, 2, 1, False, True, None), (3, 2, 1, True, True, None),
    (3, 2, 1, True, False, None), (3, 2, 1, True, False, 4), ((3, 2), (1, 2), (1, 0), False, False, None),
    (2, 3, 1, True, True, None), (4, 3, 2, True, False, None), (3, 3, 1, False, True, 7), (2, 1, 1, False, True, -2),
]


def _compare(device, dtype, shape, fn, ref_fn, layout=None):
    x = leaf(torch.randn(*shape), device, dtype, channels_last=layout == "channels_last",
             noncontig=layout == "strided")
    try:
        expected = ref_fn(x)
    except RuntimeError:
        with pytest.raises((RuntimeError, ValueError)):
            fn(x)
        return
    out = fn(x)
    assert out.shape == expected.shape and out.is_contiguous()
    assert_close(out, expected)
    seed = torch.randn_like(expected)
    assert_close(grads(out, (x,), seed)[0], grads(expected, (x,), seed)[0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", INPUTS)
@pytest.mark.parametrize("kernel,stride,padding,dilation,ceil_mode", MAX_GEOMETRY)
def test_max_pool2d_grid(device, dtype, shape, kernel, stride, padding, dilation, ceil_mode):
    args = (kernel, stride, padding, dilation, ceil_mode)
    _compare(device, dtype, shape, lambda x: F.max_pool2d(x, *args), lambda x: TF.max_pool2d(x, *args))


@pytest.mark.parametrize("kernel,stride,padding,dilation,ceil_mode", MAX_GEOMETRY[:4])
def test_max_pool2d_indices_match_torch(device, kernel, stride, padding, dilation, ceil_mode):
    x = torch.randn(2, 3, 9, 8, device=device)
    x[0, 0, :3, :3] = 1.0  # ties: the first maximum wins
    out, idx = F.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode, return_indices=True)
    ref, ref_idx = TF.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode, return_indices=True)
    assert idx.dtype == torch.int64
    assert torch.equal(idx, ref_idx) and torch.equal(out, ref)


def test_max_pool2d_nan_propagates_like_torch(device):
    x = torch.randn(1, 2, 6, 6, device=device)
    x[0, 1, 2, 3] = float("nan")
    out, idx = F.max_pool2d(x, 3, 1, 1, return_indices=True)
    ref, ref_idx = TF.max_pool2d(x, 3, 1, 1, return_indices=True)
    assert torch.equal(out.isnan(), ref.isnan()) and out.isnan().sum() == 9
    assert torch.equal(idx, ref_idx)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", INPUTS)
@pytest.mark.parametrize("kernel,stride,padding,ceil_mode,count_include_pad,divisor", AVG_GEOMETRY)
def test_avg_pool2d_grid(device, dtype, shape, kernel, stride, padding, ceil_mode, count_include_pad, divisor):
    args = (kernel, stride, padding, ceil_mode, count_include_pad, divisor)
    _compare(device, dtype, shape, lambda x: F.avg_pool2d(x, *args), lambda x: TF.avg_pool2d(x, *args))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", INPUTS)
@pytest.mark.parametrize("output_size", [1, 2, (3, 2), (5, 7), (None, 3), (7, None), (11, 13)])
def test_adaptive_avg_pool2d_grid(device, dtype, shape, output_size):
    _compare(device, dtype, shape, lambda x: F.adaptive_avg_pool2d(x, output_size),
             lambda x: TF.adaptive_avg_pool2d(x, output_size))


@pytest.mark.parametrize("layout", ["channels_last", "strided"])
@pytest.mark.parametrize("name", ["max", "avg", "adaptive"])
def test_pool_noncontiguous(device, layout, name):
    fn = {"max": lambda m: lambda x: m.max_pool2d(x, 3, 2, 1, ceil_mode=True),
          "avg": lambda m: lambda x: m.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False),
          "adaptive": lambda m: lambda x: m.adaptive_avg_pool2d(x, (3, 4))}[name]
    _compare(device, torch.float64, (2, 3, 9, 10), fn(F), fn(TF), layout=layout)


def test_pool_unbatched_and_empty_batch(device):
    x = torch.randn(3, 8, 7, dtype=torch.float64, device=device)
    assert_close(F.max_pool2d(x, 2), TF.max_pool2d(x, 2))
    assert_close(F.avg_pool2d(x, 3, padding=1), TF.avg_pool2d(x, 3, padding=1))
    assert_close(F.adaptive_avg_pool2d(x, 2), TF.adaptive_avg_pool2d(x, 2))
    e = torch.randn(0, 3, 8, 8, device=device)
    assert F.max_pool2d(e, 2).shape == (0, 3, 4, 4)
    assert F.avg_pool2d(e, 2).shape == (0, 3, 4, 4)
    assert F.adaptive_avg_pool2d(e, 1).shape == (0, 3, 1, 1)


@pytest.mark.parametrize("fn", [
    lambda x: F.max_pool2d(x, 3, 2, 1, ceil_mode=True),
    lambda x: F.max_pool2d(x, (2, 3), 1, (1, 0), dilation=(2, 1)),
    lambda x: F.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False),
    lambda x: F.avg_pool2d(x, 2, 1, 1, divisor_override=3),
    lambda x: F.adaptive_avg_pool2d(x, (3, 2)),
])
def test_pool_gradcheck(fn):
    # distinct values so the max is unique and finite differences stay on one side
    x = (torch.randperm(2 * 2 * 7 * 6, dtype=torch.float64) / 10).reshape(2, 2, 7, 6).requires_grad_()
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


@pytest.mark.slow
def test_pools_more_than_2_31_elements():
    """A plane of more than 2**31 float32 elements: flat indices and offsets are int64."""
    h, w = (1 << 16) + 1, (1 << 15) + 1
    x = torch.zeros(1, 1, h, w)
    x[0, 0, -1, -1] = 7.0
    out, idx = F.max_pool2d(x, 1, stride=(1 << 14, 1 << 13), return_indices=True)
    assert out[0, 0, -1, -1].item() == 7.0 and idx[0, 0, -1, -1].item() == h * w - 1
    avg = F.avg_pool2d(x, 1, stride=(1 << 14, 1 << 13))
    assert avg[0, 0, -1, -1].item() == 7.0 and avg.sum().item() == 7.0
