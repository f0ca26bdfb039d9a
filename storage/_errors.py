"""The storage package's one error type."""


class StorageError(Exception):
    """A storage problem written for people: one line, what is wrong and what to do."""
