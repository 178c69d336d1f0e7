"""Helpers shared by the op tests."""
import torch


def assert_close(actual, expected, rtol=None, atol=None):
    """torch.testing.assert_close with dtype-appropriate tolerances (float64 tight, float32 ~1e-5)."""
    if rtol is None:
        rtol, atol = (1e-9, 1e-10) if expected.dtype == torch.float64 else (1e-5, 1e-5)
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)


def grads(out, inputs, seed_grad):
    """Gradients of ``(out * seed_grad).sum()`` w.r.t. the tensors of ``inputs`` that require grad."""
    wrt = [t for t in inputs if t is not None and t.requires_grad]
    return torch.autograd.grad(out, wrt, seed_grad)


def leaf(t, device, dtype, channels_last=False, noncontig=False):
    """A fresh leaf tensor on ``device``/``dtype`` that requires grad, optionally with an odd layout."""
    t = t.to(device=device, dtype=dtype)
    if channels_last and t.dim() == 4:
        t = t.contiguous(memory_format=torch.channels_last)
    if noncontig:
        t = torch.cat([t, t], dim=-1)[..., ::2]
    return t.detach().requires_grad_(True)
