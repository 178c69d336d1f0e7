"""Finding fusable layer runs in a converted model (``convert_model(model, fuse=True)``).

A run is ``Conv2d [-> BatchNorm2d] -> activation [-> MaxPool2d]`` where the convolution is a
plain :class:`fastconv.nn.Conv2d`, the BatchNorm normalises its output channels, the
activation is one of ``fastconv.nn.fused.ACTIVATION_MODULES`` and the pooling returns
no indices.  Runs are found

* in every ``nn.Sequential`` (consecutive children), and
* through ``torch.fx``: in a symbolic trace of the model, module calls chained one into the
  next, each result used only by the next call and each module called only once (so that
  absorbing it changes nothing else).  Models that do not trace (data-dependent control
  flow) keep only their ``Sequential`` fusions.

Each run is fused in place by :func:`fastconv.nn.fused.absorb`.

An *input run* is ``activation -> Conv2d | ConvTranspose2d`` where the activation's derivative
needs its input (SiLU, LeakyReLU with a negative slope) and its output feeds only the
convolution; found the same two ways, it becomes a :class:`fastconv.nn.PreActConv2d` or
:class:`fastconv.nn.PreActConvTranspose2d` (:func:`fastconv.nn.fused.absorb_input`),
which keeps the activation's input alone for the backward pass where torch keeps its input and
its output.  :func:`fuse_model` fuses runs with a BatchNorm or a pooling first (they keep the
least), then input runs, then the remaining ``Conv2d -> activation`` runs, each module once.
An activation module that appears more than once in the model is never absorbed.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from .nn.fused import ACTIVATION_MODULES, FusedConv2d, absorb, absorb_input, release
from .ops.fused import keeps_preactivation
from .nn.modules import Conv2d, ConvTranspose2d, MaxPool2d

__all__ = ["fuse_model", "find_runs", "find_input_runs", "unfuse_batchnorm"]

Run = Tuple[Conv2d, Optional[nn.BatchNorm2d], nn.Module, Optional[nn.MaxPool2d]]
InputRun = Tuple[nn.Module, nn.Module]


def _is_conv(m) -> bool:
    return type(m) is Conv2d


def _is_bn(m, conv) -> bool:
    return type(m) is nn.BatchNorm2d and m.num_features == conv.out_channels


def _is_act(m) -> bool:
    return type(m) in ACTIVATION_MODULES


def _is_input_act(m) -> bool:
    """An activation worth running inside the next convolution: its derivative needs its input."""
    if not _is_act(m):
        return False
    name, slope = ACTIVATION_MODULES[type(m)]
    return keeps_preactivation(name, slope(m))


def _is_pool(m) -> bool:
    return type(m) in (MaxPool2d, nn.MaxPool2d) and not m.return_indices


def _match(seq: List[nn.Module], i: int) -> Optional[Run]:
    """The run starting at ``seq[i]``, if any."""
    conv = seq[i]
    if not _is_conv(conv):
        return None
    j = i + 1
    bn = None
    if j < len(seq) and _is_bn(seq[j], conv):
        bn, j = seq[j], j + 1
    if j >= len(seq) or not _is_act(seq[j]):
        return None
    act, j = seq[j], j + 1
    pool = seq[j] if j < len(seq) and _is_pool(seq[j]) else None
    return conv, bn, act, pool


def _is_input_conv(m) -> bool:
    """A plain fastconv convolution that can run the activation in front of it."""
    return type(m) in (Conv2d, ConvTranspose2d)


def _match_input(seq: List[nn.Module], i: int) -> Optional[InputRun]:
    """The input run starting at ``seq[i]``, if any."""
    if i + 1 < len(seq) and _is_input_act(seq[i]) and _is_input_conv(seq[i + 1]):
        return seq[i], seq[i + 1]
    return None


def _sequential_runs(model: nn.Module, match) -> list:
    runs = []
    for module in model.modules():
        if isinstance(module, nn.Sequential):
            children = list(module.children())
            for i in range(len(children)):
                run = match(children, i)
                if run is not None:
                    runs.append(run)
    return runs


class _Tracer(torch.fx.Tracer):
    """fx tracer whose leaves are torch.nn and fastconv.nn modules (fastconv's twins are not traced into)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return type(m).__module__.startswith("fastconv.nn") or super().is_leaf_module(m, qualname)


def _fx_runs(model: nn.Module, match, length: int) -> list:
    """``match(chain, 0)`` for each chain of up to ``length`` module calls of a trace of ``model``."""
    try:
        graph = _Tracer().trace(model)
    except Exception:  # data-dependent control flow, unsupported calls: no fx fusions
        return []
    modules: Dict[str, nn.Module] = dict(model.named_modules())
    calls: Dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1

    def next_call(node):
        users = list(node.users)
        if len(users) != 1 or users[0].op != "call_module" or calls.get(users[0].target) != 1:
            return None
        if len(users[0].args) != 1 or users[0].kwargs:
            return None
        return users[0]

    runs = []
    for node in graph.nodes:
        if node.op != "call_module" or calls.get(node.target) != 1:
            continue
        if getattr(modules[node.target], "inplace", False) and any(
                len(a.users) > 1 for a in node.args if isinstance(a, torch.fx.Node)):
            continue  # an in-place activation whose input is read elsewhere: passing it through would change that
        chain = [modules[node.target]]
        cur = node
        for _ in range(length - 1):
            cur = next_call(cur)
            if cur is None:
                break
            chain.append(modules[cur.target])
        run = match(chain, 0)
        if run is not None:
            runs.append(run)
    return runs


def _repeated(model: nn.Module) -> set:
    """ids of the modules that appear more than once in ``model``."""
    seen, twice = set(), set()
    for _, m in model.named_modules(remove_duplicate=False):
        (twice if id(m) in seen else seen).add(id(m))
    return twice


def find_runs(model: nn.Module) -> List[Run]:
    """Every fusable run in ``model`` (Sequential containers first, then fx), each conv once.

    Parameters
    ----------
    model : torch.nn.Module
        A model converted by :func:`fastconv.convert_model` (only fastconv ``Conv2d`` layers
        start a run); it is not changed.

    Returns
    -------
    list of (Conv2d, BatchNorm2d or None, torch.nn.Module, MaxPool2d or None)
        ``(conv, bn, activation, pool)`` per run, as the module docstring describes; convs
        already fused are left out.  A model that ``torch.fx`` cannot trace gives its
        ``Sequential`` runs only.

    Examples
    --------
    >>> import torch
    >>> import fastconv
    >>> from fastconv.fuse import find_runs
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
    ...                           torch.nn.MaxPool2d(2), torch.nn.Conv2d(4, 4, 3), torch.nn.Sigmoid())
    >>> runs = find_runs(fastconv.convert_model(net))
    >>> [[type(m).__name__ if m is not None else None for m in run] for run in runs]
    [['Conv2d', 'BatchNorm2d', 'ReLU', 'MaxPool2d']]
    """
    seen, runs = set(), []
    repeated = _repeated(model)
    for run in _sequential_runs(model, _match) + _fx_runs(model, _match, 4):
        if id(run[0]) not in seen and id(run[2]) not in repeated:
            seen.add(id(run[0]))
            runs.append(run)
    return runs


def find_input_runs(model: nn.Module) -> List[InputRun]:
    """Every ``activation -> Conv2d | ConvTranspose2d`` input run in ``model`` (see the module
    docstring), each conv once.

    Parameters
    ----------
    model : torch.nn.Module
        A model converted by :func:`fastconv.convert_model`; it is not changed.

    Returns
    -------
    list of (torch.nn.Module, torch.nn.Module)
        ``(activation, conv)`` per run: SiLU or a LeakyReLU with a negative slope, whose output
        only the plain fastconv ``Conv2d`` or ``ConvTranspose2d`` reads.

    Examples
    --------
    >>> import torch
    >>> import fastconv
    >>> from fastconv.fuse import find_input_runs
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.SiLU(), torch.nn.Conv2d(4, 4, 3),
    ...                           torch.nn.ReLU(), torch.nn.Conv2d(4, 4, 3))
    >>> [[type(m).__name__ for m in run] for run in find_input_runs(fastconv.convert_model(net))]
    [['SiLU', 'Conv2d']]
    """
    seen, runs = set(), []
    repeated = _repeated(model)
    for act, conv in _sequential_runs(model, _match_input) + _fx_runs(model, _match_input, 2):
        if id(conv) not in seen and id(act) not in repeated:
            seen.add(id(conv))
            runs.append((act, conv))
    return runs


def fuse_model(model: nn.Module) -> nn.Module:
    """Fuse every run of :func:`find_runs` in place (what ``convert_model(model, fuse=True)`` does last).

    Each run's convolution becomes a :class:`fastconv.nn.FusedConv2d`, and each input run's a
    :class:`fastconv.nn.PreActConv2d` or :class:`fastconv.nn.PreActConvTranspose2d` (in the order
    the module docstring gives); the BatchNorm,
    activation and pooling it absorbs stay in the model (and its ``state_dict``) and pass
    their input through while the fusion is active.

    Parameters
    ----------
    model : torch.nn.Module
        A model converted by :func:`fastconv.convert_model`; changed in place.

    Returns
    -------
    torch.nn.Module
        ``model``.

    Examples
    --------
    >>> import torch
    >>> import fastconv
    >>> from fastconv.fuse import fuse_model
    >>> net = fastconv.convert_model(torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.SiLU()))
    >>> [type(m).__name__ for m in fuse_model(net)]
    ['FusedConv2d', 'AbsorbedSiLU']
    """
    for conv, bn, act, pool in find_runs(model):
        if bn is not None or pool is not None:
            absorb(conv, act, bn, pool)
    for act, conv in find_input_runs(model):  # (finds only modules not absorbed above: their types changed)
        if _is_input_act(act) and _is_input_conv(conv):
            absorb_input(act, conv)
    for conv, bn, act, pool in find_runs(model):
        absorb(conv, act, bn, pool)
    return model


def unfuse_batchnorm(model: nn.Module) -> nn.Module:
    """Undo the fusions that fold a BatchNorm, in place; fusions without a BatchNorm stay.

    Needed before code that replaces BatchNorm layers by type, such as
    ``torch.nn.SyncBatchNorm.convert_sync_batchnorm``: the layers get their own classes back
    (fastconv ``Conv2d``, ``BatchNorm2d``, the activation and pooling), parameters untouched.

    Parameters
    ----------
    model : torch.nn.Module
        A model fused by :func:`fuse_model` or ``convert_model(model, fuse=True)``.

    Returns
    -------
    torch.nn.Module
        ``model``.

    Examples
    --------
    >>> import torch
    >>> import fastconv
    >>> from fastconv.fuse import unfuse_batchnorm
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
    ...                           torch.nn.Conv2d(4, 4, 3), torch.nn.ReLU())
    >>> net = fastconv.convert_model(net, fuse=True)
    >>> [type(m).__name__ for m in unfuse_batchnorm(net)]
    ['Conv2d', 'BatchNorm2d', 'ReLU', 'FusedConv2d', 'AbsorbedReLU']
    """
    for m in list(model.modules()):
        if isinstance(m, FusedConv2d) and m.fused_bn is not None:
            release(m)
    return model
