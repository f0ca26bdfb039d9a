"""The one error base: every error histosweep raises for people derives from HistosweepError.

The CLI catches HistosweepError by type and prints its message as one line (exit 1).
"""

from __future__ import annotations

__all__ = ["HistosweepError", "UserError"]


class HistosweepError(Exception):
    """An error written for people: one line, what is wrong, which file or value, what to do."""


class UserError(HistosweepError):
    """Bad input at the command line or in the study (a flag, a study name, a trial number)."""
