"""`histosweep export-best` on one finished tiny study: the ensemble selected across trials on
out-of-fold data, bundle contents, no pickle, atomicity, reproducibility, the lockbox F1
reproduced from the bundle, a mixed-resolution ensemble, and one-line errors."""

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
resolution = [32, 64]
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
"""


def build_tiny_study(root: Path):
    """Synthesise ~40 samples, create study 'demo' (2 folds, no pruner), run 3 trials in-process:
    trials 0 and 1 at 32 px, trial 2 at 64 px (enqueued), so ensembles can mix resolutions."""
    from histosweep._demo import DemoPaths, create_demo_study, run_demo_workers
    from histosweep.data import synthesize

    paths = DemoPaths(root)
    synthesize(paths.data, n_train=40, n_test=8, seed=0, short_side=96)
    space = root / "space.toml"
    space.write_text(SPACE_64)
    create_demo_study(paths, space, folds=2, pruner="none", holdout=0.2, progress=False)  # a lockbox
    s = load("demo", paths.storage)
    for resolution, lr in ((32, 1e-3), (32, 2e-3), (64, 1e-3)):
        s.enqueue_trial({"resolution": resolution, "lr": lr, "cutmix_prob": 0.0})
    assert run_demo_workers(paths, trials=3, workers=1, progress=False) == 0
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
    for key in ("members", "selection", "decision", "data_fingerprint", "study", "metrics",
                "versions", "classes", "split"):
        assert key in manifest, key
    s = load("demo", study.storage)
    trials = {t.number: t for t in s.get_trials()}
    assert manifest["study"] == "demo"
    assert set(manifest["versions"]) == {"histosweep", "torch", "timm", "optuna", "numpy"}
    assert manifest["selection"]["candidates"] == sorted(trials, key=lambda n: (-trials[n].value, n))
    members = manifest["members"]
    assert sum(m["weight"] for m in members) == pytest.approx(1.0)
    assert all(m["weight"] > 0 for m in members)
    # the default is CMA-ES weights (the bench's pick): its path lists the members it kept
    assert manifest["selection"]["ensemble"] == "cmaes"
    assert sorted(manifest["selection"]["path"]) == sorted(m["trial"] for m in members)
    for m in members:
        assert m["config"] == trials[m["trial"]].user_attrs["config"]
        assert m["oof_f1"] == trials[m["trial"]].value
    shipped = sorted(p.name for p in (bundle / "folds").iterdir())
    assert shipped == sorted(f"trial{m['trial']}_fold{k}.safetensors" for m in members for k in (0, 1))
    mt = manifest["metrics"]
    assert mt["single_best"]["trial"] == s.best_trial.number
    for key in ("lockbox_f1_ci95", "lockbox_f1_uncalibrated_ci95"):
        low, high = mt[key]
        assert 0.0 <= low <= high <= 1.0
    assert mt["bootstrap_resamples"] == 1000 and mt["holdout_size"] == len(s.user_attrs["histosweep"]["split"]["holdout"])
    assert mt["oof_f1_calibrated"] >= mt["oof_f1"]  # offsets move only for a gain on OOF
    assert len(manifest["decision"]["offsets"]) == 4 and manifest["decision"]["calibrated"]
    check = manifest["decision"]["offsets_check"]  # applied only when they carry over
    assert check["reason"] and len(check["fitted_offsets"]) == 4
    applied = manifest["decision"]["offsets"]
    assert applied == (check["fitted_offsets"] if check["kept"] else [0.0] * 4)
    report = (bundle / "report.html").read_text()
    assert check["reason"].split(":")[0] in report
    assert report.count("data:image/png;base64,") == 2  # confusion matrix + learning curves
    low, high = mt["lockbox_f1_ci95"]
    assert "95% bootstrap interval" in report and f"{low:.4f}" in report
    assert "selected nothing" in report and "out-of-fold macro-F1" in report and "Luminal A" in report
    assert f"single best trial ({s.best_trial.number}) alone" in report
    assert (bundle / "submission.csv").is_file()


def test_greedy_weights_are_picks_and_never_worse_than_the_best_trial_on_oof(study, tmp_path):
    """Greedy selection starts from the best trial and keeps the best prefix: never worse on OOF;
    weights are picks / rounds of the kept prefix of the selection path."""
    out = tmp_path / "greedy"
    assert main(export_args(study, out, "--ensemble", "greedy", "--bootstrap", "100")) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    path = manifest["selection"]["path"]
    assert manifest["selection"]["ensemble"] == "greedy" and path
    for m in manifest["members"]:
        assert m["weight"] == pytest.approx(path.count(m["trial"]) / len(path))
    best = load("demo", study.storage).best_trial
    assert manifest["metrics"]["oof_f1"] >= best.value - 1e-12


def test_no_pickle_in_the_bundle(bundle):
    files = [p for p in bundle.rglob("*") if p.is_file()]
    assert len(files) >= 4
    for path in files:
        assert path.suffix not in (".pkl", ".pickle", ".pt", ".pth", ".bin"), path
        assert not path.read_bytes().startswith(b"\x80"), f"{path} looks like a pickle"


def test_lockbox_f1_reproduced_from_the_bundle(study, bundle):
    """Load the bundle's checkpoints, predict the holdout images afresh, score it."""
    from histosweep.bundle import decode_samples, ensemble_predict, load_bundle
    from histosweep.bundle._ensemble import decide
    from histosweep.data import load_dataset
    from histosweep.model import macro_f1

    b = load_bundle(bundle)
    settings = load("demo", study.storage).user_attrs["histosweep"]
    by_id = {s.sample_index: s for s in load_dataset(study.data).samples}
    holdout = settings["split"]["holdout"]
    samples = [by_id[settings["sample_ids"][i]] for i in holdout]
    arrays = decode_samples(samples, b.targets(), progress=False)
    probs = ensemble_predict(b, arrays, device="cpu", progress=False)
    value = macro_f1(np.asarray(settings["labels"])[holdout], decide(probs, b.offsets))
    metrics = json.loads((bundle / "manifest.json").read_text())["metrics"]
    assert value == pytest.approx(metrics["lockbox_f1"], abs=1e-6)
    assert abs(metrics["lockbox_f1_bundle"] - value) <= 1e-9 and metrics["lockbox_f1_reproduced"]


