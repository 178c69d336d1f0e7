"""The NumPy image engine behind :mod:`fastconv.signal` and :mod:`fastconv.filters`.

| module | holds |
| --- | --- |
| :mod:`~fastconv.image.conventions` | SciPy's modes, output geometry, output dtype, fill casting |
| :mod:`~fastconv.image.boundary` | the :class:`Boundary` enum, its index rule and the extension |
| :mod:`~fastconv.image.plan` | every threshold and the functions that pick method, kernel and threads |
| :mod:`~fastconv.image.engine` | the entry points that execute a plan |
| :mod:`~fastconv.image.direct` | the strip kernels (flat, row pairs, fused 3x3) |
| :mod:`~fastconv.image.tiles` | the register-blocked kernel |
| :mod:`~fastconv.image.separable` | exact rank-1 detection and the two-pass kernel |
| :mod:`~fastconv.image.fft` | the FFT product, exact on non-finite input |
| :mod:`~fastconv.image.ssim` | the SSIM map of two NumPy images (for :mod:`fastconv.dask`) |

The front ends are thin: they validate SciPy-style arguments and call the engine; they
call no private function of each other.
"""
from .boundary import Boundary

__all__ = ["Boundary"]
