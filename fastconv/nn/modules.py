"""Drop-in twins of torch.nn's conv and pool layers, running fastconv's kernels.

Each class subclasses its torch.nn counterpart, so constructors, attributes,
``state_dict`` keys, ``repr`` and initialisation are torch's own: a torch
checkpoint loads as-is.  Only the computation is replaced.
"""
from __future__ import annotations

from typing import List, Optional

import torch
from torch import Tensor

from .. import functional as F


class Conv2d(torch.nn.Conv2d):
    """``torch.nn.Conv2d`` on fastconv kernels: :func:`fastconv.functional.conv2d` in its forward.

    A subclass of ``torch.nn.Conv2d`` with its constructor, parameters (``weight`` of shape
    ``(out_channels, in_channels / groups, kH, kW)``, ``bias``), initialisation, ``state_dict``
    keys and ``repr``.  Non-zero padding modes pad explicitly with ``torch.nn.functional.pad``
    first, as torch does.

    Parameters
    ----------
    in_channels, out_channels : int
        Channels of the input and of the output.
    kernel_size : int or (int, int)
        ``(kH, kW)``.
    stride : int or (int, int), optional
        Step of the kernel.
    padding : int, (int, int), 'valid' or 'same', optional
        Padding on both sides (``'same'``: stride 1 only).
    dilation : int or (int, int), optional
        Spacing between kernel taps.
    groups : int, optional
        Channel groups.
    bias : bool, optional
        Whether to add a learnable bias.
    padding_mode : {'zeros', 'reflect', 'replicate', 'circular'}, optional
        How the input is padded.
    device, dtype : optional
        Of the parameters, as torch's factory arguments (float32 or float64 for fastconv's
        CPU kernels).

    Examples
    --------
    >>> import torch
    >>> from fastconv.nn import Conv2d
    >>> _ = torch.manual_seed(0)
    >>> layer = Conv2d(3, 8, 3, padding=1)
    >>> ref = torch.nn.Conv2d(3, 8, 3, padding=1)
    >>> ref.load_state_dict(layer.state_dict())           # the same parameters and keys
    <All keys matched successfully>
    >>> x = torch.randn(2, 3, 16, 16)
    >>> layer(x).shape
    torch.Size([2, 8, 16, 16])
    >>> torch.allclose(layer(x), ref(x), atol=1e-5)
    True
    """

    def forward(self, input: Tensor) -> Tensor:
        """The convolution of ``input`` ``(N, C_in, H, W)`` or ``(C_in, H, W)``."""
        return self._conv_forward(input, self.weight, self.bias)

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        input, padding = self._padded(input)
        return F.conv2d(input, weight, bias, self.stride, padding, self.dilation, self.groups)

    def _padded(self, input: Tensor):
        """``(input, padding)`` for the convolution: a non-zero padding mode pads explicitly first, as torch."""
        if self.padding_mode != "zeros":
            return torch.nn.functional.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode), 0
        return input, self.padding


class ConvTranspose2d(torch.nn.ConvTranspose2d):
    """``torch.nn.ConvTranspose2d`` on fastconv kernels: :func:`fastconv.functional.conv_transpose2d`.

    A subclass of ``torch.nn.ConvTranspose2d`` with its constructor, parameters (``weight`` of
    shape ``(in_channels, out_channels / groups, kH, kW)``, ``bias``), ``state_dict`` keys and
    ``repr``.  Only ``padding_mode='zeros'`` is supported, as in torch.

    Parameters
    ----------
    in_channels, out_channels : int
        Channels of the input and of the output.
    kernel_size : int or (int, int)
        ``(kH, kW)``.
    stride, padding, output_padding, dilation : int or (int, int), optional
        As :func:`fastconv.functional.conv_transpose2d`.
    groups : int, optional
        Channel groups.
    bias : bool, optional
        Whether to add a learnable bias.
    padding_mode : {'zeros'}, optional
        torch's argument; other modes raise ``ValueError`` at the forward call, as torch.
    device, dtype : optional
        Of the parameters.

    Examples
    --------
    >>> import torch
    >>> from fastconv.nn import ConvTranspose2d
    >>> up = ConvTranspose2d(4, 2, kernel_size=2, stride=2)
    >>> up(torch.zeros(1, 4, 5, 5)).shape
    torch.Size([1, 2, 10, 10])
    >>> up3 = ConvTranspose2d(4, 2, kernel_size=3, stride=2, padding=1)
    >>> up3(torch.zeros(1, 4, 5, 5), output_size=[10, 10]).shape    # output_padding from output_size
    torch.Size([1, 2, 10, 10])
    """

    def forward(self, input: Tensor, output_size: Optional[List[int]] = None) -> Tensor:
        """The transposed convolution of ``input``; ``output_size`` picks ``output_padding`` as torch."""
        output_padding = self._output_padding_for(input, output_size)
        return F.conv_transpose2d(input, self.weight, self.bias, self.stride, self.padding, output_padding,
                                  self.groups, self.dilation)

    def _output_padding_for(self, input: Tensor, output_size: Optional[List[int]]):
        """The ``output_padding`` of this call (``output_size`` picks it as torch); only zero padding is supported."""
        if self.padding_mode != "zeros":
            raise ValueError("Only 'zeros' padding mode is supported for ConvTranspose2d")
        return self._output_padding(input, output_size, self.stride, self.padding, self.kernel_size, 2, self.dilation)


