"""The pool of output storages (:mod:`fastconv.cpu._outputs`): a storage is handed out again only
when nothing refers to it, outputs are plain tensors, and the pool stays within its bound."""
import os
import subprocess
import sys
import threading
from typing import List

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import fastconv
from fastconv.cpu import _outputs

# sizes (elements) no other test allocates through the pool, so that the buckets are this test's own
BIG = (1, 7, 211, 223)
NUMEL = int(np.prod(BIG))


def test_a_storage_is_reused_only_once_nothing_refers_to_it():
    a = _outputs.empty(BIG, torch.float32)
    ptr = a.data_ptr()
    holders = {
        "view": lambda t: t[0, 1:3],
        "reshape": lambda t: t.reshape(-1),
        "numpy": lambda t: t.numpy(),
        "dlpack": lambda t: torch.utils.dlpack.to_dlpack(t),
        "saved for backward": lambda t: t.requires_grad_(True).square().grad_fn,
    }
    for name, hold in holders.items():
        held = hold(a)
        del a
        b = _outputs.empty(BIG, torch.float32)
        assert b.data_ptr() != ptr, name  # the storage is still referred to: a new one
        del held, b
        a = _outputs.empty(BIG, torch.float32)
        assert a.data_ptr() == ptr, name  # every reference gone: the same storage again
        a.requires_grad_(False)


def test_outputs_are_plain_contiguous_tensors():
    t = _outputs.empty(BIG, torch.float64)
    assert t.shape == BIG and t.dtype == torch.float64 and t.is_contiguous() and not t._is_view()
    assert t.storage_offset() == 0 and t.untyped_storage().nbytes() == NUMEL * 8
    t.fill_(3.0)
    t.resize_(2 * NUMEL)  # a plain tensor: it may grow (onto a storage of its own)
    assert t.numel() == 2 * NUMEL


def test_sizes_share_storages_across_dtypes():
    a = _outputs.empty((2 * NUMEL,), torch.float32)
    ptr = a.data_ptr()
    del a
    b = _outputs.empty((NUMEL,), torch.float64)  # the same bytes
    assert b.data_ptr() == ptr
    b.copy_(torch.arange(NUMEL, dtype=torch.float64))
    assert torch.equal(b, torch.arange(NUMEL, dtype=torch.float64))


def test_small_outputs_come_from_torch():
    before = _outputs.held_bytes()
    t = _outputs.empty((7, 13), torch.float32)
    s = _outputs.new(torch.zeros(1), (5, 5), 25)
    assert t.shape == (7, 13) and s.shape == (5, 5)
    assert _outputs.held_bytes() == before


def test_the_bound_evicts_free_storages_then_falls_back(monkeypatch):
    fastconv.empty_cache()  # the pool now holds live storages only
    h0 = _outputs.held_bytes()
    size = NUMEL * 4
    a = _outputs.empty(BIG, torch.float32)
    del a  # pooled, free
    other = (1, 5, 211, 223)
    monkeypatch.setattr(_outputs, "POOL_MAX_BYTES", h0 + size + 1024)
    b = _outputs.empty(other, torch.float32)  # over the bound: the free storage makes room
    assert _outputs.held_bytes() == h0 + b.numel() * 4
    c = _outputs.empty(BIG, torch.float32)  # b is alive, nothing to evict: a plain tensor
    assert _outputs.held_bytes() == h0 + b.numel() * 4
    c.fill_(1.0)
    b.fill_(2.0)
    assert float(c.sum()) == NUMEL and float(b[0, 0, 0, 0]) == 2.0


def test_threads_never_share_a_live_storage():
    errors = []

    def work(k: int) -> None:
        for i in range(60):
            t = _outputs.empty(BIG, torch.float32)
            t.fill_(k * 1000 + i)
            kept = [_outputs.empty(BIG, torch.float32).fill_(-k) for _ in range(2)]
            if not (torch.all(t == k * 1000 + i) and all(torch.all(u == -k) for u in kept)):
                errors.append(k)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(1, 5)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []


def test_empty_cache_drops_free_storages_and_keeps_live_ones():
    live = _outputs.empty(BIG, torch.float32).fill_(5.0)
    dead = _outputs.empty(BIG, torch.float32)
    del dead
    fastconv.empty_cache()
    held = _outputs.held_bytes()
    assert held >= live.numel() * 4
    assert float(live.mean()) == 5.0
    # the only BIG storage left is the live one: the next output gets a new storage
    again = _outputs.empty(BIG, torch.float32)
    assert again.data_ptr() != live.data_ptr() and _outputs.held_bytes() == held + NUMEL * 4


