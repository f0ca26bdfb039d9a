"""The one error base: every error histosweep raises for people derives from HistosweepError.

The CLI catches HistosweepError by type and prints its message as one line (exit 1).
"""

from __future__ import annotations

__all__ = ["HistosweepError", "UserError", "one_line"]


class HistosweepError(Exception):
    """An error written for people: one line, what is wrong, which file or value, what to do."""


class UserError(HistosweepError):
    """Bad input at the command line or in the study (a flag, a study name, a trial number)."""


def one_line(exc: BaseException, *, limit: int = 300, name: bool = True) -> str:
    """`Name: first line` of an exception (its name alone when it says nothing), at most `limit`
    characters: for one-line messages. name=False: the first line only (the name when empty)."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    if not first:
        return type(exc).__name__
    return (f"{type(exc).__name__}: {first}" if name else first)[:limit]
