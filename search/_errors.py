"""The search package's error for people: one line, what is wrong, which file/value, what to do."""


class UserError(Exception):
    """An error written for people; the CLI prints it as one line and exits 1."""
