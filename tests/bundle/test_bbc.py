"""BBC-CV through the real CLI: `create --holdout 0` (every image in the folds, the reference
recipe queued by default) -> worker -> export-best -> predict; `estimate` equals export's figure;
two exports give the same bytes; status and the study note show the search gain; the reference
trial is never pruned."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from histosweep.search import is_reference
from histosweep.trial_files import ESTIMATE_ATTR
from tests.search._helpers import cli, load, tiny_space

BOOT = ("--bootstrap", "200")


@pytest.fixture(scope="module")
def h0(synth_root, tmp_path_factory):
    """Study 'h0': --holdout 0, 2 folds, no pruner, the reference recipe queued, 3 trials run."""
    root = tmp_path_factory.mktemp("h0")
    url = f"sqlite:///{root / 'study.db'}"
    created = json.loads(cli("create", "h0", "--data", str(synth_root), "--space",
                             str(tiny_space(root, epochs=1)), "--folds", "2", "--holdout", "0",
                             "--pruner", "none", "--storage", url, "--json").stdout)
    assert created["holdout"] == 0 and created["reference"]["enqueued"]
    cli("worker", "h0", "--storage", url, "--artifacts", str(root / "artifacts"), "--gpus", "cpu",
        "--n-trials", "3", "--no-progress", "--log-dir", str(root / "logs"))
    return root, url


def _export(h0, out: Path, *extra: str):
    root, url = h0
    return cli("export-best", "h0", "--out", str(out), "--storage", url, "--artifacts",
               str(root / "artifacts"), "--no-progress", *BOOT, *extra)


@pytest.fixture(scope="module")
def exported(h0, synth_root):
    out = h0[0] / "bundle"
    proc = _export(h0, out, "--test", str(synth_root / "TEST"))
    return out, proc.stdout


def test_holdout_0_puts_every_image_in_the_folds_and_marks_the_reference(h0):
    s = load("h0", h0[1])
    split = s.user_attrs["histosweep"]["split"]
    assert split["holdout"] == []
    assert sum(len(f["val"]) for f in split["folds"]) == len(s.user_attrs["histosweep"]["sample_ids"])
    refs = [t for t in s.get_trials() if is_reference(t)]
    assert len(refs) == 1 and refs[0].number == 0 and refs[0].state == TrialState.COMPLETE


def test_holdout_0_export_reports_bbc_and_predict_runs(h0, exported, synth_root, tmp_path):
    out, stdout = exported
    m = json.loads((out / "manifest.json").read_text())["metrics"]
    assert m["holdout_size"] == 0 and m["lockbox_f1"] is None and m["lockbox_f1_bundle"] is None
    bbc = m["bbc"]
    assert bbc["resamples"] == 200 and bbc["reference_trial"] == 0 and bbc["pool"] == 3
    low, high = bbc["ensemble"]["ci95"]
    assert 0 <= low <= bbc["ensemble"]["mean"] <= high <= 1
    assert m["search_gain"] == bbc["search_gain"] and "search gain over the reference" in m["search_gain_text"]
    assert "BBC-CV estimate" in stdout and "no lockbox (--holdout 0)" in stdout
    report = (out / "report.html").read_text()
    assert "BBC-CV estimate" in report and "Lockbox (holdout" not in report
    assert "No lockbox (create --holdout 0)" in report
    assert (out / "submission.csv").is_file()
    csv = tmp_path / "p.csv"
    cli("predict", str(out), "--images", str(synth_root / "TEST"), "--out", str(csv), "--no-progress")
    assert csv.read_text() == (out / "submission.csv").read_text()


def test_estimate_equals_exports_figure_and_status_shows_the_gain(h0, exported):
    out, _ = exported
    m = json.loads((out / "manifest.json").read_text())["metrics"]["bbc"]
    root, url = h0
    est = json.loads(cli("estimate", "h0", "--storage", url, "--artifacts", str(root / "artifacts"),
                         *BOOT, "--json").stdout)
    for key in ("ensemble", "single_best", "reference", "search_gain"):
        assert est[key] == m[key], key
    stored = load("h0", url).user_attrs[ESTIMATE_ATTR]
    assert stored["by"] == "estimate" and stored["at"].endswith("+00:00")  # when, in UTC
    status = cli("status", "h0", "--storage", url).stdout
    assert "BBC-CV estimate (estimate, cmaes selection)" in status
    assert "from the `histosweep estimate` run of " in status and " ago" in status
    assert "search gain over the reference:" in status
    doc = json.loads(cli("status", "h0", "--storage", url, "--json").stdout)
    assert doc["estimate"]["ensemble"] == m["ensemble"] and doc["estimate_at"] == stored["at"]


def test_export_twice_gives_the_same_bytes(h0, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _export(h0, a, "--ensemble", "bagged")
    _export(h0, b, "--ensemble", "bagged")
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files and files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    manifest = json.loads((a / "manifest.json").read_text())
    assert manifest["selection"]["ensemble"] == "bagged" and manifest["metrics"]["bbc"]["method"] == "bagged"


def test_bad_estimate_options_are_one_line_errors(h0, tmp_path):
    root, url = h0
    proc = cli("estimate", "h0", "--storage", url, "--bootstrap", "10", check=False)
    assert proc.returncode == 1 and "--bootstrap 10" in proc.stderr and "Traceback" not in proc.stderr
    typo = tmp_path / "artefacts"  # estimate only reads the store: a mistyped folder is not made
    proc = cli("estimate", "h0", "--storage", url, "--artifacts", str(typo), check=False)
    assert proc.returncode == 1 and "cannot be read from the artifact store" in proc.stderr
    assert not typo.exists()


def test_the_reference_trial_is_never_pruned(synth_root, tmp_path):
    """Two finished trials at F1 1.0 at every step: the percentile pruner stops any other trial
    at its second epoch, but not the reference recipe's."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    cli("create", "p", "--data", str(synth_root), "--space", str(tiny_space(tmp_path, epochs=2)),
        "--folds", "2", "--pruner", "percentile", "--storage", url, "--no-reference")
    s = load("p", url)
    dist = {"lr": FloatDistribution(5e-4, 2e-3, log=True)}
    for lr in (1e-3, 1.5e-3):  # perfect finished trials: everything else is below them
        s.add_trial(optuna.trial.create_trial(
            params={"lr": lr}, distributions=dist, value=1.0,
            intermediate_values={step: 1.0 for step in range(4)}, user_attrs={"fold_val_f1": [1.0, 1.0]}))
    s.enqueue_trial({"lr": 6e-4, "cutmix_prob": 0.0})  # an ordinary trial: pruned
    created = json.loads(cli("create", "p", "--data", str(synth_root), "--space",
                             str(tiny_space(tmp_path, epochs=2)), "--folds", "2", "--pruner",
                             "percentile", "--storage", url, "--skip-if-exists", "--json").stdout)
    assert created["reference"]["enqueued"]  # the reference queued after the ordinary trial
    cli("worker", "p", "--storage", url, "--artifacts", str(tmp_path / "artifacts"), "--gpus", "cpu",
        "--n-trials", "4", "--no-progress", "--log-dir", str(tmp_path / "logs"))
    trials = load("p", url).get_trials()
    ordinary, reference = trials[2], trials[3]
    assert not is_reference(ordinary) and ordinary.state == TrialState.PRUNED
    assert is_reference(reference) and reference.state == TrialState.COMPLETE
    assert reference.value < 1.0  # below the finished trials at every step, yet run to the end
