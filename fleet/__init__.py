"""The fleet that runs a search: worker processes (supervisor, signals, slots), the trial loop
with heartbeats and reaping of dead trials, logging, gc, check, status, listings, dashboard.

Callers import from here, never from the private modules. The search itself (space, samplers,
pruners, objective) is histosweep.search. Exercise: `histosweep worker STUDY --gpus cpu`.
"""

from histosweep.fleet._check import Check, CheckOptions, PreflightError, preflight, run_checks
from histosweep.fleet._dashboard import (
    dashboard_url,
    listening_on,
    make_dashboard_server,
    serve_until_stopped,
)
from histosweep.fleet._db import HEARTBEAT_ATTR, PROXY_ATTR
from histosweep.fleet._gc import (
    DELETED_AT_ATTR,
    DELETED_ATTR,
    check_keep_top,
    collect_garbage,
    format_bytes,
    gc_removed_at,
    gc_removed_message,
    study_artifact_bytes,
)
from histosweep.fleet._lease import LEASE_PREFIX, export_lease, leased_trials, live_leases
from histosweep.fleet._listing import (
    format_studies,
    format_trials_table,
    list_studies,
    list_trials,
    split_groups,
    write_trials_csv,
)
from histosweep.fleet._options import WorkerOptions
from histosweep.fleet._slots import parse_trials_per_gpu
from histosweep.fleet._status import format_status, study_status, watch_status
from histosweep.fleet._supervisor import run_slot, run_workers
from histosweep.fleet._trial_loop import TrialLoop

__all__ = [
    "Check",
    "CheckOptions",
    "DELETED_ATTR",
    "DELETED_AT_ATTR",
    "HEARTBEAT_ATTR",
    "LEASE_PREFIX",
    "PROXY_ATTR",
    "PreflightError",
    "TrialLoop",
    "WorkerOptions",
    "check_keep_top",
    "collect_garbage",
    "dashboard_url",
    "export_lease",
    "gc_removed_at",
    "gc_removed_message",
    "leased_trials",
    "listening_on",
    "live_leases",
    "format_bytes",
    "format_status",
    "format_studies",
    "format_trials_table",
    "list_studies",
    "list_trials",
    "make_dashboard_server",
    "parse_trials_per_gpu",
    "preflight",
    "run_checks",
    "run_slot",
    "run_workers",
    "serve_until_stopped",
    "split_groups",
    "study_artifact_bytes",
    "study_status",
    "watch_status",
    "write_trials_csv",
]
