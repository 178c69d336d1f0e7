"""``OpTester``: the standard checks every fastconv op passes, so a new op is one subclass.

A subclass (named ``Test...`` so pytest collects it) defines

* ``fn`` / ``ref``: the fastconv function and its torch reference, called ``fn(*tensors, **kw)``;
* :meth:`samples`: ``(shapes, kwargs)`` cases -- the tensors are made from the shapes, the
  first one the input, all of them differentiable;
* optionally :meth:`bad_calls` (arguments and the exception a torch user would get) and
  ``compile_sample``.

and inherits: values and gradients against torch in every dtype on every device (a case
torch rejects must be rejected too), gradcheck and gradgradcheck in float64, channels_last
and non-contiguous inputs, an empty batch, ``torch.compile(fullgraph=True)`` and the
errors.  The dtype tolerances are the one table in :mod:`helpers`.
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Sequence, Tuple

import pytest
import torch

from helpers import assert_close, grads, leaf

Case = Tuple[Sequence[Sequence[int]], Dict]


class OpTester:
    fn = None
    ref = None
    #: dtypes every case runs in.
    dtypes = (torch.float64, torch.float32)
    #: extra tolerance factor for float32 (long reductions).
    float32_scale = 1.0

    @staticmethod
    def _call(f, tensors, kwargs):
        return f(*tensors, **kwargs)

    def samples(self) -> List[Case]:
        raise NotImplementedError

    def bad_calls(self) -> Iterable[Tuple[tuple, dict, type, str]]:
        return []

    def make(self, shapes, device, dtype, layout=None, requires_grad=True, seed=0):
        g = torch.Generator().manual_seed(seed)
        out = []
        for i, shape in enumerate(shapes):
            if shape is None:
                out.append(None)
                continue
            t = torch.randn(*shape, generator=g, dtype=torch.float64)
            t = leaf(t, device, dtype, channels_last=layout == "channels_last" and i == 0,
                     noncontig=layout == "strided" and i == 0)
            out.append(t if requires_grad else t.detach())
        return out

    def check(self, shapes, kwargs, device, dtype, layout=None):
        tensors = self.make(shapes, device, dtype, layout)
        try:
            want = self._call(type(self).ref, tensors, kwargs)
        except RuntimeError:
            with pytest.raises((RuntimeError, ValueError)):
                self._call(type(self).fn, tensors, kwargs)
            return
        got = self._call(type(self).fn, tensors, kwargs)
        assert got.shape == want.shape and got.dtype == want.dtype and got.is_contiguous()
        scale = self.float32_scale if dtype == torch.float32 else 1.0
        rtol, atol = (None, None) if scale == 1.0 else (1e-5 * scale, 1e-5 * scale)
        assert_close(got, want, rtol, atol)
        seed = torch.randn_like(want)
        for a, b in zip(grads(got, tensors, seed), grads(want, tensors, seed)):
            assert_close(a, b, rtol, atol)

    # ------------------------------------------------------------------ the standard checks

    @pytest.mark.parametrize("dtype_index", [0, 1])
    def test_values_and_gradients(self, device, dtype_index):
        dtype = self.dtypes[dtype_index]
        for shapes, kwargs in self.samples():
            self.check(shapes, kwargs, device, dtype)

    def test_gradcheck(self):
        for shapes, kwargs in self.samples()[:2]:
            tensors = self.make([[max(1, min(v, 5)) for v in s] if s is not None else None for s in shapes],
                                "cpu", torch.float64)
            try:
                self._call(type(self).ref, tensors, kwargs)
            except RuntimeError:
                continue
            fn = lambda *t: self._call(type(self).fn, t, kwargs)  # noqa: E731
            live = tuple(t for t in tensors)
            assert torch.autograd.gradcheck(fn, live)
            assert torch.autograd.gradgradcheck(fn, live)

    @pytest.mark.parametrize("layout", ["channels_last", "strided"])
    def test_noncontiguous_input(self, device, layout):
        shapes, kwargs = self.samples()[0]
        self.check(shapes, kwargs, device, torch.float64, layout)

    def test_empty_batch(self, device):
        shapes, kwargs = self.samples()[0]
        tensors = self.make([(0, *shapes[0][1:])] + list(shapes[1:]), device, torch.float64)
        got = self._call(type(self).fn, tensors, kwargs)
        want = self._call(type(self).ref, tensors, kwargs)
        assert got.shape == want.shape
        got.sum().backward()
        assert tensors[0].grad.shape == tensors[0].shape

    def test_compile_fullgraph(self):
        shapes, kwargs = self.samples()[0]
        tensors = self.make(shapes, "cpu", torch.float32, requires_grad=False)
        compiled = torch.compile(lambda *t: self._call(type(self).fn, t, kwargs), fullgraph=True, backend="aot_eager")
        assert_close(compiled(*tensors), self._call(type(self).fn, tensors, kwargs))

    def test_bad_calls(self):
        for args, kwargs, exc, match in self.bad_calls():
            with pytest.raises(exc, match=match):
                type(self).fn(*args, **kwargs)
