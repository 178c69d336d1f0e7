"""fastconv.models: shapes, identical parameters and training steps across backends, the no-skip UNet."""
import pytest
import torch
import torch.nn.functional as TF

import fastconv.nn as fnn
from fastconv import models

FAST_LAYERS = (fnn.Conv2d, fnn.ConvTranspose2d, fnn.MaxPool2d)


def _build(name, backend, seed=0):
    torch.manual_seed(seed)
    if name == "classifier":
        return models.Classifier(1, 10, 16, backend=backend), torch.rand(6, 1, 16, 16)
    if name == "cifarnet":
        return models.CifarNet(3, 10, 20, backend=backend), torch.rand(6, 3, 20, 20)
    if name == "unet":
        return models.UNet(2, 1, base=4, depth=2, backend=backend), torch.rand(4, 2, 16, 16)
    return models.Denoiser(1, backend=backend), torch.rand(4, 1, 16, 24)


def _loss(name, out, gen):
    if name in ("classifier", "cifarnet"):
        return TF.cross_entropy(out, torch.randint(10, (out.shape[0],), generator=gen))
    target = torch.rand(out.shape, generator=gen)
    if name == "unet":
        return TF.binary_cross_entropy_with_logits(out, (target > 0.5).float())
    return TF.mse_loss(out, target)


NAMES = ["classifier", "cifarnet", "unet", "denoiser"]


@pytest.mark.parametrize("name", NAMES)
def test_output_shapes(name):
    model, x = _build(name, "fastconv")
    out = model(x)
    expected = {"classifier": (6, 10), "cifarnet": (6, 10), "unet": (4, 1, 16, 16), "denoiser": (4, 1, 16, 24)}
    assert tuple(out.shape) == expected[name]


@pytest.mark.parametrize("name", NAMES)
def test_backends_have_identical_parameters_and_layers(name):
    fast, _ = _build(name, "fastconv")
    ref, _ = _build(name, "torch")
    assert any(isinstance(m, FAST_LAYERS) for m in fast.modules())
    assert not any(isinstance(m, FAST_LAYERS) for m in ref.modules())
    sf, sr = fast.state_dict(), ref.state_dict()
    assert list(sf) == list(sr)
    for k in sf:
        assert torch.equal(sf[k], sr[k]), k


@pytest.mark.parametrize("name", NAMES)
def test_backends_train_identically(name):
    """A few SGD steps on the same data give the same losses and weights under both backends.

    (SGD, not Adam: Adam's per-parameter normalisation turns float32 round-off in near-zero
    gradients into full-size steps, which says nothing about the kernels.)"""
    runs = {}
    for backend in ("fastconv", "torch"):
        model, x = _build(name, backend)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        gen = torch.Generator().manual_seed(5)
        losses = []
        for _ in range(4):
            loss = _loss(name, model(x), gen)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        runs[backend] = (losses, model.state_dict())
    (lf, sf), (lt, st) = runs["fastconv"], runs["torch"]
    torch.testing.assert_close(torch.tensor(lf), torch.tensor(lt), rtol=1e-5, atol=1e-6)
    for k in sf:
        torch.testing.assert_close(sf[k], st[k], rtol=1e-4, atol=1e-5, msg=k)


def test_unet_without_skips_feeds_zeros_to_the_decoder():
    torch.manual_seed(0)
    with_skip = models.UNet(1, 2, base=4, depth=2, skip=True)
    no_skip = models.UNet(1, 2, base=4, depth=2, skip=False)
    no_skip.load_state_dict(with_skip.state_dict())  # same parameters: the decoder is unchanged
    seen = {}

    def grab(tag):
        return lambda mod, inp: seen.setdefault(tag, []).append(inp[0].detach())

    for tag, model in (("skip", with_skip), ("noskip", no_skip)):
        for block in model.dec:
            block.register_forward_pre_hook(grab(tag))
    x = torch.rand(2, 1, 16, 16)
    out_skip, out_noskip = with_skip(x), no_skip(x)
    assert out_skip.shape == out_noskip.shape == (2, 2, 16, 16)
    for a, b in zip(seen["skip"], seen["noskip"]):
        half = a.shape[1] // 2
        assert a.shape == b.shape
        assert torch.equal(b[:, half:], torch.zeros_like(b[:, half:]))
        assert a[:, half:].abs().sum() > 0
    assert not torch.allclose(out_skip, out_noskip)


def test_unet_and_denoiser_size_errors():
    with pytest.raises(ValueError, match="divisible by 4"):
        models.UNet(1, 1, base=4, depth=2)(torch.rand(1, 1, 18, 16))
    with pytest.raises(ValueError, match="divisible by 8"):
        models.Denoiser()(torch.rand(1, 1, 20, 16))


def test_bad_arguments():
    with pytest.raises(ValueError, match="backend"):
        models.Classifier(backend="numpy")
    with pytest.raises(ValueError, match="image_size >= 8"):
        models.Classifier(image_size=4)
    with pytest.raises(ValueError, match="image_size >= 16"):
        models.CifarNet(image_size=14)


def test_classifier_sizes_follow_arguments():
    model = models.Classifier(in_channels=3, num_classes=7, image_size=28, backend="torch")
    assert model(torch.rand(2, 3, 28, 28)).shape == (2, 7)
    assert model.head[1].in_features == 128 * 3 * 3
