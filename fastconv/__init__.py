"""fastconv: exact, fast 2D convolution, pooling and SSIM for PyTorch and NumPy.

* :mod:`fastconv.functional` -- conv2d, conv_transpose2d, max/avg/adaptive-avg pooling
  with ``torch.nn.functional``'s signatures (torch.library custom ops with autograd);
* :mod:`fastconv.nn` -- drop-in torch.nn layers, plus SSIM/MS-SSIM modules and losses;
* :func:`convert_model` -- swap a model's conv/pool layers for fastconv's;
* :func:`ssim`, :func:`ms_ssim`, :func:`psnr` -- differentiable image-quality metrics;
* :mod:`fastconv.signal`, :mod:`fastconv.filters` -- SciPy-compatible NumPy image API;
* :func:`empty_cache` -- free the memory the CPU kernels keep between calls.
"""
from . import _numba  # noqa: F401  (first: where Numba caches the kernels)
from . import filters, functional, nn, signal  # noqa: F401  (registers the torch.library custom ops)
from .convert import convert_model  # noqa: F401
from .ops.ssim import ms_ssim, psnr, ssim  # noqa: F401
from .memory import empty_cache  # noqa: F401

__version__ = "0.1.0"
__all__ = ["functional", "nn", "signal", "filters", "convert_model", "ssim", "ms_ssim", "psnr",
           "empty_cache"]
