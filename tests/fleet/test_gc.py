"""`histosweep gc` and `create --keep-top`: which fold checkpoints go (pruned, failed, complete
outside the top N) and which stay (running, waiting, resumable, top N, ids a kept trial shares),
bytes freed, dry run, the trial's checkpoints_deleted mark, export-best afterwards, status's
store size, and workers running the same gc after each trial."""

from __future__ import annotations

import datetime
import json
import os
import re
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from histosweep.cli import main
from tests.bundle.test_export import build_tiny_study, export_args
from tests.search._helpers import load

REQUEUED = "worker stopped by SIGTERM; re-queued to resume"


def write_artifact(store: Path, size: int) -> str:
    artifact_id = str(uuid.uuid4())
    (store / artifact_id).write_bytes(os.urandom(size))
    return artifact_id


def fold_records(store: Path, folds: int, size: int) -> dict[str, dict]:
    """fold_<k> records with real files: a checkpoint of `size` bytes, small probs and metrics."""
    return {f"fold_{k}": {"checkpoint": write_artifact(store, size + k), "probs": write_artifact(store, 64),
                          "metrics": write_artifact(store, 16)} for k in range(folds)}


def add(study, store: Path, state: TrialState, *, value=None, records=None, size=1000, reason=None,
        retry_of: int | None = None, history=None) -> int:
    """One trial with real artifact files, registered like uploads are (system attr artifacts:<id>)."""
    records = fold_records(store, 2, size) if records is None else records
    user = dict(records)
    if reason:
        user["fail_reason"] = reason
    system = {f"artifacts:{a}": json.dumps({"artifact_id": a}) for r in records.values() for a in r.values()}
    if retry_of is not None:
        system.update(failed_trial=retry_of, retry_history=[retry_of])
    if history is not None:
        system["retry_history"] = history
    study.add_trial(optuna.trial.create_trial(state=state, value=value, params={}, distributions={},
                                              user_attrs=user, system_attrs=system))
    return len(study.get_trials(deepcopy=False)) - 1


def gc(capsys, url: str, store: Path, *extra: str) -> tuple[int, dict | str, str]:
    code = main(["gc", "syn", "--storage", url, "--artifacts", str(store), *extra])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if "--json" in extra and code == 0 else out), err


@pytest.fixture(params=["sqlite", "postgres"])
def url(request):
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")


