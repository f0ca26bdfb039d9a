"""Export leases: export-best registers its candidate trials on the study (a study system attr)
while it runs, and gc — `histosweep gc` and the workers' `create --keep-top` gc — spares them.

Exercise: `histosweep export-best STUDY --out bundle` while workers with `--keep-top` run.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import socket
import uuid
from collections.abc import Iterator
from typing import Any

from histosweep.storage import delete_study_system_attr, pid_alive, study_id, study_storage

LEASE_PREFIX = "export_lease:"  # study system attr key prefix; one key per running export
# NOTE: generous, never renewed: an export reads its candidates' checkpoints within minutes to an
# hour; a SIGKILLed export (no `finally`) keeps gc off its candidates for this long at most.
LEASE_TTL_S = 6 * 3600


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def format_time(iso: str) -> str:
    """An ISO time as people read it in a log: '2026-12-07 00:56:46 UTC'."""
    moment = datetime.datetime.fromisoformat(iso).astimezone(datetime.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


@contextlib.contextmanager
def export_lease(study, numbers: list[int], *, ttl_s: float = LEASE_TTL_S) -> Iterator[str]:
    """Hold a lease on trials `numbers` for the body; removed at the end, also on error."""
    storage, sid = study_storage(study), study_id(study)
    key = LEASE_PREFIX + uuid.uuid4().hex
    started = _now()
    storage.set_study_system_attr(sid, key, {
        "trials": sorted(int(n) for n in numbers),
        "started": started.isoformat(timespec="seconds"),
        "expires": (started + datetime.timedelta(seconds=ttl_s)).isoformat(timespec="seconds"),
        "by": f"export-best on {socket.gethostname()} pid {os.getpid()}",
        "host": socket.gethostname(), "pid": os.getpid(),
    })
    try:
        yield key
    finally:
        # NOTE: best effort: with the database gone the export fails on its own error, and the
        # lease lapses at its expiry
        with contextlib.suppress(Exception):
            delete_study_system_attr(storage, sid, key)


def live_leases(study) -> dict[str, dict[str, Any]]:
    """The study's live leases by key (read from the storage, not a cache): unexpired, and not
    held by a process of this host that has ended (a SIGKILLed export lets go at once here)."""
    attrs = study_storage(study).get_study_system_attrs(study_id(study))
    now = _now()
    return {k: v for k, v in attrs.items() if k.startswith(LEASE_PREFIX) and isinstance(v, dict)
            and datetime.datetime.fromisoformat(v["expires"]) > now and not _holder_gone(v)}


def _holder_gone(lease: dict[str, Any]) -> bool:
    return lease.get("host") == socket.gethostname() and not pid_alive(int(lease.get("pid", -1)))


def leased_trials(study) -> dict[int, str]:
    """Trial number -> why gc keeps it ("export lease: export-best on HOST pid P since T")."""
    leased: dict[int, str] = {}
    for lease in live_leases(study).values():
        reason = f"export lease: {lease.get('by', 'export-best')} since {format_time(lease['started'])}"
        for number in lease.get("trials", []):
            leased.setdefault(int(number), reason)
    return leased


def drop_expired_leases(study) -> int:
    """Remove leases past their expiry (an export killed outright); returns how many."""
    storage, sid = study_storage(study), study_id(study)
    attrs = storage.get_study_system_attrs(sid)
    live = live_leases(study)
    expired = [k for k, v in attrs.items()
               if k.startswith(LEASE_PREFIX) and v is not None and k not in live]
    for key in expired:
        delete_study_system_attr(storage, sid, key)
    return len(expired)
