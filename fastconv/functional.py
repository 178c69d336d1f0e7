"""Functional interface mirroring ``torch.nn.functional``, and the registry of public ops.

Conventions (as torch): convolutions are cross-correlations (the kernel is not
flipped), tensors are NCHW (or unbatched CHW), padding is implicit zeros for
convolution and average pooling and -inf for max pooling.  float32 and float64
are supported on the CPU; other dtypes raise ``TypeError``.  Inputs may be
non-contiguous (channels_last included); outputs are standard contiguous.
"""
from .ops.conv2d import conv2d
from .ops.conv_transpose2d import conv_transpose2d
from .ops.fused import act_conv2d, act_conv_transpose2d, conv2d_act, conv2d_act_max_pool
from .ops.pool import adaptive_avg_pool2d, avg_pool2d, max_pool2d

__all__ = ["conv2d", "conv_transpose2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "conv2d_act",
           "conv2d_act_max_pool", "act_conv2d", "act_conv_transpose2d"]
