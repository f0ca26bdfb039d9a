"""Create and open histosweep studies: direction maximize, stored space/data/split/sampler.

Exercise: `histosweep create STUDY --data DATA [--space FILE] [--folds 5] [--pruner percentile]
[--sampler tpe] [--holdout 0] [--no-reference]`.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

from histosweep.data import CLASSES, audit_dataset, dataset_fingerprint, load_dataset, make_split
from histosweep.search._enqueue import REFERENCE_SOURCE, enqueue, reference_params
from histosweep.search._errors import UserError
from histosweep.search._pruner import SNAPSHOT_MAX_AGE_S, SnapshotPruner
from histosweep.search._settings import (
    OBJECTIVE_NAME,
    PRUNERS,
    StudySettings,
    load_settings,
    save_settings,
)
from histosweep.search._space import Space, check_backbones, load_space
from histosweep.storage import open_storage

log = logging.getLogger("histosweep")
# What `create --sampler` accepts; stored in the study settings, built by every worker.
SAMPLERS = ("tpe", "gp", "random", "cmaes", "qmc")


@dataclass(frozen=True)
class CreateOptions:
    data: Path
    space_file: Path | None = None
    folds: int = 5
    holdout: float = 0.2
    seed: int = 0
    pruner: str = "percentile"
    keep_flagged: bool = False
    skip_if_exists: bool = False
    force: bool = False
    sampler: str = "tpe"
    enqueue_reference: bool = False
    keep_top: int = 0  # workers gc checkpoints outside the top N after each trial; 0 keeps all


def create_study(name: str, storage_url: str | None, opts: CreateOptions, *, progress=True) -> dict:
    """Create study `name` (or accept an identical existing one); returns a summary dict."""
    import optuna


    _check_name(name)
    _check_options(opts)
    space = load_space(opts.space_file)
    check_backbones(space)
    settings = build_settings(space, opts, progress=progress)
    storage = open_storage(storage_url)
    existing = _find(storage, name)
    action = "created"
    if existing is not None:
        action = _reconcile(name, storage, existing, settings, opts)
    if action in ("created", "replaced"):
        study = optuna.create_study(
            study_name=name, storage=storage, direction="maximize",
            sampler=make_sampler(opts.sampler, seed=opts.seed),
        )
        with warnings.catch_warnings():  # experimental since 3.2, stable in use
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([OBJECTIVE_NAME])
        save_settings(study, settings)
        _save_note(study, settings)
    summary = {
        "study": name, "action": action, "samples": len(settings.sample_ids),
        "excluded": len(settings.excluded), "folds": settings.folds,
        "holdout": len(settings.split["holdout"]), "fingerprint": settings.fingerprint,
        "pruner": settings.pruner, "sampler": settings.sampler, "searched": space.searched(),
        "keep_top": settings.keep_top,
    }
    if opts.enqueue_reference:
        study = optuna.load_study(study_name=name, storage=storage)
        summary["reference"] = _enqueue_reference(study, space)
    return summary


def _enqueue_reference(study, space: Space) -> dict:
    """Queue the reference recipe's point of the space (once: a re-create does not repeat it)."""
    params, skipped = reference_params(space)
    queued = bool(params) and enqueue(study, params, source=REFERENCE_SOURCE)
    return {"params": params, "enqueued": queued, "skipped": skipped}


def _check_name(name: str) -> None:
    """A study name becomes part of a file name (each worker's log file): no path parts."""
    if not name.strip() or "/" in name or "\\" in name:
        raise UserError(
            f"study name {name!r}: it names worker log files, so it cannot be empty or hold "
            "'/' or '\\'; use letters, digits, '-', '_' or '.', e.g. "
            f"{(name.replace('/', '-').replace(chr(92), '-').strip() or 'histosweep')!r}"
        )


def _check_options(opts: CreateOptions) -> None:
    if opts.folds < 2:
        raise UserError(f"--folds {opts.folds}: need at least 2 folds")
    # NOTE: the holdout is one of round(1/holdout) stratified group splits: at most half
    if not 0 <= opts.holdout <= 0.5:  # 0: no lockbox; export-best's BBC-CV is the estimate
        raise UserError(f"--holdout {opts.holdout}: use 0 (no lockbox) or a fraction in (0, 0.5], e.g. 0.2")
    if opts.pruner not in PRUNERS:
        raise UserError(f"--pruner {opts.pruner!r}: choose one of {', '.join(PRUNERS)}")
    if opts.keep_top < 0:
        raise UserError(f"--keep-top {opts.keep_top}: use 0 (keep every checkpoint) or N >= 1, at "
                        "least the --candidates export-best will select from")
    if opts.sampler not in SAMPLERS:
        raise UserError(f"--sampler {opts.sampler!r}: choose one of {', '.join(SAMPLERS)}")
    if opts.sampler == "cmaes":
        try:
            import cmaes  # noqa: F401 - optuna's CmaEsSampler needs it only when it samples
        except ImportError:
            raise UserError("--sampler cmaes needs the cmaes package: pip install cmaes") from None


