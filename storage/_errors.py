"""The storage package's one error type."""

from histosweep.exceptions import HistosweepError


class StorageError(HistosweepError):
    """A storage problem written for people: one line, what is wrong and what to do."""
