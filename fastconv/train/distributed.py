"""Multi-process training with torch.distributed, as launched by ``torchrun``.

* :func:`setup` joins the process group that torchrun's environment describes (gloo on the
  CPU, NCCL on CUDA) with a timeout, so a process that dies or hangs fails the job instead
  of blocking the others for good;
* :func:`shard` cuts a global batch into one contiguous piece per process; every process
  draws the same global batch and augmentation, so the samples (and their order) do not
  depend on the number of processes;
* :func:`convert_sync_batchnorm` makes BatchNorm layers normalise with the global batch's
  statistics: torch's ``SyncBatchNorm`` on CUDA, and on the CPU (where torch's needs a GPU)
  :class:`SyncBatchNorm2d`, which sums the statistics over the processes with a
  differentiable all-reduce.
"""
from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .errors import JobError, first_line


@dataclass
class Dist:
    """Where this process stands in the job: ``rank`` of ``world_size``, and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        """True on the one process (rank 0) that writes files and prints progress."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        """True when there is a process group to talk to (more than one process)."""
        return self.world_size > 1


def launched_world_size() -> int:
    """The number of processes torchrun started (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def setup(device: str, timeout_s: float) -> Dist:
    """Join the job torchrun described in the environment (``RANK``, ``WORLD_SIZE``,
    ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``); without torchrun, or with one process,
    returns a one-process :class:`Dist` and creates no process group.

    ``device`` is ``'cpu'`` (gloo) or ``'cuda'`` (NCCL, one GPU per process: ``cuda:LOCAL_RANK``).
    Every collective then waits at most ``timeout_s`` seconds for the other processes.
    """
    world = launched_world_size()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device("cuda", local) if device == "cuda" else torch.device("cpu")
    if world <= 1:
        return Dist(device=torch.device("cuda") if device == "cuda" else dev)
    if device == "cpu":
        share_cpu_threads(int(os.environ.get("LOCAL_WORLD_SIZE", str(world))))
    else:
        torch.cuda.set_device(dev)
        # NCCL reports a dead peer through its watchdog only when asked to fail fast
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
    dist.init_process_group("nccl" if device == "cuda" else "gloo",
                            timeout=datetime.timedelta(seconds=timeout_s))
    return Dist(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local, device=dev)


def share_cpu_threads(processes: int) -> int:
    """Give each of ``processes`` processes on this host an equal share of its cores for
    fastconv's kernels (``numba.set_num_threads``) and torch's (``torch.set_num_threads``),
    unless ``NUMBA_NUM_THREADS`` / ``OMP_NUM_THREADS`` say otherwise; returns the share."""
    import numba

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - no sched_getaffinity (macOS)
        cores = os.cpu_count() or 1
    share = max(1, cores // max(1, processes))
    if "NUMBA_NUM_THREADS" not in os.environ:
        numba.set_num_threads(min(share, numba.config.NUMBA_NUM_THREADS))
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(share)
    return share


def teardown(info: Dist) -> None:
    """Leave the process group (after a barrier, so no process exits while others still talk)."""
    if info.active and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def shard_bounds(n: int, world_size: int) -> List[int]:
    """``world_size + 1`` cut points splitting ``n`` items into contiguous, near-equal pieces."""
    return [n * r // world_size for r in range(world_size + 1)]


def shard(tensors: Sequence[Tensor], info: Dist) -> List[Tensor]:
    """This process's contiguous piece of each (global batch) tensor, cut along dim 0."""
    if not info.active:
        return list(tensors)
    cuts = shard_bounds(len(tensors[0]), info.world_size)
    lo, hi = cuts[info.rank], cuts[info.rank + 1]
    return [t[lo:hi] for t in tensors]


def all_sum(values: Tensor, info: Dist) -> Tensor:
    """The sum of the CPU tensor ``values`` over all processes, on the CPU (``values`` itself with
    one process).  Under NCCL the sum travels through this process's GPU."""
    if not info.active:
        return values
    summed = values.to(info.device, copy=True)
    dist.all_reduce(summed)
    return summed.cpu()


def barrier(info: Dist) -> None:
    """Wait for every process (no-op with one)."""
    if info.active:
        dist.barrier()


# --------------------------------------------------------------------------- SyncBatchNorm on the CPU


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes, differentiable: the gradient of a sum is the sum of the gradients."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        out = x.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


_EMPTY_SHARD = [False]


@contextlib.contextmanager
def empty_shard() -> Iterator[None]:
    """While active, :class:`SyncBatchNorm2d` layers add nothing (no samples, no sums) to the
    global statistics: for a process that runs a stand-in sample because the last global
    batch has fewer samples than there are processes."""
    _EMPTY_SHARD[0] = True
    try:
        yield
    finally:
        _EMPTY_SHARD[0] = False


class _CPUSync:
    """Mixin over a ``torch.nn.BatchNormNd``: in training mode with a process group, the
    per-channel mean and the biased variance (two passes: the sum, then the sum of squared
    deviations) are summed over the processes with a differentiable all-reduce; running
    statistics follow BatchNorm (unbiased variance, ``momentum`` or the cumulative average).
    Otherwise it is the plain BatchNorm layer."""

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002 - torch's name
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(input)  # type: ignore[misc]
        self._check_input_dim(input)  # type: ignore[attr-defined]
        dims = [0] + list(range(2, input.dim()))
        shape = [1, -1] + [1] * (input.dim() - 2)
        weight = 0.0 if _EMPTY_SHARD[0] else 1.0
        local = input.numel() // max(input.shape[1], 1)
        sums = _AllReduceSum.apply(torch.cat([input.sum(dims) * weight, input.new_tensor([local * weight])]))
        count = sums[-1]
        mean = sums[:-1] / count
        centred = input - mean.view(shape)
        var = _AllReduceSum.apply((centred * centred).sum(dims) * weight) / count
        out = centred * torch.rsqrt(var + self.eps).view(shape)  # type: ignore[attr-defined]
        if self.affine:  # type: ignore[attr-defined]
            out = out * self.weight.view(shape) + self.bias.view(shape)  # type: ignore[attr-defined]
        if self.track_running_stats:  # type: ignore[attr-defined]
            with torch.no_grad():
                self.num_batches_tracked.add_(1)  # type: ignore[attr-defined]
                momentum = self.momentum  # type: ignore[attr-defined]
                tracked = float(self.num_batches_tracked)  # type: ignore[attr-defined]
                factor = 1.0 / tracked if momentum is None else momentum
                n = float(count)
                self.running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)  # type: ignore[attr-defined]
                self.running_var.mul_(1 - factor).add_(var.detach() * (n / max(n - 1, 1)),  # type: ignore[attr-defined]
                                                       alpha=factor)
        return out


class SyncBatchNorm1d(_CPUSync, nn.BatchNorm1d):
    """``BatchNorm1d`` whose training statistics span all processes (CPU, gloo)."""


class SyncBatchNorm2d(_CPUSync, nn.BatchNorm2d):
    """``BatchNorm2d`` whose training statistics span all processes (CPU, gloo)."""


class SyncBatchNorm3d(_CPUSync, nn.BatchNorm3d):
    """``BatchNorm3d`` whose training statistics span all processes (CPU, gloo)."""


_CPU_SYNC = {nn.BatchNorm1d: SyncBatchNorm1d, nn.BatchNorm2d: SyncBatchNorm2d, nn.BatchNorm3d: SyncBatchNorm3d}


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Make every BatchNorm layer of ``model`` synchronise its batch statistics across processes:
    ``torch.nn.SyncBatchNorm`` on CUDA; on the CPU (where torch's needs a GPU, and DDP refuses
    it) the layers become :class:`SyncBatchNorm2d` and kin in place.  Parameters and buffers
    stay the same objects, so optimizers stay valid and ``state_dict`` keys do not change.
    Conv layers that fold a BatchNorm (``convert_model(fuse=True)``) are unfused first."""
    from ..fuse import unfuse_batchnorm
    unfuse_batchnorm(model)
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for m in model.modules():
        if type(m) in _CPU_SYNC:
            m.__class__ = _CPU_SYNC[type(m)]
    return model


def wrap_model(model: nn.Module, info: Dist) -> nn.Module:
    """``model`` itself for one process; else its synchronised-BatchNorm form in
    DistributedDataParallel (``model`` is converted in place on the CPU)."""
    if not info.active:
        return model
    model = convert_sync_batchnorm(model, info.device)
    ids: Optional[List[int]] = [info.local_rank] if info.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def failure(exc: BaseException, info: Dist, timeout_s: float) -> JobError:
    """The one-line :class:`JobError` for a collective that failed on this process."""
    first = first_line(exc)
    return JobError(f"process {info.rank} of {info.world_size} lost the job: another process died or did not "
                    f"answer within --dist-timeout {timeout_s:g} s ({type(exc).__name__}: {first[:300]})")


def is_collective_failure(exc: BaseException) -> bool:
    """True for the errors torch.distributed raises when a peer is gone or timed out."""
    dist_error = getattr(dist, "DistError", None)
    if dist_error is not None and isinstance(exc, dist_error):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(s in text for s in (
        "Connection closed by peer", "Connection reset by peer", "Timed out", "timed out", "Socket Timeout",
        "gloo", "NCCL", "ProcessGroup", "Broken pipe"))
