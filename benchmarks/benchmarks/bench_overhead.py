"""Per-call overhead: tiny problems (1x1x4x4), where the Python around a kernel is the whole cost.

``CallOverheadRatio.track_ratio_vs_torch`` is fastconv time / torch time per call (the CPU
engine issue's bar: at most 2), both timed in the same call; ``CallOverhead.time_call`` the
absolute times.
"""
from __future__ import annotations

import torch
import torch.nn.functional as TF

from .common import speedup

CALLS = ["conv2d", "conv2d_fwd_bwd", "max_pool2d", "avg_pool2d"]


def make_call(name: str, backend: str):
    """A zero-argument callable doing one tiny call of ``name``."""
    import fastconv.functional as F
    m = F if backend == "fastconv" else TF
    x = torch.randn(1, 1, 4, 4)
    w = torch.randn(1, 1, 3, 3)
    xg = x.clone().requires_grad_(True)
    if name == "conv2d":
        return lambda: m.conv2d(x, w, padding=1)
    if name == "conv2d_fwd_bwd":
        return lambda: m.conv2d(xg, w, padding=1).sum().backward()
    if name == "max_pool2d":
        return lambda: m.max_pool2d(x, 2)
    return lambda: m.avg_pool2d(x, 2)


class CallOverhead:
    params = [CALLS, ["fastconv", "torch"]]
    param_names = ["call", "backend"]

    def setup(self, call, backend):
        self.fn = make_call(call, backend)

    def time_call(self, call, backend):
        self.fn()


class CallOverheadRatio:
    params = [CALLS]
    param_names = ["call"]
    unit = "ratio"

    def setup(self, call):
        self.fast, self.peer = make_call(call, "fastconv"), make_call(call, "torch")

    def track_ratio_vs_torch(self, call):
        return 1.0 / speedup(self.fast, self.peer, k=5, budget=0.02)
