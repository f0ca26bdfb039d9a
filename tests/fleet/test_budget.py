"""The GPU-hour budget: stored at `create`, changed by `histosweep budget`, shown by `status`
(used / left / trials left at the current rate), and a two-slot worker that finishes the trials
it holds once the budget is spent, then takes no other."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys

import optuna
import pytest
from optuna.trial import TrialState

from histosweep.cli import main
from histosweep.search import BUDGET_ATTR
from histosweep.storage import build_lock
from tests.search._helpers import cli, load, tiny_space

HOUR = datetime.timedelta(hours=1)


def _create(name, url, data, tmp_path, *extra):
    assert main(["create", name, "--data", str(data), "--space", str(tiny_space(tmp_path, epochs=1)),
        "--folds", "2", "--pruner", "none", "--storage", url, "--no-reference", *extra]) == 0


def _ran(study, hours: float, state=TrialState.COMPLETE, **attrs) -> None:
    """A trial that ran `hours` (ended an hour ago), as a worker leaves it."""
    trial = optuna.trial.create_trial(state=state, value=0.5 if state == TrialState.COMPLETE else None,
                                      user_attrs=attrs)
    trial.datetime_complete = datetime.datetime.now() - HOUR
    trial.datetime_start = trial.datetime_complete - hours * HOUR
    study.add_trial(trial)


def _json(capsys, *argv) -> dict:
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_budget_is_changed_and_shown_with_what_is_left(tmp_path, sqlite_url, capsys):
    from histosweep.storage import open_storage

    # NOTE: a bare study (create's audit costs ~15 s): `budget` and `status` read any study;
    # create --budget-gpu-hours is tested with the worker below
    study = optuna.create_study(study_name="b", storage=open_storage(sqlite_url))
    assert main(["budget", "b", "--set", "4", "--storage", sqlite_url]) == 0
    _ran(study, 0.5)
    _ran(study, 0.25, TrialState.PRUNED)
    _ran(study, 0.25, TrialState.FAIL)  # a failed trial used its GPU too
    _ran(study, 0.25, devices=2)  # two devices for 15 min: half a GPU-hour
    _ran(study, 3.0, imported_from="old")  # another study's history (warm start): not ours
    capsys.readouterr()
    shown = _json(capsys, "budget", "b", "--storage", sqlite_url)
    assert shown["gpu_hours"] == 4 and shown["used"] == pytest.approx(1.5, rel=1e-3)
    assert shown["left"] == pytest.approx(2.5, rel=1e-3)
    assert shown["per_finished_trial"] == pytest.approx(1.25 / 3, rel=1e-3)  # complete + pruned
    assert shown["trials_left"] == 5 and not shown["spent"]
    status = _json(capsys, "status", "b", "--storage", sqlite_url, "--artifacts", str(tmp_path))
    assert status["budget"]["left"] == pytest.approx(2.5, rel=1e-3)
    assert main(["status", "b", "--storage", sqlite_url, "--artifacts", str(tmp_path)]) == 0
    assert "budget: 1.50 of 4 GPU-hours used, 2.50 left, ~5 trials at 0.42 per finished trial" in (
        capsys.readouterr().out)
    assert _json(capsys, "budget", "b", "--set", "1", "--storage", sqlite_url)["spent"] is True
    assert main(["budget", "b", "--storage", sqlite_url]) == 0
    assert "budget: 1.50 of 1 GPU-hours used, 0.00 left (spent" in capsys.readouterr().out
    cleared = _json(capsys, "budget", "b", "--clear", "--storage", sqlite_url)
    assert cleared["gpu_hours"] is None and cleared["left"] is None and not cleared["spent"]


@pytest.mark.parametrize("argv", [("create", "x", "--budget-gpu-hours", "0"),
                                  ("budget", "x", "--set", "-1"), ("budget", "x", "--set", "nan")])
def test_a_budget_that_is_not_a_positive_number_is_one_line(argv, synth_root, sqlite_url, capsys):
    extra = ("--data", str(synth_root)) if argv[0] == "create" else ()
    assert main([*argv, *extra, "--storage", sqlite_url]) == 1
    err = capsys.readouterr().err
    assert "GPU-hours the study may use, a number > 0" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_a_spent_budget_stops_a_two_slot_worker_after_its_running_trials(synth_root, tmp_path, sqlite_url):
    _create("spend", sqlite_url, synth_root, tmp_path, "--budget-gpu-hours", "1000")
    assert load("spend", sqlite_url).user_attrs[BUDGET_ATTR] == 1000
    fingerprint = json.loads(json.dumps(load("spend", sqlite_url).user_attrs["histosweep"]))["fingerprint"]
    cache = tmp_path / "cache"
    env = {**os.environ, "HISTOSWEEP_CACHE": str(cache)}
    # NOTE: this test holds the image cache's build lock, so both slots' first trials wait in it
    # (each says so): a deterministic point where both hold a RUNNING trial.
    with build_lock(cache / fingerprint[:16] / "32-stretch"):
        worker = subprocess.Popen(
            [sys.executable, "-m", "histosweep.cli", "worker", "spend", "--storage", sqlite_url,
             "--artifacts", str(tmp_path / "artifacts"), "--gpus", "cpu", "--trials-per-gpu", "2",
             "--n-trials", "10", "--no-progress", "--log-dir", str(tmp_path / "logs")],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        seen = []
        while len([line for line in seen if "waiting for the image cache" in line]) < 2:
            line = worker.stdout.readline()
            assert line, "".join(seen)
            seen.append(line)
        # both slots hold a trial and the budget is far from spent: now make it spent
        assert "budget of 1000 GPU-hours is spent" not in "".join(seen)
        assert cli("budget", "spend", "--set", "0.000001", "--storage", sqlite_url).returncode == 0
    out = "".join(seen) + worker.communicate(timeout=600)[0]
    assert worker.returncode == 0, out
    trials = load("spend", sqlite_url).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2, out  # no third trial started
    assert out.count("the study's budget of 1e-06 GPU-hours is spent (used ") == 2, out
    assert len({t.user_attrs["slot"] for t in trials}) == 2
