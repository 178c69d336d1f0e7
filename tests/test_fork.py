"""Forked workers (DataLoader workers, multiprocessing fork pools) can call every kernel family
after the parent has used them: the parent's pool threads do not exist in the child, so the
child must start its own.  Each scenario runs in a subprocess with a timeout, so a regression
fails instead of hanging the suite."""
import subprocess
import sys
import textwrap

import pytest

PARENT_WARMUP = """
import numpy as np, torch
import fastconv, fastconv.functional as F
from fastconv import filters
from fastconv._threads import parallel_ranges
torch.manual_seed(0)
x = torch.randn(32, 16, 32, 32, requires_grad=True)
w = torch.randn(16, 16, 3, 3, requires_grad=True)
# every kernel family, big enough to use the thread pool
(F.max_pool2d(F.conv2d(x, w, padding=1), 2).sum() + F.avg_pool2d(x, 2).sum()
 + F.adaptive_avg_pool2d(x, 1).sum() + F.conv_transpose2d(x, w, stride=2).sum()).backward()
fastconv.ssim(torch.rand(8, 3, 64, 64), torch.rand(8, 3, 64, 64))
filters.filter2d(np.random.rand(512, 512), filters.gaussian_kernel(31, 5.0), method="direct")
parallel_ranges(lambda a, b: None, 4, 2)

def work(i):
    # torch's own OpenMP pool cannot survive a fork after the parent used it (a libgomp limit,
    # with or without fastconv); DataLoader workers set one thread themselves.
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(i)
    img = torch.rand(1, 3, 64, 64, generator=g)
    k = torch.rand(4, 3, 3, 3, generator=g)
    out = F.conv2d(img.expand(64, -1, -1, -1).contiguous(), k, padding=1)  # big enough to use the pool
    blurred = filters.filter2d(np.random.default_rng(i).random((400, 400)), filters.gaussian_kernel(15, 3.0))
    return float(out.sum()) + float(blurred.sum())
"""


def _run(body: str) -> str:
    code = PARENT_WARMUP + textwrap.dedent(body)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.skipif(sys.platform == "win32", reason="fork start method is POSIX only")
def test_dataloader_fork_workers_after_parent_used_every_kernel():
    out = _run("""
        class DS(torch.utils.data.Dataset):
            def __len__(self):
                return 6
            def __getitem__(self, i):
                return torch.tensor(work(i))
        loader = torch.utils.data.DataLoader(DS(), batch_size=2, num_workers=2,
                                             multiprocessing_context="fork")
        got = torch.cat(list(loader))
        want = torch.tensor([work(i) for i in range(6)])
        assert torch.allclose(got, want), (got, want)
        print("ok")
    """)
    assert out.strip().endswith("ok")


@pytest.mark.skipif(sys.platform == "win32", reason="fork start method is POSIX only")
def test_multiprocessing_fork_pool_after_parent_used_every_kernel():
    out = _run("""
        import multiprocessing as mp
        with mp.get_context("fork").Pool(2) as pool:
            got = pool.map(work, range(4))
        assert np.allclose(got, [work(i) for i in range(4)])
        print("ok")
    """)
    assert out.strip().endswith("ok")


@pytest.fixture(params=["openmp", "python"])
def threads_backend(request, monkeypatch):
    """Both ways of running ranges: torch's libgomp team and fastconv's own threads."""
    from fastconv import _threads

    if request.param == "python":
        monkeypatch.setattr(_threads, "_omp", None)
    elif _threads._omp is None:
        assert _threads._find_libgomp() is None, "torch's libgomp is loaded but not used"
        pytest.skip("this torch has no GNU OpenMP runtime: only fastconv's own threads exist here")
    return request.param


def test_pool_is_thread_safe_and_propagates_errors(threads_backend):
    import threading

    from fastconv._threads import backend, parallel_ranges

    assert backend() == threads_backend
    seen = []
    lock = threading.Lock()

    def record(lo, hi):
        with lock:
            seen.append((lo, hi))

    threads = [threading.Thread(target=parallel_ranges, args=(record, 100, 3)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(seen) == sorted([(0, 33), (33, 66), (66, 100)] * 8)

    def fail(lo, hi):
        if lo:
            raise ValueError(f"range {lo}")

    with pytest.raises(ValueError, match="range"):
        parallel_ranges(fail, 10, 2)


def test_ranges_run_on_two_threads_and_nest(threads_backend):
    """Two ranges run concurrently on two OS threads; a parallel call inside a range (an inner
    OpenMP region has a team of one) still covers every range."""
    import threading
    import time

    from fastconv._threads import parallel_ranges

    tids, inner = set(), []
    lock = threading.Lock()

    def outer(lo, hi):
        with lock:
            tids.add(threading.get_native_id())
        time.sleep(0.05)  # both ranges in flight at once, if there are two threads
        parallel_ranges(lambda a, b: inner.append((lo, a, b)), 4, 2)

    parallel_ranges(outer, 2, 2)
    assert len(tids) == 2
    assert sorted(inner) == [(0, 0, 2), (0, 2, 4), (1, 0, 2), (1, 2, 4)]


def test_openmp_backend_is_torchs_libgomp():
    """Where torch runs on GNU OpenMP (Linux wheels), the kernels share its team."""
    import torch

    from fastconv import _threads

    path = _threads._find_libgomp()
    if path is None:
        assert _threads.backend() == "python"
        return
    assert _threads.backend() == "openmp" and "OpenMP" in torch.__config__.parallel_info()
