"""fastconv.train: offline data loaders, their errors, and the training CLI (runs, resume, errors)."""
import gzip
import json
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from fastconv import cli
from fastconv.train import data as D
from fastconv.train import main
from fastconv.train.tasks import dice_loss


def _write_idx(path, array, code=0x08, compress=False):
    a = np.asarray(array)
    dtype = {0x08: ">u1", 0x0D: ">f4", 0x0C: ">i4"}[code]
    raw = bytes([0, 0, code, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + a.astype(dtype).tobytes()
    if compress:
        raw = gzip.compress(raw)
    path.write_bytes(raw)


def _mnist_folder(root, n_train=40, n_test=12, side=12, compress=True, seed=0):
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if compress else ""
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, side, side), dtype=np.uint8)
        labels = rng.integers(0, 3, n, dtype=np.uint8)
        _write_idx(root / f"{prefix}-images-idx3-ubyte{ext}", images, compress=compress)
        _write_idx(root / f"{prefix}-labels-idx1-ubyte{ext}", labels, compress=compress)
        arrays[prefix] = (images, labels)
    return arrays


def _run(argv, capsys):
    code = main(argv)
    return code, capsys.readouterr().err


# --------------------------------------------------------------------------- idx files


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_round_trip(tmp_path, compress):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    floats = rng.standard_normal((4, 2)).astype(np.float32)
    ints = rng.integers(-1000, 1000, 6).astype(np.int32)
    _write_idx(tmp_path / "u8", images, 0x08, compress)
    _write_idx(tmp_path / "f4", floats, 0x0D, compress)
    _write_idx(tmp_path / "i4", ints, 0x0C, compress)
    np.testing.assert_array_equal(D.read_idx(tmp_path / "u8"), images)
    np.testing.assert_array_equal(D.read_idx(tmp_path / "f4"), floats)
    np.testing.assert_array_equal(D.read_idx(tmp_path / "i4"), ints)


def test_read_idx_rejects_bad_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x12\x34\x08\x01\x00\x00\x00\x02ab")
    with pytest.raises(D.DataError, match="not an idx file"):
        D.read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + b"abc")
    with pytest.raises(D.DataError, match="holds 3 bytes"):
        D.read_idx(tmp_path / "short")


@pytest.mark.parametrize("compress", [False, True])
def test_classification_from_idx_folder(tmp_path, compress):
    arrays = _mnist_folder(tmp_path / "mnist", compress=compress)
    split = D.classification_data(str(tmp_path / "mnist"))
    # t10k is the test set; the 40 train images are split 60:20, i.e. 30 train and 10 val
    assert split.x_train.shape == (30, 1, 12, 12) and split.x_val.shape == (10, 1, 12, 12)
    assert split.x_test.shape == (12, 1, 12, 12)
    np.testing.assert_allclose(split.x_test[:, 0].numpy(), arrays["t10k"][0] / 255.0, atol=1e-6)
    np.testing.assert_array_equal(split.y_test.numpy(), arrays["t10k"][1])
    both = torch.cat([split.x_train, split.x_val])[:, 0].numpy()
    rows = sorted(map(bytes, np.round(both * 255).astype(np.uint8)))
    assert rows == sorted(map(bytes, arrays["train"][0]))
    assert split.num_classes == 3 and split.in_channels == 1


