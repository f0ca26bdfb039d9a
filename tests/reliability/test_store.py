"""The artifact store failing is infrastructure, not a bad trial: unusable at worker start it is
one line before any training; failing mid-trial it re-queues the trial (resumed from its finished
folds), the worker backs off until the store is back, and nothing counts towards the give-up."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from optuna.trial import TrialState

from histosweep.storage import StoreError, open_artifact_store, probe_store
from tests.reliability._helpers import CLOSED_PORT, error_line, full_folder, run_cli, wait_until
from tests.search._helpers import kill, load, start_worker, tiny_space

S3_ENV = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{CLOSED_PORT}", "AWS_ACCESS_KEY_ID": "x",
          "AWS_SECRET_ACCESS_KEY": "y", "AWS_DEFAULT_REGION": "us-east-1"}


def _create(name: str, url: str, data: Path, tmp_path: Path, *, epochs: int) -> None:
    from histosweep.search import CreateOptions, create_study

    create_study(name, url, CreateOptions(data=data, space_file=tiny_space(tmp_path, epochs=epochs),
                                          folds=2, pruner="none"), progress=False)


# --- probe_store -------------------------------------------------------------------------------
def test_probe_of_a_working_folder_store_leaves_nothing(tmp_path):
    probe_store(open_artifact_store(str(tmp_path / "a")))
    assert list((tmp_path / "a").iterdir()) == []


def test_probe_of_a_folder_store_replaced_by_a_file_is_one_line(tmp_path):
    store = open_artifact_store(str(tmp_path / "a"))
    (tmp_path / "a").rmdir()
    (tmp_path / "a").write_text("not a folder any more")
    with pytest.raises(StoreError) as info:
        probe_store(store)
    message = str(info.value)
    assert str(tmp_path / "a") in message and "cannot write a test object" in message
    assert "\n" not in message


def test_probe_of_an_unreachable_s3_endpoint_is_one_line(monkeypatch):
    pytest.importorskip("boto3")
    for key, value in S3_ENV.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(StoreError) as info:
        probe_store(open_artifact_store("s3://no-such-bucket/runs"))
    assert "s3://no-such-bucket/runs" in str(info.value) and "\n" not in str(info.value)


# --- the worker ------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("store", ["s3", "full-disk"])
def test_worker_on_an_unusable_store_is_one_line_before_training(store, synth_root, tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    _create("probe", url, synth_root, tmp_path, epochs=1)
    with full_folder(tmp_path / "full", size="16k") as mounted:
        if store == "s3":
            pytest.importorskip("boto3")
            spec, env = "s3://no-such-bucket/runs", S3_ENV
        else:
            if mounted is None:
                pytest.skip("this machine refuses a tmpfs mount (no CAP_SYS_ADMIN)")
            fd = os.open(mounted / "filler", os.O_WRONLY | os.O_CREAT)
            with pytest.raises(OSError):  # fill the disk to the last byte: ENOSPC
                while True:
                    os.write(fd, b"\0" * 4096)
            os.close(fd)
            spec, env = str(mounted), {}
        for slots in ("1", "2"):  # in-process slot, and the multi-slot parent before spawning
            proc = run_cli("worker", "probe", "--storage", url, "--artifacts", spec, "--gpus", "cpu",
                           "--trials-per-gpu", slots, "--n-trials", "1", "--no-progress",
                           "--log-dir", str(tmp_path / "logs"), env=env, timeout=120)
            line = error_line(proc)
            assert spec in line and "is not usable" in line, line
    assert load("probe", url).get_trials() == []  # no trial was asked, nothing trained


@pytest.mark.slow
def test_store_failing_mid_trial_requeues_backs_off_and_resumes(synth_root, tmp_path):
    """Fold 0 is uploaded; then the artifacts folder becomes a regular file. The trial is FAIL
    "artifact store unavailable ... re-queued", the worker keeps probing (alive, no new trial);
    once the folder is back the retry reuses fold 0 and completes the study with exit 0."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    _create("store", url, synth_root, tmp_path, epochs=3)
    artifacts, aside, logs = tmp_path / "artifacts", tmp_path / "artifacts.aside", tmp_path / "logs"
    worker = start_worker("store", url, artifacts, "--n-trials", "1", "--heartbeat", "2", log_dir=logs)
    study = load("store", url)
    try:
        def fold0_done():
            trials = study.get_trials(deepcopy=False)
            return trials and "fold_0" in trials[0].user_attrs and trials[0]
        first = wait_until(fold0_done, timeout=300, what="fold 0 to be uploaded", proc=worker)
        artifacts.rename(aside)
        artifacts.write_text("the store is gone")

        def log_text() -> str:
            return "".join(p.read_text() for p in logs.glob("*.log"))
        wait_until(lambda: log_text().count("artifact store unavailable; retrying") >= 2,
                   timeout=300, what="the trial to fail on the store and the worker to back off",
                   proc=worker)
        states = [t.state for t in load("store", url).get_trials()]
        assert states == [TrialState.FAIL, TrialState.WAITING]  # re-queued; nothing new asked
        artifacts.unlink()
        aside.rename(artifacts)
        out = worker.communicate(timeout=400)[0]
    finally:
        if worker.poll() is None:
            kill(worker)
    assert worker.returncode == 0, out
    assert "Traceback" not in out
    trials = load("store", url).get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    reason = trials[0].user_attrs["fail_reason"]
    assert reason.startswith("artifact store unavailable during the trial") and str(artifacts) in reason
    assert "re-queued to resume" in reason
    retry = trials[1]
    assert retry.system_attrs["failed_trial"] == 0 and retry.user_attrs["resumed_folds"] == [0]
    assert retry.user_attrs["fold_0"]["checkpoint"] == first.user_attrs["fold_0"]["checkpoint"]


@pytest.mark.slow
def test_store_failures_do_not_count_towards_the_give_up(synth_root, tmp_path):
    """Six trials in a row failing on the store (more than MAX_CONSECUTIVE_FAILURES) do not make
    the worker give up with "trials in a row failed": it keeps backing off until told to stop."""
    from histosweep.fleet import TrialLoop, WorkerOptions
    from histosweep.fleet._trial_loop import MAX_CONSECUTIVE_FAILURES
    from histosweep.search import Objective, Runtime, load_settings, open_study

    url = f"sqlite:///{tmp_path / 'study.db'}"
    _create("count", url, synth_root, tmp_path, epochs=1)
    study = open_study("count", url, heartbeat=60)
    store = open_artifact_store(str(tmp_path / "artifacts"))
    rt = Runtime(study=study, settings=load_settings(study), store=store, device="cpu", slot="t",
                 progress=False)
    opts = WorkerOptions(study="count", storage=url, artifacts=None, n_trials=1, progress=False)

    class NoWaitLoop(TrialLoop):  # the back-off itself is covered above; here only the count
        def _wait_for_store(self) -> None:
            if self.store_failures > MAX_CONSECUTIVE_FAILURES:
                self.stop.set()

    shutil.rmtree(tmp_path / "artifacts")
    (tmp_path / "artifacts").write_text("the store is gone")
    loop = NoWaitLoop(study, Objective(rt), opts, "t", store=store)
    assert loop.run() == 0  # stopped by us, not "trials in a row failed"
    trials = load("count", url).get_trials()
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(failed) == MAX_CONSECUTIVE_FAILURES + 1
    assert all("artifact store unavailable" in t.user_attrs["fail_reason"] for t in failed)
    assert trials[-1].state == TrialState.WAITING


