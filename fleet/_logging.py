"""Worker log lines: `[slot] LEVEL msg` text, or JSON lines for log shippers (--log-format json).

Exercise: `histosweep worker STUDY --gpus cpu --trials-per-gpu 2 --log-format json`.
"""

from __future__ import annotations

import json
import logging
import time

LOG_FORMATS = ("text", "json")
CONTEXT_FIELDS = ("trial", "fold", "epoch")  # passed as `extra=` where the caller knows them


class JsonLineFormatter(logging.Formatter):
    """One JSON object per line: ts (UTC, ISO 8601), level, slot, pid, msg, and trial/fold/epoch."""

    def __init__(self, slot: str) -> None:
        super().__init__()
        self.slot = slot

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        doc = {"ts": f"{ts}.{int(record.msecs):03d}Z", "level": record.levelname,
               "slot": self.slot, "pid": record.process, "msg": record.getMessage()}
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                doc[name] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def make_formatter(log_format: str, slot: str) -> logging.Formatter:
    if log_format == "json":
        return JsonLineFormatter(slot)
    # NOTE: no pid in the tag: each worker process writes its own file (STUDY-HOST-PID-SLOT.log)
    return logging.Formatter(f"%(asctime)s [{slot}] %(levelname)s %(message)s")


def without_epoch_lines(record: logging.LogRecord) -> bool:
    """A handler filter: per-epoch lines stay off a terminal that shows progress bars."""
    return getattr(record, "epoch", None) is None
