"""`histosweep export-best` on one finished tiny study: bundle contents, no pickle, atomicity,
reproducibility, the holdout F1 reproduced from the bundle, and one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import optuna
import pytest

from histosweep.cli import main
from tests.search._helpers import load

SPACE_64 = """
[params]
resolution = 64
resize_mode = "stretch"
image_backbone = "convnext_atto"
mask_backbone = "resnet10t"
pretrained = false
head_hidden = 32
epochs = 2
batch_size = 8
t0 = 2
lr = { low = 5e-4, high = 2e-3, log = true }
cutmix_prob = [0.0, 0.5]
ensemble_top_k = [1, 2]
ensemble_temperature = 0.1
"""


def build_tiny_study(root: Path):
    """Synthesise ~40 samples, create study 'demo' (2 folds, no pruner), run 2 trials in-process."""
    from histosweep._demo import DemoPaths, create_demo_study, run_demo_workers
    from histosweep.data import synthesize

    paths = DemoPaths(root)
    synthesize(paths.data, n_train=40, n_test=8, seed=0, short_side=96)
    space = root / "space.toml"
    space.write_text(SPACE_64)
    create_demo_study(paths, space, folds=2, pruner="none", progress=False)
    assert run_demo_workers(paths, trials=2, workers=1, progress=False) == 0
    return paths


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return build_tiny_study(tmp_path_factory.mktemp("export-study"))


def export_args(paths, out: Path, *extra: str) -> list[str]:
    return ["export-best", "demo", "--out", str(out), "--storage", paths.storage,
            "--artifacts", str(paths.artifacts), "--no-progress", *extra]


@pytest.fixture(scope="module")
def bundle(study, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundles") / "b1"
    assert main(export_args(study, out, "--test", str(study.test))) == 0
    return out


def test_bundle_contents(study, bundle):
    manifest = json.loads((bundle / "manifest.json").read_text())
    for key in ("config", "data_fingerprint", "study", "trial", "folds", "metrics", "versions",
                "classes", "params", "ensemble"):
        assert key in manifest, key
    best = load("demo", study.storage).best_trial
    assert manifest["trial"] == best.number and manifest["study"] == "demo"
    assert manifest["config"] == best.user_attrs["config"]
    assert set(manifest["versions"]) == {"histosweep", "torch", "timm", "optuna", "numpy"}
    weights = [f["weight"] for f in manifest["folds"]]
    assert weights == pytest.approx(best.user_attrs["fold_weights"])
    shipped = sorted(p.name for p in (bundle / "folds").iterdir())
    assert shipped == sorted(f"fold_{f['fold']}.safetensors" for f in manifest["folds"] if f["weight"] > 0)
    for f in manifest["folds"]:
        assert (f["file"] is None) == (f["weight"] == 0)
    m = manifest["metrics"]
    assert m["holdout_f1"] == pytest.approx(best.value, abs=0)
    assert m["oof_f1"] == pytest.approx(best.user_attrs["oof_f1"])
    low, high = m["holdout_f1_ci95"]
    assert 0.0 <= low <= high <= 1.0 and m["bootstrap_resamples"] == 1000
    report = (bundle / "report.html").read_text()
    assert report.count("data:image/png;base64,") == 2  # confusion matrix + learning curves
    assert "95% bootstrap interval" in report and f"{low:.4f}" in report
    assert "out-of-fold macro-F1" in report and "Luminal A" in report
    assert (bundle / "submission.csv").is_file()


def test_no_pickle_in_the_bundle(bundle):
    files = [p for p in bundle.rglob("*") if p.is_file()]
    assert len(files) >= 4
    for path in files:
        assert path.suffix not in (".pkl", ".pickle", ".pt", ".pth", ".bin"), path
        assert not path.read_bytes().startswith(b"\x80"), f"{path} looks like a pickle"


def test_holdout_f1_reproduced_from_the_bundle(study, bundle):
    """Load the bundle's checkpoints, predict the holdout images afresh, score it."""
    from histosweep.bundle._predict import decode_samples, ensemble_predict, load_bundle
    from histosweep.data import load_dataset
    from histosweep.model import macro_f1
    from histosweep.search._settings import load_settings

    best = load("demo", study.storage).best_trial
    settings = load_settings(load("demo", study.storage))
    b = load_bundle(bundle)
    by_id = {s.sample_index: s for s in load_dataset(study.data).samples}
    holdout = settings.split["holdout"]
    samples = [by_id[settings.sample_ids[i]] for i in holdout]
    images, masks = decode_samples(samples, b.config.resolution, b.config.resize_mode, progress=False)
    probs = ensemble_predict(b, images, masks, device="cpu", progress=False)
    value = macro_f1(settings.label_array()[holdout], probs)
    assert abs(value - best.value) <= 1e-6
    metrics = json.loads((bundle / "manifest.json").read_text())["metrics"]
    assert abs(metrics["holdout_f1_bundle"] - best.value) <= 1e-6 and metrics["holdout_f1_reproduced"]


def test_export_twice_gives_identical_files(study, bundle, tmp_path):
    again = tmp_path / "again"
    assert main(export_args(study, again, "--test", str(study.test))) == 0
    first = {p.relative_to(bundle): p.read_bytes() for p in bundle.rglob("*") if p.is_file()}
    second = {p.relative_to(again): p.read_bytes() for p in again.rglob("*") if p.is_file()}
    assert sorted(first) == sorted(second)
    for rel in first:
        assert first[rel] == second[rel], f"{rel} differs between two exports"


