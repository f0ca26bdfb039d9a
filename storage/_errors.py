"""The storage package's error types."""

from histosweep.exceptions import HistosweepError


class StorageError(HistosweepError):
    """A storage problem written for people: one line, what is wrong and what to do."""


class StoreError(StorageError):
    """The artifact store failed to write, read or remove (a folder gone or full, S3 down).

    NOTE: infrastructure, not a bad trial: the worker re-queues the trial and backs off.
    """
