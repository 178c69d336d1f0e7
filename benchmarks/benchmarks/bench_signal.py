"""Image convolution: fastconv against SciPy, OpenCV and torch on one 2-D image.

The grid is the seed report's: square images of 64..512 px, odd kernels 3, 7, 15,
float64 and float32, mode 'same' with zero fill (``scipy.signal.convolve2d(a, k, 'same')``).
Every implementation computes the *same* array; ``setup`` checks it against
``fastconv.signal.convolve2d`` before anything is timed.

* ``scipy.ndimage.convolve(a, k, mode='constant', cval=0)``: same centring for odd kernels.
* ``scipy.signal.oaconvolve(a, k, 'same')``: overlap-add FFT (round-off differs; checked loosely).
* ``cv2.filter2D`` is a *correlation* with an anchor and a reflecting border by default.
  Convolution = correlation with the kernel flipped in both axes; the anchor
  ``k // 2`` centres it as SciPy does, and ``borderType=cv2.BORDER_CONSTANT``
  pads with zeros like ``boundary='fill'``.
* ``torch.conv2d`` is a correlation too: flipped kernel on a 1x1xHxW tensor,
  ``padding='same'`` (odd kernels); the tensors are made in ``setup`` so no copy is timed.
* ``fastconv.filters.filter2d(method=...)`` for the dense methods; the separable method
  needs a rank-1 kernel and is timed in ``GaussianFilter``.
"""
from __future__ import annotations

import numpy as np
import scipy.ndimage as ndi
import scipy.signal as ss
import torch
import torch.nn.functional as F

from fastconv.signal import convolve2d

from .common import (DTYPES, IMAGE_SIZES, KERNEL_SIZES, fastconv_filters, require_cv2, rng, speedup)

DENSE_IMPLS = [
    "fastconv.convolve2d",
    "fastconv.filter2d[auto]",
    "fastconv.filter2d[direct]",
    "fastconv.filter2d[fft]",
    "scipy.signal.convolve2d",
    "scipy.ndimage.convolve",
    "scipy.signal.oaconvolve",
    "cv2.filter2D",
    "torch.conv2d",
]


def _tolerance(dtype: np.dtype, impl: str, k: int):
    eps = np.finfo(dtype).eps
    scale = 64 * k if ("fft" in impl or "oaconvolve" in impl or "auto" in impl) else 4 * k
    return scale * eps * k  # relative to max|a| * sum|k| ~ k for standard normal data