class MaxPool2d(torch.nn.MaxPool2d):
    """``torch.nn.MaxPool2d`` on fastconv kernels: :func:`fastconv.functional.max_pool2d`.

    Parameters
    ----------
    kernel_size : int or (int, int)
        Window size.
    stride : int or (int, int), optional
        Step of the window; default ``kernel_size``.
    padding : int or (int, int), optional
        Implicit -inf padding on both sides.
    dilation : int or (int, int), optional
        Spacing between window taps.
    return_indices : bool, optional
        Also return the flat in-plane indices of the maxima.
    ceil_mode : bool, optional
        Round the output size up.

    Examples
    --------
    >>> import torch
    >>> from fastconv.nn import MaxPool2d
    >>> MaxPool2d(2)(torch.arange(16.0).reshape(1, 1, 4, 4))
    tensor([[[[ 5.,  7.],
              [13., 15.]]]])
    """

    def forward(self, input: Tensor):
        """The pooled ``input`` (and the indices with ``return_indices``)."""
        return F.max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation,
                            ceil_mode=self.ceil_mode, return_indices=self.return_indices)


class AvgPool2d(torch.nn.AvgPool2d):
    """``torch.nn.AvgPool2d`` on fastconv kernels: :func:`fastconv.functional.avg_pool2d`.

    Parameters
    ----------
    kernel_size : int or (int, int)
        Window size.
    stride : int or (int, int), optional
        Step of the window; default ``kernel_size``.
    padding : int or (int, int), optional
        Implicit zero padding on both sides.
    ceil_mode : bool, optional
        Round the output size up.
    count_include_pad : bool, optional
        Whether padded zeros count in the divisor.
    divisor_override : int, optional
        A fixed divisor.

    Examples
    --------
    >>> import torch
    >>> from fastconv.nn import AvgPool2d
    >>> AvgPool2d(2)(torch.arange(16.0).reshape(1, 1, 4, 4))
    tensor([[[[ 2.5000,  4.5000],
              [10.5000, 12.5000]]]])
    """

    def forward(self, input: Tensor) -> Tensor:
        """The average-pooled ``input``."""
        return F.avg_pool2d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad, self.divisor_override)


class AdaptiveAvgPool2d(torch.nn.AdaptiveAvgPool2d):
    """``torch.nn.AdaptiveAvgPool2d`` on fastconv kernels: :func:`fastconv.functional.adaptive_avg_pool2d`.

    Parameters
    ----------
    output_size : int, None or (int or None, int or None)
        ``(OH, OW)``; ``None`` keeps that input size; ``1`` is global average pooling.

    Examples
    --------
    >>> import torch
    >>> from fastconv.nn import AdaptiveAvgPool2d
    >>> x = torch.arange(16.0).reshape(1, 1, 4, 4)
    >>> AdaptiveAvgPool2d(1)(x)
    tensor([[[[7.5000]]]])
    >>> AdaptiveAvgPool2d((2, None))(x).shape
    torch.Size([1, 1, 2, 4])
    """

    def forward(self, input: Tensor) -> Tensor:
        """``input`` average-pooled to ``output_size``."""
        return F.adaptive_avg_pool2d(input, self.output_size)


#: torch.nn class -> fastconv twin, used by :func:`fastconv.convert_model`.
TWINS = {
    torch.nn.Conv2d: Conv2d,
    torch.nn.ConvTranspose2d: ConvTranspose2d,
    torch.nn.MaxPool2d: MaxPool2d,
    torch.nn.AvgPool2d: AvgPool2d,
    torch.nn.AdaptiveAvgPool2d: AdaptiveAvgPool2d,
}
