"""export-best: the final ensemble, searched across the top trials after training, as a bundle —
manifest, fold safetensors, report.html and optionally submission.csv — written in a temp
folder and renamed at the end. The holdout (lockbox) is read here, once, to score the bundle.

Several studies on one data and split pool their candidates (`export-best S1 S2 ..`); each
member names its study and trial.

Exercise: `histosweep export-best STUDY [STUDY2 ..] --out bundle --test TEST [--candidates N | --single | --trial N]`.
"""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from histosweep.bundle._bootstrap import BBC_RESAMPLES, LOCKBOX_VS_BBC
from histosweep.bundle._ensemble import (
    SELECTION_ROUNDS,
    decide,
    ensemble_probs,
    fit_checked_offsets,
    greedy_selection,
)
from histosweep.bundle._estimate import check_estimate_options, estimate_source, record_estimate
from histosweep.bundle._out import check_out, out_lock
from histosweep.bundle._predict import (
    BUNDLE_FORMAT,
    FOLDS_DIR,
    MANIFEST,
    Bundle,
    BundleFold,
    BundleMember,
    check_batch_size,
    check_test_folder,
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
from histosweep.bundle._selection import BAGS, DEFAULT_METHOD, select_batch
from histosweep.bundle._source import Candidate, Source, read_source
from histosweep.constants import DEFAULT_CANDIDATES
from histosweep.data import CLASSES, DataError, input_manifest, load_dataset, problems_line
from histosweep.exceptions import UserError
from histosweep.fleet import DELETED_ATTR, export_lease, gc_removed_at, gc_removed_message
from histosweep.model import TrainConfig, macro_f1
from histosweep.storage import StorageError, atomic_dir, current_umask, open_artifact_store
from histosweep.trial_files import (
    confusion_png,
    fetch_checkpoint,
    fetch_metrics,
    gain_sentence,
    learning_curves_png,
    save_export_note,
)

LOCKBOX_KEYS = ("lockbox_f1", "lockbox_f1_ci95", "lockbox_f1_uncalibrated",
                "lockbox_f1_uncalibrated_ci95", "bootstrap_resamples", "bootstrap_seed")
METHOD_TEXT = {
    "greedy": "greedy ensemble selection with replacement (Caruana et al. 2004) on out-of-fold "
              "macro-F1, log loss as tie-break, best prefix kept; weights = picks / prefix length",
    "bagged": f"bagged ensemble selection (Caruana et al. 2006): greedy with sorted "
              f"initialisation on {BAGS} random halves of the candidates, weights averaged",
    "cmaes": "CMA-ES over the candidates' weights on out-of-fold macro-F1, each point trimmed, "
             "normalised and rounded to multiples of 1/25 (Purucker & Beel 2023)",
}
NO_LOCKBOX_NOTE = (
    "No lockbox (create --holdout 0): every image trained in the folds; the honest number is "
    "the BBC-CV estimate below, from the out-of-fold predictions the selection used."
)
REPORT = "report.html"
SUBMISSION = "submission.csv"
REPRODUCE_TOLERANCE = 1e-6  # |bundle lockbox F1 - stored-probabilities lockbox F1| on the CPU
VERSIONED = ("histosweep", "torch", "timm", "optuna", "numpy")
LOCKBOX_NOTE = (
    "The lockbox (holdout) selected nothing: trials were ranked, the ensemble was selected and "
    "the decision offsets were fitted on out-of-fold predictions only; the lockbox was scored "
    "once, here, for this estimate."
)


@dataclass(frozen=True)
class ExportOptions:
    study: str
    out: Path
    storage: str | None = None
    artifacts: str | None = None
    trials: tuple[int, ...] = ()  # one: that trial alone; several: their equal-weight ensemble
    single: bool = False  # a single-trial bundle of the best trial
    candidates: int = DEFAULT_CANDIDATES  # top-N complete trials the ensemble selects from
    calibrate: bool = True  # per-class decision offsets fitted on OOF
    test: Path | None = None
    data: str | None = None  # the training data, when it moved since create
    batch_size: int = 32
    tta: bool = False
    overwrite: bool = False
    device: str | None = None
    progress: bool = True
    ensemble: str = DEFAULT_METHOD  # greedy | bagged | cmaes (bundle._selection)
    bootstrap: int = BBC_RESAMPLES  # BBC-CV resamples
    more_studies: tuple[str, ...] = ()  # pooled with study: same data fingerprint and split


def export_best(opts: ExportOptions) -> dict[str, Any]:
    """Write the bundle for opts.study into opts.out; returns a summary (paths, metrics, warnings)."""
    _check_options(opts)
    out = Path(opts.out)
    check_out(out, opts.overwrite)  # out_lock checks again under the lock
    if opts.test is not None:  # the check predict_folder makes at the end, before any selection
        check_test_folder(opts.test)
    with out_lock(out, opts.overwrite) as may_replace, contextlib.ExitStack() as lease:
        return _export(opts, out, may_replace, lease)


def _export(opts: ExportOptions, out: Path, may_replace, lease: contextlib.ExitStack) -> dict[str, Any]:
    store = open_artifact_store(opts.artifacts, create=False)  # export only reads the store

    def take_lease(study, trials) -> None:  # gc spares the candidates until the export ends
        lease.enter_context(export_lease(study, [t.number for t in trials]))

    src = read_source(opts, store, on_candidates=take_lease)
    _stage(opts, f"selecting the ensemble from {len(src.candidates)} trial(s) on out-of-fold data")
    offsets = _select(opts, src)
    _stage(opts, f"BBC-CV: the selection re-run in {opts.bootstrap} bootstrap resamples")
    bbc = estimate_source(src, store, opts)
    warnings: list[str] = []
    try:
        with atomic_dir(out, replace=may_replace, marker=True) as tmp:
            _stage(opts, "fetching fold checkpoints")
            members = _write_folds(tmp, store, src)
            if src.holdout_rows.size:
                _stage(opts, "scoring the lockbox (holdout), once")
            metrics = _metrics(src, offsets, bbc)
            metrics["lockbox_f1_bundle"] = _recompute_lockbox(opts, src, tmp, members, offsets, warnings)
            metrics["lockbox_f1_reproduced"] = (
                None if metrics["lockbox_f1_bundle"] is None or metrics["lockbox_f1"] is None
                else abs(metrics["lockbox_f1_bundle"] - metrics["lockbox_f1"]) <= REPRODUCE_TOLERANCE
            )
            manifest = _manifest(src, members, offsets, metrics, opts.calibrate)
            _write_json(tmp / MANIFEST, manifest)
            _stage(opts, "writing report.html")
            _write_report(tmp / REPORT, store, src, manifest, offsets)
            submission = None
            if opts.test is not None:
                _stage(opts, f"predicting {opts.test}")
                submission = _predict_test(opts, tmp)
            readable_by_others(tmp)
    except FileExistsError:  # someone else's folder appeared at --out: atomic_dir left it be
        raise UserError(
            f"--out {out}: a folder that is not an earlier bundle appeared there during the "
            "export; it was left untouched and no bundle was written (move it away or choose "
            "another --out)"
        ) from None
    except OSError as exc:  # disk full, read-only or missing parent: atomic_dir left nothing
        raise UserError(
            f"--out {out}: cannot write the bundle ({exc.strerror or exc}); free some space or "
            "pass --out with a writable folder"
        ) from None
    summary = _summary(opts, src, manifest, submission, warnings)
    if not src.pooled:  # NOTE: a pool's estimate is not any one study's; status shows its own
        record_estimate(src.study, bbc, by="export-best")  # status shows it
    for study in src.studies:  # the dashboard's study page says what was exported
        save_export_note(study, summary)
    return summary


def _predict_test(opts: ExportOptions, tmp: Path) -> dict[str, Any]:
    try:
        return predict_folder(tmp, opts.test, tmp / SUBMISSION, tta=opts.tta,
                              batch_size=opts.batch_size, device=opts.device, progress=opts.progress)
    except UserError as exc:
        if isinstance(exc.__cause__, OSError):  # writing submission.csv: its path is the temp
            raise exc.__cause__ from None  # folder's, so report it as --out below
        raise


def _check_options(opts: ExportOptions) -> None:
    check_batch_size(opts.batch_size)
    check_estimate_options(opts)
    if opts.candidates < 1:
        raise UserError(f"--candidates {opts.candidates}: must be >= 1")
    if opts.single and opts.trials:
        raise UserError("--single and --trial N both choose the members; pass one of them")
    if len(set(opts.trials)) != len(opts.trials):
        raise UserError(f"--trial {' '.join(map(str, opts.trials))}: a trial is named twice")
    if opts.test is not None and not Path(opts.test).is_dir():
        raise UserError(f"--test {opts.test}: no such folder; pass the folder of img_*.png + mask_*.png")
    if opts.data is not None and not Path(opts.data).is_dir():  # read only with a lockbox: say so now
        raise UserError(f"--data {opts.data}: no such folder; pass the training data folder where "
                        "it moved since create (train_labels.csv and train_data/), or leave --data out")


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


# --- selection (out-of-fold only) -------------------------------------------------------------
def _select(opts: ExportOptions, src: Source) -> np.ndarray:
    """Member weights (greedy selection on OOF) and the decision offsets (fitted on OOF)."""
    labels = src.labels(src.oof_rows)
    oof = [c.oof for c in src.candidates]
    if opts.trials or len(oof) == 1:  # the user chose the members: equal weights, no selection
        weights, path, rounds = np.full(len(oof), 1 / len(oof)), list(range(len(oof))), len(oof)
    elif opts.ensemble == "greedy":
        sel = greedy_selection(oof, labels)
        weights, path, rounds = sel.weights, sel.path, SELECTION_ROUNDS
    else:  # bagged or cmaes: the batched code BBC-CV runs, here on every OOF row once
        weights = select_batch(opts.ensemble, np.stack(oof)[:, None], labels,
                               np.ones((1, labels.size)),
                               np.random.default_rng(src.settings.seed))[0]
        path, rounds = [i for i in range(len(oof)) if weights[i] > 0], SELECTION_ROUNDS
    for c, w in zip(src.candidates, weights, strict=True):
        c.weight = float(w)
    src.selection = {
        "method": "single trial" if len(oof) == 1 else
        "the trials named by --trial, equal weights" if opts.trials else
        METHOD_TEXT[opts.ensemble],
        "ensemble": opts.ensemble,
        "candidates": [src.label(c) for c in src.candidates],
        "rounds": rounds,
        "path": [src.label(src.candidates[i]) for i in path],
    }
    ensemble = ensemble_probs(oof, weights)
    if not opts.calibrate:
        src.offsets_check = {"kept": False, "reason": "--no-calibrate"}
        return np.zeros(len(CLASSES))
    checked = fit_checked_offsets(ensemble, labels, seed=src.settings.seed)
    src.offsets_check = checked.as_dict()
    return checked.offsets


def _tie(src: Source, c) -> tuple[int, int]:
    """max() tie-break: the lower trial number, then the study named first."""
    return -c.trial.number, -src.names.index(c.study)


# --- fold files ----------------------------------------------------------------------------
def _write_folds(tmp: Path, store, src: Source) -> list[dict[str, Any]]:
    """Fetch and verify every member's folds into tmp/folds; the manifest's member entries."""
    (tmp / FOLDS_DIR).mkdir()
    members = []
    for c in src.members:
        n = c.trial.number
        name = f"study {c.study!r} trial {n}" if src.pooled else f"trial {n}"
        if c.trial.user_attrs.get(DELETED_ATTR):
            raise UserError(gc_removed_message(name, gc_removed_at(_study_of(src, c), c.trial)))
        folds = []
        # NOTE: trial numbers repeat across studies: a pool's file names start with the study
        prefix = f"{c.study}-" if src.pooled else ""
        for k, record in enumerate(c.records):
            rel = f"{FOLDS_DIR}/{prefix}trial{n}_fold{k}.safetensors"
            what = f"{name} fold {k}"
            _fetch_checkpoint(store, _study_of(src, c), c.trial, record, tmp / rel, what=what,
                              name=name)
            _verify_checkpoint(tmp / rel, c.config, what=f"{what} checkpoint {record['checkpoint']}")
            folds.append({"fold": k, "file": rel, "val_f1": float(record["val_f1"]),
                          "sha256": file_sha256(tmp / rel)})
        members.append({
            "study": c.study, "trial": n, "weight": c.weight, "oof_f1": float(c.trial.value),
            "config": c.config.to_dict(), "params": dict(c.trial.params), "folds": folds,
            "input": {**input_manifest(c.config),
                      "fallbacks": dict(c.trial.user_attrs.get("input", {}).get("fallbacks", {}))},
            **_embedding_entry(c),
        })
    return members


def _study_of(src: Source, c):
    """The study object that ran candidate c (a pooled export reads several)."""
    return next((s for s in src.studies if s.study_name == c.study), src.study)


def _fetch_checkpoint(store, study, trial, record, dest: Path, *, what: str, name: str) -> None:
    """The checkpoint into dest; a missing one that gc removed (before this export's lease, or
    while the candidates were chosen) is named as such, not blamed on --artifacts."""
    try:
        fetch_checkpoint(store, record, dest, what=what)
    except UserError:
        try:
            when = gc_removed_at(study, trial)
        except StorageError:  # through the gRPC proxy gc's marks cannot be read
            when = None
        if when is None:
            raise
        raise UserError(gc_removed_message(name, when)) from None


def _embedding_entry(c: Candidate) -> dict[str, Any]:
    """Frozen members name their backbone and its weights sha256 (predict checks it)."""
    if c.config.train_mode != "frozen":
        return {}
    return {"embedding": c.trial.user_attrs.get("embedding")}


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


# --- the lockbox, read once ------------------------------------------------------------------
def lockbox_probs(src: Source) -> np.ndarray:
    """The ensemble's holdout probabilities from the members' stored fold predictions."""
    return ensemble_probs([c.holdout for c in src.members], [c.weight for c in src.members])


def _metrics(src: Source, offsets: np.ndarray, bbc: dict[str, Any]) -> dict[str, Any]:
    y_oof, y_hold = src.labels(src.oof_rows), src.labels(src.holdout_rows)
    oof = ensemble_probs([c.oof for c in src.members], [c.weight for c in src.members])
    best = max(src.candidates, key=lambda c: (float(c.trial.value), *_tie(src, c)))
    out = {
        "oof_f1": macro_f1(y_oof, oof),
        "oof_f1_calibrated": macro_f1(y_oof, decide(oof, offsets)),
        "bbc": bbc, "search_gain": bbc["search_gain"],
        "search_gain_text": gain_sentence(bbc["search_gain"]),
        "estimates_note": LOCKBOX_VS_BBC if y_hold.size else NO_LOCKBOX_NOTE,
        "holdout_size": int(y_hold.size),
        "oof_size": int(y_oof.size),
    }
    if not y_hold.size:  # create --holdout 0: BBC-CV is the estimate
        return {**out, **dict.fromkeys(LOCKBOX_KEYS), "single_best": {
            "study": best.study, "trial": best.trial.number, "oof_f1": float(best.trial.value), "lockbox_f1": None,
            "lockbox_f1_ci95": None}, "note": NO_LOCKBOX_NOTE}
    hold = lockbox_probs(src)
    return {
        **out,
        "lockbox_f1": macro_f1(y_hold, decide(hold, offsets)),
        "lockbox_f1_ci95": list(bootstrap_ci(y_hold, decide(hold, offsets), len(CLASSES))),
        "lockbox_f1_uncalibrated": macro_f1(y_hold, hold),
        "lockbox_f1_uncalibrated_ci95": list(bootstrap_ci(y_hold, hold.argmax(1), len(CLASSES))),
        "single_best": {
            "study": best.study, "trial": best.trial.number, "oof_f1": float(best.trial.value),
            "lockbox_f1": macro_f1(y_hold, best.holdout),
            "lockbox_f1_ci95": list(bootstrap_ci(y_hold, best.holdout.argmax(1), len(CLASSES))),
        },
        "bootstrap_resamples": BOOTSTRAP_RESAMPLES,
        "bootstrap_seed": BOOTSTRAP_SEED,
        "note": LOCKBOX_NOTE,
    }


def _recompute_lockbox(opts, src: Source, tmp: Path, members, offsets, warnings) -> float | None:
    """Lockbox macro-F1 of the bundle's own checkpoints on freshly decoded holdout images."""
    if not src.holdout_rows.size:  # --holdout 0: no lockbox to recompute
        return None
    samples = _holdout_samples(opts, src, warnings)
    if samples is None:
        return None
    shipped = [
        BundleMember(m["trial"], TrainConfig.from_dict(m["config"]), m["weight"],
                     [BundleFold(f["fold"], tmp / f["file"]) for f in m["folds"]],
                     m.get("embedding"))
        for m in members
    ]
    bundle = Bundle(tmp, {}, tuple(CLASSES), shipped, offsets)
    arrays = decode_samples(samples, bundle.targets(), progress=opts.progress)
    probs = ensemble_predict(bundle, arrays, batch_size=opts.batch_size, device=opts.device,
                             progress=opts.progress)
    value = macro_f1(src.labels(src.holdout_rows), decide(probs, offsets))
    stored = macro_f1(src.labels(src.holdout_rows), decide(lockbox_probs(src), offsets))
    if abs(value - stored) > REPRODUCE_TOLERANCE:
        _warn(warnings, f"the bundle's lockbox macro-F1 {value:.6f} differs from the one its "
              f"trials' stored predictions give, {stored:.6f} (non-CPU numerics, or the data changed)")
    return value


def _holdout_samples(opts, src: Source, warnings):
    root = src.settings.data_path(opts.data)
    try:
        by_id = {s.sample_index: s for s in load_dataset(root, labeled=True).samples}
    except DataError as exc:
        _warn(warnings, f"lockbox F1 not recomputed from the bundle: training data at {root} is "
              f"not readable ({problems_line(str(exc))}); pass --data DATA where it moved")
        return None
    ids = [src.settings.sample_ids[int(i)] for i in src.holdout_rows]
    absent = [i for i in ids if i not in by_id]
    if absent:
        _warn(warnings, f"lockbox F1 not recomputed from the bundle: {len(absent)} holdout "
              f"image(s) such as {absent[0]} are gone from {root}")
        return None
    return [by_id[i] for i in ids]


# --- report -----------------------------------------------------------------------------------
def _write_report(path: Path, store, src: Source, manifest, offsets) -> None:
    lockbox = bool(src.holdout_rows.size)  # else the pictures show the out-of-fold rows
    rows = src.holdout_rows if lockbox else src.oof_rows
    labels = src.labels(rows)
    preds = decide(lockbox_probs(src) if lockbox else
                   ensemble_probs([c.oof for c in src.members], [c.weight for c in src.members]),
                   offsets)
    top = max(src.members, key=lambda c: (c.weight, *_tie(src, c)))
    n = top.trial.number
    with tempfile.TemporaryDirectory(prefix="histosweep-report-") as pictures:
        cm = confusion_png(Path(pictures) / "cm.png", labels, preds, CLASSES,
                           title="final ensemble on the lockbox (holdout)" if lockbox else
                           "final ensemble, out-of-fold (selection data)").read_bytes()
        epochs = {k: fetch_metrics(store, r, what=f"trial {n} fold {k}")["epochs"]
                  for k, r in enumerate(top.records)}
        curves = learning_curves_png(Path(pictures) / "curves.png", epochs,
                                     title=f"trial {n}: learning curves").read_bytes()
    path.write_text(render_report(ReportInputs(
        study=" + ".join(src.names), metrics=manifest["metrics"], members=manifest["members"],
        selection=manifest["selection"], decision=manifest["decision"],
        per_class=per_class_scores(labels, preds, CLASSES), confusion_png=cm,
        curves_png=curves, curves_trial=src.label(top), pooled=src.pooled,
    )), encoding="utf-8")


# --- manifest, summary ----------------------------------------------------------------------
def _manifest(src: Source, members, offsets, metrics, calibrate: bool) -> dict[str, Any]:
    s = src.settings
    return {
        "format": BUNDLE_FORMAT,
        "study": src.study.study_name,  # the first named; members name their own
        "studies": src.names,
        "classes": list(CLASSES),
        "members": members,
        "selection": src.selection,
        "decision": {
            "offsets": [float(o) for o in offsets], "calibrated": calibrate,
            "rule": "argmax over classes of log(ensemble probability) + offset; offsets fitted "
                    "on out-of-fold predictions by coordinate ascent on macro-F1, kept only if "
                    "offsets refitted without each part of the OOF rows beat argmax on it",
            "offsets_check": src.offsets_check,
        },
        "data_fingerprint": s.fingerprint,
        "split": {"folds": s.folds, "holdout": s.holdout, "seed": s.seed},
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


def _summary(opts, src: Source, manifest, submission, warnings) -> dict[str, Any]:
    out = Path(opts.out)
    members = manifest["members"]
    top = max(members, key=lambda m: (m["weight"], -m["trial"], -src.names.index(m["study"])))
    return {
        "study": src.study.study_name, "studies": src.names, "out": str(out),
        "trial": top["trial"], "trial_study": top["study"],
        "members": [{"study": m["study"], "trial": m["trial"], "weight": m["weight"],
                     "oof_f1": m["oof_f1"]} for m in members],
        "value": (manifest["metrics"]["lockbox_f1"] if manifest["metrics"]["lockbox_f1"] is not None
                  else manifest["metrics"]["bbc"]["ensemble"]["mean"]),
        "metrics": manifest["metrics"],
        "report": str(out / REPORT), "manifest": str(out / MANIFEST),
        "submission": str(out / SUBMISSION) if submission else None,
        "submission_rows": submission["rows"] if submission else None,
        "warnings": warnings,
    }