def test_kernel_outputs_take_the_pool_and_stay_exact():
    """Large outputs of the conv, BatchNorm and pooling kernels come from the pool (reused step to
    step) and are ordinary autograd outputs: modified in place, they still give torch's gradients."""
    torch.manual_seed(0)
    x = torch.randn(2, 8, 96, 96, dtype=torch.float64, requires_grad=True)
    w = torch.randn(8, 8, 3, 3, dtype=torch.float64, requires_grad=True)
    grads, ptrs = [], []
    for _ in range(2):
        y = fastconv.functional.conv2d(x, w, padding=1)
        ptrs.append(y.data_ptr())
        y.relu_()  # in place on a custom op's output: allowed (not a view)
        p = fastconv.functional.max_pool2d(y, 2)
        p.square().sum().backward()
        grads.append((x.grad.clone(), w.grad.clone()))
        x.grad = w.grad = None
        del y, p
    assert ptrs[0] == ptrs[1]
    xr, wr = x.detach().clone().requires_grad_(True), w.detach().clone().requires_grad_(True)
    F.max_pool2d(F.conv2d(xr, wr, padding=1).relu_(), 2).square().sum().backward()
    for gx, gw in grads:
        torch.testing.assert_close(gx, xr.grad)
        torch.testing.assert_close(gw, wr.grad)


def test_the_environment_turns_the_pool_off():
    code = ("import torch; from fastconv.cpu import _outputs as o; t = o.empty((1 << 20,), torch.float32); "
            "print(o.POOL_MAX_BYTES, o.held_bytes())")
    env = dict(os.environ, FASTCONV_OUTPUT_POOL_MB="0")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0", "0"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_new_matches_the_template(dtype):
    like = torch.zeros(1, dtype=dtype)
    for shape in [(3, 4), BIG]:
        t = _outputs.new(like, shape, int(np.prod(shape)))
        assert t.shape == shape and t.dtype == dtype and t.is_contiguous()


def test_a_storage_resized_by_its_user_leaves_the_pool():
    a = _outputs.empty(BIG, torch.float32)
    ptr, held = a.data_ptr(), _outputs.held_bytes()
    a.untyped_storage().resize_(0)  # as FSDP-style code frees a parameter's storage
    del a
    b = _outputs.empty(BIG, torch.float32)
    assert b.data_ptr() != ptr and b.untyped_storage().nbytes() == NUMEL * 4
    assert _outputs.held_bytes() == held  # the resized storage dropped, a new one pooled
    b.fill_(1.0)
    assert float(b.sum()) == NUMEL


def test_the_pool_is_on_with_this_torch():
    """The reference count the pool relies on behaves as checked at import (else outputs would
    silently come from torch: correct, but without the pool)."""
    assert _outputs._use_count is not None


def test_a_storage_sent_to_another_process_leaves_the_pool():
    """A tensor put in shared memory (as ``torch.multiprocessing`` does to send it, e.g. from a
    DataLoader worker) may still be read by the receiver after the sender drops it."""
    a = _outputs.empty(BIG, torch.float32).fill_(7.0)
    held = _outputs.held_bytes()
    a.share_memory_()
    shared = a.untyped_storage()
    del a
    b = _outputs.empty(BIG, torch.float32).fill_(1.0)
    assert b.data_ptr() != shared.data_ptr() and _outputs.held_bytes() == held  # dropped, a new one pooled
    assert float(torch.empty((0,)).set_(shared, 0, BIG).mean()) == 7.0  # what the receiver reads, untouched


def _vma_flags(address: int) -> List[str]:
    """The ``VmFlags`` of this process's mapping that holds ``address`` (Linux's ``/proc/self/smaps``)."""
    inside = False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                lo, hi = (int(v, 16) for v in head.split("-"))
                inside = lo <= address < hi
            elif inside and head == "VmFlags:":
                return line.split()[1:]
    raise AssertionError(f"no mapping holds {address:#x}")


@pytest.mark.skipif(_outputs._libc_madvise is None, reason="no madvise(MADV_HUGEPAGE) on this platform")
def test_pooled_storages_are_advised_onto_huge_pages():
    """A new pooled storage's whole 2 MiB pages carry the huge-page advice (VmFlags ``hg``)."""
    out = _outputs.empty((3, 1 << 20), torch.float32)  # 12 MiB: at least five whole huge pages
    huge = _outputs._HUGE
    inner = -(-out.data_ptr() // huge) * huge
    assert "hg" in _vma_flags(inner) and "hg" in _vma_flags(inner + 4 * huge)
    out.fill_(1.0)
    assert float(out.sum()) == 3 * (1 << 20)
