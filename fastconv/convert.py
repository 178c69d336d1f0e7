"""``convert_model``: swap a model's torch.nn conv and pool layers for their fastconv twins."""
from __future__ import annotations

import warnings
from typing import List

import torch

from ._shapes import SUPPORTED_DTYPES
from .nn.modules import TWINS

# Layer families that look convertible but have no fastconv twin.
_CONV_LIKE = (
    torch.nn.modules.conv._ConvNd,
    torch.nn.modules.pooling._MaxPoolNd,
    torch.nn.modules.pooling._AvgPoolNd,
    torch.nn.modules.pooling._AdaptiveAvgPoolNd,
    torch.nn.modules.pooling._AdaptiveMaxPoolNd,
    torch.nn.modules.pooling._LPPoolNd,
    torch.nn.modules.pooling._MaxUnpoolNd,
    torch.nn.FractionalMaxPool2d,
    torch.nn.FractionalMaxPool3d,
)


def _skip_reason(module: torch.nn.Module) -> str | None:
    """Why ``module`` stays a torch layer, or None if it converts."""
    cls = type(module)
    twin = TWINS.get(cls)
    if twin is None:
        if cls in TWINS.values():
            return None
        base = next((b for b in cls.__mro__ if b in TWINS), None)
        if base is not None:
            return f"subclass of torch.nn.{base.__name__} (its own forward may differ)"
        return f"no fastconv twin for {cls.__name__}"
    for p in module.parameters(recurse=False):
        if p.dtype not in SUPPORTED_DTYPES:
            return f"parameters are {p.dtype}; fastconv supports float32 and float64"
    return None


def convert_model(model: torch.nn.Module, fuse: bool = False) -> torch.nn.Module:
    """Run a model's conv and pool layers on fastconv, in place.

    Every torch.nn ``Conv2d``, ``ConvTranspose2d``, ``MaxPool2d``, ``AvgPool2d`` and
    ``AdaptiveAvgPool2d`` in ``model`` (the model itself included) becomes its
    :mod:`fastconv.nn` twin.  Parameters, buffers, hooks and attributes are kept (the same
    Parameter objects, so optimizers stay valid), and so are the ``state_dict`` keys.

    Parameters
    ----------
    model : torch.nn.Module
        The model, changed in place.
    fuse : bool, optional
        Also fuse ``Conv2d [-> BatchNorm2d] -> ReLU|SiLU|LeakyReLU [-> MaxPool2d]`` runs of
        layers into single ops (:class:`fastconv.nn.FusedConv2d`): found in ``nn.Sequential``
        containers, and through ``torch.fx`` where the model traces.  BatchNorm is folded
        into the convolution in eval mode only.  A SiLU (or negative-slope LeakyReLU) that
        feeds a ``Conv2d`` alone runs inside that convolution instead
        (:class:`fastconv.nn.PreActConv2d`), which keeps one tensor less for the backward
        pass (:mod:`fastconv.fuse` gives the order).  Values and gradients equal the unfused
        model's to float rounding; the ``state_dict`` is unchanged.

    Returns
    -------
    torch.nn.Module
        ``model``.

    Warns
    -----
    UserWarning
        Listing every conv/pool-like layer left on torch and why (3-D/1-D layers,
        subclasses, unsupported dtypes).

    Examples
    --------
    >>> import torch
    >>> import fastconv
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2))
    >>> keys = list(net.state_dict())
    >>> net = fastconv.convert_model(net, fuse=True)
    >>> type(net[0]).__name__, list(net.state_dict()) == keys
    ('FusedConv2d', True)
    """
    skipped: List[str] = []
    for name, module in model.named_modules():
        if not isinstance(module, _CONV_LIKE) or type(module) in TWINS.values():
            continue
        reason = _skip_reason(module)
        if reason is None:
            module.__class__ = TWINS[type(module)]
        else:
            skipped.append(f"{name or '<model>'} ({type(module).__name__}): {reason}")
    if skipped:
        warnings.warn("fastconv.convert_model left these layers on torch:\n  " + "\n  ".join(skipped),
                      stacklevel=2)
    if fuse:
        from .fuse import fuse_model
        fuse_model(model)
    return model
