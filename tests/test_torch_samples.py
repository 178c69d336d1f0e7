"""torch's own OpInfo sample inputs for the functions fastconv mirrors, in float64: values and gradients."""
import pytest
import torch

import fastconv.functional as F

common = pytest.importorskip("torch.testing._internal.common_methods_invocations",
                             reason="torch's OpInfo database needs the 'expecttest' package (in the test extra)")

OPS = {
    "nn.functional.conv2d": F.conv2d,
    "nn.functional.conv_transpose2d": F.conv_transpose2d,
    "nn.functional.max_pool2d": F.max_pool2d,
    "nn.functional.avg_pool2d": F.avg_pool2d,
    "nn.functional.adaptive_avg_pool2d": F.adaptive_avg_pool2d,
}
OPINFOS = [op for op in common.op_db if op.name in OPS]


def _tensors(out):
    return [t for t in (out if isinstance(out, tuple) else (out,)) if t.is_floating_point()]


@pytest.mark.parametrize("opinfo", OPINFOS, ids=lambda op: op.name)
def test_torch_opinfo_samples(device, opinfo):
    fn, ref_fn = OPS[opinfo.name], opinfo.op
    samples = list(opinfo.sample_inputs(device, torch.float64, requires_grad=True))
    assert samples, f"no samples for {opinfo.name}"
    for sample in samples:
        leaves = [t for t in [sample.input, *sample.args, *sample.kwargs.values()]
                  if torch.is_tensor(t) and t.requires_grad]
        out = fn(sample.input, *sample.args, **sample.kwargs)
        ref = ref_fn(sample.input, *sample.args, **sample.kwargs)
        if isinstance(ref, tuple):
            assert torch.equal(out[1], ref[1]), f"indices differ for {sample}"
        got, want = _tensors(out)[0], _tensors(ref)[0]
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12, msg=lambda m: f"{sample}: {m}")
        seed = torch.randn_like(want)
        for g, r in zip(torch.autograd.grad(got, leaves, seed), torch.autograd.grad(want, leaves, seed)):
            torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-12, msg=lambda m: f"{sample}: {m}")
