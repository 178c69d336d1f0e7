"""Run before each gallery example (sphinx-gallery's ``reset_modules``)."""
from __future__ import annotations

import warnings


def quiet_compiler_pedantry(gallery_conf, fname, when=None):
    """Hide Numba's NumbaIRAssumptionWarning: an internal pedantic check that Numba prints
    while it *compiles* some kernels (a fresh cache) and that says nothing about the example's
    results; left in, it would end up in the example's printed output."""
    try:
        from numba.core.errors import NumbaIRAssumptionWarning
    except ImportError:  # pragma: no cover - older or newer Numba
        return
    warnings.filterwarnings("ignore", category=NumbaIRAssumptionWarning)
