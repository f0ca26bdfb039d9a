"""One trial: suggest a TrainConfig, train the folds (pruned per epoch and between folds),
upload fold artifacts, and score the out-of-fold predictions (the holdout is never scored here).

Exercise: `histosweep worker STUDY --gpus cpu --n-trials 2`.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from histosweep.data import (
    CLASSES,
    dataset_fingerprint,
    fallback_summary,
    input_key,
    input_target,
    load_dataset,
    open_inputs,
)
from histosweep.model import macro_f1
from histosweep.search._enqueue import is_reference
from histosweep.search._errors import UserError, WorkerStopped  # noqa: F401 - re-exported
from histosweep.search._frozen import fold_trainer, frozen_cache_for
from histosweep.search._settings import StudySettings
from histosweep.search._uploader import Uploader
from histosweep.storage import study_id, study_storage, trial_id
from histosweep.trial_files import (
    confusion_png,
    fetch_probs,
    fold_key,
    publish_trial,
    upload_file,
    upload_fold,
)

log = logging.getLogger("histosweep")

# Between folds: prune when every finished fold is below the best complete trial's same fold
# and the mean gap is at least this much macro-F1 (a documented sign rule; see docs/selection.md).
FOLD_RULE_MARGIN = 0.03


@dataclass
class Runtime:
    """What a worker process loads once and every trial reuses."""

    study: object
    settings: StudySettings
    store: object
    device: str
    slot: str = "cpu"
    data_root: str | None = None
    progress: bool = True
    _dataset: object = None
    _caches: dict = field(default_factory=dict)
    _uploader: Uploader | None = None
    check_stop: object = None  # the worker's TrialLoop.raise_if_stopped (None outside a worker)

    def uploader(self) -> Uploader:
        """The worker's background uploader (one thread, started at first use)."""
        if self._uploader is None:
            self._uploader = Uploader()
        return self._uploader

    def dataset(self):
        if self._dataset is None:

            root = self.settings.data_path(self.data_root)
            ds = load_dataset(root, labeled=True)
            if dataset_fingerprint(ds) != self.settings.fingerprint:
                raise UserError(
                    f"data at {root} differs from what study {self.study.study_name!r} was created "
                    "with (fingerprint mismatch): point --data at the original data or create a new study"
                )
            self._dataset = ds
        return self._dataset

    def cache_for(self, cfg):
        """(cached arrays, cache row of each kept sample) for the config's input (data.input_target)."""
        if cfg.train_mode == "frozen":  # cached embeddings of the image backbone
            return frozen_cache_for(self, cfg)
        key = input_target(cfg)
        if key not in self._caches:

            cache = open_inputs(self.dataset(), cfg, progress=self.progress)
            row_of = {sid: i for i, sid in enumerate(cache.sample_ids)}
            rows = np.asarray([row_of[sid] for sid in self.settings.sample_ids], dtype=np.int64)
            self._caches[key] = (cache, rows)
        return self._caches[key]


