"""conv_transpose2d against torch.nn.functional.conv_transpose2d."""
import itertools

import pytest
import torch
import torch.nn.functional as TF

import fastconv.functional as F
from helpers import assert_close, grads
from optester import OpTester

# (N, Cin, H, W, Cout, kH, kW, groups)
SHAPES = [
    (1, 1, 5, 5, 1, 3, 3, 1),
    (2, 3, 6, 7, 5, 3, 3, 1),
    (2, 4, 5, 4, 6, 2, 3, 2),
    (3, 5, 4, 5, 5, 3, 3, 5),    # depthwise
]
GEOMETRY = [  # stride, padding, output_padding, dilation
    (1, 0, 0, 1), (2, 1, 1, 1), (3, 2, 2, 1), (2, 0, 1, 2), ((2, 3), (1, 0), (1, 2), (1, 1)),
    (1, 1, 1, 2), (2, 2, 0, 1),
]


class TestConvTranspose2d(OpTester):
    fn = staticmethod(F.conv_transpose2d)
    ref = staticmethod(TF.conv_transpose2d)

    def samples(self):
        cases = []
        for i, ((n, c, h, w, o, kh, kw, g), (stride, padding, output_padding, dilation)) in enumerate(
                itertools.product(SHAPES, GEOMETRY)):
            cases.append((((n, c, h, w), (c, o // g, kh, kw), (o,) if i % 2 else None),
                          dict(stride=stride, padding=padding, output_padding=output_padding, groups=g,
                               dilation=dilation)))
        return cases

    def bad_calls(self):
        x, w = torch.randn(1, 2, 4, 4), torch.randn(2, 3, 3, 3)
        return [((x, w), dict(output_padding=2, stride=2), ValueError, "output padding must be smaller"),
                ((x, torch.randn(3, 3, 3, 3)), {}, RuntimeError, "to have 3 channels")]


def test_conv_transpose2d_unbatched_and_no_bias(device):
    x = torch.randn(3, 5, 4, dtype=torch.float64, device=device)
    wt = torch.randn(3, 2, 3, 3, dtype=torch.float64, device=device)
    assert_close(F.conv_transpose2d(x, wt, stride=2), TF.conv_transpose2d(x, wt, stride=2))


def test_conv_transpose2d_output_padding_below_dilation():
    """output_padding >= stride is legal when it is below dilation (torch's rule)."""
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    wt = torch.randn(2, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    kwargs = dict(stride=1, output_padding=2, dilation=3)
    out, ref = F.conv_transpose2d(x, wt, **kwargs), TF.conv_transpose2d(x, wt, **kwargs)
    assert_close(out, ref)
    seed = torch.randn_like(ref)
    for got, exp in zip(grads(out, (x, wt), seed), grads(ref, (x, wt), seed)):
        assert_close(got, exp)


@pytest.mark.parametrize("stride,padding,output_padding,groups", [(2, 1, 1, 1), (3, 0, 2, 2)])
def test_conv_transpose2d_gradcheck(stride, padding, output_padding, groups):
    x = torch.randn(2, 4, 4, 3, dtype=torch.float64, requires_grad=True)
    wt = torch.randn(4, 3, 3, 2, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3 * groups, dtype=torch.float64, requires_grad=True)
    fn = lambda x, w, b: F.conv_transpose2d(x, w, b, stride, padding, output_padding, groups)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, wt, b))
    assert torch.autograd.gradgradcheck(fn, (x, wt, b))


def test_conv_transpose2d_empty_batch(device):
    x = torch.randn(0, 2, 4, 4, device=device)
    wt = torch.randn(2, 3, 3, 3, device=device)
    assert F.conv_transpose2d(x, wt, stride=2).shape == (0, 3, 9, 9)


def test_one_by_one_with_output_padding_and_dilation():
    """A 1x1 transposed convolution whose output_padding grows the output: not a plain product."""
    x = torch.randn(4, 64, 16, 16, requires_grad=True)
    w = torch.randn(64, 32, 1, 1, requires_grad=True)
    out = F.conv_transpose2d(x, w, stride=1, dilation=2, output_padding=1)
    ref = torch.nn.functional.conv_transpose2d(x, w, stride=1, dilation=2, output_padding=1)
    assert out.shape == ref.shape == (4, 32, 17, 17)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    seed = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(out, (x, w), seed), torch.autograd.grad(ref, (x, w), seed)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-3)
