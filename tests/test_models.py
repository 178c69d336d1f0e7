"""fastconv.models: shapes, identical parameters and training steps across backends, the no-skip UNet."""
import pytest
import torch
import torch.nn.functional as TF

import fastconv.nn as fnn
from fastconv import models

FAST_LAYERS = (fnn.Conv2d, fnn.ConvTranspose2d, fnn.MaxPool2d)


def _build(name, backend, seed=0):
    """``(model, inputs)`` for ``model(*inputs)``; the same seed gives the same of both."""
    torch.manual_seed(seed)
    if name == "classifier":
        return models.Classifier(1, 10, 16, backend=backend), (torch.rand(6, 1, 16, 16),)
    if name == "cifarnet":
        return models.CifarNet(3, 10, 20, backend=backend), (torch.rand(6, 3, 20, 20),)
    if name == "unet":
        return models.UNet(2, 1, base=4, depth=2, backend=backend), (torch.rand(4, 2, 16, 16),)
    if name == "segvit":
        return (models.SegViT(2, 1, image_size=16, patch_size=4, dim=16, depth=2, heads=2, backend=backend),
                (torch.rand(4, 2, 16, 16),))
    if name in ("vae", "cvae"):
        cls = models.CVAE if name == "cvae" else models.VAE
        model = cls(1, image_size=12, latent_dim=3, base=4, backend=backend)
        labels = torch.tensor([0, 3, 9, 3]) if name == "cvae" else None
        return model, (torch.rand(4, 1, 12, 12), labels, torch.randn(4, 3))
    return models.Denoiser(1, backend=backend), (torch.rand(4, 1, 16, 24),)


def _loss(name, out, gen):
    if name in ("classifier", "cifarnet"):
        return TF.cross_entropy(out, torch.randint(10, (out.shape[0],), generator=gen))
    if name in ("vae", "cvae"):
        logits, mu, logvar = out
        target = torch.rand(logits.shape, generator=gen)
        kl = -0.5 * (1 + logvar - mu * mu - logvar.exp()).sum(1).mean()
        return TF.binary_cross_entropy_with_logits(logits, target, reduction="sum") / len(logits) + kl
    target = torch.rand(out.shape, generator=gen)
    if name in ("unet", "segvit"):
        return TF.binary_cross_entropy_with_logits(out, (target > 0.5).float())
    return TF.mse_loss(out, target)


NAMES = ["classifier", "cifarnet", "unet", "segvit", "denoiser", "vae", "cvae"]


def _shapes(out):
    return [tuple(t.shape) for t in out] if isinstance(out, tuple) else tuple(out.shape)


@pytest.mark.parametrize("name", NAMES)
def test_output_shapes(name):
    model, inputs = _build(name, "fastconv")
    expected = {"classifier": (6, 10), "cifarnet": (6, 10), "unet": (4, 1, 16, 16), "segvit": (4, 1, 16, 16),
                "denoiser": (4, 1, 16, 24), "vae": [(4, 1, 12, 12), (4, 3), (4, 3)],
                "cvae": [(4, 1, 12, 12), (4, 3), (4, 3)]}
    assert _shapes(model(*inputs)) == expected[name]


@pytest.mark.parametrize("name", NAMES)
def test_backends_give_equal_values_and_gradients(name):
    runs = {}
    for backend in ("fastconv", "torch"):
        model, inputs = _build(name, backend)
        x = inputs[0].clone().requires_grad_()
        out = model(x, *inputs[1:])
        _loss(name, out, torch.Generator().manual_seed(1)).backward()
        outs = out if isinstance(out, tuple) else (out,)
        runs[backend] = ([o.detach() for o in outs], x.grad, {k: p.grad for k, p in model.named_parameters()})
    (of, xf, gf), (ot, xt, gt) = runs["fastconv"], runs["torch"]
    for a, b in zip(of, ot):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(xf, xt, rtol=1e-4, atol=1e-6)
    assert list(gf) == list(gt)
    for k in gf:
        torch.testing.assert_close(gf[k], gt[k], rtol=1e-4, atol=1e-6, msg=k)


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
        model, inputs = _build(name, backend)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        gen = torch.Generator().manual_seed(5)
        losses = []
        for _ in range(4):
            loss = _loss(name, model(*inputs), gen)
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
    with pytest.raises(ValueError, match="VAE needs image_size divisible by 4"):
        models.VAE(image_size=14)
    with pytest.raises(ValueError, match="CVAE needs num_classes >= 1"):
        models.CVAE(num_classes=0)
    with pytest.raises(ValueError, match="is conditioned on the class"):
        models.CVAE(image_size=8, base=2)(torch.rand(1, 1, 8, 8))
    with pytest.raises(ValueError, match="image_size divisible by patch_size"):
        models.SegViT(image_size=30, patch_size=4)
    with pytest.raises(ValueError, match="dim divisible by heads"):
        models.SegViT(dim=30, heads=4)
    with pytest.raises(ValueError, match="divisible by 4, got"):
        models.SegViT(image_size=16, patch_size=4, dim=8, heads=2)(torch.rand(1, 1, 18, 16))


def test_segvit_embeds_patches_with_a_strided_fastconv_conv():
    model = models.SegViT(1, 1, image_size=16, patch_size=4, dim=8, depth=1, heads=2)
    assert isinstance(model.embed, fnn.Conv2d) and model.embed.stride == (4, 4) and model.embed.kernel_size == (4, 4)
    assert isinstance(model.head, fnn.ConvTranspose2d) and model.head.stride == (4, 4)
    # a patchwise linear map: a patch's tokens depend on its own pixels only
    x = torch.rand(1, 1, 16, 16)
    y = x.clone()
    y[..., 4:8, 8:12] += 1
    tx, ty = model.embed(x), model.embed(y)
    changed = (tx - ty).abs().sum(1)[0] > 0
    assert changed.nonzero().tolist() == [[1, 2]]
    # other input sizes: the position embedding is resized
    assert model(torch.rand(2, 1, 24, 32)).shape == (2, 1, 24, 32)


def test_vae_reparameterises_with_the_given_noise():
    torch.manual_seed(0)
    model = models.VAE(1, image_size=8, latent_dim=2, base=2)
    x = torch.rand(3, 1, 8, 8)
    mu, logvar = model.encode(x)
    noise = torch.randn(3, 2)
    logits, mu2, logvar2 = model(x, noise=noise)
    torch.testing.assert_close(logits, model.decode(mu + (0.5 * logvar).exp() * noise))
    torch.testing.assert_close(model(x, noise=torch.zeros(3, 2))[0], model.decode(mu))
    g = torch.Generator().manual_seed(4)
    samples = model.sample(5, generator=g)
    assert samples.shape == (5, 1, 8, 8) and 0 <= float(samples.min()) and float(samples.max()) <= 1
    torch.testing.assert_close(model.sample(5, generator=torch.Generator().manual_seed(4)), samples)


def test_cvae_decoder_depends_on_the_label():
    torch.manual_seed(0)
    model = models.CVAE(1, image_size=8, latent_dim=2, base=2, num_classes=3)
    z = torch.zeros(3, 2)
    out = model.decode(z, torch.tensor([0, 1, 2]))
    assert not torch.allclose(out[0], out[1]) and not torch.allclose(out[1], out[2])
    assert model.sample(2, torch.tensor([1, 1])).shape == (2, 1, 8, 8)


def test_classifier_sizes_follow_arguments():
    model = models.Classifier(in_channels=3, num_classes=7, image_size=28, backend="torch")
    assert model(torch.rand(2, 3, 28, 28)).shape == (2, 7)
    assert model.head[1].in_features == 128 * 3 * 3
