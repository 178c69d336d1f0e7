"""fastconv.nn layers and convert_model: drop-in equivalence with torch.nn."""
import copy
import warnings

import pytest
import torch

import fastconv
import fastconv.nn as fnn
from helpers import assert_close


def seed_classifier(in_channels=3, classes=10, size=32):
    """The seed report's classifier: conv 3->32->64->128 (3x3, pad 1), MaxPool2d(2) after each, Linear."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(in_channels, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(64, 128, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(128 * (size // 8) ** 2, classes),
    )


def every_layer_model():
    """A model that uses every supported layer kind and option."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1, padding_mode="reflect"),
        torch.nn.Conv2d(8, 8, 3, padding="same", groups=8, padding_mode="circular"),
        torch.nn.Conv2d(8, 6, (3, 2), stride=(2, 1), padding=(2, 1), dilation=(1, 2), groups=2,
                        padding_mode="replicate"),
        torch.nn.MaxPool2d(3, 2, 1, dilation=1, ceil_mode=True),
        torch.nn.ConvTranspose2d(6, 4, 3, stride=2, padding=1, output_padding=1, groups=2, dilation=1),
        torch.nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False),
        torch.nn.Conv2d(4, 4, 3, padding="valid", bias=False),
        torch.nn.AvgPool2d(2, 1, 1, divisor_override=3),
        torch.nn.AdaptiveAvgPool2d((2, 3)),
        torch.nn.Flatten(),
    )


def _run(model, x):
    out = model(x)
    out.square().sum().backward()
    return out, [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-9), (torch.float32, 1e-5)])
def test_seed_classifier_converted_matches_torch(dtype, rtol):
    ref = seed_classifier().to(dtype)
    ours = fastconv.convert_model(copy.deepcopy(ref))
    assert sum(isinstance(m, fnn.Conv2d) for m in ours.modules()) == 3
    assert sum(isinstance(m, fnn.MaxPool2d) for m in ours.modules()) == 3
    x = torch.randn(4, 3, 32, 32, dtype=dtype)
    out, grads = _run(ours, x)
    ref_out, ref_grads = _run(ref, x)
    torch.testing.assert_close(out, ref_out, rtol=rtol, atol=rtol * ref_out.abs().max().item())
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=rtol, atol=rtol * r.abs().max().item())


def test_every_layer_kind_converted_matches_torch():
    ref = every_layer_model().double()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # everything converts: no warning
        ours = fastconv.convert_model(copy.deepcopy(ref))
    assert all(type(m).__module__.startswith("fastconv") for m in ours if not isinstance(m, torch.nn.Flatten))
    x = torch.randn(2, 3, 17, 14, dtype=torch.float64)
    out, grads = _run(ours, x)
    ref_out, ref_grads = _run(ref, x)
    assert_close(out, ref_out)
    for g, r in zip(grads, ref_grads):
        assert_close(g, r)


def test_convert_model_keeps_parameters_and_warns_once():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Conv1d(2, 2, 1), torch.nn.MaxPool1d(2),
                                torch.nn.AdaptiveMaxPool2d(1), torch.nn.Conv2d(2, 2, 1).half())
    params = [id(p) for p in model.parameters()]
    with pytest.warns(UserWarning) as record:
        out = fastconv.convert_model(model)
    assert out is model and [id(p) for p in model.parameters()] == params
    assert len(record) == 1
    message = str(record[0].message)
    for name in ("1 (Conv1d)", "2 (MaxPool1d)", "3 (AdaptiveMaxPool2d)", "4 (Conv2d): parameters are torch.float16"):
        assert name in message
    assert isinstance(model[0], fnn.Conv2d) and type(model[4]) is torch.nn.Conv2d


def test_convert_model_root_layer_and_subclass():
    class MyConv(torch.nn.Conv2d):
        pass

    root = fastconv.convert_model(torch.nn.Conv2d(1, 1, 3))
    assert type(root) is fnn.Conv2d
    with pytest.warns(UserWarning, match="subclass of torch.nn.Conv2d"):
        m = fastconv.convert_model(torch.nn.Sequential(MyConv(1, 1, 3)))
    assert type(m[0]) is MyConv


def test_torch_checkpoint_loads_into_fastconv_layers():
    ref = every_layer_model()
    ours = torch.nn.Sequential(
        fnn.Conv2d(3, 8, 3, padding=1, padding_mode="reflect"),
        fnn.Conv2d(8, 8, 3, padding="same", groups=8, padding_mode="circular"),
        fnn.Conv2d(8, 6, (3, 2), stride=(2, 1), padding=(2, 1), dilation=(1, 2), groups=2, padding_mode="replicate"),
        fnn.MaxPool2d(3, 2, 1, ceil_mode=True),
        fnn.ConvTranspose2d(6, 4, 3, stride=2, padding=1, output_padding=1, groups=2),
        fnn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False),
        fnn.Conv2d(4, 4, 3, padding="valid", bias=False),
        fnn.AvgPool2d(2, 1, 1, divisor_override=3),
        fnn.AdaptiveAvgPool2d((2, 3)),
        torch.nn.Flatten(),
    )
    assert list(ours.state_dict()) == list(ref.state_dict())
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 16, 16)
    assert_close(ours(x), ref(x))


def test_conv_transpose_output_size_argument():
    ref = torch.nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1).double()
    ours = fastconv.convert_model(copy.deepcopy(ref))
    x = torch.randn(1, 3, 5, 5, dtype=torch.float64)
    out = ours(x, output_size=[10, 10])
    assert out.shape[-2:] == (10, 10)
    assert_close(out, ref(x, output_size=[10, 10]))


def test_max_pool_module_return_indices():
    x = torch.randn(2, 3, 8, 8)
    out, idx = fnn.MaxPool2d(2, return_indices=True)(x)
    ref, ref_idx = torch.nn.MaxPool2d(2, return_indices=True)(x)
    assert torch.equal(out, ref) and torch.equal(idx, ref_idx)


def test_torch_compile_fullgraph_forward_backward():
    torch._dynamo.reset()
    ref = every_layer_model().double()
    ours = fastconv.convert_model(copy.deepcopy(ref))
    compiled = torch.compile(ours, fullgraph=True, backend="aot_eager")
    x = torch.randn(2, 3, 17, 14, dtype=torch.float64)
    out, grads = _run(compiled, x)
    ref_out, ref_grads = _run(ref, x)
    assert_close(out, ref_out)
    for g, r in zip(grads, ref_grads):
        assert_close(g, r)


@pytest.mark.slow
def test_torch_compile_inductor_fullgraph():
    torch._dynamo.reset()
    ref = seed_classifier()
    ours = fastconv.convert_model(copy.deepcopy(ref))
    compiled = torch.compile(ours, fullgraph=True)
    x = torch.randn(2, 3, 32, 32)
    out, grads = _run(compiled, x)
    ref_out, ref_grads = _run(ref, x)
    assert_close(out, ref_out)
    for g, r in zip(grads, ref_grads):
        assert_close(g, r, rtol=1e-4, atol=1e-4)
