"""fastconv.train: training that loses nothing (issue 16, item 7) and bad numeric options (item 4).

A run killed with SIGKILL at a random step, or in the middle of writing a checkpoint, and
restarted with ``--resume`` ends bit-identical to the uninterrupted run; checkpoints and
metrics are written atomically; unusable checkpoints and changed options are clear errors.
"""
import pickle
import random
import signal

import pytest
import torch

from fastconv.train import checkpoint as C
from fastconv.train import main

from train_helpers import assert_same_state, deterministic, load, metrics, run_killed

#: a classifier run of 2 epochs x 5 steps, with augmentation (its draws must resume too)
RUN = ["classifier", "--limit", "40", "--batch-size", "8", "--epochs", "2", "--seed", "3", "--augment",
       "--save-every", "2", "--quiet"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run."""
    out = tmp_path_factory.mktemp("reference")
    assert main(RUN + ["--out", str(out)]) == 0
    return out


def _assert_same_run(a, b):
    ca, cb = load(a / "checkpoint_epoch002.pt"), load(b / "checkpoint_epoch002.pt")
    assert_same_state(ca["model"], cb["model"])
    for sa, sb in zip(ca["optimizer"]["state"].values(), cb["optimizer"]["state"].values()):
        assert_same_state(sa, sb)
    ma, mb = metrics(a), metrics(b)
    assert deterministic(ma["epochs"]) == deterministic(mb["epochs"])
    assert ma["test"] == mb["test"]


def test_sigkill_at_a_random_step_then_resume_is_bit_identical(tmp_path, reference):
    step = random.SystemRandom().randrange(1, 11)  # any of the 10 steps, the first included
    out = tmp_path / "run"
    proc = run_killed(tmp_path, RUN + ["--out", str(out)], KILL_STEP=str(step))
    assert proc.returncode == -signal.SIGKILL, f"step {step}: {proc.stderr[-2000:]}"
    assert main(["classifier", "--resume", str(out)]) == 0, f"killed at step {step}"
    _assert_same_run(reference, out)


@pytest.mark.parametrize("save", [2, 4])  # the 2nd write: mid-epoch (step 2); the 4th: epoch 1's checkpoint
def test_sigkill_while_writing_a_checkpoint_then_resume_is_bit_identical(tmp_path, reference, save):
    out = tmp_path / "run"
    proc = run_killed(tmp_path, RUN + ["--out", str(out)], KILL_SAVE=str(save))
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert list(out.glob(".*.tmp")), "the cut-off write should have left its temporary file"
    for ckpt in out.glob("checkpoint_*.pt"):
        C.load_checkpoint(ckpt)  # every visible checkpoint is whole
    assert main(["classifier", "--resume", str(out)]) == 0
    assert not list(out.glob(".*.tmp"))
    _assert_same_run(reference, out)


def test_mid_epoch_checkpoint_holds_the_position(tmp_path):
    out = tmp_path / "run"
    proc = run_killed(tmp_path, RUN + ["--out", str(out)], KILL_STEP="4")
    assert proc.returncode == -signal.SIGKILL
    ckpt = C.load_checkpoint(out / C.LAST)
    # written after step 2 (--save-every 2); killed before step 4 could be saved
    assert (ckpt["epoch"], ckpt["position"], ckpt["steps"], ckpt["seen"]) == (0, 16, 2, 16)
    assert isinstance(ckpt["generator"], torch.Tensor) and set(ckpt["sums"]) == {"loss"}
    assert C.find_checkpoint(out) == out / C.LAST


def test_atomic_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "f.bin"
    C.atomic_write_text(path, "old")

    def fail(fh):
        fh.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        C.atomic_write(path, fail)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.bin"]
    C.atomic_write_text(path, "new")
    assert path.read_text() == "new"


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished")
    assert main(["classifier", "--limit", "16", "--epochs", "1", "--max-steps", "1", "--seed", "3", "--quiet",
                 "--out", str(out)]) == 0
    return out


def _run(argv, capsys):
    code = main(argv)
    return code, capsys.readouterr().err


def test_truncated_checkpoint_names_the_file(tmp_path, finished, capsys):
    bad = tmp_path / "cut.pt"
    raw = (finished / "checkpoint_epoch001.pt").read_bytes()
    for size in (len(raw) // 2, 10, 0):
        bad.write_bytes(raw[:size])
        code, err = _run(["classifier", "--resume", str(bad)], capsys)
        assert code == 2 and str(bad) in err and "truncated or corrupt" in err and "Traceback" not in err


def test_foreign_checkpoints_name_the_file(tmp_path, finished, capsys):
    state = tmp_path / "state_dict.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), state)
    module = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(2, 2), module)
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    pickled = tmp_path / "pickle.pt"
    pickled.write_bytes(pickle.dumps({"model_name": "classifier"}))
    for path, why in ((state, "without format"), (module, "Python objects"), (text, "truncated or corrupt"),
                      (pickled, "not a checkpoint at all")):
        code, err = _run(["classifier", "--resume", str(path)], capsys)
        assert code == 2 and str(path) in err and why in err and "Traceback" not in err, err


def test_checkpoint_that_does_not_fit_the_model(tmp_path, finished, capsys):
    ckpt = C.load_checkpoint(finished / "checkpoint_epoch001.pt")
    ckpt["model"]["head.3.weight"] = torch.zeros(3, 128)
    path = tmp_path / "edited.pt"
    C.save_checkpoint({k: v for k, v in ckpt.items() if k not in ("format", "version")}, path)
    code, err = _run(["classifier", "--resume", str(path), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and str(path) in err and "do not fit" in err and "head.3.weight" in err


def test_resume_says_every_option_that_differs(finished, capsys):
    code, err = _run(["classifier", "--resume", str(finished), "--seed", "5", "--limit", "8", "--split", "0.5",
                      "0.25", "0.25"], capsys)
    assert code == 2
    for line in ("--seed 5 (checkpoint: 3)", "--limit 8 (checkpoint: 16)",
                 "--split 0.5 0.25 0.25 (checkpoint: 0.6 0.2 0.2)"):
        assert line in err, err
    code, err = _run(["unet", "--resume", str(finished)], capsys)
    assert code == 2 and "is a 'classifier' checkpoint, not 'unet'" in err


def test_resume_notes_changed_training_options(tmp_path, finished, capsys):
    code, err = _run(["classifier", "--resume", str(finished), "--epochs", "2", "--lr", "0.01", "--out",
                      str(tmp_path / "more")], capsys)
    assert code == 0
    assert "changed options" in err and "--lr 0.01 (checkpoint: 0.002)" in err and "--epochs 2 (checkpoint: 1)" in err
    assert [r["epoch"] for r in metrics(tmp_path / "more")["epochs"]] == [1, 2]


def test_resume_from_an_empty_folder(tmp_path, capsys):
    code, err = _run(["classifier", "--resume", str(tmp_path)], capsys)
    assert code == 2 and "no checkpoint_last.pt or checkpoint_epoch*.pt" in err


@pytest.mark.parametrize("argv,message", [
    (["--lr", "-1"], "argument --lr: must be a finite number > 0, got -1"),
    (["--lr", "0"], "argument --lr: must be a finite number > 0"),
    (["--lr", "nan"], "argument --lr: must be a finite number > 0"),
    (["--lr", "fast"], "argument --lr: expected a finite number > 0, got 'fast'"),
    (["--epochs", "0"], "argument --epochs: must be an integer >= 1, got 0"),
    (["--batch-size", "-4"], "argument --batch-size: must be an integer >= 1"),
    (["--limit", "0"], "argument --limit: must be an integer >= 1"),
    (["--max-steps", "-1"], "argument --max-steps: must be an integer >= 1"),
    (["--seed", "-1"], "argument --seed: must be an integer >= 0"),
    (["--sigma", "-0.1"], "argument --sigma: must be a finite number >= 0"),
    (["--dice-weight", "inf"], "argument --dice-weight: must be a finite number >= 0"),
    (["--save-every", "-2"], "argument --save-every: must be an integer >= 0"),
    (["--dist-timeout", "0"], "argument --dist-timeout: must be a finite number > 0"),
    (["--split", "0.5", "0.5", "0.5"], "argument --split: the fractions must add up to 1"),
    (["--split", "1", "0", "0"], "argument --split: must be a fraction between 0 and 1"),
])
def test_bad_numeric_options_are_argparse_errors(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        main(["classifier", "--out", str(tmp_path)] + argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and message in err and "usage: fastconv train" in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())
