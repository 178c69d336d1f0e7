"""`import fastconv` works on a read-only install with a read-only HOME and no NUMBA_CACHE_DIR
(containers, shared cluster installs): kernels cache under the temporary directory, or -- when
that is read-only too -- compile without a cache, with one warning."""
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import fastconv

SCRIPT = textwrap.dedent("""
    import warnings, torch
    warnings.simplefilter("always")
    with warnings.catch_warnings(record=True) as caught:
        import fastconv, fastconv.functional as F
        x = torch.randn(2, 3, 8, 8)
        y = F.conv2d(x, torch.randn(4, 3, 3, 3), padding=1)
        F.max_pool2d(y, 2)
    print("CACHE", fastconv._numba.CACHE_DIR)
    print("WARN", sum("NUMBA_CACHE_DIR" in str(w.message) for w in caught))
""")


def _read_only_copy(tmp_path: Path) -> Path:
    """A copy of the fastconv package (and kernels/) to be mounted read-only."""
    root = tmp_path / "site"
    src = Path(fastconv.__file__).resolve().parent
    shutil.copytree(src, root / "fastconv", ignore=shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc"))
    kernels = src.parent / "kernels"
    if kernels.is_dir():
        shutil.copytree(kernels, root / "kernels")
    return root


def _unshare_works() -> bool:
    if not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode == 0


def _run(root: Path, tmpdir: Path, tmp_read_only: bool):
    """Run SCRIPT with ``root`` (and, if asked, ``tmpdir``) read-only, HOME inside ``root``.

    Root writes through permission bits, so read-only means a read-only bind mount in a user
    and mount namespace (``unshare -rm``); without one, non-root users get ``chmod``.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_CACHE")}
    env.update(PYTHONPATH=str(root), HOME=str(root / "home"), TMPDIR=str(tmpdir), PYTHONDONTWRITEBYTECODE="1")
    if _unshare_works():
        # tempfile.gettempdir() falls back to /tmp, /var/tmp and the cwd when TMPDIR is read-only
        mounts = [root] + ([tmpdir, "/var/tmp", "/tmp"] if tmp_read_only else [])
        setup = " && ".join(f"mount --bind {p} {p} && mount -o remount,bind,ro {p}" for p in mounts)
        cmd = ["unshare", "-rm", "sh", "-c", f'{setup} && exec "$0" -c "$1"', sys.executable, SCRIPT]
    elif os.getuid() != 0:
        for d in [root, *root.rglob("*")]:
            d.chmod(0o555 if d.is_dir() else 0o444)
        if tmp_read_only:
            tmpdir.chmod(0o555)
        cmd = [sys.executable, "-c", SCRIPT]
    else:
        pytest.skip("running as root without user namespaces (unshare): cannot make a read-only install")
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=str(tmpdir))


def test_import_on_read_only_install_caches_in_tmp(tmp_path):
    root = _read_only_copy(tmp_path)
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    proc = _run(root, tmpdir, tmp_read_only=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"CACHE {tmpdir}" in proc.stdout and "WARN 0" in proc.stdout
    assert any(tmpdir.glob("fastconv-numba-cache-*/**/*.nbi"))


def test_import_with_nothing_writable_compiles_without_cache(tmp_path):
    root = _read_only_copy(tmp_path)
    tmpdir = tmp_path / "ro-tmp"
    tmpdir.mkdir()
    proc = _run(root, tmpdir, tmp_read_only=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "CACHE None" in proc.stdout and "WARN 1" in proc.stdout


def test_configure_cache_prefers_a_writable_location(tmp_path, monkeypatch):
    import numba

    from fastconv import _numba
    monkeypatch.setattr(numba.config, "CACHE_DIR", "")
    monkeypatch.setattr(_numba, "_writable", lambda path: path.startswith(str(tmp_path)))
    monkeypatch.setattr(_numba.tempfile, "gettempdir", lambda: str(tmp_path))
    assert _numba.configure_cache().startswith(str(tmp_path / "fastconv-numba-cache-"))
    assert numba.config.CACHE_DIR.startswith(str(tmp_path))
