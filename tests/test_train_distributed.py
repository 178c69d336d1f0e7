"""fastconv.train under torchrun (issue 17, item 1): DDP over gloo with 2 CPU processes.

``--batch-size`` is the global batch and the sample order does not depend on the number of
processes, so 1 and 2 processes train to the same weights within float32 rounding; only rank
0 writes; checkpoints resume across world sizes; a dead or hung process ends the job.
"""
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

from fastconv.train import distributed as D
from fastconv.train import main
from fastconv.train.engine import _shard

from train_helpers import (assert_close_state, deterministic, env, killer_script, load, metrics, torchrun)

#: 33 samples in batches of 8: the last global batch has one sample, so process 1 runs a
#: zero-weight stand-in there
CLASSIFIER = ["classifier", "--limit", "33", "--batch-size", "8", "--epochs", "2", "--seed", "1"]
#: Adam turns float32 round-off in near-zero gradients into visible steps: compare loosely
RTOL, ATOL = 1e-3, 1e-4


def _ok(proc):
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


# --------------------------------------------------------------------------- pieces


def test_shards_cover_the_global_batch_in_order():
    assert D.shard_bounds(9, 2) == [0, 4, 9] and D.shard_bounds(1, 3) == [0, 0, 0, 1]
    x, y = torch.arange(9), torch.arange(9) * 10
    pieces = [_shard([x, None, y], D.Dist(rank=r, world_size=2)) for r in range(2)]
    assert [p[0][0].tolist() for p in pieces] == [[0, 1, 2, 3], [4, 5, 6, 7, 8]]
    assert all(p[0][1] is None and not p[1] for p in pieces)
    # one sample for two processes: process 0 gets none and runs a zero-weight stand-in
    (sx, sy), empty = _shard([x[3:4], y[3:4]], D.Dist(rank=0, world_size=2))
    assert empty and sx.tolist() == [3] and sy.tolist() == [30]
    (sx, sy), empty = _shard([x[3:4], y[3:4]], D.Dist(rank=1, world_size=2))
    assert not empty and sx.tolist() == [3]


@pytest.fixture
def one_process_group(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_cpu_sync_batchnorm_is_batchnorm_in_one_process(one_process_group):
    torch.manual_seed(0)
    ref = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3)).double()
    sync = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3)).double()
    sync.load_state_dict(ref.state_dict())
    params = list(sync.parameters())
    D.convert_sync_batchnorm(sync, torch.device("cpu"))
    assert type(sync[1]) is D.SyncBatchNorm2d and list(sync.parameters()) == params
    x = torch.randn(4, 2, 7, 6, dtype=torch.float64)
    for step in range(3):
        xs = [x.clone().requires_grad_() for _ in range(2)]
        outs = [m(xi) for m, xi in zip((ref, sync), xs)]
        w = torch.randn_like(outs[0])
        for o in outs:
            (o * w).sum().backward()
        torch.testing.assert_close(outs[1], outs[0])
        torch.testing.assert_close(xs[1].grad, xs[0].grad)
        for a, b in zip(ref.parameters(), sync.parameters()):
            torch.testing.assert_close(b.grad, a.grad)
        for k, v in ref.state_dict().items():
            torch.testing.assert_close(sync.state_dict()[k], v, msg=k)
        x = x + 1
    sync.eval()
    torch.testing.assert_close(sync(x), ref.eval()(x))


# --------------------------------------------------------------------------- 1 vs 2 processes


@pytest.fixture(scope="module")
def classifier_runs(tmp_path_factory):
    """The same classifier run on one process (in this process) and on two (torchrun)."""
    root = tmp_path_factory.mktemp("classifier")
    assert main(CLASSIFIER + ["--quiet", "--out", str(root / "one")]) == 0
    two = _ok(torchrun(2, CLASSIFIER + ["--out", str(root / "two")]))
    return root, two


def _assert_runs_match(one, two, epoch=2):
    a, b = load(one / f"checkpoint_epoch{epoch:03d}.pt"), load(two / f"checkpoint_epoch{epoch:03d}.pt")
    assert_close_state(a["model"], b["model"], RTOL, ATOL)
    ha, hb = deterministic(metrics(one)["epochs"]), deterministic(metrics(two)["epochs"])
    assert [r["epoch"] for r in ha] == [r["epoch"] for r in hb]
    for ra, rb in zip(ha, hb):
        for k in ra:
            assert rb[k] == pytest.approx(ra[k], rel=1e-4, abs=1e-5), k
    return a, b


