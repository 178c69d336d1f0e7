"""``fastconv.nn``: torch.nn-compatible layers running fastconv kernels, and SSIM modules."""
from .fused import FusedConv2d, PreActConv2d, PreActConvTranspose2d
from .modules import AdaptiveAvgPool2d, AvgPool2d, Conv2d, ConvTranspose2d, MaxPool2d
from .ssim import MS_SSIM, SSIM, SSIMLoss

__all__ = ["Conv2d", "ConvTranspose2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "FusedConv2d", "PreActConv2d",
           "PreActConvTranspose2d", "SSIM", "MS_SSIM", "SSIMLoss"]
