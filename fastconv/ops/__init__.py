"""Torch-facing ops: one module per op family, each registering ``fastconv::`` custom ops
(with fake kernels and autograd) and defining its public function.

To add an op: write ``ops/<op>.py``, its kernels ``cpu/<op>.py`` (and
``cuda/<op>.py`` + ``kernels/<op>.cu``), and export its public function from the
registry, :mod:`fastconv.functional`.
"""
