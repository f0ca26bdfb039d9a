"""The worker's background uploader: jobs run in order off the caller's thread, `wait` returns
after all of them, and a job's error reaches the trial (a StoreError stays a StoreError: the
worker re-queues the trial) before the trial is told; real stores, a real study."""

from __future__ import annotations

import threading

import pytest
from optuna.artifacts import FileSystemArtifactStore
from optuna.trial import TrialState

from histosweep.search._uploader import Uploader
from histosweep.storage import StoreError, study_id, study_storage
from tests.search._helpers import load, tiny_space, wait_for


def test_submit_returns_while_the_job_runs_and_wait_returns_after_all_in_order():
    uploader, release, ran = Uploader(), threading.Event(), []

    def first():
        release.wait(timeout=60)
        ran.append("first")

    uploader.submit(first)
    uploader.submit(lambda: ran.append("second"))
    assert ran == []  # both submits returned while the first job is still blocked: no waiting
    release.set()
    uploader.wait()
    assert ran == ["first", "second"]


def test_a_failed_job_is_raised_skips_later_jobs_and_is_cleared_by_wait():
    uploader, ran = Uploader(), []

    def broken():
        raise StoreError("artifact store /x: cannot write a.safetensors (OSError: disk full)")

    uploader.submit(broken)
    wait_for(lambda: uploader.failed, timeout=30, what="the job to fail")
    with pytest.raises(StoreError, match="disk full"):
        uploader.raise_if_failed()
    with pytest.raises(StoreError):  # still there: the trial's end must see it too
        uploader.submit(lambda: ran.append("after"))
    with pytest.raises(StoreError, match="disk full"):
        uploader.wait()
    assert ran == [] and not uploader.failed
    uploader.submit(lambda: ran.append("next trial"))  # the next trial's uploads run
    uploader.wait()
    assert ran == ["next trial"]


def test_settle_returns_the_error_instead_of_raising():
    uploader = Uploader()
    uploader.submit(lambda: 1 / 0)
    assert isinstance(uploader.settle(), ZeroDivisionError)
    assert uploader.settle() is None


class WatchedStore(FileSystemArtifactStore):
    """A real folder store that records, at each write, the state of the trial being written
    for (read from the study's own storage), and can fail its `fail_at`-th write."""

    def __init__(self, root, study, fail_at: int = 0) -> None:
        root.mkdir(parents=True, exist_ok=True)
        super().__init__(str(root))
        self.study, self.fail_at = study, fail_at
        self.states: list[TrialState] = []
        self.threads: set[str] = set()
        self.writes = 0
        self.before_first_write = lambda: None
        self.on_fail = lambda: None

    def write(self, artifact_id, content_body) -> None:
        self.threads.add(threading.current_thread().name)
        self.writes += 1
        if self.writes == 1:
            self.before_first_write()
        if self.writes == self.fail_at:
            self.on_fail()
            raise OSError("injected: the store is full")
        trials = study_storage(self.study).get_all_trials(study_id(self.study), deepcopy=False)
        self.states += [t.state for t in trials]  # one trial in these studies
        super().write(artifact_id, content_body)


def _loop(synth_root, tmp_path, *, fail_at: int = 0):
    from histosweep.fleet import TrialLoop, WorkerOptions
    from histosweep.search import (
        CreateOptions,
        Objective,
        Runtime,
        create_study,
        load_settings,
        open_study,
    )

    url = f"sqlite:///{tmp_path / 'study.db'}"
    create_study("up", url, CreateOptions(data=synth_root, space_file=tiny_space(tmp_path, epochs=1),
                                          folds=2, pruner="none"), progress=False)
    study = open_study("up", url, heartbeat=60)
    store = WatchedStore(tmp_path / "artifacts", study, fail_at=fail_at)
    rt = Runtime(study=study, settings=load_settings(study), store=store, device="cpu", slot="t",
                 progress=False)
    opts = WorkerOptions(study="up", storage=url, artifacts=str(tmp_path / "artifacts"), n_trials=1,
                         progress=False)
    return TrialLoop(study, Objective(rt), opts, "t"), store, url


@pytest.mark.slow
def test_a_trial_is_told_only_after_its_background_uploads(synth_root, tmp_path):
    loop, store, url = _loop(synth_root, tmp_path)
    assert loop.run() == 0
    (trial,) = load("up", url).get_trials()
    assert trial.state == TrialState.COMPLETE
    assert store.threads == {"histosweep-uploader"}  # nothing uploaded on the training thread
    # 2 folds x (checkpoint, probs, metrics, curves) + the confusion picture, all while RUNNING
    assert store.states == [TrialState.RUNNING] * 9
    for f in (0, 1):
        record = trial.user_attrs[f"fold_{f}"]
        for key in ("checkpoint", "probs", "metrics", "curves_png"):
            assert (tmp_path / "artifacts" / record[key]).stat().st_size > 0
        assert record["val_f1"] == trial.user_attrs["fold_val_f1"][f]
    assert (tmp_path / "artifacts" / trial.user_attrs["confusion_png"]).stat().st_size > 0


@pytest.mark.slow
def test_a_background_upload_error_fails_the_trial_and_requeues_it(synth_root, tmp_path):
    loop, store, url = _loop(synth_root, tmp_path, fail_at=1)  # fold 0's checkpoint
    store.on_fail = loop.stop.set  # the worker stops after this trial (as after a SIGTERM)
    assert loop.run() == 0
    trials = load("up", url).get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    reason = trials[0].user_attrs["fail_reason"]
    assert reason.startswith("artifact store unavailable during the trial") and "injected" in reason
    # fold 0 failed, so fold 1's upload was skipped: the resumed trial retrains both
    assert not any(k.startswith("fold_") for k in trials[0].user_attrs)
    assert "confusion_png" not in trials[0].user_attrs


@pytest.mark.slow
def test_the_next_fold_trains_while_the_last_one_uploads(synth_root, tmp_path):
    """Fold 0's first write is held until fold 1 has reported an epoch (step 1 with 1 epoch per
    fold): with inline uploads fold 1 could not start, and the wait would run out."""
    loop, store, url = _loop(synth_root, tmp_path)
    seen: list[bool] = []

    def fold1_reported() -> bool:
        trials = study_storage(store.study).get_all_trials(study_id(store.study), deepcopy=False)
        return 1 in trials[0].intermediate_values

    def hold_first_write():
        try:
            wait_for(fold1_reported, timeout=120, what="fold 1 to report while fold 0 uploads")
            seen.append(True)
        except AssertionError:
            seen.append(False)

    store.before_first_write = hold_first_write
    assert loop.run() == 0
    assert seen == [True]
    (trial,) = load("up", url).get_trials()
    assert trial.state == TrialState.COMPLETE and "fold_0" in trial.user_attrs
