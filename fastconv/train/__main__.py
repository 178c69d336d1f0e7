"""``python -m fastconv.train <model> [options]``: the same as ``fastconv train``."""
import sys

from . import main

sys.exit(main())
