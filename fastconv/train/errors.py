"""The errors ``fastconv train`` reports as one line, without a traceback."""
from __future__ import annotations


class UsageError(Exception):
    """A bad combination of options, an unusable checkpoint or an unavailable device."""


class JobError(Exception):
    """A multi-process job that cannot go on: another process died or stopped responding."""


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message (its type's name when the message is empty)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
