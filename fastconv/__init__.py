"""fastconv: exact, fast 2D convolution, pooling and SSIM for PyTorch and NumPy."""
from . import functional, nn  # noqa: F401  (registers the torch.library custom ops)
from .convert import convert_model  # noqa: F401

__version__ = "0.1.0"
