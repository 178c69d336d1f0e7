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
Every module of a run must appear once in the model and, where the model traces, be called once
(a convolution or an activation also called elsewhere keeps running unfused there too); an
in-place activation is absorbed into the next convolution only where its input is the fresh
output of a convolution or BatchNorm that nothing else reads (in torch it changes that input).
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


def _match(seq: List[nn.Module], i: int, prev: Optional[nn.Module] = None) -> Optional[Run]:
    """The run starting at ``seq[i]``, if any (``prev``: see :func:`_match_input`)."""
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


def _fresh(m: Optional[nn.Module]) -> bool:
    """Whether ``m`` returns a tensor of its own (not its input or a view of it) when it runs unfused:
    a convolution or a BatchNorm (absorbed ones pass a convolution's fresh output through)."""
    return isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d))


def _match_input(seq: List[nn.Module], i: int, prev: Optional[nn.Module] = None) -> Optional[InputRun]:
    """The input run starting at ``seq[i]``, if any.  ``prev`` is the module whose output alone
    feeds ``seq[i]`` (None when unknown): an in-place activation changes its input for every
    other reader in torch, so it is absorbed only where that input is ``prev``'s fresh output."""
    if i + 1 < len(seq) and _is_input_act(seq[i]) and _is_input_conv(seq[i + 1]):
        if getattr(seq[i], "inplace", False) and not _fresh(prev):
            return None
        return seq[i], seq[i + 1]
    return None


class _Tracer(torch.fx.Tracer):
    """fx tracer whose leaves are torch.nn and fastconv.nn modules (fastconv's twins are not traced into)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return type(m).__module__.startswith("fastconv.nn") or super().is_leaf_module(m, qualname)


class _Usage:
    """How ``model`` uses its modules: which are registered more than once and, where the model
    traces with ``torch.fx``, how often each is called and what feeds each call."""

    def __init__(self, model: nn.Module) -> None:
        self.modules: Dict[str, nn.Module] = dict(model.named_modules())
        self.names = {id(m): name for name, m in self.modules.items()}
        seen, self.repeated = set(), set()
        for _, m in model.named_modules(remove_duplicate=False):
            (self.repeated if id(m) in seen else seen).add(id(m))
        try:
            self.graph: Optional[torch.fx.Graph] = _Tracer().trace(model)
        except Exception:  # data-dependent control flow, unsupported calls: Sequential runs only
            self.graph = None
        self.calls: Dict[str, int] = {}
        for node in self.graph.nodes if self.graph is not None else ():
            if node.op == "call_module":
                self.calls[node.target] = self.calls.get(node.target, 0) + 1

    def once(self, m: nn.Module) -> bool:
        """Whether ``m`` is registered once and, where the model traces, called once."""
        return id(m) not in self.repeated and (self.graph is None or self.calls.get(self.names.get(id(m))) == 1)

    def runs(self, match, length: int) -> list:
        """``match`` over every ``nn.Sequential``'s children, then over each chain of up to ``length``
        module calls of the trace (each call's result read only by the next call), with every module
        of a run used once."""
        runs = []
        for module in self.modules.values():
            if isinstance(module, nn.Sequential):
                children = list(module.children())
                runs += [match(children, i, children[i - 1] if i else None) for i in range(len(children))]
        for node in self.graph.nodes if self.graph is not None else ():
            if node.op == "call_module" and self.calls.get(node.target) == 1:
                runs.append(match(self._chain(node, length), 0, self._feeder(node)))
        return [run for run in runs if run is not None and all(self.once(m) for m in run if m is not None)]

    def _next_call(self, node):
        users = list(node.users)
        if len(users) != 1 or users[0].op != "call_module" or self.calls.get(users[0].target) != 1:
            return None
        if len(users[0].args) != 1 or users[0].kwargs:
            return None
        return users[0]

    def _chain(self, node, length: int) -> List[nn.Module]:
        chain = [self.modules[node.target]]
        for _ in range(length - 1):
            node = self._next_call(node)
            if node is None:
                break
            chain.append(self.modules[node.target])
        return chain

    def _feeder(self, node) -> Optional[nn.Module]:
        """The module whose call alone feeds ``node`` (its one argument, read by nothing else), if any."""
        if len(node.args) != 1 or not isinstance(node.args[0], torch.fx.Node):
            return None
        src = node.args[0]
        if src.op != "call_module" or len(src.users) != 1:
            return None
        return self.modules[src.target]


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
    return _once_per_conv(_Usage(model).runs(_match, 4), 0)


def _once_per_conv(runs: list, at: int) -> list:
    """``runs`` without repeats of the convolution at index ``at``."""
    seen, out = set(), []
    for run in runs:
        if id(run[at]) not in seen:
            seen.add(id(run[at]))
            out.append(run)
    return out


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
    return _once_per_conv(_Usage(model).runs(_match_input, 2), 1)


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
