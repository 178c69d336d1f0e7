"""``fastconv bench``: the CLI on a tiny grid prints the table and writes bench.png/bench.json."""
from __future__ import annotations

import json

import numpy as np
import pytest

from fastconv import bench, cli

SIZES, KERNELS = [16, 24], [3, 4]


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    import io
    from contextlib import redirect_stdout
    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = cli.main(["bench", "--sizes", "16,24", "--kernels", "3,4", "--repeat", "1",
                       "--budget", "0.001", "--dtype", "float64", "--out", str(out)])
    return rc, buf.getvalue(), out


def test_exit_code_and_files(bench_run):
    rc, _, out = bench_run
    assert rc == 0
    png = (out / "bench.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_json_structure(bench_run):
    _, _, out = bench_run
    data = json.loads((out / "bench.json").read_text())
    assert data["dtype"] == "float64" and data["device"] == "cpu" and data["repeat"] == 1
    assert data["figure"] == "bench.png"
    impls = data["implementations"]
    assert impls[0] == "fastconv" and {"scipy", "torch"} <= set(impls)
    assert [(r["size"], r["kernel"]) for r in data["rows"]] == [(s, k) for s in SIZES for k in KERNELS]
    for row in data["rows"]:
        assert set(row["times_s"]) == set(impls)
        assert all(0 < t < 10 for t in row["times_s"].values())
        assert set(row["speedup"]) == set(impls) - {"fastconv"}
        for peer, ratio in row["speedup"].items():
            assert ratio == pytest.approx(row["times_s"][peer] / row["times_s"]["fastconv"])
        # every implementation computed the same convolution (checked before timing)
        assert all(e < 1e-12 for e in row["max_rel_error"].values())
    assert "torch" in data["environment"] and "scipy" in data["environment"]


def test_table_printed(bench_run):
    _, text, out = bench_run
    lines = text.splitlines()
    header = next(line for line in lines if line.split()[:2] == ["size", "kernel"])
    for col in ["fastconv(ms)", "scipy(ms)", "torch(ms)", "xscipy", "xtorch"]:
        assert col in header.split()
    data = json.loads((out / "bench.json").read_text())
    rows = [line.split() for line in lines if line.split() and line.split()[0].isdigit()]
    assert [(int(r[0]), int(r[1])) for r in rows] == [(s, k) for s in SIZES for k in KERNELS]
    ncols = len(header.split())
    for cells, row in zip(rows, data["rows"]):
        assert len(cells) == ncols
        # the printed fastconv time (ms) and the speedup over scipy match the JSON
        assert float(cells[2]) == pytest.approx(row["times_s"]["fastconv"] * 1e3, abs=1e-3)
        i = header.split().index("xscipy")
        assert float(cells[i]) == pytest.approx(row["speedup"]["scipy"], abs=0.01)


def test_torch_padding_matches_scipy_for_even_kernels():
    import scipy.signal as ss
    rng = np.random.default_rng(0)
    a, w = rng.standard_normal((9, 11)), rng.standard_normal((4, 4))
    fns = bench._callables(a, w, ["torch"])
    got = bench._as_numpy(fns["torch"]())
    np.testing.assert_allclose(got, ss.convolve2d(a, w, "same"), rtol=1e-12, atol=1e-12)


def test_cuda_request_without_cuda_is_a_clear_error(capsys, tmp_path):
    from fastconv._backend import cuda_available
    if cuda_available():
        pytest.skip("CUDA is available here")
    rc = bench.main(["--device", "cuda", "--sizes", "16", "--kernels", "3", "--out", str(tmp_path)])
    assert rc == 2
    assert "--device cuda" in capsys.readouterr().err
    assert not (tmp_path / "bench.json").exists()


def test_bad_grid_argument(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--sizes", "0,x"])
    assert "expected" in capsys.readouterr().err