def test_idx_folder_with_images_but_no_labels(tmp_path):
    _mnist_folder(tmp_path / "m")
    (tmp_path / "m" / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(D.DataError, match="no matching train-labels"):
        D.classification_data(str(tmp_path / "m"))


def test_digits_default_split_is_fixed_by_seed():
    a, b, c = (D.classification_data(seed=s) for s in (0, 0, 1))
    assert a.x_train.shape[1:] == (1, 8, 8) and a.num_classes == 10
    assert D.classification_data(image_size=16).x_train.shape[1:] == (1, 16, 16)
    assert (len(a.x_train), len(a.x_val), len(a.x_test)) == (1079, 359, 359)
    assert torch.equal(a.y_val, b.y_val) and not torch.equal(a.y_val, c.y_val)
    assert torch.equal(a.y_test, b.y_test) and not torch.equal(a.y_test, c.y_test)
    assert 0.0 <= float(a.x_train.min()) and float(a.x_train.max()) <= 1.0


# --------------------------------------------------------------------------- image folders


def _save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_image_folder_grey_and_rgb(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        for i in range(3):
            _save(tmp_path / "grey" / cls / f"{i}.png", rng.integers(0, 256, (10, 10), dtype=np.uint8))
    x, y, classes = D.load_image_folder(tmp_path / "grey")
    assert x.shape == (6, 1, 10, 10) and classes == ["cat", "dog"] and y.tolist() == [0, 0, 0, 1, 1, 1]
    _save(tmp_path / "mixed" / "a" / "0.png", rng.integers(0, 256, (10, 10), dtype=np.uint8))
    rgb = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
    _save(tmp_path / "mixed" / "b" / "0.png", rgb)
    x, y, _ = D.load_image_folder(tmp_path / "mixed", image_size=12)
    assert x.shape == (2, 3, 12, 12)
    np.testing.assert_allclose(x[1].permute(1, 2, 0).numpy(), rgb / 255.0, atol=1e-6)
    split = D.classification_data(str(tmp_path / "grey"), seed=0)
    assert len(split.x_train) + len(split.x_val) + len(split.x_test) == 6


def test_class_folder_without_images_is_an_error(tmp_path, capsys):
    _save(tmp_path / "data" / "a" / "0.png", np.zeros((8, 8), np.uint8))
    (tmp_path / "data" / "empty").mkdir()
    (tmp_path / "data" / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(D.DataError, match="class folder .*empty has no images"):
        D.load_image_folder(tmp_path / "data")
    code, err = _run(["classifier", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "has no images" in err and "Traceback" not in err


def test_missing_path_is_an_error(tmp_path, capsys):
    missing = str(tmp_path / "nope")
    for model in ("classifier", "unet", "denoiser"):
        code, err = _run([model, "--data", missing, "--out", str(tmp_path / "o")], capsys)
        assert code == 2 and "does not exist" in err and missing in err


def _mask_folder(root, n=2, size=(40, 48), mismatch=False):
    rng = np.random.default_rng(3)
    for i in range(n):
        img = rng.integers(0, 256, size, dtype=np.uint8)
        msk_size = (size[0] + 2, size[1]) if mismatch and i == 1 else size
        mask = (rng.random(msk_size) > 0.5).astype(np.uint8) * 255
        _save(root / "images" / f"im{i}.png", img)
        _save(root / "masks" / f"im{i}.png", mask)


def test_mask_folder_loads_matching_pairs(tmp_path):
    _mask_folder(tmp_path / "seg", size=(60, 48))
    pairs = D.load_mask_folder(tmp_path / "seg")
    assert len(pairs) == 2 and pairs[0][0].shape == (60, 48, 1) and pairs[0][1].dtype == bool
    split = D.segmentation_data(str(tmp_path / "seg"), patch=16, n_train=8, n_val=4, n_test=3)
    assert split.x_train.shape == (8, 1, 16, 16) and split.y_train.shape == (8, 1, 16, 16)
    assert split.x_val.shape == (4, 1, 16, 16) and split.x_test.shape == (3, 1, 16, 16)
    assert set(torch.unique(split.y_train).tolist()) <= {0.0, 1.0}


def test_mask_size_mismatch_is_an_error(tmp_path, capsys):
    _mask_folder(tmp_path / "seg", mismatch=True)
    with pytest.raises(D.DataError, match="mask .*im1.png has size 48x42 but image .*im1.png has size 48x40"):
        D.load_mask_folder(tmp_path / "seg")
    code, err = _run(["unet", "--data", str(tmp_path / "seg"), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "must match" in err


def test_mask_folder_missing_mask(tmp_path):
    _mask_folder(tmp_path / "seg")
    (tmp_path / "seg" / "masks" / "im0.png").unlink()
    with pytest.raises(D.DataError, match="has no mask"):
        D.load_mask_folder(tmp_path / "seg")


def test_denoising_from_image_folder(tmp_path):
    rng = np.random.default_rng(2)
    for i in range(2):
        _save(tmp_path / "imgs" / f"{i}.png", rng.integers(0, 256, (60, 36), dtype=np.uint8))
    split = D.denoising_data(str(tmp_path / "imgs"), patch=16, n_train=6, n_val=3, n_test=2)
    assert split.x_train.shape == (6, 1, 16, 16) and split.x_val.shape == (3, 1, 16, 16)
    assert split.x_test.shape == (2, 1, 16, 16)
    assert torch.equal(split.x_train, split.y_train)
    with pytest.raises(D.DataError, match="smaller than the patch size"):
        D.denoising_data(str(tmp_path / "imgs"), patch=48)


def test_builtin_segmentation_masks_are_nontrivial():
    img, mask = D.retina_vessels(size=256)
    assert img.shape == mask.shape == (179, 179) and 0.03 < mask.mean() < 0.25
    img, mask = D.textured_horse()
    assert img.shape == mask.shape and 0.2 < mask.mean() < 0.6


def test_dice_loss():
    t = (torch.rand(2, 1, 8, 8) > 0.5).float()
    assert float(dice_loss(20 * (2 * t - 1), t)) < 1e-3
    assert float(dice_loss(-20 * (2 * t - 1), t)) > 0.9


# --------------------------------------------------------------------------- CLI runs


def _outputs(out):
    return {p.name for p in out.iterdir()}


@pytest.mark.parametrize("model,extra,keys", [
    ("classifier", ["--limit", "64"], {"val_accuracy"}),
    ("cifarnet", ["--limit", "32"], {"val_accuracy"}),
    ("unet", ["--limit", "8", "--base", "4", "--depth", "2", "--patch-size", "32"], {"val_dice", "val_iou"}),
    ("unet", ["--limit", "8", "--base", "4", "--depth", "2", "--patch-size", "16", "--no-skip", "--backend", "torch"],
     {"val_dice"}),
    ("denoiser", ["--limit", "8", "--patch-size", "32"], {"val_psnr", "val_ssim", "noisy_psnr", "noisy_ssim"}),
    ("segvit", ["--limit", "8", "--patch-size", "16", "--embed-dim", "16", "--depth", "1"], {"val_dice", "val_iou"}),
    ("vae", ["--limit", "16"], {"train_recon", "train_kl", "val_recon", "val_kl", "val_ssim", "val_psnr"}),
    ("cvae", ["--limit", "16", "--digits", "3", "7"], {"val_recon", "val_kl", "val_ssim", "val_psnr"}),
])
def test_short_cli_run_writes_outputs(tmp_path, model, extra, keys):
    out = tmp_path / "run"
    assert cli.main(["train", model, "--epochs", "1", "--max-steps", "2", "--batch-size", "4", "--quiet",
                     "--out", str(out)] + extra) == 0
    figures = {"unet": {"test_cases.png"}, "segvit": {"test_cases.png"}, "vae": {"traversal.png"},
               "cvae": {"digits.png"}}.get(model, set())
    assert {"metrics.json", "checkpoint_epoch001.pt", "checkpoint_last.pt", "curves.png", "samples.png"} | figures \
        <= _outputs(out)
    metrics = json.loads((out / "metrics.json").read_text())
    (record,) = metrics["epochs"]
    assert metrics["model"] == model
    assert {"epoch", "train_loss", "time", "samples_per_s"} | keys <= set(record)
    assert record["epoch"] == 1 and np.isfinite(record["train_loss"])
    assert {k.replace("val_", "test_") for k in keys if k.startswith("val_")} <= set(metrics["test"])
    ckpt = torch.load(out / "checkpoint_epoch001.pt", weights_only=True)
    assert {"model", "optimizer", "epoch", "args", "rng"} <= set(ckpt) and ckpt["epoch"] == 1


def test_classifier_on_idx_data_via_cli(tmp_path):
    _mnist_folder(tmp_path / "fm", side=16)
    out = tmp_path / "run"
    assert main(["classifier", "--data", str(tmp_path / "fm"), "--epochs", "1", "--batch-size", "8", "--quiet",
                 "--out", str(out)]) == 0
    (record,) = json.loads((out / "metrics.json").read_text())["epochs"]
    assert 0.0 <= record["val_accuracy"] <= 1.0


def test_cvae_on_idx_data_via_cli(tmp_path):
    _mnist_folder(tmp_path / "fm", side=16)
    out = tmp_path / "run"
    assert main(["cvae", "--data", str(tmp_path / "fm"), "--epochs", "1", "--batch-size", "8", "--quiet",
                 "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["epochs"][0]["val_kl"] >= 0 and 0 < m["test"]["test_psnr"] and (out / "digits.png").is_file()
    code = main(["vae", "--data", str(tmp_path / "fm"), "--image-size", "14", "--out", str(out)])
    assert code == 2


def test_resume_continues_the_same_run(tmp_path):
    common = ["classifier", "--limit", "48", "--batch-size", "8", "--max-steps", "3", "--quiet", "--seed", "3"]
    full, part = tmp_path / "full", tmp_path / "part"
    assert main(common + ["--epochs", "3", "--out", str(full)]) == 0
    assert main(common + ["--epochs", "1", "--out", str(part)]) == 0
    assert main(["classifier", "--resume", str(part / "checkpoint_epoch001.pt"), "--epochs", "3"]) == 0
    a = torch.load(full / "checkpoint_epoch003.pt", weights_only=False)
    b = torch.load(part / "checkpoint_epoch003.pt", weights_only=False)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    ha, hb = (json.loads((d / "metrics.json").read_text())["epochs"] for d in (full, part))
    assert [r["epoch"] for r in hb] == [1, 2, 3]
    assert [r["train_loss"] for r in ha] == [r["train_loss"] for r in hb]
    assert [r["val_accuracy"] for r in ha] == [r["val_accuracy"] for r in hb]


def test_resume_errors(tmp_path, capsys):
    code, err = _run(["classifier", "--resume", str(tmp_path / "none.pt")], capsys)
    assert code == 2 and "does not exist" in err
    out = tmp_path / "r"
    assert main(["classifier", "--limit", "16", "--epochs", "1", "--max-steps", "1", "--quiet", "--out", str(out)]) == 0
    code, err = _run(["classifier", "--resume", str(out), "--seed", "5"], capsys)
    assert code == 2 and "--seed" in err
    code, err = _run(["unet", "--resume", str(out)], capsys)
    assert code == 2 and "'classifier' checkpoint" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on machines without CUDA")
def test_cuda_without_cuda_is_a_clear_error(tmp_path, capsys):
    code, err = _run(["classifier", "--device", "cuda", "--out", str(tmp_path)], capsys)
    assert code == 2 and "CUDA" in err and "Traceback" not in err


def test_amp_on_cpu_is_a_clear_error(tmp_path, capsys):
    code, err = _run(["denoiser", "--amp", "--out", str(tmp_path)], capsys)
    assert code == 2 and "float32/float64" in err


def test_denoiser_ssim_weight(tmp_path):
    pytest.importorskip("fastconv.nn.ssim", reason="fastconv.nn.ssim (SSIMLoss) not merged yet")
    out = tmp_path / "d"
    assert main(["denoiser", "--limit", "8", "--patch-size", "32", "--batch-size", "4", "--epochs", "1",
                 "--max-steps", "2", "--ssim-weight", "0.5", "--quiet", "--out", str(out)]) == 0
    (record,) = json.loads((out / "metrics.json").read_text())["epochs"]
    assert np.isfinite(record["train_loss"]) and record["val_ssim"] <= 1.0


# --------------------------------------------------------------------------- default-run bars (slow)


def _final(out):
    return json.loads((out / "metrics.json").read_text())["epochs"][-1]


@pytest.mark.slow
def test_default_classifier_reaches_95_percent(tmp_path):
    assert main(["classifier", "--quiet", "--out", str(tmp_path)]) == 0
    assert _final(tmp_path)["val_accuracy"] >= 0.95


@pytest.mark.slow
def test_default_unet_reaches_dice_070(tmp_path):
    assert main(["unet", "--quiet", "--out", str(tmp_path)]) == 0
    assert _final(tmp_path)["val_dice"] >= 0.70


@pytest.mark.slow
def test_default_segvit_reaches_dice_060(tmp_path):
    assert main(["segvit", "--quiet", "--out", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "metrics.json").read_text())["test"]["test_dice"] >= 0.60


@pytest.mark.slow
def test_default_cvae_ssim_is_at_least_the_vae_ssim(tmp_path):
    """The course work's finding: conditioning on the label does not cost reconstruction quality."""
    for model in ("vae", "cvae"):
        assert main([model, "--quiet", "--out", str(tmp_path / model)]) == 0
    vae, cvae = (json.loads((tmp_path / m / "metrics.json").read_text()) for m in ("vae", "cvae"))
    assert vae["test"]["test_ssim"] >= 0.8
    assert cvae["test"]["test_ssim"] >= vae["test"]["test_ssim"]
    assert cvae["epochs"][-1]["val_ssim"] >= vae["epochs"][-1]["val_ssim"]


@pytest.mark.slow
def test_default_denoiser_gains_3db(tmp_path):
    assert main(["denoiser", "--quiet", "--out", str(tmp_path)]) == 0
    r = _final(tmp_path)
    assert r["val_psnr"] >= r["noisy_psnr"] + 3.0