def test_gc_deletes_exactly_the_checkpoints_nobody_needs(url, tmp_path, capsys):
    from histosweep.storage import open_storage

    store = tmp_path / "artifacts"
    store.mkdir()
    s = optuna.create_study(study_name="syn", storage=open_storage(url), direction="maximize")
    n = {}
    n["c0"] = add(s, store, TrialState.COMPLETE, value=0.9)
    n["c1"] = add(s, store, TrialState.COMPLETE, value=0.8)
    n["c2"] = add(s, store, TrialState.COMPLETE, value=0.7, size=2000)
    n["pruned"] = add(s, store, TrialState.PRUNED, records=fold_records(store, 1, 3000))
    n["boom"] = add(s, store, TrialState.FAIL, reason="ValueError: boom", size=4000)
    c0_records = {k: v for k, v in s.trials[n["c0"]].user_attrs.items() if k.startswith("fold_")}
    n["shares_c0"] = add(s, store, TrialState.FAIL, reason="ValueError: boom", records=c0_records)
    n["stopped"] = add(s, store, TrialState.FAIL, reason=REQUEUED)
    stopped_records = {k: v for k, v in s.trials[n["stopped"]].user_attrs.items() if k.startswith("fold_")}
    n["waiting_retry"] = add(s, store, TrialState.WAITING, records=stopped_records, retry_of=n["stopped"])
    n["requeue_due"] = add(s, store, TrialState.FAIL, reason="database unavailable during the trial "
                           "(OperationalError: gone); re-queued to resume")
    n["retried"] = add(s, store, TrialState.FAIL, reason=REQUEUED, size=5000)
    reused = {"fold_0": s.trials[n["retried"]].user_attrs["fold_0"],
              "fold_1": fold_records(store, 1, 6000)["fold_0"]}
    n["retry_done"] = add(s, store, TrialState.COMPLETE, value=0.1, records=reused, retry_of=n["retried"])
    n["out_of_retries"] = add(s, store, TrialState.FAIL, reason=REQUEUED, history=[1, 2, 3], size=7000)
    n["running"] = add(s, store, TrialState.RUNNING)

    trials = {t.number: t for t in s.get_trials()}
    gone = ["c2", "pruned", "boom", "retried", "retry_done", "out_of_retries"]
    expected_ids = {r["checkpoint"] for name in gone for k, r in trials[n[name]].user_attrs.items()
                    if k.startswith("fold_")}
    expected_bytes = sum((store / a).stat().st_size for a in expected_ids)
    before = {p.name for p in store.iterdir()}

    code, dry, _ = gc(capsys, url, store, "--keep-top", "2", "--dry-run", "--json")
    assert code == 0 and dry["dry_run"] is True
    assert sorted(d["trial"] for d in dry["deleted"]) == sorted(n[name] for name in gone)
    assert {a for d in dry["deleted"] for a in d["checkpoints"]} == expected_ids
    assert dry["bytes_freed"] == expected_bytes
    kept = {k["trial"]: k["reason"] for k in dry["kept"]}
    assert kept == {n["c0"]: "top 2", n["c1"]: "top 2", n["running"]: "running",
                    n["waiting_retry"]: "waiting",
                    n["stopped"]: f"resumable: retry trial {n['waiting_retry']} is waiting",
                    n["requeue_due"]: "resumable: its retry is still to be queued"}
    assert {p.name for p in store.iterdir()} == before  # the dry run deleted nothing
    assert not any("checkpoints_deleted" in t.user_attrs for t in load("syn", url).get_trials())

    code, out, _ = gc(capsys, url, store, "--keep-top", "2")
    assert code == 0 and f"freed {expected_bytes / 1024:.1f} KiB" in out, out
    assert before - {p.name for p in store.iterdir()} == expected_ids  # exactly those, nothing else
    marked = {t.number for t in load("syn", url).get_trials() if t.user_attrs.get("checkpoints_deleted")}
    assert marked == {n[name] for name in gone}

    code, again, _ = gc(capsys, url, store, "--keep-top", "2", "--json")
    assert code == 0 and again["deleted"] == [] and again["bytes_freed"] == 0


def test_keep_top_below_one_is_refused(tmp_path, capsys):
    code = main(["gc", "syn", "--keep-top", "0", "--storage", f"sqlite:///{tmp_path / 'x.db'}"])
    err = capsys.readouterr().err
    assert code == 1 and err.strip().splitlines() == [err.strip()] and "--keep-top 0: must be >= 1" in err
    assert not (tmp_path / "x.db").exists()  # refused before opening anything
    code = main(["create", "syn", "--data", str(tmp_path), "--keep-top", "-1",
                 "--storage", f"sqlite:///{tmp_path / 'x.db'}"])
    assert code == 1 and "--keep-top -1" in capsys.readouterr().err


def test_a_mistyped_artifacts_folder_is_refused_and_marks_nothing(sqlite_url, tmp_path, capsys):
    from histosweep.storage import open_storage

    store = tmp_path / "artifacts"
    store.mkdir()
    s = optuna.create_study(study_name="syn", storage=open_storage(sqlite_url), direction="maximize")
    for value in (0.9, 0.8, 0.7):
        add(s, store, TrialState.COMPLETE, value=value)
    typo = tmp_path / "artefacts"
    for extra in (("--dry-run",), ()):
        code, _, err = gc(capsys, sqlite_url, typo, "--keep-top", "1", *extra)
        assert code == 1 and err == (f"error: --artifacts {typo}: no such folder, but 3 trial(s) of 'syn' "
                                     "have files in the store the workers wrote to; pass --artifacts "
                                     "where they are (env HISTOSWEEP_ARTIFACTS)\n")
    assert not typo.exists()  # nothing made, and no trial marked cleaned while its files stay
    assert not any("checkpoints_deleted" in t.user_attrs for t in load("syn", sqlite_url).get_trials())
    code, out, _ = gc(capsys, sqlite_url, store, "--keep-top", "1")
    assert code == 0 and "deleted the checkpoints of 2 trial(s)" in out