class Objective:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.settings = rt.settings
        self.space = rt.settings.space_obj()
        self.split = rt.settings.split_obj()
        self.labels = rt.settings.label_array()
        # NOTE: steps are fold * (most epochs any trial can pick) + epoch, so a step means the
        # same fold and epoch in every trial even when `epochs` is searched.
        self.fold_steps = self.space.max_epochs()

    def __call__(self, trial) -> float:
        """The trial's value; returns (or raises) only once its uploads have settled."""
        uploads = self.rt.uploader()
        try:
            return self._trial(trial)
        except BaseException as exc:
            error = uploads.settle()  # never told while its uploads are in flight
            if error is not None and error is not exc:
                log.warning("trial %d: an upload also failed: %s: %s", trial.number,
                            type(error).__name__, error)
            raise

    def _trial(self, trial) -> float:
        cfg = self.space.suggest(trial, seed=self.settings.seed)
        trial.set_user_attr("config", cfg.to_dict())
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("device", self.rt.device)
        trial.set_user_attr("slot", self.rt.slot)
        trial.set_user_attr("pid", os.getpid())  # two workers on one host share host and slot
        planned = self.settings.folds * cfg.epochs
        trial.set_user_attr("epochs_planned", planned)
        cache, rows = self.rt.cache_for(cfg)
        if cfg.train_mode == "frozen":  # export writes it into the bundle; predict checks it
            trial.set_user_attr("embedding", cache.identity)
        else:
            _note_input(trial, cfg, cache)
        reused = self._reused_folds(trial)
        folds: dict[int, dict] = {}
        val_probs: dict[int, np.ndarray] = {}  # folds trained here: kept in memory, not re-read
        epochs_run = 0
        for f in range(self.settings.folds):
            if f in reused:
                folds[f] = reused[f]
                self._rereport(trial, f, reused[f])
                continue
            record, ran, probs = self._train_fold(trial, f, cfg, cache, rows)
            epochs_run += ran
            trial.set_user_attr("epochs_run", epochs_run)
            if record is None:
                ran_text = f"{ran} epoch{'' if ran == 1 else 's'}"
                self._pruned(trial, f"pruned in fold {f + 1}/{self.settings.folds} after {ran_text}",
                             epochs_run, planned)
            folds[f], val_probs[f] = record, probs  # fold_<f> is set once its uploads are done
            self._fold_rule(trial, folds, epochs_run, planned)
        return self._finish(trial, folds, val_probs)

    # --- folds -----------------------------------------------------------------------------
    def _train_fold(self, trial, f: int, cfg, cache, rows):
        train_fold = fold_trainer(cfg)  # finetune or frozen (same contract)
        train_idx, val_idx = self.split.folds[f]
        holdout = self.split.holdout
        curve: list[float] = []

        def on_epoch(m) -> bool:
            # NOTE: the upload error first: it is the cause when both happened (a worker that
            # stops because its store is gone), and the trial's fail_reason should say so.
            self.rt.uploader().raise_if_failed()  # an earlier fold's upload failed: stop now
            if self.rt.check_stop is not None:
                self.rt.check_stop()  # a stop signal whose own raise was swallowed
            step = f * self.fold_steps + len(curve)
            curve.append(float(m.val_f1))
            trial.report(float(m.val_f1), step)
            self._epoch_line(trial, f, cfg, m)
            if f == self.settings.folds - 1 and len(curve) >= cfg.epochs:
                return False  # the last epoch of the last fold: pruning saves nothing, so finish
            return not is_reference(trial) and trial.should_prune()  # the baseline runs whole

        result = train_fold(
            cfg, cache, self._label_rows(cache, rows),
            train_idx=rows[train_idx], val_idx=rows[val_idx], holdout_idx=rows[holdout],
            device=self.rt.device, on_epoch=on_epoch, progress=self.rt.progress,
            desc=f"[{self.rt.slot}] trial {trial.number} fold {f + 1}/{self.settings.folds}",
        )
        if result.stopped:
            return None, len(result.epochs), None
        record = dict(
            val_f1=macro_f1(self.labels[val_idx], result.val_probs),
            seconds=round(result.seconds, 3), epochs=len(result.epochs), curve=curve,
            loss_curve=[round(float(e.train_loss), 5) for e in result.epochs],
            best_epoch=result.best_epoch, oom_events=len(result.oom_events),
        )
        self.rt.uploader().submit(lambda: self._upload_fold(trial, f, result, cfg, record))
        # NOTE: the formatter adds the slot; folds count from 1 here as in the epoch lines (the
        # JSON `fold` field stays 0-based, as documented).
        log.info("trial %d fold %d/%d: val F1 %.4f, %.1f s", trial.number, f + 1,
                 self.settings.folds, record["val_f1"], result.seconds,
                 extra={"trial": trial.number, "fold": f})
        return record, len(result.epochs), result.val_probs

    def _upload_fold(self, trial, f: int, result, cfg, record: dict) -> None:
        """On the upload thread: the fold's artifacts, then its record (resume reads it)."""
        # NOTE: the holdout probabilities are stored for export-best, never scored here.
        _, val_idx = self.split.folds[f]
        record.update(upload_fold(self.rt.store, trial, f, result, cfg, val_idx, self.split.holdout))
        # NOTE: through the storage, not trial.set_user_attr, which also edits the trial's
        # cached attrs dict that the main thread may be copying at this moment.
        trial.storage.set_trial_user_attr(trial_id(trial), fold_key(f), record)

    def _epoch_line(self, trial, f: int, cfg, m) -> None:
        """One compact line per epoch (the terminal shows it when there are no progress bars)."""
        log.info("trial %d fold %d/%d epoch %d/%d: train loss %.4f, val F1 %.4f, %.1f s",
                 trial.number, f + 1, self.settings.folds, m.epoch + 1, cfg.epochs, m.train_loss,
                 m.val_f1, m.seconds, extra={"trial": trial.number, "fold": f, "epoch": m.epoch})

    def _label_rows(self, cache, rows) -> np.ndarray:
        """Labels indexed like cache rows (rows of excluded samples get 0, never sampled)."""
        # NOTE: not -1: train_fold checks every label is a class id; no split index points at
        # an excluded sample's row, so its placeholder label is never read.
        out = np.zeros(len(cache.sample_ids), dtype=np.int64)
        out[rows] = self.labels
        return out

    def _rereport(self, trial, f: int, record: dict) -> None:
        for i, value in enumerate(record.get("curve", [])):
            trial.report(float(value), f * self.fold_steps + i)

    def _pruned(self, trial, reason: str, epochs_run: int, planned: int):
        import optuna

        trial.set_user_attr("pruned_reason", reason)
        trial.set_user_attr("epochs_saved", max(0, planned - epochs_run - self._reused_epochs(trial)))
        raise optuna.TrialPruned(reason)

    def _reused_epochs(self, trial) -> int:
        return int(trial.user_attrs.get("epochs_reused", 0))

    def _fold_rule(self, trial, folds: dict[int, dict], epochs_run: int, planned: int) -> None:
        """Stop a trial whose finished folds are all clearly below the best trial's."""
        if (self.settings.pruner == "none" or len(folds) < 2 or len(folds) == self.settings.folds
                or is_reference(trial)):
            return
        best = _best_fold_f1(self.rt.study)
        if not best:
            return
        pairs = [(r["val_f1"], best[f]) for f, r in folds.items() if f < len(best)]
        gaps = [b - v for v, b in pairs]
        if pairs and all(g > 0 for g in gaps) and float(np.mean(gaps)) >= FOLD_RULE_MARGIN:
            self._pruned(trial, f"fold rule: {len(pairs)} folds all below the best trial "
                         f"(mean gap {np.mean(gaps):.3f})", epochs_run, planned)

    # --- resume --------------------------------------------------------------------------
    def _reused_folds(self, trial) -> dict[int, dict]:
        """Finished folds of the failed trial(s) this trial retries, from their artifacts."""
        storage, sid = study_storage(self.rt.study), study_id(self.rt.study)
        # NOTE: optuna 5's Trial has no system_attrs; the storage has them.
        history = storage.get_trial_system_attrs(trial_id(trial)).get("retry_history") or []
        if not history:
            return {}
        found: dict[int, dict] = {}
        for number in reversed(history):  # newest attempt first
            tid = storage.get_trial_id_from_study_id_trial_number(sid, number)
            attrs = storage.get_trial(tid).user_attrs
            for f in range(self.settings.folds):
                if f not in found and fold_key(f) in attrs:
                    found[f] = attrs[fold_key(f)]
        for f, record in found.items():
            trial.set_user_attr(fold_key(f), record)
        epochs = sum(int(r.get("epochs", 0)) for r in found.values())
        trial.set_user_attr("resumed_folds", sorted(found))
        trial.set_user_attr("epochs_reused", epochs)
        if found:
            log.info("trial %d resumes trial %d: reusing folds %s of %d", trial.number, history[-1],
                     ", ".join(str(f + 1) for f in sorted(found)), self.settings.folds,
                     extra={"trial": trial.number})
        return found

    # --- the value ----------------------------------------------------------------------
    def _finish(self, trial, folds: dict[int, dict], fresh: dict[int, np.ndarray]) -> float:
        """Out-of-fold macro-F1: each non-holdout sample predicted by the fold that did not see it."""
        order = sorted(folds)
        n = self.settings.folds
        val_probs = [
            fresh[f] if f in fresh
            else fetch_probs(self.rt.store, folds[f], what=f"trial {trial.number} fold {f + 1}/{n}")["val_probs"]
            for f in order
        ]  # only resumed folds are read back from the store
        oof_rows = np.concatenate([self.split.folds[f][1] for f in order])
        oof_probs = np.concatenate(val_probs)  # (N_oof, C)
        value = macro_f1(self.labels[oof_rows], oof_probs)
        trial.set_user_attr("fold_val_f1", [folds[f]["val_f1"] for f in order])
        trial.set_user_attr("fold_seconds", [folds[f]["seconds"] for f in order])
        trial.set_user_attr("oof_f1", value)
        labels, preds = self.labels[oof_rows], oof_probs.argmax(1)
        picture: list[str | None] = [None]
        uploads = self.rt.uploader()
        uploads.submit(lambda: picture.__setitem__(0, self._trial_pictures(trial, labels, preds)))
        uploads.wait()  # every fold's artifacts and the picture are in the store
        publish_trial(self.rt.study, trial, folds=folds, value=value, labels=labels, preds=preds,
                      classes=CLASSES, confusion_png=picture[0])
        return value

    def _trial_pictures(self, trial, labels, preds) -> str | None:
        """On the upload thread: the OOF confusion matrix as a PNG artifact; a failure only
        logs a warning."""
        try:
            with tempfile.TemporaryDirectory(prefix="histosweep-trial-") as tmp:
                png = Path(tmp) / f"trial{trial.number}-oof-confusion.png"
                confusion_png(png, labels, preds, CLASSES,
                              title=f"trial {trial.number}: out-of-fold predictions")
                png_id = upload_file(self.rt.store, trial, png)
        except Exception as exc:  # noqa: BLE001 - a picture must never fail a trained trial
            log.warning("trial %d: confusion matrix PNG not saved: %s: %s", trial.number,
                        type(exc).__name__, exc)
            return None
        trial.set_user_attr("confusion_png", png_id)
        return png_id


def _note_input(trial, cfg, cache) -> None:
    """The input the trial read and how many images needed a fallback (empty mask, tiny image)."""
    key = input_target(cfg)
    trial.set_user_attr("input", {"mode": cfg.input_mode,
                                  "key": input_key(key),
                                  "fallbacks": fallback_summary(cache)})


def _best_fold_f1(study) -> list[float]:
    try:
        best = study.best_trial
    except ValueError:
        return []
    return list(best.user_attrs.get("fold_val_f1", []))