def test_export_twice_gives_identical_files(study, bundle, tmp_path):
    again = tmp_path / "again"
    assert main(export_args(study, again, "--test", str(study.test))) == 0
    first = {p.relative_to(bundle): p.read_bytes() for p in bundle.rglob("*") if p.is_file()}
    second = {p.relative_to(again): p.read_bytes() for p in again.rglob("*") if p.is_file()}
    assert sorted(first) == sorted(second)
    for rel in first:
        assert first[rel] == second[rel], f"{rel} differs between two exports"


def test_export_a_chosen_trial_and_json(study, tmp_path, capsys):
    s = load("demo", study.storage)
    other = next(t for t in s.get_trials() if t.number != s.best_trial.number)
    code, out, _ = run_cli(capsys, *export_args(study, tmp_path / "b", "--trial", str(other.number), "--json"))
    summary = json.loads(out)
    assert code == 0 and summary["trial"] == other.number
    assert summary["members"] == [{"study": "demo", "trial": other.number, "weight": 1.0,
                                   "oof_f1": other.value}]
    assert summary["submission"] is None and not (tmp_path / "b" / "submission.csv").exists()
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert [m["trial"] for m in manifest["members"]] == [other.number]


def test_single_exports_the_best_trial_alone(study, tmp_path, capsys):
    code, out, _ = run_cli(capsys, *export_args(study, tmp_path / "b", "--single", "--json"))
    summary = json.loads(out)
    best = load("demo", study.storage).best_trial
    assert code == 0 and [m["trial"] for m in summary["members"]] == [best.number]
    assert summary["metrics"]["single_best"]["lockbox_f1"] == summary["metrics"]["lockbox_f1_uncalibrated"]


def test_no_calibrate_is_plain_argmax(study, tmp_path, capsys):
    code, out, _ = run_cli(capsys, *export_args(study, tmp_path / "b", "--no-calibrate", "--json"))
    m = json.loads(out)["metrics"]
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert code == 0 and manifest["decision"]["offsets"] == [0.0, 0.0, 0.0, 0.0]
    assert m["lockbox_f1"] == m["lockbox_f1_uncalibrated"] and m["oof_f1_calibrated"] == m["oof_f1"]


