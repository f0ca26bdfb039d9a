"""export-best: the best complete trial (or trial N) as a bundle — manifest, fold safetensors,
report.html and optionally submission.csv — written in a temp folder and renamed at the end.

Exercise: `histosweep export-best STUDY --out bundle --test TEST`.
"""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from histosweep.bundle._predict import (
    BUNDLE_FORMAT,
    FOLDS_DIR,
    MANIFEST,
    Bundle,
    BundleFold,
    decode_samples,
    ensemble_predict,
    file_sha256,
    predict_folder,
)
from histosweep.bundle._report import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    ReportInputs,
    bootstrap_ci,
    per_class_scores,
    render_report,
)
from histosweep.data import CLASSES, DataError, load_dataset
from histosweep.model import ConfigError, TrainConfig, macro_f1
from histosweep.search._artifacts import fetch_checkpoint, fetch_metrics, fetch_probs, fold_key
from histosweep.search._ensemble import ensemble_probs, fold_weights
from histosweep.search._errors import UserError
from histosweep.search._plots import confusion_png, learning_curves_png
from histosweep.search._settings import load_settings
from histosweep.search._study import open_study
from histosweep.storage import atomic_dir, current_umask, open_artifact_store

REPORT = "report.html"
SUBMISSION = "submission.csv"
REPRODUCE_TOLERANCE = 1e-6  # |bundle holdout F1 - trial value| on the CPU
VERSIONED = ("histosweep", "torch", "timm", "optuna", "numpy")


@dataclass(frozen=True)
class ExportOptions:
    study: str
    out: Path
    storage: str | None = None
    artifacts: str | None = None
    trial: int | None = None
    test: Path | None = None
    data: str | None = None  # the training data, when it moved since create
    batch_size: int = 32
    tta: bool = False
    overwrite: bool = False
    device: str | None = None
    progress: bool = True


@dataclass
class _Source:
    """What export reads from the study: the trial, its settings, config and fold records."""

    study: Any
    settings: Any
    trial: Any
    config: Any  # model.TrainConfig
    records: list[dict[str, Any]]  # fold_<k> user attrs, k = 0..folds-1
    weights: np.ndarray


def export_best(opts: ExportOptions) -> dict[str, Any]:
    """Write the bundle for opts.study into opts.out; returns a summary (paths, metrics, warnings)."""

    if opts.batch_size < 1:
        raise UserError(f"--batch-size {opts.batch_size}: must be >= 1")
    if opts.test is not None and not Path(opts.test).is_dir():
        raise UserError(f"--test {opts.test}: no such folder; pass the folder of img_*.png + mask_*.png")
    src = _read_source(opts)
    out = Path(opts.out)
    _check_out(out, opts.overwrite)
    store = open_artifact_store(opts.artifacts)
    warnings: list[str] = []
    try:
        with atomic_dir(out, replace=True) as tmp:
            _stage(opts, "fetching fold checkpoints")
            folds = _write_folds(tmp, store, src)
            labels, ens = _stored_holdout(store, src)
            _stage(opts, "recomputing the holdout ensemble from the bundle's checkpoints")
            bundle_f1 = _recompute_holdout(opts, src, tmp, folds, labels, warnings)
            manifest = _manifest(src, folds, _metrics(src, labels, ens, bundle_f1))
            _write_json(tmp / MANIFEST, manifest)
            _stage(opts, "writing report.html")
            _write_report(tmp, store, src, manifest, labels, ens)
            submission = None
            if opts.test is not None:
                _stage(opts, f"predicting {opts.test}")
                submission = _write_submission(opts, tmp)
            readable_by_others(tmp)
    except OSError as exc:  # disk full, read-only or missing parent: atomic_dir left nothing
        raise UserError(
            f"--out {out}: cannot write the bundle ({exc.strerror or exc}); free some space or "
            "pass --out with a writable folder"
        ) from None
    return _summary(opts, src, manifest, submission, warnings)


def readable_by_others(path: Path) -> None:
    """Undo mkdtemp's/mkstemp's 0700/0600: a bundle is shared like any output (umask applies)."""

    umask = current_umask()
    for p in [path, *path.rglob("*")]:
        p.chmod((0o777 if p.is_dir() else 0o666) & ~umask)


def _stage(opts: ExportOptions, text: str) -> None:
    if opts.progress:
        print(f"export-best: {text}", file=sys.stderr, flush=True)


def _warn(warnings: list[str], text: str) -> None:
    warnings.append(text)
    print(f"warning: {text}", file=sys.stderr, flush=True)


# --- reading the study ---------------------------------------------------------------------
def _read_source(opts: ExportOptions) -> _Source:
    study = open_study(opts.study, opts.storage)
    settings = load_settings(study)
    trial = pick_trial(study, opts.trial)
    config = _trial_config(trial)
    records = _fold_records(trial, settings.folds)
    val_f1 = [float(r["val_f1"]) for r in records]
    weights = fold_weights(val_f1, top_k=config.ensemble_top_k, temperature=config.ensemble_temperature)
    return _Source(study, settings, trial, config, records, weights)


