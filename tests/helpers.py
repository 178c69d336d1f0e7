"""Helpers shared by the op tests: the one dtype -> tolerance table, gradients, odd layouts."""
import torch

#: (rtol, atol) per dtype, for results compared with torch on the same inputs.
TOLERANCE = {
    torch.float64: (1e-9, 1e-10),
    torch.float32: (1e-5, 1e-5),
    torch.float16: (2e-3, 2e-3),
    torch.bfloat16: (1.6e-2, 1e-2),
}


def tolerance(dtype: torch.dtype, scale: float = 1.0) -> dict:
    """``rtol``/``atol`` keyword arguments for ``dtype`` (optionally widened by ``scale``)."""
    rtol, atol = TOLERANCE[dtype]
    return dict(rtol=rtol * scale, atol=atol * scale)


def assert_close(actual, expected, rtol=None, atol=None):
    """torch.testing.assert_close with the dtype's tolerances from :data:`TOLERANCE`."""
    if rtol is None:
        rtol, atol = TOLERANCE[expected.dtype]
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


def fuzz_tests(check):
    """The hypothesis property ``check(data)`` as two tests: under the bounded, derandomized "ci"
    profile (the default run) and under the "slow" one (20 times the examples; ``-m slow``).

    The profiles are registered in ``tests/conftest.py``.
    """
    import pytest
    from hypothesis import given, settings
    from hypothesis import strategies as st

    def make(profile):
        @settings(settings.get_profile(profile))
        @given(data=st.data())
        def test(data):
            check(data)
        test.__doc__ = check.__doc__
        return test

    return make("ci"), pytest.mark.slow(make("slow"))
