"""Edge shapes (empty batches, channels and planes) behave as torch does: the same result, or
the same kind of error."""
import pytest
import torch
import torch.nn.functional as TF

import fastconv
import fastconv.functional as F
from fastconv.ops.conv_transpose2d import conv_transpose2d_op


def _outcome(fn, *args, **kwargs):
    """('ok', shape, values) or ('raise', exception class)."""
    try:
        out = fn(*args, **kwargs)
    except (RuntimeError, ValueError, TypeError, IndexError) as e:
        return "raise", type(e)
    return "ok", out


def _r(*shape):
    return torch.randn(*shape, dtype=torch.float64, requires_grad=True)


CASES = {
    # name: (op name, args builder, kwargs)
    "conv2d empty batch": ("conv2d", lambda: (_r(0, 3, 5, 5), _r(4, 3, 3, 3), _r(4)), {}),
    "conv2d in_channels=0": ("conv2d", lambda: (_r(2, 0, 5, 5), _r(4, 0, 3, 3), _r(4)), {}),
    "conv2d in_channels=0 groups": ("conv2d", lambda: (_r(2, 0, 5, 5), _r(4, 0, 3, 3)), {"groups": 2}),
    "conv2d in_channels=0 unbatched": ("conv2d", lambda: (_r(0, 5, 5), _r(4, 0, 3, 3)), {"padding": 1}),
    "conv2d out_channels=0": ("conv2d", lambda: (_r(2, 3, 5, 5), _r(0, 3, 3, 3)), {}),
    "conv2d height=0 padded": ("conv2d", lambda: (_r(2, 3, 0, 5), _r(4, 3, 3, 3)), {"padding": 2}),
    "conv2d height=0 empty batch": ("conv2d", lambda: (_r(0, 3, 0, 5), _r(4, 3, 3, 3)), {"padding": 2}),
    "conv2d height=0 unpadded": ("conv2d", lambda: (_r(2, 3, 0, 5), _r(4, 3, 3, 3)), {}),
    "conv_transpose2d empty batch + bias": ("conv_transpose2d", lambda: (_r(0, 3, 5, 5), _r(3, 4, 3, 3), _r(4)),
                                            {}),
    "conv_transpose2d in_channels=0": ("conv_transpose2d", lambda: (_r(2, 0, 5, 5), _r(0, 4, 3, 3)), {}),
    "conv_transpose2d out_channels=0": ("conv_transpose2d", lambda: (_r(2, 3, 5, 5), _r(3, 0, 3, 3)), {}),
    "conv_transpose2d height=0": ("conv_transpose2d", lambda: (_r(2, 3, 0, 5), _r(3, 4, 3, 3)), {}),
    "conv_transpose2d height=0 empty batch": ("conv_transpose2d", lambda: (_r(0, 3, 0, 5), _r(3, 4, 3, 3)), {}),
    "adaptive_avg_pool2d channels=0": ("adaptive_avg_pool2d", lambda: (_r(2, 0, 5, 5), 2), {}),
    "adaptive_avg_pool2d channels=0 unbatched": ("adaptive_avg_pool2d", lambda: (_r(0, 5, 5), 2), {}),
    "adaptive_avg_pool2d height=0": ("adaptive_avg_pool2d", lambda: (_r(2, 3, 0, 5), 2), {}),
    "adaptive_avg_pool2d output 0": ("adaptive_avg_pool2d", lambda: (_r(2, 3, 5, 5), 0), {}),
    "max_pool2d channels=0": ("max_pool2d", lambda: (_r(2, 0, 5, 5), 2), {}),
    "max_pool2d empty batch": ("max_pool2d", lambda: (_r(0, 3, 5, 5), 2), {}),
    "avg_pool2d channels=0": ("avg_pool2d", lambda: (_r(2, 0, 5, 5), 2), {}),
    "avg_pool2d empty batch": ("avg_pool2d", lambda: (_r(0, 3, 5, 5), 2), {}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_edge_shape_matches_torch(case):
    name, build, kwargs = CASES[case]
    args = build()
    want = _outcome(getattr(TF, name), *args, **kwargs)
    got = _outcome(getattr(F, name), *(a.detach().requires_grad_() if isinstance(a, torch.Tensor) else a
                                       for a in args), **kwargs)
    assert got[0] == want[0], f"torch: {want}, fastconv: {got}"
    if want[0] == "raise":
        assert issubclass(got[1], want[1]) or issubclass(want[1], IndexError), (got, want)
        return
    assert got[1].shape == want[1].shape
    torch.testing.assert_close(got[1], want[1])
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    fresh = [a.detach().requires_grad_() for a in tensors]
    rest = [a for a in args if not isinstance(a, torch.Tensor)]
    try:
        g_want = torch.autograd.grad(getattr(TF, name)(*tensors, *rest, **kwargs).sum(), tensors, allow_unused=True)
    except RuntimeError:  # torch's backward refuses empty gradients (adaptive pooling): ours are zeros
        g_want = [None] * len(tensors)
    g_got = torch.autograd.grad(getattr(F, name)(*fresh, *rest, **kwargs).sum(), fresh, allow_unused=True)
    for a, gw, gg in zip(tensors, g_want, g_got):
        gw = torch.zeros_like(a) if gw is None else gw
        gg = torch.zeros_like(a) if gg is None else gg
        torch.testing.assert_close(gg, gw)


def test_conv_transpose2d_empty_batch_with_bias_in_module_and_custom_op():
    """Regression: an empty batch with a bias crashed with a custom-op aliasing error."""
    module = torch.nn.ConvTranspose2d(3, 4, 3, stride=2)
    fast = fastconv.convert_model(torch.nn.Sequential(module))
    x = torch.randn(0, 3, 5, 5, requires_grad=True)
    out = fast(x)
    assert out.shape == module(x).shape == (0, 4, 11, 11)
    out.sum().backward()
    assert torch.count_nonzero(fast[0].bias.grad) == 0
    w, b = module.weight.detach(), module.bias.detach()
    torch.library.opcheck(conv_transpose2d_op.custom, (x.detach(), w, b, [2, 2], [0, 0], [0, 0], [1, 1], 1))
    compiled = torch.compile(lambda x: F.conv_transpose2d(x, w, b, stride=2), fullgraph=True, backend="aot_eager")
    assert compiled(x.detach()).shape == (0, 4, 11, 11)


@pytest.mark.parametrize("op", [F.conv2d, F.conv_transpose2d])
@pytest.mark.parametrize("value", [[[1.0]], __import__("numpy").ones((1, 3, 5, 5))])
def test_non_tensor_input_is_a_type_error(op, value):
    with pytest.raises(TypeError, match="must be Tensor, not (list|ndarray)"):
        op(value, torch.randn(3, 3, 3, 3))


@pytest.mark.parametrize("call", [
    lambda v: F.max_pool2d(v, 2), lambda v: F.avg_pool2d(v, 2), lambda v: F.adaptive_avg_pool2d(v, 1),
    lambda v: F.conv2d(torch.randn(1, 3, 5, 5), v), lambda v: fastconv.ssim(v, v), lambda v: fastconv.ms_ssim(v, v),
    lambda v: fastconv.psnr(v, v)])
def test_non_tensor_argument_is_a_type_error(call):
    with pytest.raises(TypeError, match="Tensor"):
        call([[1.0, 2.0]])


@pytest.mark.parametrize("fn", [fastconv.ssim, fastconv.ms_ssim])
def test_ssim_without_channels_raises(fn):
    """pytorch-msssim raises for C=0 (its grouped conv has groups=0); a NaN would be silently wrong."""
    x = torch.rand(2, 0, 200, 200)
    with pytest.raises(ValueError, match="at least one channel"):
        fn(x, x)


@pytest.mark.parametrize("shape", [(1, 2, 4, 4), (2, 8, 32, 32)])  # the address paths, the planned kernels
def test_lazily_negated_views_read_as_their_values(shape):
    """``torch._neg_view`` tensors hold the negatives in memory (``is_neg()``); every op reads their
    values, as torch's do -- on the smallest calls' address paths too."""
    x = torch.randn(*shape)
    w = torch.randn(shape[1], shape[1], 3, 3)
    n, nw = torch._neg_view(x), torch._neg_view(w)
    assert n.is_neg() and nw.is_neg()
    with torch.no_grad():
        for ours, ref in [(F.conv2d(n, w, padding=1), TF.conv2d(-x, w, padding=1)),
                          (F.conv2d(x, nw, padding=1), TF.conv2d(x, -w, padding=1)),
                          (F.max_pool2d(n, 2), TF.max_pool2d(-x, 2)),
                          (F.avg_pool2d(n, 3, 1, 1), TF.avg_pool2d(-x, 3, 1, 1))]:
            torch.testing.assert_close(ours, ref)
    if shape[-1] >= 11:  # SSIM's window
        a, b = torch.rand(*shape), torch.rand(*shape)
        torch.testing.assert_close(fastconv.ssim(torch._neg_view(-a), b), fastconv.ssim(a, b))
    xg = x.clone().requires_grad_()
    seed = torch.randn(shape[0], shape[1], shape[2], shape[3])
    F.conv2d(xg, w, padding=1).backward(torch._neg_view(seed))  # a negated output gradient too
    xr = x.clone().requires_grad_()
    TF.conv2d(xr, w, padding=1).backward(-seed)
    torch.testing.assert_close(xg.grad, xr.grad)
