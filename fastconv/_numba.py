"""Numba configuration for fastconv's kernels: an on-disk cache wherever one can be written.

Every kernel is compiled on first use and cached on disk (``cache=True``), so the second
process starts at once.  Numba finds a cache directory next to the source (``__pycache__``)
or in the user's cache directory; on a read-only install with a read-only ``HOME`` (containers,
shared cluster installs) neither exists, and Numba refuses ``cache=True`` at import time.
:func:`configure_cache` runs before any kernel is defined and, in that case, points Numba at
a per-user directory under the temporary directory; if even that is not writable, kernels
compile without a cache (a ``RuntimeWarning`` says so once).  ``NUMBA_CACHE_DIR`` always wins.

Kernel modules import :func:`njit` from here instead of from Numba.
"""
from __future__ import annotations

import os
import tempfile
import warnings
from typing import Optional

import numba
from numba.misc.appdirs import AppDirs

__all__ = ["njit", "configure_cache", "CACHE_DIR", "CACHING"]


def _writable(path: str) -> bool:
    try:
        os.makedirs(path, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
        return True
    except OSError:
        return False


def configure_cache() -> Optional[str]:
    """Make Numba able to cache fastconv's kernels; returns where they are cached, or None.

    ``'<in-tree>'`` means next to the sources, as Numba does by default.
    """
    if numba.config.CACHE_DIR:
        return numba.config.CACHE_DIR
    here = os.path.dirname(os.path.abspath(__file__))
    if _writable(os.path.join(here, "__pycache__")):
        return "<in-tree>"
    user = AppDirs(appname="numba", appauthor=False).user_cache_dir
    if _writable(user):
        return user
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    try:
        tmp = tempfile.gettempdir()  # raises when no candidate temporary directory is writable
    except OSError:
        return None
    fallback = os.path.join(tmp, f"fastconv-numba-cache-{uid}")
    if _writable(fallback):
        numba.config.CACHE_DIR = fallback
        return fallback
    return None


#: Where the kernels are cached (None: no cache).
CACHE_DIR = configure_cache()
#: Whether ``cache=True`` takes effect.
CACHING = CACHE_DIR is not None
_warned = False


def njit(*args, **kwargs):
    """``numba.njit``, with ``cache=True`` dropped (and a warning, once) when no cache can be written."""
    global _warned
    if kwargs.get("cache") and not CACHING:
        kwargs["cache"] = False
        if not _warned:
            _warned = True
            warnings.warn("fastconv: no writable directory for Numba's cache (the install, HOME and the temporary "
                          "directory are read-only); kernels compile in every process. Set NUMBA_CACHE_DIR to a "
                          "writable directory to cache them.", RuntimeWarning, stacklevel=2)
    return numba.njit(*args, **kwargs)
