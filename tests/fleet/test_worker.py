"""Workers on real SQLite/PostgreSQL with real processes: exact counts, pruning, resume, signals."""

from __future__ import annotations

import json
import signal

import optuna
import pytest
from optuna.trial import TrialState

from tests.search._helpers import cli, kill, load, start_worker, tiny_space, wait_for

pytestmark = pytest.mark.slow


def _create(name, url, data, space, *, folds=2, pruner="percentile"):
    cli("create", name, "--data", str(data), "--space", str(space), "--folds", str(folds),
        "--pruner", pruner, "--storage", url, "--no-reference")  # these tests count their trials


def _states(study):
    return [t.state for t in study.get_trials(deepcopy=False)]


def test_two_workers_on_postgres_finish_exact_count(pg_url, synth_root, tmp_path):
    _create("two", pg_url, synth_root, tiny_space(tmp_path, epochs=1))
    artifacts = tmp_path / "artifacts"
    workers = [start_worker("two", pg_url, artifacts, "--n-trials", "4", log_dir=tmp_path / "logs")
               for _ in range(2)]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    study = load("two", pg_url)
    states = _states(study)
    finished = [s for s in states if s in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 4
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states
    numbers = [t.number for t in study.get_trials(deepcopy=False)]
    assert len(numbers) == len(set(numbers))
    # each worker logged to its own file and trials carry host/device
    assert len(list((tmp_path / "logs").glob("two-*.log"))) >= 1
    best = study.best_trial
    assert best.user_attrs["device"] == "cpu" and len(best.user_attrs["fold_val_f1"]) == 2
    assert best.value == best.user_attrs["oof_f1"]  # the objective is out-of-fold macro-F1
    assert not [k for t in study.get_trials() for k in t.user_attrs if "holdout" in k]


def _perfect_trials(study, n: int, steps: int, folds: int):
    """Finished trials that scored F1 = 1.0 at every step: anything real loses to them."""
    for _ in range(n):
        study.add_trial(optuna.trial.create_trial(
            value=1.0, intermediate_values={s: 1.0 for s in range(steps)},
            user_attrs={"fold_val_f1": [1.0] * folds},
        ))


def test_pruning_prunes_a_losing_trial(synth_root, tmp_path, sqlite_url):
    _create("prune", sqlite_url, synth_root, tiny_space(tmp_path, epochs=3), folds=2)
    study = load("prune", sqlite_url)
    _perfect_trials(study, 2, steps=6, folds=2)
    cli("worker", "prune", "--storage", sqlite_url, "--artifacts", str(tmp_path / "a"),
        "--gpus", "cpu", "--n-trials", "3", "--no-progress", "--log-dir", str(tmp_path / "logs"))
    pruned = [t for t in load("prune", sqlite_url).get_trials() if t.state == TrialState.PRUNED]
    assert len(pruned) == 1
    attrs = pruned[0].user_attrs
    assert attrs["epochs_run"] < attrs["epochs_planned"] == 6
    assert attrs["epochs_saved"] == 6 - attrs["epochs_run"]
    status = json.loads(cli("status", "prune", "--storage", sqlite_url, "--json").stdout)
    assert status["trials"]["PRUNED"] == 1


def test_a_trial_is_never_pruned_at_its_last_step(synth_root, tmp_path, sqlite_url):
    # 1 epoch x 2 folds: the better trials reported only the last step, so only there could the
    # pruner stop the new one; its work is done by then, so it finishes COMPLETE
    _create("last", sqlite_url, synth_root, tiny_space(tmp_path, epochs=1), folds=2)
    study = load("last", sqlite_url)
    for _ in range(2):
        study.add_trial(optuna.trial.create_trial(value=1.0, intermediate_values={1: 1.0},
                                                  user_attrs={"fold_val_f1": [1.0] * 2}))
    cli("worker", "last", "--storage", sqlite_url, "--artifacts", str(tmp_path / "a"),
        "--gpus", "cpu", "--n-trials", "3", "--no-progress", "--log-dir", str(tmp_path / "logs"))
    ran = [t for t in load("last", sqlite_url).get_trials() if t.number == 2][0]
    assert ran.state == TrialState.COMPLETE, ran.user_attrs.get("pruned_reason")
    assert ran.user_attrs["epochs_run"] == 2 and sorted(ran.intermediate_values) == [0, 1]


def test_fold_rule_stops_between_folds(synth_root, tmp_path, sqlite_url):
    _create("foldrule", sqlite_url, synth_root, tiny_space(tmp_path, epochs=1), folds=3)
    study = load("foldrule", sqlite_url)
    # best trial with perfect folds but no intermediate values: only the fold rule can fire
    for _ in range(1):
        study.add_trial(optuna.trial.create_trial(value=1.0, user_attrs={"fold_val_f1": [1.0] * 3}))
    cli("worker", "foldrule", "--storage", sqlite_url, "--artifacts", str(tmp_path / "a"),
        "--gpus", "cpu", "--n-trials", "2", "--no-progress", "--log-dir", str(tmp_path / "logs"))
    trial = [t for t in load("foldrule", sqlite_url).get_trials() if t.number == 1][0]
    assert trial.state == TrialState.PRUNED
    assert trial.user_attrs["pruned_reason"].startswith("fold rule")
    assert "fold_1" in trial.user_attrs and "fold_2" not in trial.user_attrs


def test_sigkill_in_second_fold_is_retried_and_resumed(pg_url, synth_root, tmp_path):
    _create("kill", pg_url, synth_root, tiny_space(tmp_path, epochs=3), folds=2, pruner="none")
    artifacts = tmp_path / "artifacts"
    first = start_worker("kill", pg_url, artifacts, "--n-trials", "1", "--heartbeat", "1",
                         log_dir=tmp_path / "logs")
    study = load("kill", pg_url)

    def in_second_fold():
        trials = study.get_trials(deepcopy=False)
        return trials and "fold_0" in trials[0].user_attrs and trials[0]
    victim = wait_for(in_second_fold, timeout=300, what="fold 0 to finish", proc=first)
    kill(first, signal.SIGKILL)
    fold0 = victim.user_attrs["fold_0"]

    second = start_worker("kill", pg_url, artifacts, "--n-trials", "1", "--heartbeat", "1",
                          log_dir=tmp_path / "logs")
    out = second.communicate(timeout=600)[0]
    assert second.returncode == 0, out
    trials = load("kill", pg_url).get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    retry = trials[1]
    assert retry.system_attrs["failed_trial"] == 0
    assert retry.user_attrs["resumed_folds"] == [0]
    # fold 0 was not retrained: the retry references the very same checkpoint artifact
    assert retry.user_attrs["fold_0"]["checkpoint"] == fold0["checkpoint"]
    assert retry.user_attrs["fold_1"]["checkpoint"] != fold0["checkpoint"]
    assert retry.user_attrs["epochs_run"] == 3 and retry.user_attrs["epochs_reused"] == 3
    assert retry.params == trials[0].params


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_running_trial_without_any_heartbeat_is_failed_and_requeued(backend, request, synth_root,
                                                                   tmp_path):
    """The ask committed, then the worker died before its first heartbeat: the RUNNING trial has
    no heartbeat row, which Optuna's stale check skips. With --n-trials 1 it would fill the only
    slot forever; instead it is failed after the grace period and re-queued, and the new worker
    finishes the study."""
    import subprocess

    from histosweep.storage import heartbeat_ages, open_storage, study_id, study_storage

    url = request.getfixturevalue("sqlite_url" if backend == "sqlite" else "pg_url")
    _create("orphan", url, synth_root, tiny_space(tmp_path, epochs=1), pruner="none")
    # a storage without heartbeats asks the trial: RUNNING, no trial_heartbeats row, ever
    orphan_study = optuna.load_study(study_name="orphan", storage=open_storage(url))
    orphan = orphan_study.ask()
    ages = heartbeat_ages(study_storage(orphan_study), study_id(orphan_study))
    assert list(ages) == [orphan.number] and ages[orphan.number] < 60  # aged from datetime_start
    worker = start_worker("orphan", url, tmp_path / "artifacts", "--n-trials", "1",
                          "--heartbeat", "1", log_dir=tmp_path / "logs")
    try:
        out = worker.communicate(timeout=300)[0]
    except subprocess.TimeoutExpired:
        kill(worker)
        raise AssertionError("the worker waited on the orphaned RUNNING trial") from None
    assert worker.returncode == 0, out
    trials = load("orphan", url).get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert trials[1].system_attrs["failed_trial"] == orphan.number
    assert "never sent a heartbeat" in out


def test_sigterm_stops_cleanly_and_requeues(synth_root, tmp_path, sqlite_url):
    _create("term", sqlite_url, synth_root, tiny_space(tmp_path, epochs=3), folds=2, pruner="none")
    worker = start_worker("term", sqlite_url, tmp_path / "a", "--n-trials", "3", log_dir=tmp_path / "logs")
    study = load("term", sqlite_url)
    wait_for(lambda: any(t.intermediate_values for t in study.get_trials(deepcopy=False)),
             timeout=300, what="a first epoch", proc=worker)
    worker.send_signal(signal.SIGTERM)
    out = worker.communicate(timeout=60)[0]
    assert worker.returncode == 143, out  # 128 + SIGTERM: schedulers requeue on it
    states = _states(load("term", sqlite_url))
    assert states[0] == TrialState.FAIL and TrialState.RUNNING not in states
    assert states[-1] == TrialState.WAITING  # re-queued: the next worker resumes it
    failed = load("term", sqlite_url).get_trials()[0]
    assert "worker stopped by SIGTERM" in failed.user_attrs["fail_reason"]


def _children(proc) -> list[int]:
    path = f"/proc/{proc.pid}/task/{proc.pid}/children"
    try:
        with open(path) as fh:
            return [int(pid) for pid in fh.read().split()]
    except FileNotFoundError:
        return []


def _running(study) -> int:
    return sum(t.state == TrialState.RUNNING for t in study.get_trials(deepcopy=False))


def test_multi_slot_parent_exits_non_zero_when_a_child_is_killed(synth_root, tmp_path, sqlite_url):
    """A slot process killed by a signal (SIGKILL, as from the OOM killer) makes the parent exit
    137 (128 + 9), not 0, while the other slot still finishes the study."""
    import os

    _create("oom", sqlite_url, synth_root, tiny_space(tmp_path, epochs=1), pruner="none")
    parent = start_worker("oom", sqlite_url, tmp_path / "a", "--trials-per-gpu", "2",
                          "--n-trials", "1", "--heartbeat", "1", log_dir=tmp_path / "logs")
    study = load("oom", sqlite_url)
    wait_for(lambda: len(_children(parent)) == 2 and _running(study), timeout=300,
             what="two slots and a running trial", proc=parent)
    os.kill(_children(parent)[0], signal.SIGKILL)
    out = parent.communicate(timeout=600)[0]
    assert parent.returncode == 137, out
    states = _states(load("oom", sqlite_url))
    assert states.count(TrialState.COMPLETE) == 1 and TrialState.RUNNING not in states


def test_multi_slot_parent_forwards_sigterm_waits_and_exits_143(synth_root, tmp_path, sqlite_url):
    """SIGTERM to the parent of two slots reaches both children; it waits for them (none left)
    and exits 143; both running trials are failed and re-queued."""
    import os

    _create("fwd", sqlite_url, synth_root, tiny_space(tmp_path, epochs=3), pruner="none")
    parent = start_worker("fwd", sqlite_url, tmp_path / "a", "--trials-per-gpu", "2",
                          "--n-trials", "4", log_dir=tmp_path / "logs")
    study = load("fwd", sqlite_url)
    wait_for(lambda: _running(study) == 2, timeout=300, what="two running trials", proc=parent)
    children = _children(parent)
    assert len(children) == 2
    parent.send_signal(signal.SIGTERM)
    out = parent.communicate(timeout=120)[0]
    assert parent.returncode == 143, out
    assert out.count("received SIGTERM: stopping") == 2 and "Traceback" not in out
    assert not [pid for pid in children if os.path.exists(f"/proc/{pid}")]  # waited and reaped
    states = _states(load("fwd", sqlite_url))
    assert states.count(TrialState.FAIL) == 2 and states.count(TrialState.WAITING) == 2
    assert TrialState.RUNNING not in states


def test_failing_trials_are_recorded_and_worker_gives_up(synth_root, tmp_path, sqlite_url):
    space = tiny_space(tmp_path)
    space.write_text(space.read_text() + 'image_pretrained_path = "/nonexistent/weights.safetensors"\n')
    _create("fail", sqlite_url, synth_root, space)
    proc = cli("worker", "fail", "--storage", sqlite_url, "--artifacts", str(tmp_path / "a"),
               "--gpus", "cpu", "--n-trials", "2", "--no-progress", "--log-dir", str(tmp_path / "logs"),
               check=False)
    assert proc.returncode == 1
    assert "5 trials in a row failed" in proc.stderr and "Traceback" not in proc.stderr
    trials = load("fail", sqlite_url).get_trials()
    assert len(trials) == 5 and all(t.state == TrialState.FAIL for t in trials)
    assert "/nonexistent/weights.safetensors" in trials[0].user_attrs["fail_reason"]
