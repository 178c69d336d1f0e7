"""Fused conv layers, made by :func:`fastconv.convert_model` with ``fuse=True``.

:class:`PreActConv2d` and :class:`PreActConvTranspose2d` are the other direction: fastconv
convolutions that run the activation in front of them (``fastconv::act_conv2d``,
``fastconv::act_conv_transpose2d``), keeping only the activation's input for the backward pass.
What follows describes :class:`FusedConv2d`.

:class:`FusedConv2d` is a :class:`fastconv.nn.Conv2d` (so a ``torch.nn.Conv2d``, with the same
parameters and ``state_dict`` keys) that also runs the activation -- and the max pooling --
that follow it, as one op of ``fastconv.ops.fused``, and folds a ``BatchNorm2d`` between
them into its weights in eval mode.  The modules it absorbs stay where they are, in the
model and in its ``state_dict``; they pass their input through while the fusion is active:

* without a BatchNorm, always;
* with a BatchNorm (conv -> BN -> act) in eval mode with running statistics, folded into the
  convolution;
* with a BatchNorm that normalises with batch statistics (training mode), as the convolution
  followed by one ``fastconv::batch_norm_act`` op (batch statistics, normalisation and
  activation fused; :mod:`fastconv.ops.batch_norm`) and the pooling, on CPU float32/float64
  weights when no ``torch.func`` transform is active (on CUDA, torch's cuDNN BatchNorm keeps
  running until the fused CUDA kernels are measured on a GPU).  The running
  statistics and ``num_batches_tracked`` are updated as ``BatchNorm2d`` does.

Otherwise every module runs as usual.

The folded weights are computed at every call from the current parameters and running
statistics (``w * gamma / sqrt(var + eps)``, ``(b - mean) * gamma / sqrt(var + eps) + beta``),
so loading a checkpoint, or training further, needs no re-fusing.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from ..ops import batch_norm as _bn
from ..ops.fused import act_conv2d, act_conv_transpose2d, conv2d_act, conv2d_act_max_pool
from .. import functional as F
from .modules import Conv2d, ConvTranspose2d

_functorch_level = torch._C._functorch.peek_interpreter_stack

__all__ = ["FusedConv2d", "PreActConv2d", "PreActConvTranspose2d", "ACTIVATION_MODULES", "absorb", "absorb_input",
           "release"]

#: torch.nn activation classes the fusion understands -> (fused name, slope getter).
ACTIVATION_MODULES = {
    nn.ReLU: ("relu", lambda m: 0.0),
    nn.SiLU: ("silu", lambda m: 0.0),
    nn.LeakyReLU: ("leaky_relu", lambda m: float(m.negative_slope)),
}


class FusedConv2d(Conv2d):
    """A :class:`fastconv.nn.Conv2d` that runs ``[BatchNorm2d ->] activation [-> MaxPool2d]`` too.

    Made in place from a converted ``Conv2d`` by :func:`fastconv.convert_model` (``fuse=True``);
    the attributes below say what it absorbed.  Values and gradients equal the unfused layers'
    to float rounding; parameters and ``state_dict`` keys are the convolution's own.

    Parameters
    ----------
    in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode, device, dtype
        ``torch.nn.Conv2d``'s constructor arguments.  A ``FusedConv2d`` is not built by calling
        it, though: :func:`fastconv.convert_model` (``fuse=True``) turns a ``Conv2d`` into one
        in place, setting the attributes below.

    Attributes
    ----------
    fused_activation : str
        'relu', 'leaky_relu' or 'silu'.
    fused_slope : float
        LeakyReLU's negative slope (0 for the others).
    fused_pool : torch.nn.MaxPool2d or None
        The absorbed max pooling.
    fused_bn : torch.nn.BatchNorm2d or None
        The BatchNorm: folded into the weights in eval mode, fused with the activation when it
        uses batch statistics.

    Examples
    --------
    >>> import torch
    >>> import fastconv
    >>> _ = torch.manual_seed(0)
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
    ...                           torch.nn.MaxPool2d(2)).eval()
    >>> x = torch.randn(2, 1, 8, 8)
    >>> ref = net(x)
    >>> net = fastconv.convert_model(net, fuse=True)
    >>> net[0]
    FusedConv2d(1, 4, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), fused=relu, bn folded in eval, fused in training, max_pool)
    >>> net[0].fusion_active(), torch.allclose(net(x), ref, atol=1e-6)
    (True, True)
    """

    fused_activation: str
    fused_slope: float

    @property
    def fused_bn(self) -> Optional[nn.BatchNorm2d]:
        return self._fused[0]

    @property
    def fused_pool(self) -> Optional[nn.MaxPool2d]:
        return self._fused[1]

    def fusion_active(self) -> bool:
        """Whether this call runs fused (see the module docstring)."""
        bn = self.fused_bn
        if bn is None:
            return True
        return not (self.training or bn.training) and bn.track_running_stats and bn.running_mean is not None

    def batch_stats_fused(self) -> bool:
        """Whether this call runs the convolution, then the BatchNorm (batch statistics), activation
        and pooling as fused fastconv ops (see the module docstring)."""
        bn = self.fused_bn
        if bn is None or not (bn.training or (bn.running_mean is None and bn.running_var is None)):
            return False
        w = self.weight  # CPU only: the CUDA kernels' one-block-per-channel grid is unmeasured on a GPU
        return w.device.type == "cpu" and _bn.supported(w) and _functorch_level() is None

    def runs_absorbed(self) -> bool:
        """Whether this conv runs the modules it absorbed (which then pass their input through)."""
        return self.fusion_active() or self.batch_stats_fused()

    def _batch_norm_act(self, z: Tensor) -> Tensor:
        """``act(bn(z))`` with batch statistics, updating the running ones as ``_BatchNorm.forward`` does."""
        bn = self.fused_bn
        bn._check_input_dim(z)
        factor = 0.0 if bn.momentum is None else bn.momentum
        if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
            bn.num_batches_tracked.add_(1)
            factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
        track = not bn.training or bn.track_running_stats
        return _bn.batch_norm_act(z, bn.running_mean if track else None, bn.running_var if track else None, bn.weight,
                                  bn.bias, factor, bn.eps, self.fused_activation, self.fused_slope)

    def _folded(self):
        w, b = self.weight, self.bias
        bn = self.fused_bn
        if bn is None:
            return w, b
        scale = torch.rsqrt(bn.running_var + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight
        shift = -bn.running_mean * scale if b is None else (b - bn.running_mean) * scale
        if bn.bias is not None:
            shift = shift + bn.bias
        return w * scale.reshape(-1, 1, 1, 1), shift

    def forward(self, input: Tensor) -> Tensor:
        """``[pool(]act([bn(]conv(input)[)])[)]`` as one fused op (two, or three with pooling, when the
        BatchNorm uses batch statistics), or the convolution alone when not fused."""
        if not self.fusion_active():
            if not self.batch_stats_fused():
                return super().forward(input)
            y = self._batch_norm_act(super().forward(input))
            pool = self.fused_pool
            if pool is None:
                return y
            return F.max_pool2d(y, pool.kernel_size, pool.stride, pool.padding, pool.dilation, ceil_mode=pool.ceil_mode)
        w, b = self._folded()
        input, padding = self._padded(input)
        pool = self.fused_pool
        if pool is None:
            return conv2d_act(input, w, b, self.stride, padding, self.dilation, self.groups, self.fused_activation,
                              self.fused_slope)
        return conv2d_act_max_pool(input, w, b, self.stride, padding, self.dilation, self.groups,
                                   self.fused_activation, self.fused_slope, pool.kernel_size, pool.stride,
                                   pool.padding, pool.dilation, pool.ceil_mode)

    def extra_repr(self) -> str:
        parts = [super().extra_repr(), f"fused={self.fused_activation}"]
        if self.fused_bn is not None:
            parts.append("bn folded in eval, fused in training")
        if self.fused_pool is not None:
            parts.append("max_pool")
        return ", ".join(parts)


class _PreAct:
    """What the convolutions that run the activation in front of them share."""

    input_activation: str
    input_slope: float

    def runs_absorbed(self) -> bool:
        """Whether this conv runs the activation it absorbed (always: nothing else decides it)."""
        return True

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, input_activation={self.input_activation}"


class PreActConv2d(_PreAct, Conv2d):
    """A :class:`fastconv.nn.Conv2d` that runs the activation in front of it: ``conv(act(input))``.

    Made in place from a converted ``Conv2d`` by :func:`fastconv.convert_model` (``fuse=True``)
    where an activation whose derivative needs its input (SiLU, LeakyReLU with a negative
    slope) feeds the convolution alone.  torch keeps that activation's input and its output
    for the backward pass; :func:`fastconv.functional.act_conv2d` keeps the input only and
    recomputes the activation there.  The activation module stays in the model and passes its
    input through.  Values and gradients equal the unfused layers' to float rounding; parameters
    and ``state_dict`` keys are the convolution's own.

    Attributes
    ----------
    input_activation : str
        'relu', 'leaky_relu' or 'silu'.
    input_slope : float
        LeakyReLU's negative slope (0 for the others).

    Examples
    --------
    >>> import torch
    >>> import fastconv
    >>> _ = torch.manual_seed(0)
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.SiLU(), torch.nn.Conv2d(4, 4, 3))
    >>> x = torch.randn(2, 1, 8, 8)
    >>> ref = net(x)
    >>> net = fastconv.convert_model(net, fuse=True)
    >>> net[2]
    PreActConv2d(4, 4, kernel_size=(3, 3), stride=(1, 1), input_activation=silu)
    >>> torch.allclose(net(x), ref, atol=1e-6)
    True
    """

    def forward(self, input: Tensor) -> Tensor:
        """``conv(act(input))`` as one op (explicit padding modes pad first: they commute with ``act``)."""
        input, padding = self._padded(input)
        return act_conv2d(input, self.weight, self.bias, self.stride, padding, self.dilation, self.groups,
                          self.input_activation, self.input_slope)


class PreActConvTranspose2d(_PreAct, ConvTranspose2d):
    """A :class:`fastconv.nn.ConvTranspose2d` that runs the activation in front of it.

    The transposed-convolution twin of :class:`PreActConv2d` (same attributes, same trade:
    :func:`fastconv.functional.act_conv_transpose2d`).

    Examples
    --------
    >>> import torch
    >>> import fastconv
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.SiLU(), torch.nn.ConvTranspose2d(4, 2, 2, 2))
    >>> fastconv.convert_model(net, fuse=True)[2]
    PreActConvTranspose2d(4, 2, kernel_size=(2, 2), stride=(2, 2), input_activation=silu)
    """

    def forward(self, input: Tensor, output_size: Optional[list] = None) -> Tensor:
        """``conv_transpose(act(input))`` as one op; ``output_size`` picks ``output_padding`` as torch."""
        output_padding = self._output_padding_for(input, output_size)
        return act_conv_transpose2d(input, self.weight, self.bias, self.stride, self.padding, output_padding,
                                    self.groups, self.dilation, self.input_activation, self.input_slope)


def _passthrough_class(cls: type) -> type:
    """``cls`` with a forward that returns its input while its fused conv runs it (cached per class)."""
    cached = _PASSTHROUGH.get(cls)
    if cached is not None:
        return cached

    def forward(self, *args, **kwargs):
        if self._fused_into[0].runs_absorbed():
            return args[0]
        return cls.forward(self, *args, **kwargs)

    name = f"Absorbed{cls.__name__}"
    sub = type(name, (cls,), {"forward": forward, "__module__": __name__, "__doc__": (
        f"A ``{cls.__name__}`` absorbed by a :class:`FusedConv2d`: the identity while the fusion "
        f"is active, ``{cls.__name__}`` otherwise.")})
    _PASSTHROUGH[cls] = sub
    globals().setdefault(name, sub)  # importable by name, so pickled models load
    return sub


_PASSTHROUGH: dict = {}


def _take(conv: Conv2d, absorbed) -> None:
    """The modules ``absorbed`` pass their input through while ``conv`` runs them (their classes
    become pass-through subclasses of their own; no parameters or buffers change)."""
    for m in absorbed:
        object.__setattr__(m, "_fused_into", (conv,))
        m.__class__ = _passthrough_class(type(m))
    object.__setattr__(conv, "_fused_owner_modules", absorbed)


def absorb(conv: Conv2d, act: nn.Module, bn: Optional[nn.BatchNorm2d] = None,
           pool: Optional[nn.MaxPool2d] = None) -> FusedConv2d:
    """Turn ``conv`` into a :class:`FusedConv2d` running ``[bn ->] act [-> pool]``, in place.

    ``act`` (and ``pool``) become pass-through subclasses of their own classes (no parameters
    or buffers change); ``bn`` keeps running as itself whenever the fusion is not active.
    Returns ``conv``.
    """
    name, slope = ACTIVATION_MODULES[type(act)]
    conv.__class__ = FusedConv2d
    conv.fused_activation = name
    conv.fused_slope = slope(act)
    object.__setattr__(conv, "_fused", (bn, pool))  # not registered: no new state_dict keys
    _take(conv, tuple(m for m in (bn, act, pool) if m is not None))
    return conv


#: The convolutions that can run the activation in front of them -> their class doing so.
PREACT_CLASSES = {Conv2d: PreActConv2d, ConvTranspose2d: PreActConvTranspose2d}


def absorb_input(act: nn.Module, conv: nn.Module) -> nn.Module:
    """Turn a fastconv ``Conv2d`` or ``ConvTranspose2d`` into a :class:`PreActConv2d` or
    :class:`PreActConvTranspose2d` running ``act`` on its input, in place; ``act`` becomes a
    pass-through subclass of its own class.  Returns ``conv``."""
    name, slope = ACTIVATION_MODULES[type(act)]
    conv.__class__ = PREACT_CLASSES[type(conv)]
    conv.input_activation = name
    conv.input_slope = slope(act)
    _take(conv, (act,))
    return conv


def release(conv: nn.Module) -> nn.Module:
    """Undo :func:`absorb` or :func:`absorb_input`: ``conv`` and the modules it absorbed get their
    own classes back, in place.

    Needed before code that swaps modules by type -- ``SyncBatchNorm`` conversion replaces the
    BatchNorm a fused conv folds.  Returns ``conv``.
    """
    for m in conv._fused_owner_modules:
        m.__class__ = m.__class__.__bases__[0]
        object.__delattr__(m, "_fused_into")
    object.__delattr__(conv, "_fused_owner_modules")
    if isinstance(conv, _PreAct):
        del conv.input_activation, conv.input_slope
    else:
        object.__delattr__(conv, "_fused")
        del conv.fused_activation, conv.fused_slope
    conv.__class__ = type(conv).__bases__[-1]  # (the fastconv layer it was made from)
    return conv

