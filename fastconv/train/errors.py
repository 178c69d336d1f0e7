"""The errors ``fastconv train`` reports as one line, without a traceback."""
from __future__ import annotations


class UsageError(Exception):
    """A bad combination of options, an unusable checkpoint or an unavailable device."""


class JobError(Exception):
    """A multi-process job that cannot go on: another process died or stopped responding."""
