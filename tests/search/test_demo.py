"""`histosweep demo`: the whole path on the CPU, end to end through the real command, plus the
rules that make it safe to rerun."""

from __future__ import annotations

import json
import os
import time

import pytest
from optuna.trial import TrialState

from histosweep._demo import MARKER, DemoPaths, claim_workdir, format_summary
from histosweep.search import UserError
from tests.search._helpers import cli, load


@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    workdir = tmp_path / "demo"
    env = {"HISTOSWEEP_CACHE": str(tmp_path / "cache")}
    started = time.monotonic()
    # NOTE: 4 trials, not the default 10: the same path in 2 minutes less of CI
    proc = cli("demo", "--workdir", str(workdir), "--trials", "4", "--json", env=env, timeout=900)
    seconds = time.monotonic() - started
    print(f"histosweep demo took {seconds:.0f} s")  # shown with -s / in the CI log on failure
    summary = json.loads(proc.stdout)
    assert proc.returncode == 0
    assert "demo: 5/5" in proc.stderr  # stage lines all the way
    paths = DemoPaths(workdir.resolve())
    assert summary["storage"] == paths.storage and summary["bundle"] == str(paths.bundle)
    assert (paths.bundle / "manifest.json").is_file() and (paths.bundle / "report.html").is_file()
    csv_lines = (paths.bundle / "submission.csv").read_text().splitlines()
    assert summary["submission"] == str(paths.bundle / "submission.csv")
    assert csv_lines[0] == "sample_index,label" and len(csv_lines) == 1 + 16
    assert summary["dashboard"] == (f"histosweep dashboard --storage {paths.storage} "
                                    f"--artifacts {paths.artifacts}")
    study = load("demo", paths.storage)
    states = [t.state for t in study.get_trials()]
    assert states.count(TrialState.COMPLETE) >= 1
    assert states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED) == 4  # --trials
    assert summary["best_trial"] == study.best_trial.number
    assert summary["best_value"] == study.best_value and summary["best_params"] == study.best_params
    # no lockbox by default: the honest number is BBC-CV's, and the text summary says so
    assert summary["lockbox_f1"] is None and study.user_attrs["histosweep"]["split"]["holdout"] == []
    low, high = summary["bbc"]["ci95"]
    assert 0.0 <= low <= summary["bbc"]["mean"] <= high <= 1.0
    text = format_summary(summary)
    assert f"honest estimate (BBC-CV) macro-F1 {summary['bbc']['mean']:.4f}" in text
    assert "lockbox" not in text and "search gain over the reference" in text


def test_claim_refuses_a_foreign_folder(tmp_path):
    (tmp_path / "thesis.tex").write_text("precious")
    with pytest.raises(UserError, match="not made by histosweep demo"):
        claim_workdir(DemoPaths(tmp_path))
    assert (tmp_path / "thesis.tex").read_text() == "precious"


def test_claim_clears_the_previous_run_but_keeps_the_data(tmp_path):
    paths = DemoPaths(tmp_path / "demo")
    claim_workdir(paths)
    assert (paths.root / MARKER).is_file()
    for folder in (paths.data, paths.artifacts, paths.bundle, paths.logs):
        folder.mkdir()
        (folder / "x").write_text("old")
    paths.db.write_text("old db")
    (paths.root / "demo.db.demo.lock").write_text("")
    claim_workdir(paths)
    assert (paths.data / "x").is_file()  # the synthetic data is reused
    assert not paths.db.exists() and not (paths.root / "demo.db.demo.lock").exists()
    assert sorted(os.listdir(paths.root)) == [MARKER, "data"]


def test_demo_refuses_storage_options(tmp_path):
    proc = cli("demo", "--workdir", str(tmp_path / "d"), "--storage", "sqlite:///x.db", check=False)
    # demo takes no --storage/--artifacts (its study lives in WORKDIR): a usage error
    assert proc.returncode == 2 and "unrecognized arguments: --storage" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "d").exists()