def test_mixed_resolution_ensemble_export_and_predict_write_the_same_csv(study, tmp_path, capsys):
    """Members at 32 and 64 px: export's submission.csv and predict's are byte-identical."""
    s = load("demo", study.storage)
    by_res = {}
    for t in s.get_trials():
        by_res.setdefault(t.params["resolution"], t.number)
    assert sorted(by_res) == [32, 64]
    out = tmp_path / "mixed"
    code, _, err = run_cli(capsys, *export_args(study, out, "--trial", str(by_res[32]), str(by_res[64]),
                                                "--test", str(study.test)))
    assert code == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(m["config"]["resolution"] for m in manifest["members"]) == [32, 64]
    assert [m["weight"] for m in manifest["members"]] == [0.5, 0.5]
    csv = tmp_path / "predicted.csv"
    code, _, err = run_cli(capsys, "predict", str(out), "--images", str(study.test), "--out", str(csv),
                           "--no-progress")
    assert code == 0, err
    assert csv.read_bytes() == (out / "submission.csv").read_bytes()
    assert len(csv.read_text().splitlines()) == 1 + 8


def test_old_studies_get_one_line(study, tmp_path, capsys):
    """A study of the holdout-objective era (settings version 1) is refused with the reason."""
    from histosweep.search import CreateOptions, create_study

    create_study("old", study.storage, CreateOptions(data=study.data, space_file=study.root / "space.toml",
                                                     folds=2, pruner="none"), progress=False)
    old = load("old", study.storage)
    settings = dict(old.user_attrs["histosweep"], version=1)
    old.set_user_attr("histosweep", settings)
    args = export_args(study, tmp_path / "b")
    args[1] = "old"
    code, _, err = run_cli(capsys, *args)
    line = one_error_line(err)
    assert code == 1 and "holdout scores" in line and "create a new study" in line
    assert not (tmp_path / "b").exists()


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


def test_a_missing_data_folder_is_refused_even_without_a_lockbox(study, tmp_path, capsys):
    # --data is read only to recompute a lockbox; a typo was silently ignored without one
    code, _, err = run_cli(capsys, *export_args(study, tmp_path / "b", "--data", str(tmp_path / "NODATA")))
    line = one_error_line(err)
    assert code == 1 and line.startswith(f"error: --data {tmp_path / 'NODATA'}: no such folder;")
    assert not (tmp_path / "b").exists()


def test_study_without_complete_trial(study, tmp_path, capsys):
    from histosweep.search import CreateOptions, create_study

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


def _shipped_fold(study, bundle) -> tuple[object, int, dict]:
    """(trial, 1, fold record) of the first member the default export ships."""
    member = json.loads((bundle / "manifest.json").read_text())["members"][0]
    trial = next(t for t in load("demo", study.storage).get_trials() if t.number == member["trial"])
    return trial, 1, trial.user_attrs["fold_1"]


def test_missing_artifact_fails_cleanly_and_leaves_nothing(study, bundle, tmp_path, capsys):
    store = _store_copy(study, tmp_path)
    trial, k, record = _shipped_fold(study, bundle)
    (store / record["checkpoint"]).unlink()
    out = tmp_path / "parent" / "bundle"
    args = export_args(study, out)
    args[args.index("--artifacts") + 1] = str(store)
    code, _, err = run_cli(capsys, *args)
    line = one_error_line(err)
    assert code == 1 and record["checkpoint"] in line and f"trial {trial.number} fold {k}" in line
    assert not out.exists()
    assert list((tmp_path / "parent").iterdir()) == []  # no temp folder left behind


def test_checkpoint_that_does_not_match_its_config(study, bundle, tmp_path, capsys):
    store = _store_copy(study, tmp_path)
    trial, k, record = _shipped_fold(study, bundle)
    s = load("demo", study.storage)
    other = next(t for t in s.get_trials() if t.params["resolution"] != trial.params["resolution"])
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

    from histosweep.bundle import bootstrap_ci
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