def test_old_settings_without_keep_top_still_load():
    from histosweep.search import StudySettings

    fields = dict(data_root="/d", fingerprint="f", space={}, sample_ids=[], labels=[], split={}, folds=2,
                  holdout=0.2, seed=0, pruner="none", keep_flagged=False, excluded=[])
    assert StudySettings.from_json(fields).keep_top == 0


# --- on a trained study ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return build_tiny_study(tmp_path_factory.mktemp("gc-study"))


def status_bytes(capsys, paths) -> int:
    assert main(["status", "demo", "--storage", paths.storage, "--artifacts", str(paths.artifacts),
                 "--json"]) == 0
    return json.loads(capsys.readouterr().out)["artifact_bytes"]


def test_export_after_gc_and_status_size(study, tmp_path, capsys):
    from histosweep.fleet._gc import rank_complete

    s = load("demo", study.storage)
    ranked = [t.number for t in rank_complete(s.get_trials())]
    assert len(ranked) == 3
    third = s.trials[ranked[2]]
    ckpts = [third.user_attrs[f"fold_{k}"]["checkpoint"] for k in (0, 1)]
    size = sum((study.artifacts / a).stat().st_size for a in ckpts)
    before = status_bytes(capsys, study)
    assert main(["status", "demo", "--storage", study.storage, "--artifacts", str(study.artifacts)]) == 0
    assert "artifact store: " in capsys.readouterr().out

    code = main(["gc", "demo", "--keep-top", "2", "--storage", study.storage, "--artifacts",
                 str(study.artifacts), "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0 and [d["trial"] for d in summary["deleted"]] == [third.number]
    assert summary["bytes_freed"] == size and not any((study.artifacts / a).exists() for a in ckpts)
    assert before - status_bytes(capsys, study) == size  # status counts what is left

    assert main(export_args(study, tmp_path / "b", "--candidates", "2")) == 0
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert {m["trial"] for m in manifest["members"]} <= set(ranked[:2])
    capsys.readouterr()
    assert main(export_args(study, tmp_path / "c", "--trial", str(third.number))) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(rf"trial {third.number}'s checkpoints were removed by gc at "
                                       r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC; ", err[0]), err
    assert not (tmp_path / "c").exists()
    when = load("demo", study.storage).trials[third.number].user_attrs["checkpoints_deleted_at"]
    assert when[:10] in err[0]  # the time gc recorded before it removed them


def test_export_names_gc_and_its_time_when_a_checkpoint_went_after_the_choice(study, tmp_path, capsys):
    """A gc that removed a member's checkpoints but had not marked the trial done yet (killed in
    between, or racing the export): gc records the time first, so export-best names gc and that
    time in one line instead of blaming --artifacts; its lease is gone afterwards."""
    from histosweep.fleet import LEASE_PREFIX
    from histosweep.fleet._gc import rank_complete
    from histosweep.storage import set_finished_user_attr, study_storage, trial_id

    s = load("demo", study.storage)
    best = rank_complete(s.get_trials())[0]
    set_finished_user_attr(study_storage(s), trial_id(best), "checkpoints_deleted_at",
                           "2026-01-02T03:04:05+00:00")
    moved = tmp_path / "moved"
    moved.mkdir()
    ckpts = [best.user_attrs[f"fold_{k}"]["checkpoint"] for k in (0, 1)]
    for a in ckpts:
        (study.artifacts / a).rename(moved / a)
    try:
        code = main(export_args(study, tmp_path / "b", "--trial", str(best.number)))
        err = capsys.readouterr().err.strip().splitlines()
    finally:
        for a in ckpts:
            (moved / a).rename(study.artifacts / a)
    assert code == 1 and len(err) == 1, err
    assert err[0].startswith(f"error: trial {best.number}'s checkpoints were removed by gc at "
                             "2026-01-02 03:04:05 UTC; ")
    assert "--artifacts" not in err[0]
    attrs = load("demo", study.storage)._storage.get_study_system_attrs(s._study_id)
    assert not [k for k in attrs if k.startswith(LEASE_PREFIX)]  # removed on the error too


def test_gc_spares_the_candidates_of_a_live_export_lease(url, tmp_path, capsys):
    """Trials an export-best holds a lease on are kept while it is live; an expired lease (an
    export killed outright) spares nothing and gc drops it; once the export ends gc removes them,
    recording when."""
    from histosweep.fleet import LEASE_PREFIX, export_lease
    from histosweep.storage import open_storage

    store = tmp_path / "artifacts"
    store.mkdir()
    s = optuna.create_study(study_name="syn", storage=open_storage(url), direction="maximize")
    c = [add(s, store, TrialState.COMPLETE, value=v) for v in (0.9, 0.8, 0.7)]

    def leases() -> set[str]:
        return {k for k in s._storage.get_study_system_attrs(s._study_id) if k.startswith(LEASE_PREFIX)}

    with export_lease(s, [c[0], c[1]]) as live, export_lease(s, [c[2]], ttl_s=-1):
        code, summary, _ = gc(capsys, url, store, "--keep-top", "1", "--json")
        assert leases() == {live}  # the expired one was dropped
    assert code == 0 and [d["trial"] for d in summary["deleted"]] == [c[2]]
    kept = {k["trial"]: k["reason"] for k in summary["kept"]}
    assert kept[c[0]] == "top 1" and kept[c[1]].startswith("export lease: export-best on ")
    assert leases() == set()  # the export ended: its lease is gone

    code, summary, _ = gc(capsys, url, store, "--keep-top", "1", "--json")
    assert code == 0 and [d["trial"] for d in summary["deleted"]] == [c[1]]
    when = load("syn", url).trials[c[1]].user_attrs["checkpoints_deleted_at"]
    age = datetime.datetime.now(datetime.timezone.utc) - datetime.datetime.fromisoformat(when)
    assert datetime.timedelta(0) <= age < datetime.timedelta(minutes=5)


def test_workers_gc_after_each_trial_with_create_keep_top(study, tmp_path):
    """create --keep-top 1: after each finished trial the worker deletes the checkpoints of the
    trials that just left the top 1 (seen by the next trial), never the running one's."""
    from histosweep.fleet import TrialLoop, WorkerOptions
    from histosweep.search import CreateOptions, Runtime, create_study, load_settings, open_study
    from histosweep.storage import open_artifact_store
    from histosweep.trial_files import upload_file

    space = study.root / "space.toml"
    create_study("kt", study.storage, CreateOptions(data=study.data, space_file=space, folds=2, keep_top=1),
                 progress=False)
    store_dir = tmp_path / "artifacts"
    s = open_study("kt", study.storage)
    settings = load_settings(s)
    assert settings.keep_top == 1

    class UploadingObjective:
        """Uploads one real checkpoint file per trial through the store; values 0.1, 0.3, 0.2."""

        def __init__(self) -> None:
            self.settings = settings
            self.rt = Runtime(study=s, settings=settings, store=open_artifact_store(str(store_dir)),
                              device="cpu")
            self.seen: list[set[str]] = []

        def __call__(self, trial) -> float:
            self.seen.append({p.name for p in store_dir.iterdir()})  # what gc left before this trial
            path = tmp_path / f"trial{trial.number}.safetensors"
            path.write_bytes(os.urandom(256))
            trial.set_user_attr("fold_0", {"checkpoint": upload_file(self.rt.store, trial, path)})
            return (0.1, 0.3, 0.2)[trial.number]

    objective = UploadingObjective()
    opts = WorkerOptions(study="kt", storage=study.storage, artifacts=str(store_dir), n_trials=3, progress=False)
    assert TrialLoop(s, objective, opts, "t").run() == 0
    ckpt = {t.number: t.user_attrs["fold_0"]["checkpoint"] for t in load("kt", study.storage).get_trials()}
    assert objective.seen == [set(), {ckpt[0]}, {ckpt[1]}]  # trial 0's went once trial 1 beat it
    assert {p.name for p in store_dir.iterdir()} == {ckpt[1]}
    marked = [t.number for t in load("kt", study.storage).get_trials() if t.user_attrs.get("checkpoints_deleted")]
    assert marked == [0, 2]