def build_settings(space: Space, opts: CreateOptions, *, progress=True) -> StudySettings:
    ds = load_dataset(opts.data, labeled=True, min_per_class=opts.folds)
    report = audit_dataset(ds, progress=progress)
    flagged = {e["sample_index"] for e in report.excluded}
    keep = [s for s in ds.samples if opts.keep_flagged or s.sample_index not in flagged]
    ids = [s.sample_index for s in keep]
    labels = [CLASSES.index(s.label) for s in keep]
    _check_kept_classes(labels, opts.folds, flagged=len(ds.samples) - len(keep))
    import numpy as np

    split = make_split(
        np.asarray(labels), report.groups_for(ids), folds=opts.folds, holdout=opts.holdout,
        seed=opts.seed,
    )
    return StudySettings(
        data_root=str(Path(opts.data).resolve()), fingerprint=dataset_fingerprint(ds),
        space=space.to_dict(), sample_ids=ids, labels=labels, split=split.to_dict(),
        folds=opts.folds, holdout=opts.holdout, seed=opts.seed, pruner=opts.pruner,
        keep_flagged=opts.keep_flagged,
        excluded=[] if opts.keep_flagged else list(report.excluded), sampler=opts.sampler,
        keep_top=opts.keep_top,
    )


def _check_kept_classes(labels: list[int], folds: int, *, flagged: int) -> None:
    """After the audit's exclusions every class still needs a sample per fold."""

    short = [c for i, c in enumerate(CLASSES) if labels.count(i) < folds]
    if short and flagged:
        raise UserError(
            f"the audit flagged {flagged} samples and left class(es) {', '.join(map(repr, short))} "
            f"with fewer than {folds} samples (the folds): check `histosweep prepare DATA`, "
            "pass --keep-flagged, or use fewer --folds"
        )


def _find(storage, name: str):
    import optuna

    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None


def _reconcile(name, storage, existing, settings: StudySettings, opts: CreateOptions) -> str:
    import optuna

    try:
        old = load_settings(existing)
        same = old.identity() == settings.identity()
    except UserError:
        old, same = None, False
    # NOTE: the sampler is not part of identity (trials stay comparable whichever sampler
    # proposed them), but a different one is refused rather than silently ignored.
    if same and old.sampler != settings.sampler and not opts.force:
        raise UserError(
            f"study {name!r} already exists with sampler {old.sampler!r}, not {settings.sampler!r} "
            f"(pass --sampler {old.sampler} to accept it, or --force to delete it and its trials)"
        )
    if same and old.keep_top != settings.keep_top and not opts.force:
        raise UserError(
            f"study {name!r} already exists with --keep-top {old.keep_top}, not {settings.keep_top} "
            f"(pass --keep-top {old.keep_top} to accept it, or --force to delete it and its trials)"
        )
    if same and opts.skip_if_exists:
        return "exists"
    if opts.force:
        optuna.delete_study(study_name=name, storage=storage)
        return "replaced"
    if same:
        raise UserError(
            f"study {name!r} already exists with the same space and data "
            "(pass --skip-if-exists to accept it)"
        )
    raise UserError(
        f"study {name!r} already exists with a different space, data or split "
        "(use another name, or --force to delete it and its trials)"
    )


def open_study(name: str, storage_url: str | None, *, heartbeat: int | None = None):
    """Load an existing study; a missing name is one clear error listing what exists."""
    import optuna


    storage = open_storage(storage_url, heartbeat=heartbeat, create=False)
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        known = ", ".join(names) if names else "none"
        raise UserError(
            f"no study named {name!r} in this storage (studies: {known}); "
            f"create it with: histosweep create {name} --data DATA"
        ) from None
    return study


def make_pruner(settings: StudySettings, epochs: int, *, snapshot_s: float | None = None):
    """The per-epoch pruner a worker builds from the study settings (pruners are not stored).

    snapshot_s: how old the finished trials that percentile and median read may be (default
    search._pruner.SNAPSHOT_MAX_AGE_S; 0 reads the database at every report).
    """
    import optuna


    if settings.pruner == "none":
        return optuna.pruners.NopPruner()
    if settings.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=settings.folds * epochs)
    if settings.pruner == "asha":
        # Successive halving over fold-epoch rungs: the first rung after one fold's epochs, then
        # every 3x more steps; a trial goes on while in the top third at its rung.
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=epochs, reduction_factor=3)
    if settings.pruner == "wilcoxon":
        # Compares this trial's per-(fold, epoch) F1 with the best trial's on the same steps.
        return optuna.pruners.WilcoxonPruner(p_threshold=0.1, n_startup_steps=epochs)
    # NOTE: warm-up of one epoch: first-epoch F1 of a fresh head is mostly noise.
    if settings.pruner == "median":
        # NOTE: 5 start-up trials: with 2, the sampler's model rested on 2-3 complete trials
        inner = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    else:
        # percentile (default): keep a trial only while it is in the top 25 % of finished trials
        # at the same step (PercentilePruner(25) when maximizing prunes below the 75th
        # percentile); saved 49% of epochs at equal best F1 where median saved 28%
        # (bench/pruning.py).
        inner = optuna.pruners.PercentilePruner(25.0, n_startup_trials=2, n_warmup_steps=1)
    snapshot_s = SNAPSHOT_MAX_AGE_S if snapshot_s is None else snapshot_s
    return SnapshotPruner(inner, snapshot_s) if snapshot_s > 0 else inner


