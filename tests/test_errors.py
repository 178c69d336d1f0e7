"""Bad input raises clear errors (as torch does), never garbage or a crash."""
import pytest
import torch

import fastconv._backend as backend
import fastconv.functional as F

x4 = torch.randn(2, 4, 8, 8)
w4 = torch.randn(6, 4, 3, 3)


@pytest.mark.parametrize("call,exc,match", [
    (lambda: F.conv2d(torch.randn(8, 8), w4), ValueError, "3D \\(unbatched\\) or 4D"),
    (lambda: F.conv2d(torch.randn(1, 2, 4, 8, 8), w4), ValueError, "got input of size"),
    (lambda: F.conv2d(x4, torch.randn(6, 4, 3)), ValueError, "4D weight"),
    (lambda: F.conv2d(x4, torch.randn(6, 2, 3, 3), groups=3), RuntimeError, "not divisible by groups=3"),
    (lambda: F.conv2d(x4, torch.randn(5, 2, 3, 3), groups=2), RuntimeError, "divisible by 2 at dimension 0"),
    (lambda: F.conv2d(x4, torch.randn(6, 3, 3, 3)), RuntimeError, "to have 3 channels, but got 4"),
    (lambda: F.conv2d(x4, torch.randn(6, 4, 11, 3)), RuntimeError, "Kernel size can't be greater"),
    (lambda: F.conv2d(x4, w4, dilation=5), RuntimeError, "Kernel size can't be greater"),
    (lambda: F.conv2d(x4, w4, stride=0), ValueError, "stride must be positive"),
    (lambda: F.conv2d(x4, w4, stride=(1, -1)), ValueError, "stride must be positive"),
    (lambda: F.conv2d(x4, w4, padding=-1), ValueError, "negative padding"),
    (lambda: F.conv2d(x4, w4, dilation=0), ValueError, "dilation must be positive"),
    (lambda: F.conv2d(x4, w4, padding="same", stride=2), ValueError, "not supported for strided"),
    (lambda: F.conv2d(x4, w4, padding="full"), ValueError, "invalid padding string"),
    (lambda: F.conv2d(x4, w4, groups=0), ValueError, "groups must be a positive"),
    (lambda: F.conv2d(x4, w4, torch.randn(5)), RuntimeError, "expected bias of shape \\[6\\]"),
    (lambda: F.conv2d(x4, w4.double()), TypeError, "same dtype"),
    (lambda: F.conv2d(x4, w4, torch.randn(6, dtype=torch.float64)), TypeError, "same dtype"),
    (lambda: F.conv2d(x4.half(), w4.half()), TypeError, "torch.float32 and torch.float64"),
    (lambda: F.conv2d(x4.to(torch.int32), w4.to(torch.int32)), TypeError, "unsupported dtype torch.int32"),
    (lambda: F.conv_transpose2d(x4, torch.randn(3, 2, 3, 3)), RuntimeError, "to have 3 channels"),
    (lambda: F.conv_transpose2d(x4, torch.randn(4, 2, 3, 3), stride=2, output_padding=2), ValueError,
     "output padding must be smaller"),
    (lambda: F.conv_transpose2d(x4, torch.randn(4, 2, 3, 3), padding=9), RuntimeError, "Output size is too small"),
    (lambda: F.conv_transpose2d(x4, torch.randn(4, 2, 3, 3), stride=0), ValueError, "stride must be positive"),
    (lambda: F.max_pool2d(x4, 3, padding=2), ValueError, "pad should be at most half"),
    (lambda: F.max_pool2d(x4, 2, padding=2, dilation=2), ValueError, "pad should be at most half of kernel size"),
    (lambda: F.avg_pool2d(x4, 2, padding=2), ValueError, "pad should be at most half"),
    (lambda: F.max_pool2d(x4, 0), ValueError, "kernel_size must be positive"),
    (lambda: F.max_pool2d(x4, 2, stride=0), ValueError, "stride must be positive"),
    (lambda: F.max_pool2d(x4, 9), RuntimeError, "Output size is too small"),
    (lambda: F.avg_pool2d(x4, 2, divisor_override=0), RuntimeError, "divisor must be not zero"),
    (lambda: F.avg_pool2d(torch.randn(8), 2), ValueError, "3D \\(unbatched\\) or 4D"),
    (lambda: F.max_pool2d(torch.randn(2, 0, 4, 4), 2), RuntimeError, "non-zero channel and spatial"),
    (lambda: F.max_pool2d(x4.to(torch.int64), 2), TypeError, "supported dtypes are torch.float32"),
    (lambda: F.adaptive_avg_pool2d(x4, (1, 2, 3)), ValueError, "output_size must be an int or a pair"),
    (lambda: F.adaptive_avg_pool2d(x4, -1), ValueError, "non-negative"),
])
def test_bad_input_raises(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_mismatched_devices_raise():
    with pytest.raises(RuntimeError, match="same device"):
        F.conv2d(x4, w4.to("meta"))


def test_cuda_tensor_without_cupy(monkeypatch):
    """A CUDA tensor on a machine without CuPy gets an error that says how to install the backend."""
    import builtins
    real_import = builtins.__import__

    def no_cupy(name, *args, **kwargs):
        if name == "cupy" or name.startswith("cupy."):
            raise ImportError("No module named 'cupy'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_cupy)
    with pytest.raises(RuntimeError, match=r"pip install 'fastconv\[cuda\]'"):
        backend.kernels("conv2d", torch.device("cuda", 0))
    assert not backend.cuda_available()


def test_unknown_device_type():
    with pytest.raises(RuntimeError, match="no backend for device type 'meta'"):
        backend.kernels("conv2d", torch.device("meta"))


def test_max_pool_backward_checks_indices_and_never_writes_outside():
    """The backward op, reachable through torch.ops, checks its indices' dtype and shape and never
    scatters outside the input: an index outside the plane (torch's index of a window entirely in
    the padding) contributes nothing."""
    grad = torch.ones(1, 1, 2, 2)
    out = torch.ops.fastconv.max_pool2d_backward(grad, torch.tensor([[[[16, -3], [0, 0]]]]), [4, 4])
    assert out.flatten().tolist() == [2.0] + [0.0] * 15
    with pytest.raises(RuntimeError, match="expected int64 indices"):
        torch.ops.fastconv.max_pool2d_backward(grad, torch.zeros(1, 1, 2, 3, dtype=torch.int64), [4, 4])


def test_max_pool_window_in_padding_has_no_gradient():
    """Found by fuzzing: a dilated window entirely in the padding gives -inf and torch's
    out-of-plane index; its gradient and its forward-mode tangent are zero."""
    x = torch.randn(1, 1, 1, 1, dtype=torch.float64, requires_grad=True)
    out, idx = F.max_pool2d(x, 2, padding=1, dilation=2, return_indices=True)
    want, want_idx = torch.nn.functional.max_pool2d(x, 2, padding=1, dilation=2, return_indices=True)
    assert torch.equal(idx, want_idx) and torch.equal(out, want)
    (gx,) = torch.autograd.grad(out.sum(), x)
    assert gx.item() == 0.0
    _, tangent = torch.func.jvp(lambda t: F.max_pool2d(t, 2, padding=1, dilation=2), (x.detach(),),
                                (torch.ones_like(x),))
    assert tangent.item() == 0.0


def test_conv2d_validation_cache_keys_every_argument():
    """A validated call is remembered under its arguments' metadata: a later call that differs in any
    one of them (bias shape or dtype, weight dtype, a non-tensor bias, a list) is validated again."""
    b6 = torch.randn(6)
    F.conv2d(x4, w4, b6, stride=1, padding=1)  # valid: cached
    with pytest.raises(RuntimeError, match="expected bias of shape"):
        F.conv2d(x4, w4, torch.randn(5), stride=1, padding=1)
    with pytest.raises(TypeError, match="same dtype"):
        F.conv2d(x4, w4, b6.double(), stride=1, padding=1)
    with pytest.raises(TypeError, match="same dtype"):
        F.conv2d(x4, w4.double(), b6, stride=1, padding=1)
    with pytest.raises(TypeError, match="expected Tensor arguments, got float"):
        F.conv2d(x4, w4, 1.5, stride=1, padding=1)
    ref = torch.nn.functional.conv2d(x4, w4, b6, stride=1, padding=1)
    for stride, padding in ((1, [1, 1]), ([1, 1], 1), ((1, 1), (1, 1))):  # lists: the general key
        torch.testing.assert_close(F.conv2d(x4, w4, b6, stride=stride, padding=padding), ref)
