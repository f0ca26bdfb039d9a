"""The search package's errors: UserError (re-exported from the one base) and WorkerStopped."""

from histosweep.exceptions import UserError

__all__ = ["UserError", "WorkerStopped"]


class WorkerStopped(BaseException):
    """SIGTERM/SIGINT arrived: the running trial ends as FAIL and is re-queued (resumed later).

    NOTE: defined here, not in _objective, so the trial loop handles signals without importing
    torch (any objective can run in it).
    """