def make_sampler(name: str = "tpe", *, seed: int | None = None, worker: str | None = None):
    """The sampler named in the study settings, as every worker builds it.

    seed: the study seed. worker: this worker's identity; mixed into the seed of the random
    draws, so parallel workers (one study seed) do not propose the same points.
    tpe: multivariate models parameter interactions and costs 3x less per trial at 1000 trials
    (bench/storage.py); constant_liar: parallel workers treat running trials as bad results
    instead of all proposing the same point. GP conditions on running trials itself.
    cmaes and qmc sample categorical params with an independent random sampler.
    """
    import warnings

    import optuna

    if name not in SAMPLERS:
        raise UserError(f"sampler {name!r}: choose one of {', '.join(SAMPLERS)}")
    samplers = optuna.samplers
    draw_seed = worker_seed(seed, worker)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "tpe":
            return samplers.TPESampler(multivariate=True, constant_liar=True, seed=draw_seed)
        if name == "gp":
            return samplers.GPSampler(seed=draw_seed)
        if name == "random":
            return samplers.RandomSampler(seed=draw_seed)
        # the worker logs the categorical fallback once (search._worker), not at every trial
        fallback = samplers.RandomSampler(seed=draw_seed)
        if name == "cmaes":
            return samplers.CmaEsSampler(seed=draw_seed, independent_sampler=fallback,
                                         warn_independent_sampling=False)
        # NOTE: the scrambled Sobol sequence is one for all workers, so QMC takes the study seed
        # itself, never a per-worker one; its index is the trial number (see qmc_sampler).
        return qmc_sampler(seed=seed, independent_sampler=fallback)


def qmc_sampler(*, seed: int | None, independent_sampler):
    """optuna's scrambled-Sobol QMCSampler whose point index is the trial's number.

    Optuna keeps the next index in a study attribute that it reads and then writes (its own
    comment: "only ensures that each sample_id is sampled at least once"), so two workers
    asking at the same moment get the same point. A trial number is unique in the study by the
    storage's own transaction: one shared sequence, never a repeat (enqueued trials leave gaps).
    """
    from optuna.samplers import QMCSampler

    class TrialNumberQMCSampler(QMCSampler):
        def sample_relative(self, study, trial, search_space):
            self._trial_number = trial.number
            return super().sample_relative(study, trial, search_space)

        def _find_sample_id(self, study, search_space) -> int:  # optuna private hook
            return self._trial_number

    return TrialNumberQMCSampler(qmc_type="sobol", scramble=True, seed=seed,
                                 independent_sampler=independent_sampler,
                                 warn_independent_sampling=False)


def worker_seed(seed: int | None, worker: str | None) -> int | None:
    """A seed derived from the study seed and a worker's identity (the study seed without one).

    The same worker identity on the same study seed draws the same stream: a lone worker's
    search repeats; distinct identities draw distinct streams.
    """
    if seed is None or worker is None:
        return seed
    digest = hashlib.sha256(f"{seed}/{worker}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def _save_note(study, settings: StudySettings) -> None:
    """A markdown note on the study page in optuna-dashboard: data, split, space, export."""
    from optuna_dashboard import save_note

    split = settings.split
    space_lines = "\n".join(f"| `{k}` | `{v}` |" for k, v in settings.space.items())
    note = f"""# {study.study_name}

**Data**: `{settings.data_root}` (fingerprint `{settings.fingerprint[:16]}`), {len(settings.sample_ids)} samples kept, {len(settings.excluded)} excluded by the audit.

**Split**: {f'stratified holdout of {len(split["holdout"])} samples' if split["holdout"] else 'no holdout (every sample in the folds; export-best estimates by BBC-CV)'}, {settings.folds} stratified group folds, seed {settings.seed}. Duplicate groups stay on one side.

**Objective** `{OBJECTIVE_NAME}`: out-of-fold macro-F1 (every non-holdout sample predicted by the fold model that did not train on it). The holdout is a lockbox: no trial is scored on it; export-best reads it once for the final estimate. Intermediate values are per-epoch validation F1 at step fold × (most epochs in the space) + epoch; pruner `{settings.pruner}`.

**Export** an ensemble searched across the top trials: `histosweep export-best {study.study_name} --out bundle --test TEST`

| parameter | space |
|---|---|
{space_lines}
"""
    save_note(study, note)