def test_two_processes_train_the_classifier_like_one(classifier_runs):
    root, two = classifier_runs
    a, b = _assert_runs_match(root / "one", root / "two")
    assert a["world_size"] == 1 and b["world_size"] == 2
    assert metrics(root / "two")["test"]["test_accuracy"] == metrics(root / "one")["test"]["test_accuracy"]


def test_only_rank_0_writes_and_reports(classifier_runs):
    root, two = classifier_runs
    assert {p.name for p in (root / "two").iterdir()} == {p.name for p in (root / "one").iterdir()}
    assert two.stderr.count("fastconv train classifier:") == 1 and "x 2 processes" in two.stderr
    for epoch in (1, 2):
        assert two.stderr.count(f"epoch {epoch}/2: train_loss") == 1
    assert two.stderr.count("test: test_loss") == 1


def test_resume_from_two_processes_on_one(classifier_runs, tmp_path):
    root, _ = classifier_runs
    out = tmp_path / "resumed"
    assert main(["classifier", "--resume", str(root / "two" / "checkpoint_epoch001.pt"), "--out", str(out),
                 "--quiet"]) == 0
    _assert_runs_match(root / "one", out)


def test_resume_from_one_process_on_two_through_the_fastconv_command(classifier_runs, tmp_path):
    root, _ = classifier_runs
    out = tmp_path / "resumed"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
                           "--nproc_per_node", "2", "-m", "fastconv.cli", "train", "classifier", "--resume",
                           str(root / "one" / "checkpoint_epoch001.pt"), "--out", str(out), "--quiet"],
                          env=env(OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=180)
    _ok(proc)
    assert load(out / "checkpoint_epoch002.pt")["world_size"] == 2
    _assert_runs_match(root / "one", out)


def test_two_processes_train_the_denoiser_like_one(tmp_path):
    argv = ["denoiser", "--limit", "12", "--patch-size", "16", "--batch-size", "6", "--epochs", "1", "--seed", "2",
            "--quiet"]
    assert main(argv + ["--out", str(tmp_path / "one")]) == 0
    _ok(torchrun(2, argv + ["--out", str(tmp_path / "two")]))
    _assert_runs_match(tmp_path / "one", tmp_path / "two", epoch=1)


@pytest.mark.slow
def test_two_processes_train_the_unet_like_one(tmp_path):
    """With SyncBatchNorm (and a stand-in sample in the last batch), the Dice agrees closely."""
    argv = ["unet", "--limit", "33", "--patch-size", "16", "--base", "4", "--depth", "2", "--batch-size", "8",
            "--epochs", "3", "--quiet"]
    assert main(argv + ["--out", str(tmp_path / "one")]) == 0
    _ok(torchrun(2, argv + ["--out", str(tmp_path / "two")]))
    one, two = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    for ra, rb in zip(one["epochs"], two["epochs"]):
        assert rb["train_loss"] == pytest.approx(ra["train_loss"], rel=1e-3)
        assert abs(rb["val_dice"] - ra["val_dice"]) < 0.01
    assert abs(two["test"]["test_dice"] - one["test"]["test_dice"]) < 0.01


# --------------------------------------------------------------------------- failures


def test_a_killed_process_ends_the_job(tmp_path):
    t0 = time.monotonic()
    proc = torchrun(2, CLASSIFIER + ["--epochs", "50", "--quiet", "--out", str(tmp_path / "run")],
                    script=killer_script(tmp_path), timeout=120, KILL_RANK="1", KILL_STEP="3")
    assert proc.returncode != 0 and time.monotonic() - t0 < 90
    assert "FAILED" in proc.stderr and "rank      : 1" in proc.stderr and "SIGKILL" in proc.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_a_hung_process_times_the_job_out(tmp_path):
    """Without torchrun's agent (as on another host), the survivor's own timeout ends it."""
    port, script = str(_free_port()), killer_script(tmp_path)
    procs = [subprocess.Popen([sys.executable, str(script)] + CLASSIFIER + [
        "--epochs", "50", "--quiet", "--dist-timeout", "5", "--out", str(tmp_path / "run")],
        env=env(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=port,
                OMP_NUM_THREADS="1", KILL_RANK="1", KILL_STEP="3", KILL_SIGNAL="STOP"),
        stderr=subprocess.PIPE, text=True) for r in range(2)]
    try:
        err = procs[0].communicate(timeout=120)[1]
        assert procs[0].returncode == 1, err
        assert "fastconv train: error: process 0 of 2 lost the job" in err and "--dist-timeout 5 s" in err
        assert "Traceback" not in err
    finally:
        for p in procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
            p.communicate()
