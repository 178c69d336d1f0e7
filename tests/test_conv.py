"""conv2d against torch.nn.functional.conv2d: values and gradients over a parameter grid."""
import itertools

import pytest
import torch
import torch.nn.functional as TF

import fastconv.functional as F
from helpers import assert_close, grads
from optester import OpTester

DTYPES = [torch.float64, torch.float32]

# (N, C, H, W, O, kH, kW, groups): batch 1 and >1, channels 1/3/odd, groups 1/2/depthwise,
# odd and even sizes, non-square kernels.
SHAPES = [
    (1, 1, 7, 7, 1, 3, 3, 1),
    (2, 3, 8, 9, 5, 3, 3, 1),
    (3, 4, 9, 6, 6, 2, 3, 2),
    (2, 5, 10, 11, 5, 3, 3, 5),      # depthwise
    (1, 6, 7, 8, 12, 3, 1, 6),       # depthwise, multiplier 2
    (2, 3, 6, 6, 4, 1, 1, 1),
]
GEOMETRY = [  # stride, padding, dilation
    (1, 0, 1), (1, 1, 1), (2, 2, 1), (3, 1, 2), ((1, 2), (0, 2), (2, 1)), (2, 0, 2),
    (1, "same", 1), (1, "same", 2), (1, "valid", 1), (3, 2, 1),
]


class TestConv2d(OpTester):
    """The standard checks (:mod:`optester`) over the shape x geometry grid."""

    fn = staticmethod(F.conv2d)
    ref = staticmethod(TF.conv2d)

    def samples(self):
        cases = []
        for i, ((n, c, h, w, o, kh, kw, g), (stride, padding, dilation)) in enumerate(
                itertools.product(SHAPES, GEOMETRY)):
            bias = (o,) if i % 3 else None  # a third of the cases without bias
            cases.append((((n, c, h, w), (o, c // g, kh, kw), bias),
                          dict(stride=stride, padding=padding, dilation=dilation, groups=g)))
        return cases

    def bad_calls(self):
        x, w = torch.randn(1, 3, 5, 5), torch.randn(2, 3, 3, 3)
        return [
            ((x.tolist(), w), {}, TypeError, "must be Tensor, not list"),
            ((x, w.numpy()), {}, TypeError, "must be Tensor, not ndarray"),
            ((x.int(), w), {}, TypeError, "unsupported dtype"),
            ((x, w.double()), {}, TypeError, "same dtype"),
            ((x, w), dict(stride=0), ValueError, "stride must be positive"),
            ((x, w), dict(padding="same", stride=2), ValueError, "not supported for strided"),
            ((x, torch.randn(2, 2, 3, 3)), {}, RuntimeError, "to have 2 channels"),
        ]


@pytest.mark.parametrize("bias", [True, False])
def test_conv2d_no_bias_and_unbatched(device, bias):
    x = torch.randn(3, 8, 7, dtype=torch.float64, device=device)
    wt = torch.randn(4, 3, 3, 3, dtype=torch.float64, device=device)
    b = torch.randn(4, dtype=torch.float64, device=device) if bias else None
    assert_close(F.conv2d(x, wt, b, padding=1), TF.conv2d(x, wt, b, padding=1))


def test_conv2d_same_even_kernel_is_asymmetric(device):
    x = torch.randn(1, 2, 6, 7, dtype=torch.float64, device=device)
    wt = torch.randn(3, 2, 4, 2, dtype=torch.float64, device=device)
    out = F.conv2d(x, wt, padding="same")
    assert out.shape[-2:] == x.shape[-2:]
    assert_close(out, TF.conv2d(x, wt, padding="same"))


def test_conv2d_empty_batch(device):
    x = torch.randn(0, 3, 8, 8, device=device, requires_grad=True)
    wt = torch.randn(4, 3, 3, 3, device=device, requires_grad=True)
    out = F.conv2d(x, wt, padding=1)
    assert out.shape == (0, 4, 8, 8)
    out.sum().backward()
    assert x.grad.shape == x.shape and torch.count_nonzero(wt.grad) == 0


def test_conv2d_large_batch_chunks(monkeypatch):
    """im2col's chunking over samples and over output rows gives the same answer as one big product."""
    import fastconv.cpu._im2col as K
    from fastconv.cpu.conv_plan import forced
    x = torch.randn(5, 3, 13, 11, dtype=torch.float64, requires_grad=True)
    wt = torch.randn(4, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    ref = TF.conv2d(x, wt, padding=1, stride=(2, 1))
    seed = torch.randn_like(ref)
    ref_grads = grads(ref, (x, wt), seed)
    for budget in (3 * 9 * 77, 3 * 9 * 11 * 2, 50):   # several samples, several rows, one row per chunk
        monkeypatch.setattr(K, "COLS_BUDGET", budget)
        with forced("im2col"):
            out = F.conv2d(x, wt, padding=1, stride=(2, 1))
            got_grads = grads(out, (x, wt), seed)
        assert_close(out, ref)
        for got, exp in zip(got_grads, ref_grads):
            assert_close(got, exp)


@pytest.mark.parametrize("stride,padding,dilation,groups", [(1, 1, 1, 1), (2, 0, 2, 2), ((2, 1), (1, 0), (1, 2), 1)])
def test_conv2d_gradcheck(stride, padding, dilation, groups):
    x = torch.randn(2, 4, 7, 6, dtype=torch.float64, requires_grad=True)
    wt = torch.randn(2, 4 // groups, 3, 2, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, dtype=torch.float64, requires_grad=True)
    fn = lambda x, w, b: F.conv2d(x, w, b, stride, padding, dilation, groups)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, wt, b))
    assert torch.autograd.gradgradcheck(fn, (x, wt, b))


def test_conv2d_double_backward_matches_torch():
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64, requires_grad=True)
    wt = torch.randn(4, 3, 3, 3, dtype=torch.float64, requires_grad=True)

    def penalty(conv):
        (gx,) = torch.autograd.grad(conv(x, wt, padding=1).square().sum(), x, create_graph=True)
        return torch.autograd.grad(gx.square().sum(), (x, wt))

    for got, ref in zip(penalty(F.conv2d), penalty(TF.conv2d)):
        assert_close(got, ref)


def test_conv2d_float32_large_values_match():
    """float32 accumulation stays within torch's own float32 error on a wide reduction."""
    x = torch.randn(4, 64, 16, 16)
    wt = torch.randn(32, 64, 3, 3)
    ref = TF.conv2d(x.double(), wt.double(), padding=1)
    err_ours = (F.conv2d(x, wt, padding=1).double() - ref).abs().max()
    err_torch = (TF.conv2d(x, wt, padding=1).double() - ref).abs().max()
    assert err_ours <= 4 * err_torch + 1e-6


@pytest.mark.slow
def test_conv2d_more_than_2_31_elements():
    """An input of 2**31 + 2**16 + ... float32 elements: offsets past int32 are computed in int64."""
    h, w = (1 << 16) + 1, (1 << 15) + 1
    x = torch.zeros(1, 1, h, w)
    x[0, 0, -1, -1] = 3.0
    x[0, 0, -1, 0] = 2.0
    wt = torch.ones(1, 1, 1, 1)
    out = F.conv2d(x, wt, stride=(1 << 14, 1 << 13))
    assert out.shape == (1, 1, 5, 5)
    assert out[0, 0, -1, -1].item() == 3.0 and out[0, 0, -1, 0].item() == 2.0
    assert out.sum().item() == 5.0
