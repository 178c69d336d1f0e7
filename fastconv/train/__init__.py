"""``fastconv train``: train the seed models (:mod:`fastconv.models`) on fastconv kernels with
offline data.  ``main(argv)`` is the command; see ``fastconv train --help``."""
from .engine import main, resolve_args, train

__all__ = ["main", "resolve_args", "train"]
