"""fastconv.train tasks (issue 18, items 1-4): train/val/test splits, the classifier's
augmentation, the VAE/CVAE and SegViT tasks, test-set metrics and figures."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fastconv.train import augment as A
from fastconv.train import data as D
from fastconv.train import main
from fastconv.train.options import defaults
from fastconv.train.segmentation import dice_per_image, pick_cases
from fastconv.train.tasks import make_task

from train_helpers import metrics


# --------------------------------------------------------------------------- splits


@pytest.mark.parametrize("n,fractions,sizes", [
    (100, (0.6, 0.2, 0.2), (60, 20, 20)),
    (10, (0.8, 0.1, 0.1), (8, 1, 1)),
    (3, (0.6, 0.2, 0.2), (1, 1, 1)),
    (40, (0.75, 0.25, 0.0), (30, 10, 0)),
])
def test_split_sizes(n, fractions, sizes):
    assert D.split_sizes(n, fractions) == sizes
    tr, va, te = D.split_indices(n, fractions, seed=4)
    assert (len(tr), len(va), len(te)) == sizes
    assert sorted(np.concatenate([tr, va, te]).tolist()) == list(range(n))


def test_split_errors():
    with pytest.raises(D.DataError, match="2 samples are too few"):
        D.split_sizes(2, (0.6, 0.2, 0.2))
    with pytest.raises(ValueError, match="adding up to 1"):
        D.split_sizes(10, (0.6, 0.2, 0.3))


def test_split_is_seeded():
    a, b, c = (D.split_indices(50, (0.6, 0.2, 0.2), s) for s in (1, 1, 2))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[2], c[2])


def test_few_images_are_split_by_rows_without_overlap():
    rows = np.arange(100, dtype=np.float32)[:, None].repeat(40, 1)[..., None]
    pairs = [(rows, np.zeros((100, 40), bool))] * 2
    train, val, test = D._split_pairs(pairs, patch=16, fractions=(0.6, 0.2, 0.2), seed=0)
    (tr, _), (va, _), (te, _) = train[0], val[0], test[0]
    assert tr[:, 0, 0].tolist() == list(range(60)) and va[:, 0, 0].tolist() == list(range(60, 80))
    assert te[:, 0, 0].tolist() == list(range(80, 100))
    with pytest.raises(D.DataError, match="too small to split into train, val and test"):
        D._split_pairs([(rows[:40], np.zeros((40, 40), bool))], patch=16, fractions=(0.6, 0.2, 0.2), seed=0)


def test_many_images_are_split_by_image():
    pairs = [(np.full((20, 20, 1), i, np.float32), np.zeros((20, 20), bool)) for i in range(10)]
    parts = D._split_pairs(pairs, patch=8, fractions=(0.6, 0.2, 0.2), seed=3)
    values = [sorted(int(img[0, 0, 0]) for img, _ in part) for part in parts]
    assert [len(v) for v in values] == [6, 2, 2] and sorted(sum(values, [])) == list(range(10))


def test_builtin_segmentation_test_patches_come_from_unseen_rows():
    split = D.segmentation_data(seed=0, patch=32, n_train=16, n_val=4, n_test=4)
    assert split.x_test.shape == (4, 1, 32, 32) and split.y_test.shape == (4, 1, 32, 32)
    flat = {bytes(p.numpy()) for p in split.x_train}
    assert not any(bytes(p.numpy()) in flat for p in torch.cat([split.x_val, split.x_test]))


# --------------------------------------------------------------------------- augmentation


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _batch(n=6, side=8):
    return torch.rand(n, 2, side, side, generator=_gen(9))


def test_augmentation_is_seeded_and_draws_from_the_generator():
    x = _batch()
    kinds = A.AUGMENTATIONS
    g1, g2 = _gen(1), _gen(1)
    a, b = A.augment(x, kinds, g1), A.augment(x, kinds, g2)
    assert torch.equal(a, b) and torch.equal(g1.get_state(), g2.get_state())
    assert not torch.equal(A.augment(x, kinds, g1), a)  # the generator moved on
    g3 = _gen(1)
    state = g3.get_state()
    first = A.augment(x, kinds, g3)
    g3.set_state(state)  # resuming from a saved generator state draws the same again
    assert torch.equal(A.augment(x, kinds, g3), first)
    assert torch.equal(A.augment(x, ("jitter", "flip"), _gen(5)), A.augment(x, ("flip", "jitter"), _gen(5)))
    with pytest.raises(ValueError, match="unknown augmentation"):
        A.augment(x, ("blur",), _gen())


def test_flips_and_turns_are_the_drawn_ones():
    x = _batch(16)
    g = _gen(2)
    out = A.random_flips(x, g)
    r = _gen(2)
    lr, ud = torch.rand(16, generator=r) < 0.5, torch.rand(16, generator=r) < 0.5
    for i in range(16):
        want = x[i].flip(2) if lr[i] else x[i]
        want = want.flip(1) if ud[i] else want
        assert torch.equal(out[i], want)
    assert 0 < int(lr.sum()) < 16 and 0 < int(ud.sum()) < 16
    out = A.random_rot90(x, _gen(3))
    k = torch.randint(4, (16,), generator=_gen(3))
    for i in range(16):
        assert torch.equal(out[i], torch.rot90(x[i], int(k[i]), (1, 2)))
    tall = torch.rand(8, 1, 6, 4)
    k = torch.randint(2, (8,), generator=_gen(3)) * 2
    out = A.random_rot90(tall, _gen(3))
    assert out.shape == tall.shape and all(torch.equal(out[i], torch.rot90(tall[i], int(k[i]), (1, 2)))
                                           for i in range(8))


def test_shift_moves_each_image_by_its_drawn_offset():
    x = _batch(8, side=16)
    out = A.random_shift(x, _gen(4))
    r = _gen(4)
    dy, dx = torch.randint(5, (8,), generator=r), torch.randint(5, (8,), generator=r)  # up to 2 px at 16 px
    padded = F.pad(x, (2, 2, 2, 2))
    for i in range(8):
        assert torch.equal(out[i], padded[i, :, dy[i]:dy[i] + 16, dx[i]:dx[i] + 16])
    assert len({(int(a), int(b)) for a, b in zip(dy, dx)}) > 1


def test_jitter_is_an_affine_map_per_image_within_the_range():
    x = _batch(8)
    out = A.random_jitter(x, _gen(6))
    r = _gen(6)
    c, b = 0.8 + 0.4 * torch.rand(8, generator=r), -0.1 + 0.2 * torch.rand(8, generator=r)
    for i in range(8):
        m = x[i].mean()
        torch.testing.assert_close(out[i], ((x[i] - m) * c[i] + m + b[i]).clamp(0, 1))
    assert 0 <= float(out.min()) and float(out.max()) <= 1


def _task(model, **over):
    args = {**defaults(model), **over}
    task = make_task(model, args)
    task.load_data()
    return task


def test_classifier_batches_are_augmented_only_with_augment():
    plain, aug = _task("classifier", limit=16), _task("classifier", limit=16, augment=["flip", "shift"])
    x, y = plain.split.x_train[:8], plain.split.y_train[:8]
    (xp,), yp = plain.batch(x, y, _gen())
    (xa,), ya = aug.batch(x, y, _gen())
    assert torch.equal(xp, x) and torch.equal(yp, y) and torch.equal(ya, y)
    assert not torch.equal(xa, x) and xa.shape == x.shape
    torch.testing.assert_close(xa, A.augment(x, ["flip", "shift"], _gen()))


def test_augment_without_kinds_means_all(tmp_path):
    from fastconv.train.options import parse_given

    assert parse_given(["classifier", "--augment"])["augment"] == list(A.AUGMENTATIONS)
    assert parse_given(["classifier", "--augment", "jitter"])["augment"] == ["jitter"]


# --------------------------------------------------------------------------- generative and segmentation


def test_vae_and_cvae_batches_carry_seeded_noise():
    vae, cvae = _task("vae", limit=8), _task("cvae", limit=8)
    x, y = vae.split.x_train[:4], vae.split.y_train[:4]
    (xv, lv, nv), tv = vae.batch(x, y, _gen(1))
    (xc, lc, nc), tc = cvae.batch(x, y, _gen(1))
    assert lv is None and torch.equal(lc, y) and torch.equal(tv, x) and torch.equal(tc, x)
    assert nv.shape == (4, 8) and torch.equal(nv, nc) and torch.equal(nv, torch.randn(4, 8, generator=_gen(1)))
    assert vae.split.x_train.shape[-1] == 16 and vae.win_size == 11


def _blobs(root, n=8, side=64):
    """An easy segmentation folder: bright disks on a noisy grey background."""
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:side, :side]
    for d in ("images", "masks"):
        (root / d).mkdir(parents=True)
    for i in range(n):
        mask = np.zeros((side, side), bool)
        for _ in range(4):
            cy, cx, r = *rng.integers(0, side, 2), rng.integers(4, 10)
            mask |= (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        img = np.clip(0.3 + 0.4 * mask + rng.normal(0, 0.15, mask.shape), 0, 1)
        Image.fromarray((img * 255).astype(np.uint8)).save(root / "images" / f"{i}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / "masks" / f"{i}.png")
    return root


@pytest.mark.parametrize("model,extra,metric,first_at_most,last_at_least", [
    ("vae", ["--epochs", "4"], "val_ssim", 0.5, 0.6),
    ("cvae", ["--epochs", "4"], "val_ssim", 0.6, 0.7),
    # the transformer first predicts all background, then finds the disks
    ("segvit", ["--data", "BLOBS", "--limit", "64", "--batch-size", "8", "--embed-dim", "32", "--depth", "1",
                "--lr", "3e-3", "--epochs", "5"], "val_dice", 0.6, 0.8),
])
def test_short_training_improves_the_metric(tmp_path, model, extra, metric, first_at_most, last_at_least):
    extra = [str(_blobs(tmp_path / "blobs")) if a == "BLOBS" else a for a in extra]
    assert main([model, "--quiet", "--save-every", "0", "--out", str(tmp_path / "run")] + extra) == 0
    history = metrics(tmp_path / "run")["epochs"]
    first, last = history[0], history[-1]
    assert first[metric] <= first_at_most and last[metric] >= last_at_least, history
    assert last["val_loss"] < first["val_loss"]


def test_cvae_digits_must_be_classes(tmp_path, capsys):
    assert main(["cvae", "--digits", "3", "12", "--limit", "8", "--out", str(tmp_path)]) == 2
    assert "--digits 12: the data have 10 classes (0 to 9)" in capsys.readouterr().err


@pytest.mark.parametrize("argv,message", [
    (["vae", "--image-size", "10"], "vae needs an --image-size divisible by 4, got 10"),
    (["segvit", "--patch-size", "30"], "segvit needs a --patch-size divisible by --vit-patch 4, got 30"),
    (["segvit", "--embed-dim", "30"], "segvit needs --embed-dim divisible by --heads"),
    (["unet", "--patch-size", "20"], "unet with --depth 3 needs a --patch-size divisible by 8, got 20"),
    (["denoiser", "--patch-size", "20"], "denoiser needs a --patch-size divisible by 8, got 20"),
])
def test_model_geometry_errors(tmp_path, capsys, argv, message):
    assert main(argv + ["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_pick_cases_best_median_worst():
    truth = torch.zeros(5, 1, 4, 4, dtype=torch.bool)
    truth[:4, :, :2] = True  # image 4 has no object
    pred = truth.clone()
    pred[1, :, :1] = False  # Dice 2/3
    pred[2] = False  # Dice 0
    pred[3, :, 2:] = True  # Dice 2*8/(16+8)=2/3
    dice = dice_per_image(pred, truth)
    torch.testing.assert_close(dice, torch.tensor([1.0, 2 / 3, 0.0, 2 / 3, 1.0]))
    cases = pick_cases(dice, truth.flatten(1).any(1))
    # among the images with an object, by Dice: 0 (1), 1 and 3 (2/3, in index order), 2 (0)
    assert cases == [("worked", 0), ("partly worked", 3), ("missed", 2)]
