"""max_pool2d, avg_pool2d and adaptive_avg_pool2d against torch.nn.functional."""
import pytest
import torch
import torch.nn.functional as TF

import fastconv.functional as F
from helpers import assert_close
from optester import OpTester

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


class TestMaxPool2d(OpTester):
    fn = staticmethod(F.max_pool2d)
    ref = staticmethod(TF.max_pool2d)

    def samples(self):
        return [((shape,), dict(kernel_size=k, stride=s, padding=p, dilation=d, ceil_mode=c))
                for shape in INPUTS for k, s, p, d, c in MAX_GEOMETRY]

    def bad_calls(self):
        x = torch.randn(1, 2, 6, 6)
        return [((x.tolist(), 2), {}, TypeError, "must be Tensor, not list"),
                ((x, 2), dict(padding=2), ValueError, "pad should be at most half"),
                ((x, 0), {}, ValueError, "kernel_size must be positive"),
                ((torch.randn(1, 0, 6, 6), 2), {}, RuntimeError, "non-zero channel")]


class TestAvgPool2d(OpTester):
    fn = staticmethod(F.avg_pool2d)
    ref = staticmethod(TF.avg_pool2d)

    def samples(self):
        return [((shape,), dict(kernel_size=k, stride=s, padding=p, ceil_mode=c, count_include_pad=i,
                                divisor_override=d))
                for shape in INPUTS for k, s, p, c, i, d in AVG_GEOMETRY]

    def bad_calls(self):
        x = torch.randn(1, 2, 6, 6)
        return [((x, 2), dict(divisor_override=0), RuntimeError, "divisor must be not zero"),
                ((x.int(), 2), {}, TypeError, "unsupported dtype")]


class TestAdaptiveAvgPool2d(OpTester):
    fn = staticmethod(F.adaptive_avg_pool2d)
    ref = staticmethod(TF.adaptive_avg_pool2d)

    def samples(self):
        return [((shape,), dict(output_size=size)) for shape in INPUTS
                for size in [1, 2, (3, 2), (5, 7), (None, 3), (7, None), (11, 13)]]

    def bad_calls(self):
        return [((torch.randn(1, 2, 6, 6), (1, 2, 3)), {}, ValueError, "int or a pair")]


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
    lambda x: F.max_pool2d(x, 2),
])
def test_max_pool_gradcheck_on_distinct_values(fn):
    """Max pooling's gradient is only defined away from ties: distinct values keep finite differences on one side."""
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


@pytest.mark.parametrize("kernel, stride, padding, shape", [
    (2, 2, 0, (3, 5, 9, 11)),   # 2x2 blocks written whole, the odd last row and column zeroed
    (3, 2, 1, (2, 4, 9, 9)),    # windows overlap and leave their blocks: the scatter-add
    (3, 2, 0, (2, 4, 8, 8)),
    (2, 1, 0, (2, 3, 6, 6)),
])
def test_max_pool2d_backward_block_writes_match_torch(kernel, stride, padding, shape):
    """The CPU backward writes a 2x2 stride-2 pooling's gradient block by block (no zero fill)
    and must notice indices that leave their blocks."""
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    out = F.max_pool2d(x, kernel, stride, padding)
    ref = TF.max_pool2d(x2, kernel, stride, padding)
    seed = torch.randn_like(ref)
    out.backward(seed)
    ref.backward(seed)
    assert torch.equal(x.grad, x2.grad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("shape", [(1, 1, 4, 4), (2, 3, 9, 8), (3, 5, 7), (4, 32, 64, 64)])
@pytest.mark.parametrize("max_args,avg_args", [
    ((2,), (2,)),                                    # whole 2x2 windows
    ((3, 2, 1, 1, True), (3, 2, 1, True, False)),   # padding, ceil_mode, clipped divisor
    (((2, 3), 1, (1, 0), (2, 1)), ((3, 2), (1, 2), (1, 0), False, True, 5)),
])
def test_no_grad_pool_calls_match_torch(dtype, shape, max_args, avg_args):
    """Calls no gradient flows through take their own routes (values without indices; the smallest
    from tensor addresses, on any strides): bit for bit torch's, NaN included; 3D is unbatched."""
    x = torch.randn(*shape, dtype=dtype)
    x.view(-1)[3] = float("nan")
    strided = x.transpose(-1, -2).contiguous().transpose(-1, -2)  # the same values, column-major planes
    assert torch.equal(strided.isnan(), x.isnan()) and not strided.is_contiguous()
    inputs = [x, strided]
    with torch.no_grad():
        for t in inputs:
            ref_max, ref_avg = TF.max_pool2d(t, *max_args), TF.avg_pool2d(t, *avg_args)
            assert torch.equal(F.max_pool2d(t, *max_args).isnan(), ref_max.isnan())
            torch.testing.assert_close(F.max_pool2d(t, *max_args), ref_max, rtol=0, atol=0, equal_nan=True)
            torch.testing.assert_close(F.avg_pool2d(t, *avg_args), ref_avg, equal_nan=True)
    # the same calls with a gradient to flow take the op (indices saved), with the same values
    xg = inputs[1].detach().requires_grad_()
    torch.testing.assert_close(F.max_pool2d(xg, *max_args), TF.max_pool2d(inputs[1], *max_args), rtol=0, atol=0,
                               equal_nan=True)


def test_smallest_pool_calls_run_from_addresses():
    """The smallest no-grad calls skip NumPy views; larger ones keep the threaded kernels."""
    from fastconv.cpu import pool as P

    small = P.max_pool2d_values_for((1, 1, 4, 4), torch.float32, (2, 2), (2, 2), (0, 0), (1, 1), (2, 2))
    large = P.max_pool2d_values_for((8, 64, 128, 128), torch.float32, (2, 2), (2, 2), (0, 0), (1, 1), (64, 64))
    assert getattr(small, "func", None) is P._from_address and getattr(large, "func", None) is not P._from_address
    avg = P.avg_pool2d_forward_for((1, 2, 5, 5), torch.float64, (3, 3), (1, 1), (1, 1), True, 0, (5, 5))
    assert avg.func is P._from_address
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64)
    torch.testing.assert_close(avg(x), TF.avg_pool2d(x, 3, 1, 1), rtol=1e-15, atol=0)


def test_pools_compile_with_dynamic_shapes():
    """A trace with symbolic sizes validates through the same cache but never builds the eager
    per-signature functions (their routing needs concrete sizes); two sizes, one graph."""
    torch._dynamo.reset()
    fn = torch.compile(lambda t: F.max_pool2d(t, 3, 2, 1) + F.avg_pool2d(t, 3, 2, 1), dynamic=True,
                       fullgraph=True, backend="aot_eager")
    for shape in [(2, 3, 9, 8), (1, 4, 12, 10)]:
        x = torch.randn(*shape)
        with torch.no_grad():
            torch.testing.assert_close(fn(x), TF.max_pool2d(x, 3, 2, 1) + TF.avg_pool2d(x, 3, 2, 1))
