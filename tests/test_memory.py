"""fastconv.memory: the output allocation the ops share, and empty_cache."""
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import fastconv
from fastconv.cpu import _outputs
from fastconv.memory import output_like


def test_output_like_pools_real_cpu_tensors_only():
    big = torch.zeros(3, 5, 131, 137)
    held = _outputs.held_bytes()
    out = output_like(big)
    assert out.shape == big.shape and out.dtype == big.dtype and out.is_contiguous()
    assert _outputs.held_bytes() == held + big.numel() * 4
    small = output_like(torch.zeros(3, 4))
    assert small.shape == (3, 4) and _outputs.held_bytes() == held + big.numel() * 4
    with FakeTensorMode() as mode:
        fake = mode.from_tensor(torch.zeros(3, 5, 129, 137))
        got = output_like(fake)
        assert type(got) is not torch.Tensor and got.shape == fake.shape
    assert _outputs.held_bytes() == held + big.numel() * 4  # a trace's fake tensors never enter the pool


def test_compiled_fused_backward_keeps_fakes_out_of_the_pool():
    """A compiled model's backward is traced with fake tensors through the fused activation
    gradient (which writes into :func:`output_like`): the pool must hold real storages only, and
    the compiled gradients equal eager ones."""
    torch.manual_seed(0)
    ref = torch.nn.Sequential(torch.nn.Conv2d(4, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2))
    model = fastconv.convert_model(ref, fuse=True)
    x = torch.randn(4, 4, 64, 64)
    model(x).square().sum().backward()
    grads_eager = [p.grad.clone() for p in model.parameters()]
    for p in model.parameters():
        p.grad = None
    compiled = torch.compile(model, backend="aot_eager")
    compiled(x).square().sum().backward()
    for p, g in zip(model.parameters(), grads_eager):
        torch.testing.assert_close(p.grad, g)
    storages = [s for bucket in _outputs._pool.values() for s in bucket]
    assert storages and all(type(s) is torch.UntypedStorage for s in storages)


def test_empty_cache_keeps_live_outputs_intact():
    y = fastconv.functional.conv2d(torch.ones(2, 8, 64, 64), torch.ones(8, 8, 3, 3))
    fastconv.empty_cache()
    assert float(y[0, 0, 1, 1]) == 72.0 and y.shape == (2, 8, 62, 62)