def pick_trial(study, number: int | None):
    """Trial `number` (must be COMPLETE), or the best COMPLETE trial."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    if number is None:
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        if not complete:
            raise UserError(
                f"study {study.study_name!r} has no COMPLETE trial yet ({_state_counts(trials)}); "
                f"run workers first: histosweep worker {study.study_name} --n-trials N"
            )
        return study.best_trial
    found = [t for t in trials if t.number == number]
    if not found:
        last = f"0..{trials[-1].number}" if trials else "none yet"
        raise UserError(f"study {study.study_name!r} has no trial {number} (trials: {last})")
    if found[0].state != TrialState.COMPLETE:
        raise UserError(
            f"trial {number} of study {study.study_name!r} is {found[0].state.name}, not COMPLETE; "
            "export a complete trial (leave out --trial for the best one)"
        )
    return found[0]


def _state_counts(trials) -> str:
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no trials"


def _trial_config(trial):
    raw = trial.user_attrs.get("config")
    if not isinstance(raw, dict):
        raise UserError(f"trial {trial.number} has no stored config (user attr 'config'); it was not run by a histosweep worker")
    try:
        return TrainConfig.from_dict(raw)
    except (ConfigError, TypeError) as exc:
        raise UserError(f"trial {trial.number}: stored config is not usable here ({exc})") from None


def _fold_records(trial, folds: int) -> list[dict[str, Any]]:
    missing = [k for k in range(folds) if fold_key(k) not in trial.user_attrs]
    if missing:
        raise UserError(
            f"trial {trial.number} has no record of fold(s) {', '.join(map(str, missing))} "
            "(user attr fold_<k>); it did not finish all folds"
        )
    return [trial.user_attrs[fold_key(k)] for k in range(folds)]


def _check_out(out: Path, overwrite: bool) -> None:
    above = next((p for p in out.parents if p.exists()), None)
    if above is not None and not above.is_dir():
        raise UserError(f"--out {out}: {above} is a file, not a folder; pass --out with a folder path")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; pass a folder for the bundle")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not overwrite:
        raise UserError(f"--out {out} exists and is not empty; choose a new folder or pass --overwrite")
    if not (out / MANIFEST).is_file():
        # NOTE: --overwrite only ever replaces a bundle, never an arbitrary folder.
        raise UserError(f"--out {out} is not an export-best bundle (no {MANIFEST}); refusing to replace it")


# --- fold files ----------------------------------------------------------------------------
def _write_folds(tmp: Path, store, src: _Source) -> list[dict[str, Any]]:
    """Fetch and verify each fold with weight > 0 into tmp/folds; the manifest's fold entries."""
    (tmp / FOLDS_DIR).mkdir()
    entries = []
    for k, (record, weight) in enumerate(zip(src.records, src.weights, strict=True)):
        rel = None
        if weight > 0:
            rel = f"{FOLDS_DIR}/fold_{k}.safetensors"
            what = f"trial {src.trial.number} fold {k}"
            fetch_checkpoint(store, record, tmp / rel, what=what)
            _verify_checkpoint(tmp / rel, src.config, what=f"{what} checkpoint {record['checkpoint']}")
        entries.append({
            "fold": k, "file": rel, "val_f1": float(record["val_f1"]),
            "holdout_f1": float(record["holdout_f1"]), "weight": float(weight),
            "sha256": file_sha256(tmp / rel) if rel else None,
        })
    return entries


def _verify_checkpoint(path: Path, cfg, *, what: str) -> None:
    """The checkpoint must hold exactly the trial's config and load into its network."""
    from histosweep.model import ModelError, load_checkpoint, read_checkpoint_config

    try:
        stored = read_checkpoint_config(path)
        if stored != cfg:
            diff = [f"{k}={v!r} (trial has {getattr(cfg, k)!r})"
                    for k, v in stored.to_dict().items() if getattr(cfg, k) != v]
            raise UserError(f"{what} does not match the trial's config: {'; '.join(diff)}")
        load_checkpoint(path, expect=cfg)
    except ModelError as exc:  # not safetensors, truncated, another network
        # NOTE: the error names the bundle's temp file, gone by the time a person reads it
        raise UserError(f"{what} cannot be loaded: {str(exc).replace(repr(str(path)), 'it')}") from None


# --- holdout ---------------------------------------------------------------------------------
def _stored_holdout(store, src: _Source) -> tuple[np.ndarray, np.ndarray]:
    """Holdout labels and the trial's own ensemble probabilities (from its probs artifacts)."""
    holdout = np.asarray(src.settings.split_obj().holdout, dtype=np.int64)
    labels = src.settings.label_array()[holdout]
    probs = [
        fetch_probs(store, r, what=f"trial {src.trial.number} fold {k}")["holdout_probs"]
        for k, r in enumerate(src.records)
    ]
    return labels, ensemble_probs(probs, src.weights)