def test_export_a_chosen_trial_and_json(study, tmp_path, capsys):
    trials = load("demo", study.storage).get_trials()
    other = next(t for t in trials if t.number != load("demo", study.storage).best_trial.number)
    code, out, _ = run_cli(capsys, *export_args(study, tmp_path / "b", "--trial", str(other.number), "--json"))
    summary = json.loads(out)
    assert code == 0 and summary["trial"] == other.number and summary["value"] == other.value
    assert summary["submission"] is None and not (tmp_path / "b" / "submission.csv").exists()
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["trial"] == other.number


def test_trial_not_found_or_not_complete(study, tmp_path, capsys):
    code, _, err = run_cli(capsys, *export_args(study, tmp_path / "b", "--trial", "99"))
    assert code == 1 and "no trial 99" in one_error_line(err)
    s = load("demo", study.storage)
    s.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))
    failed = s.trials[-1]
    code, _, err = run_cli(capsys, *export_args(study, tmp_path / "b", "--trial", str(failed.number)))
    line = one_error_line(err)
    assert code == 1 and "FAIL, not COMPLETE" in line and f"trial {failed.number}" in line
    assert not (tmp_path / "b").exists()


def test_study_without_complete_trial(study, tmp_path, capsys):
    from histosweep.search._study import CreateOptions, create_study

    create_study("empty", study.storage, CreateOptions(data=study.data, space_file=study.root / "space.toml",
                                                       folds=2, pruner="none"), progress=False)
    args = export_args(study, tmp_path / "b")
    args[1] = "empty"
    code, _, err = run_cli(capsys, *args)
    assert code == 1 and "no COMPLETE trial" in one_error_line(err)
    assert not (tmp_path / "b").exists()


def _store_copy(study, tmp_path) -> Path:
    copy = tmp_path / "artifacts"
    shutil.copytree(study.artifacts, copy)
    return copy


def _shipped_fold(study) -> tuple[int, dict]:
    best = load("demo", study.storage).best_trial
    k = int(np.argmax(best.user_attrs["fold_weights"]))
    return k, best.user_attrs[f"fold_{k}"]


def test_missing_artifact_fails_cleanly_and_leaves_nothing(study, tmp_path, capsys):
    store = _store_copy(study, tmp_path)
    k, record = _shipped_fold(study)
    (store / record["checkpoint"]).unlink()
    out = tmp_path / "parent" / "bundle"
    args = export_args(study, out)
    args[args.index("--artifacts") + 1] = str(store)
    code, _, err = run_cli(capsys, *args)
    line = one_error_line(err)
    best = load("demo", study.storage).best_trial.number
    assert code == 1 and record["checkpoint"] in line and f"trial {best} fold {k}" in line
    assert not out.exists()
    assert list((tmp_path / "parent").iterdir()) == []  # no temp folder left behind


def test_checkpoint_that_does_not_match_its_config(study, tmp_path, capsys):
    store = _store_copy(study, tmp_path)
    k, record = _shipped_fold(study)
    s = load("demo", study.storage)
    other = next(t for t in s.get_trials() if t.number != s.best_trial.number and "fold_0" in t.user_attrs)
    shutil.copyfile(store / other.user_attrs["fold_0"]["checkpoint"], store / record["checkpoint"])
    args = export_args(study, tmp_path / "b")
    args[args.index("--artifacts") + 1] = str(store)
    code, _, err = run_cli(capsys, *args)
    line = one_error_line(err)
    assert code == 1 and "does not match the trial's config" in line and f"fold {k}" in line
    assert not (tmp_path / "b").exists()


def test_existing_out_needs_overwrite(study, bundle, tmp_path, capsys):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    code, _, err = run_cli(capsys, *export_args(study, busy))
    assert code == 1 and "--overwrite" in one_error_line(err)
    code, _, err = run_cli(capsys, *export_args(study, busy, "--overwrite"))
    assert code == 1 and "not an export-best bundle" in one_error_line(err)
    assert (busy / "notes.txt").read_text() == "mine"
    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    assert main(export_args(study, copy, "--overwrite")) == 0
    assert not (copy / "submission.csv").exists()  # replaced by a bundle without --test


def test_bootstrap_helpers_agree_with_the_ensemble_metric():
    from sklearn.metrics import f1_score

    from histosweep.bundle._report import bootstrap_ci
    from histosweep.model import macro_f1

    rng = np.random.default_rng(3)
    labels, preds = rng.integers(0, 4, 50), rng.integers(0, 4, 50)
    preds[:25] = labels[:25]
    sklearn_f1 = f1_score(labels, preds, average="macro", labels=[0, 1, 2, 3], zero_division=0)
    assert macro_f1(labels, preds) == pytest.approx(sklearn_f1, abs=1e-12)
    assert macro_f1(labels[:4], np.array([0, 0, 0, 0])) == pytest.approx(
        f1_score(labels[:4], [0, 0, 0, 0], average="macro", labels=[0, 1, 2, 3], zero_division=0))
    low, high = bootstrap_ci(labels, preds, 4)
    assert (low, high) == bootstrap_ci(labels, preds, 4)
    assert low < macro_f1(labels, preds) < high