def make_call(impl: str, a: np.ndarray, w: np.ndarray):
    """A zero-argument callable computing ``convolve2d(a, w, 'same')`` with ``impl``."""
    k = w.shape[0]
    if impl == "fastconv.convolve2d":
        return lambda: convolve2d(a, w, "same")
    if impl.startswith("fastconv.filter2d["):
        filter2d = fastconv_filters().filter2d
        method = impl[len("fastconv.filter2d["):-1]
        return lambda: filter2d(a, w, mode="same", boundary="fill", method=method)
    if impl == "scipy.signal.convolve2d":
        return lambda: ss.convolve2d(a, w, "same")
    if impl == "scipy.ndimage.convolve":
        return lambda: ndi.convolve(a, w, mode="constant", cval=0.0)
    if impl == "scipy.signal.oaconvolve":
        return lambda: ss.oaconvolve(a, w, "same")
    if impl == "cv2.filter2D":
        cv2 = require_cv2()
        wf = np.ascontiguousarray(w[::-1, ::-1])          # correlation -> convolution
        anchor = (k // 2, k // 2)  # SciPy's 'same' centring: full output from offset k // 2
        return lambda: cv2.filter2D(a, -1, wf, anchor=anchor, borderType=cv2.BORDER_CONSTANT)
    if impl == "torch.conv2d":
        x = torch.from_numpy(a)[None, None]
        wt = torch.from_numpy(np.ascontiguousarray(w[::-1, ::-1]))[None, None]
        return lambda: F.conv2d(x, wt, padding="same")
    raise ValueError(impl)


def _result(out) -> np.ndarray:
    if hasattr(out, "numpy"):
        out = out.numpy()
    return np.asarray(out).reshape(np.asarray(out).shape[-2:])


def checked_call(impl: str, a: np.ndarray, w: np.ndarray):
    """``make_call`` after checking the result against ``fastconv.signal.convolve2d``."""
    fn = make_call(impl, a, w)
    got = _result(fn())
    ref = convolve2d(a, w, "same")
    err = float(np.max(np.abs(got - ref))) / max(float(np.max(np.abs(ref))), 1e-30)
    if got.shape != ref.shape or not err <= _tolerance(a.dtype, impl, w.shape[0]):
        raise AssertionError(f"{impl} disagrees with convolve2d(mode='same'): shape {got.shape}, rel err {err:.3g}")
    return fn


def _image(size: int, k: int, dtype: str, offset: int = 0):
    r = rng(offset)
    a = r.standard_normal((size, size)).astype(dtype)
    w = r.standard_normal((k, k)).astype(dtype)
    return a, w


class Convolve2dSame:
    """Time per call of 2-D 'same' convolution with a dense random kernel."""
    params = [DENSE_IMPLS, IMAGE_SIZES, KERNEL_SIZES, DTYPES]
    param_names = ["impl", "size", "kernel", "dtype"]
    # scipy.signal.convolve2d at 512 px x 15 takes ~0.2 s (float64): cap the samples
    # so that the slow direct peer does not dominate the suite's runtime.
    repeat = (1, 5, 2.0)
    warmup_time = 0.05
    rounds = 1  # 216 / 48 parameter sets: one round keeps the suite's runtime bounded
    timeout = 120

    def setup(self, impl, size, kernel, dtype):
        a, w = _image(size, kernel, dtype)
        self.fn = checked_call(impl, a, w)

    def time_convolve(self, impl, size, kernel, dtype):
        self.fn()


def _gaussian(k: int, dtype: str) -> np.ndarray:
    x = np.arange(k) - (k - 1) / 2
    g = np.exp(-0.5 * (x / (k / 6.0)) ** 2)
    g /= g.sum()
    return np.outer(g, g).astype(dtype)


SEPARABLE_IMPLS = [
    "fastconv.filter2d[separable]",
    "fastconv.filter2d[auto]",
    "fastconv.convolve2d",
    "scipy.ndimage.convolve",
    "cv2.sepFilter2D",
    "cv2.filter2D",
]


class GaussianFilter:
    """A rank-1 (Gaussian) kernel, where two 1-D passes beat one 2-D pass."""
    params = [SEPARABLE_IMPLS, [128, 512], [7, 15], DTYPES]
    param_names = ["impl", "size", "kernel", "dtype"]
    repeat = (1, 5, 2.0)
    warmup_time = 0.05
    rounds = 1  # 216 / 48 parameter sets: one round keeps the suite's runtime bounded

    def setup(self, impl, size, kernel, dtype):
        a = rng(1).standard_normal((size, size)).astype(dtype)
        w = _gaussian(kernel, dtype)
        if impl == "cv2.sepFilter2D":
            cv2 = require_cv2()
            g = np.ascontiguousarray(w.sum(axis=0))  # the 1-D factor (symmetric: flip is a no-op)
            anchor = (kernel // 2, kernel // 2)
            self.fn = lambda: cv2.sepFilter2D(a, -1, g, g, anchor=anchor, borderType=cv2.BORDER_CONSTANT)
            ref = convolve2d(a, w, "same")
            if not np.allclose(self.fn(), ref, rtol=0, atol=1e3 * np.finfo(dtype).eps * np.abs(ref).max()):
                raise AssertionError("cv2.sepFilter2D disagrees with convolve2d(mode='same')")
        else:
            self.fn = checked_call(impl, a, w)

    def time_filter(self, impl, size, kernel, dtype):
        self.fn()


class Convolve2dSpeedup:
    """Speedup of ``fastconv.signal.convolve2d`` over each peer (peer time / fastconv time).

    Both are timed in the same call (best of 3, interleaved), so the ratio is not
    skewed by load that changes between benchmarks.  > 1 means fastconv is faster.
    """
    params = [["scipy.signal.convolve2d", "scipy.ndimage.convolve", "scipy.signal.oaconvolve",
               "cv2.filter2D", "torch.conv2d"], IMAGE_SIZES, KERNEL_SIZES, DTYPES]
    param_names = ["peer", "size", "kernel", "dtype"]
    unit = "ratio"
    timeout = 180

    def setup(self, peer, size, kernel, dtype):
        a, w = _image(size, kernel, dtype)
        self.fast = make_call("fastconv.convolve2d", a, w)
        self.peer = checked_call(peer, a, w)  # NotImplementedError (skip) for a missing peer

    def track_speedup(self, peer, size, kernel, dtype):
        return speedup(self.fast, self.peer, k=3)


class PeakMemConvolve2d:
    """Peak resident memory of the benchmark process for one 1024x1024, 15x15 'same' convolution."""
    params = [["fastconv.convolve2d", "scipy.signal.convolve2d", "scipy.ndimage.convolve",
               "scipy.signal.oaconvolve", "cv2.filter2D"], DTYPES]
    param_names = ["impl", "dtype"]

    def setup(self, impl, dtype):
        if impl.startswith("cv2"):
            require_cv2()
        self.a, self.w = _image(1024, 15, dtype, offset=2)
        self.impl = impl

    def peakmem_convolve(self, impl, dtype):
        make_call(self.impl, self.a, self.w)()
