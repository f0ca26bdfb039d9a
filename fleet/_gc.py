"""Artifact retention: delete the fold checkpoints of trials nobody will export or resume, and
measure what a study keeps in a folder store. Probabilities, metrics and pictures stay (small;
export-best reads every candidate's probabilities).

Exercise: `histosweep gc STUDY --keep-top 20 [--dry-run]`; `create --keep-top N` makes workers
run it after each finished trial. The candidates of a running export-best (its lease) are spared;
each trial gc cleans records when (user attr checkpoints_deleted_at), so export can say so.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass, field
from typing import Any

from histosweep.fleet._check import stored_trials
from histosweep.fleet._lease import drop_expired_leases, format_time, leased_trials
from histosweep.search import UserError, is_imported
from histosweep.storage import (
    DEFAULT_MAX_RETRY,
    artifact_sizes,
    linked_artifact_ids,
    resolve_artifacts,
    set_finished_user_attr,
    store_folder,
    study_id,
    study_storage,
    trial_id,
    trials_with_user_attr,
    user_attr_values,
)

log = logging.getLogger("histosweep")
DELETED_ATTR = "checkpoints_deleted"  # user attr of a trial whose checkpoints gc removed
DELETED_AT_ATTR = "checkpoints_deleted_at"  # ... and when (ISO time, UTC), set before removing
REQUEUED_MARK = "re-queued to resume"  # the worker's fail_reason of a trial it re-queues


@dataclass
class GcPlan:
    """What gc deletes (trial number -> checkpoint ids) and why it keeps the others."""

    delete: dict[int, list[str]] = field(default_factory=dict)
    kept: dict[int, str] = field(default_factory=dict)  # trial number -> reason
    states: dict[int, str] = field(default_factory=dict)


def checkpoint_ids(trial) -> list[str]:
    """The checkpoint artifact ids of a trial's fold records (user attrs fold_<k>)."""
    return [v["checkpoint"] for k, v in sorted(trial.user_attrs.items())
            if k.startswith("fold_") and isinstance(v, dict) and v.get("checkpoint")]


def rank_complete(trials) -> list:
    """COMPLETE trials run here best first, ties by number: export-best's candidate order
    (imported trials are another study's: no checkpoints here, never a candidate)."""
    from optuna.trial import TrialState

    complete = [t for t in trials if t.state == TrialState.COMPLETE and not is_imported(t)]
    return sorted(complete, key=lambda t: (-float(t.value), t.number))


def plan_gc(trials, keep_top: int, *, done: set[int] = frozenset(),
            leased: dict[int, str] | None = None, max_retry: int | None = DEFAULT_MAX_RETRY) -> GcPlan:
    """Decide per trial; `done`: trial ids gc already handled (skipped); `leased`: trial number
    -> reason, the candidates of running exports (leased_trials).

    Kept: RUNNING and WAITING trials, the top `keep_top` COMPLETE trials by value, leased
    trials, and FAIL trials that can still be resumed (a WAITING/RUNNING retry names them in failed_trial or
    retry_history, or the worker's re-queue is still to come). A checkpoint id any kept trial
    also holds (a retry copies its failed trial's fold records) is never deleted.
    """
    top = {t.number for t in rank_complete(trials)[:keep_top]}
    retries: dict[int, list] = {}
    for t in trials:
        named = set(t.system_attrs.get("retry_history") or [])
        if t.system_attrs.get("failed_trial") is not None:
            named.add(t.system_attrs["failed_trial"])
        for number in named:
            retries.setdefault(number, []).append(t)
    plan = GcPlan(states={t.number: t.state.name for t in trials})
    candidates = []
    for t in trials:
        reason = _keep_reason(t, top, retries.get(t.number, []), keep_top, max_retry) or \
            (leased or {}).get(t.number)
        if reason:
            plan.kept[t.number] = reason
        elif trial_id(t) not in done and checkpoint_ids(t):
            candidates.append(t)
    # NOTE: each id once: a retry's fold records are copies of its failed trial's
    claimed = {a for t in trials if t.number in plan.kept for a in checkpoint_ids(t)}
    for t in candidates:
        ids = [a for a in checkpoint_ids(t) if a not in claimed]
        claimed.update(ids)
        if ids:  # all held by kept trials: nothing to do now, looked at again next time
            plan.delete[t.number] = ids
    return plan


def _keep_reason(t, top: set[int], retries: list, keep_top: int, max_retry) -> str | None:
    state = t.state.name
    if state in ("RUNNING", "WAITING"):
        return state.lower()
    if state == "COMPLETE" and t.number in top:
        return f"top {keep_top}"
    if state != "FAIL":
        return None
    live = [r for r in retries if r.state.name in ("RUNNING", "WAITING")]
    if live:
        return f"resumable: retry trial {live[0].number} is {live[0].state.name.lower()}"
    if not retries and _requeue_due(t, max_retry):
        return "resumable: its retry is still to be queued"
    return None


def _requeue_due(t, max_retry) -> bool:
    """A FAIL trial the worker (stop signal, database outage) or the heartbeat check (no reason
    recorded) re-queues, within the retry budget, that no retry names yet."""
    reason = t.user_attrs.get("fail_reason")
    requeued = reason is None or REQUEUED_MARK in str(reason)
    history = t.system_attrs.get("retry_history") or []
    return requeued and (max_retry is None or len(history) < max_retry)


