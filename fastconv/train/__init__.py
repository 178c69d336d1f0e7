"""``fastconv train``: train the seed models (:mod:`fastconv.models`) on fastconv kernels with
offline data, on one process or many (``torchrun``).  ``main(argv)`` is the command; see
``fastconv train --help``."""
from .engine import main, train
from .options import resolve_args

__all__ = ["main", "resolve_args", "train"]