def _recompute_holdout(opts, src: _Source, tmp: Path, folds, labels, warnings) -> float | None:
    """Holdout macro-F1 of the bundle's own checkpoints on freshly decoded holdout images."""

    samples = _holdout_samples(opts, src, warnings)
    if samples is None:
        return None
    images, masks = decode_samples(samples, src.config.resolution, src.config.resize_mode,
                                   progress=opts.progress)
    shipped = [BundleFold(f["fold"], tmp / f["file"], f["weight"]) for f in folds if f["file"]]
    bundle = Bundle(tmp, {}, src.config, (), shipped)
    probs = ensemble_predict(bundle, images, masks, batch_size=opts.batch_size, device=opts.device,
                             progress=opts.progress)
    value = macro_f1(labels, probs)
    if abs(value - float(src.trial.value)) > REPRODUCE_TOLERANCE:
        _warn(warnings, f"the bundle's holdout macro-F1 {value:.6f} differs from trial "
              f"{src.trial.number}'s {src.trial.value:.6f} (non-CPU numerics, or the data changed)")
    return value


def _holdout_samples(opts, src: _Source, warnings):
    root = src.settings.data_path(opts.data)
    try:
        by_id = {s.sample_index: s for s in load_dataset(root, labeled=True).samples}
    except DataError as exc:
        _warn(warnings, f"holdout F1 not recomputed: training data at {root} is not readable "
              f"({str(exc).splitlines()[0]}); pass --data DATA where it moved")
        return None
    ids = [src.settings.sample_ids[int(i)] for i in src.settings.split_obj().holdout]
    absent = [i for i in ids if i not in by_id]
    if absent:
        _warn(warnings, f"holdout F1 not recomputed: {len(absent)} holdout image(s) such as "
              f"{absent[0]} are gone from {root}")
        return None
    return [by_id[i] for i in ids]


def _metrics(src: _Source, labels, ens, bundle_f1) -> dict[str, Any]:
    value = float(src.trial.value)
    low, high = bootstrap_ci(labels, ens.argmax(1), ens.shape[1])
    return {
        "holdout_f1": value,
        "holdout_f1_bundle": bundle_f1,
        "holdout_f1_reproduced": None if bundle_f1 is None else abs(bundle_f1 - value) <= REPRODUCE_TOLERANCE,
        "holdout_f1_ci95": [low, high],
        "bootstrap_resamples": BOOTSTRAP_RESAMPLES,
        "bootstrap_seed": BOOTSTRAP_SEED,
        "oof_f1": src.trial.user_attrs.get("oof_f1"),
        "holdout_size": int(len(labels)),
    }


# --- manifest, report, submission -----------------------------------------------------------
def _manifest(src: _Source, folds, metrics) -> dict[str, Any]:
    cfg = src.config
    return {
        "format": BUNDLE_FORMAT,
        "study": src.study.study_name,
        "trial": src.trial.number,
        "classes": list(CLASSES),
        "config": cfg.to_dict(),
        "params": dict(src.trial.params),
        "data_fingerprint": src.settings.fingerprint,
        "split": {"folds": src.settings.folds, "holdout": src.settings.holdout, "seed": src.settings.seed},
        "ensemble": {"top_k": cfg.ensemble_top_k, "temperature": cfg.ensemble_temperature,
                     "rule": "top-k folds by validation macro-F1, weights proportional to exp(F1/T)"},
        "folds": folds,
        "metrics": metrics,
        "versions": package_versions(),
    }


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in VERSIONED:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "unknown"
    return out


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _write_report(tmp: Path, store, src: _Source, manifest, labels, ens) -> None:
    preds = ens.argmax(1)
    n = src.trial.number
    with tempfile.TemporaryDirectory(prefix="histosweep-report-") as pictures:
        cm = confusion_png(Path(pictures) / "cm.png", labels, preds, CLASSES,
                           title=f"trial {n}: ensemble on holdout").read_bytes()
        epochs = {k: fetch_metrics(store, r, what=f"trial {n} fold {k}")["epochs"]
                  for k, r in enumerate(src.records)}
        curves = learning_curves_png(Path(pictures) / "curves.png", epochs,
                                     title=f"trial {n}: learning curves").read_bytes()
    page = render_report(ReportInputs(
        study=src.study.study_name, trial=n, metrics=manifest["metrics"],
        per_class=per_class_scores(labels, preds, CLASSES), folds=manifest["folds"],
        params=manifest["params"], config=manifest["config"], confusion_png=cm, curves_png=curves,
    ))
    (tmp / REPORT).write_text(page, encoding="utf-8")


def _write_submission(opts: ExportOptions, tmp: Path) -> dict[str, Any]:
    return predict_folder(tmp, opts.test, tmp / SUBMISSION, tta=opts.tta, batch_size=opts.batch_size,
                          device=opts.device, progress=opts.progress)


def _summary(opts, src: _Source, manifest, submission, warnings) -> dict[str, Any]:
    out = Path(opts.out)
    return {
        "study": src.study.study_name, "trial": src.trial.number, "out": str(out),
        "value": manifest["metrics"]["holdout_f1"], "metrics": manifest["metrics"],
        "params": manifest["params"],
        "folds": [f["fold"] for f in manifest["folds"] if f["file"]],
        "report": str(out / REPORT), "manifest": str(out / MANIFEST),
        "submission": str(out / SUBMISSION) if submission else None,
        "submission_rows": submission["rows"] if submission else None,
        "warnings": warnings,
    }
