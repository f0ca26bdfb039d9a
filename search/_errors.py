"""The search package's error for people: one line, what is wrong, which file/value, what to do."""


class UserError(Exception):
    """An error written for people; the CLI prints it as one line and exits 1."""


class WorkerStopped(BaseException):
    """SIGTERM/SIGINT arrived: the running trial ends as FAIL and is re-queued (resumed later).

    NOTE: defined here, not in _objective, so the trial loop handles signals without importing
    torch (any objective can run in it).
    """