def check_keep_top(keep_top: int) -> None:
    if keep_top < 1:
        raise UserError(f"--keep-top {keep_top}: must be >= 1, and at least the --candidates "
                        "export-best will select from")


def _refuse_missing_folder(spec: str | None, trials, name: str) -> None:
    """why: in a folder that is not there gc finds no file, yet would mark the trials cleaned
    (export-best then refuses them) while their checkpoints stay in the workers' store."""
    folder = store_folder(resolve_artifacts(spec))
    if folder is not None and not folder.is_dir() and (stored := stored_trials(trials)):
        raise UserError(f"--artifacts {folder}: no such folder, but {stored} trial(s) of {name!r} "
                        "have files in the store the workers wrote to; pass --artifacts where "
                        "they are (env HISTOSWEEP_ARTIFACTS)")


def collect_garbage(study, store, spec: str | None, *, keep_top: int, dry_run: bool = False) -> dict[str, Any]:
    """Delete (or with dry_run list) the checkpoints plan_gc picks; mark each trial handled with
    user attrs checkpoints_deleted_at (first) and checkpoints_deleted = true. Returns a summary
    with the bytes freed."""
    check_keep_top(keep_top)
    storage = study_storage(study)
    trials = study.get_trials(deepcopy=False)
    _refuse_missing_folder(spec, trials, study.study_name)
    # NOTE: from the database, not the trials: a process caches finished trials without it
    done = trials_with_user_attr(storage, study_id(study), DELETED_ATTR)
    if not dry_run:
        drop_expired_leases(study)
    plan = plan_gc(trials, keep_top, done=done, leased=leased_trials(study))
    by_number = {t.number: t for t in trials}
    sizes = artifact_sizes(spec, sorted({a for ids in plan.delete.values() for a in ids}))
    deleted, total = [], 0
    for number, ids in sorted(plan.delete.items()):
        if not dry_run:
            # NOTE: asked again per trial: an export may have leased it since the plan
            if lease := leased_trials(study).get(number):
                plan.kept[number] = lease
                continue
            tid = trial_id(by_number[number])
            set_finished_user_attr(storage, tid, DELETED_AT_ATTR, _utc_now())
            _remove(store, spec, number, ids)
            set_finished_user_attr(storage, tid, DELETED_ATTR, True)
        size = sum(sizes[a] for a in ids)
        deleted.append({"trial": number, "state": plan.states[number], "checkpoints": ids, "bytes": size})
        total += size
    return {
        "study": study.study_name, "keep_top": keep_top, "dry_run": dry_run, "deleted": deleted,
        "kept": [{"trial": n, "reason": r} for n, r in sorted(plan.kept.items())],
        "bytes_freed": total,
    }


def _utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def gc_removed_at(study, trial) -> str | None:
    """When gc removed the trial's checkpoints ('2026-12-07 00:56:46 UTC'; 'at an unrecorded
    time' by a gc older than the time mark), read from the database; None when it did not."""
    storage, sid = study_storage(study), study_id(study)
    when = user_attr_values(storage, sid, DELETED_AT_ATTR).get(trial_id(trial))
    if when:
        return format_time(str(when))
    deleted = trial.user_attrs.get(DELETED_ATTR) or trial_id(trial) in trials_with_user_attr(
        storage, sid, DELETED_ATTR)
    return "an unrecorded time" if deleted else None


def gc_removed_message(name: str, when: str) -> str:
    """The one line export-best says for a member ('trial 3', "study 'a' trial 3") whose
    checkpoints gc removed."""
    return (f"{name}'s checkpoints were removed by gc at {when}; it was outside the "
            "--keep-top kept then: export with --candidates at most that N, or name kept trials "
            "with --trial")


def _remove(store, spec, number: int, ids: list[str]) -> None:
    from optuna.artifacts.exceptions import ArtifactNotFound

    for artifact_id in ids:
        try:
            store.remove(artifact_id)
        except ArtifactNotFound:  # another worker's gc, or removed by hand
            continue
        except Exception as exc:  # noqa: BLE001 - OSError, botocore errors
            raise UserError(f"cannot delete checkpoint {artifact_id} of trial {number} from the "
                            f"artifact store {spec}: {exc}") from None


def retention_pass(study, store, spec: str | None, keep_top: int) -> None:
    """A worker's gc after each finished trial (create --keep-top N); never stops the worker."""
    if keep_top < 1:
        return
    try:
        summary = collect_garbage(study, store, spec, keep_top=keep_top)
    except Exception as exc:  # noqa: BLE001 - retention must not end a search
        log.warning("gc after the trial failed, nothing lost: %s", str(exc).splitlines()[0] if str(exc) else exc)
        return
    if summary["deleted"]:
        trials = ", ".join(str(d["trial"]) for d in summary["deleted"])
        log.info("gc: removed fold checkpoints of trial(s) %s outside the top %d (%s)", trials,
                 keep_top, format_bytes(summary["bytes_freed"]))


def study_artifact_bytes(study, spec: str | None) -> int:
    """Bytes of every artifact the study's trials registered (a folder or an S3 store)."""
    ids = {a for t in study.get_trials(deepcopy=False) for a in linked_artifact_ids(t)}
    return sum(artifact_sizes(spec, sorted(ids)).values())


def format_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
