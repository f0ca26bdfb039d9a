"""Create and open histosweep studies: direction maximize, stored space/data/split/sampler.

Exercise: `histosweep create STUDY --data DATA [--space FILE] [--folds 5] [--pruner percentile]
[--sampler tpe] [--holdout 0] [--no-reference] [--like OLD] [--warm-start OLD ..]
[--budget-gpu-hours H]`.
"""

from __future__ import annotations

import hashlib
import logging
import shlex
import warnings
from dataclasses import dataclass
from pathlib import Path

from histosweep.constants import DEFAULT_HOLDOUT
from histosweep.data import CLASSES, audit_dataset, dataset_fingerprint, load_dataset, make_split
from histosweep.search._budget import check_budget_hours, read_budget, set_budget
from histosweep.search._campaign import (
    IMPORTS_KEY,
    add_imports,
    did_you_mean,
    like_settings,
    load_source,
    plan_imports,
    split_key,
)
from histosweep.search._enqueue import REFERENCE_SOURCE, enqueue, reference_params
from histosweep.search._errors import UserError
from histosweep.search._pruner import SNAPSHOT_MAX_AGE_S, SnapshotPruner
from histosweep.search._pruners import pruner_kind
from histosweep.search._samplers import sampler_kind
from histosweep.search._settings import (
    OBJECTIVE_NAME,
    StudySettings,
    load_settings,
    save_settings,
)
from histosweep.search._space import Space, check_backbones, load_space
from histosweep.storage import check_sqlite_folder, open_storage

log = logging.getLogger("histosweep")


@dataclass(frozen=True)
class CreateOptions:
    data: Path | None = None  # None only with like: OLD's data
    space_file: Path | None = None
    folds: int = 5
    holdout: float = DEFAULT_HOLDOUT
    seed: int = 0
    pruner: str = "percentile"
    keep_flagged: bool = False
    skip_if_exists: bool = False
    force: bool = False
    sampler: str = "tpe"
    enqueue_reference: bool = False
    keep_top: int = 0  # workers gc checkpoints outside the top N after each trial; 0 keeps all
    # workers take no new trial once the study's trials used this many GPU-hours; None: no budget.
    # Not part of the study's identity: `histosweep budget` changes it.
    budget_gpu_hours: float | None = None
    like: str | None = None  # copy this study's data, fingerprint, split, folds and seed
    warm_start: tuple[str, ...] = ()  # import these studies' finished trials (same split only)


def create_study(name: str, storage_url: str | None, opts: CreateOptions, *, progress=True) -> dict:
    """Create study `name` (or accept an identical existing one); returns a summary dict."""
    import optuna


    _check_name(name)
    _check_options(opts)
    space = load_space(opts.space_file)
    check_backbones(space)
    _check_pixel_keys(space, opts.space_file)
    check_sqlite_folder(storage_url)  # a missing folder is said now, not after the data audit
    # NOTE: the data are checked before the storage opens: bad data leave no new SQLite file
    settings = _data_settings(name, space, opts, progress=progress) if opts.like is None else None
    storage = open_storage(storage_url)
    if settings is None:
        settings = _like_settings(name, storage, space, opts)
    imports = plan_imports(storage, name, settings, opts.warm_start) if opts.warm_start else None
    existing = _find(storage, name)
    action = "created"
    if existing is not None:
        action = _reconcile(name, storage, existing, settings, opts)
    if action in ("created", "replaced"):
        study = optuna.create_study(
            study_name=name, storage=storage, direction="maximize",
            sampler=make_sampler(opts.sampler, seed=settings.seed),
        )
        with warnings.catch_warnings():  # experimental since 3.2, stable in use
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([OBJECTIVE_NAME])
        save_settings(study, settings)
        _save_note(study, settings)
    if opts.budget_gpu_hours is not None:  # also for an existing study: it is not its identity
        set_budget(optuna.load_study(study_name=name, storage=storage), opts.budget_gpu_hours)
    summary = {
        "study": name, "action": action, "samples": len(settings.sample_ids),
        "excluded": len(settings.excluded), "folds": settings.folds,
        "holdout": len(settings.split["holdout"]), "fingerprint": settings.fingerprint,
        "pruner": settings.pruner, "sampler": settings.sampler, "searched": space.searched(),
        "keep_top": settings.keep_top, "like": opts.like, "split": split_key(settings),
        "budget_gpu_hours": read_budget(optuna.load_study(study_name=name, storage=storage)),
    }
    study = optuna.load_study(study_name=name, storage=storage)
    if opts.enqueue_reference:  # NOTE: before the imports: enqueue skips params already run
        summary["reference"] = _enqueue_reference(study, space)
    if imports is not None:  # an existing study keeps what it imported when it was created
        summary["imported"] = (add_imports(study, imports) if action in ("created", "replaced")
                               else study.user_attrs.get(IMPORTS_KEY))
    return summary


def _data_settings(name: str, space: Space, opts: CreateOptions, *, progress) -> StudySettings:
    """From the data (--data): its samples, fingerprint and a new split."""
    if opts.data is None:
        raise UserError(f"create {name}: pass --data DATA (the training data), or --like OLD "
                        "to use an existing study's data and split")
    return build_settings(space, opts, progress=progress)


def _like_settings(name: str, storage, space: Space, opts: CreateOptions) -> StudySettings:
    """OLD's data and split with this space (--like OLD)."""
    if opts.like == name:
        raise UserError(f"--like {name}: that is the study being created; name an existing study")
    _, old = load_source(storage, opts.like, "--like")
    return like_settings(opts.like, old, space, opts)


def _enqueue_reference(study, space: Space) -> dict:
    """Queue the reference recipe's point of the space (once: a re-create does not repeat it)."""
    params, skipped = reference_params(space)
    queued = bool(params) and enqueue(study, params, source=REFERENCE_SOURCE)
    return {"params": params, "enqueued": queued, "skipped": skipped}


# why: a log file name is STUDY-HOST-PID-SLOT.log and most file systems stop at 255 bytes;
# 120 leaves room for a 64-character host name, a pid and a slot label.
MAX_STUDY_NAME_BYTES = 120


def _check_name(name: str) -> None:
    """A study name becomes part of a file name (each worker's log file): no path parts."""
    if not name.strip() or "/" in name or "\\" in name:
        raise UserError(
            f"study name {name!r}: it names worker log files, so it cannot be empty or hold "
            "'/' or '\\'; use letters, digits, '-', '_' or '.', e.g. "
            f"{(name.replace('/', '-').replace(chr(92), '-').strip() or 'histosweep')!r}"
        )
    if name != name.strip():  # 'subtypes ' beside 'subtypes': two studies no listing tells apart
        raise UserError(f"study name {name!r}: it begins or ends with a space, which no listing "
                        f"shows; use {name.strip()!r}")
    if len(name.encode()) > MAX_STUDY_NAME_BYTES or any(ord(c) < 32 for c in name):
        shown = name if len(name) <= 40 else name[:40] + "..."
        raise UserError(f"study name {shown!r}: it names worker log files (STUDY-HOST-PID-SLOT.log), "
                        f"so use at most {MAX_STUDY_NAME_BYTES} bytes and no control characters")


def _list_example(key: str) -> str:
    examples = {"resolution": "[224, 384]", "resize_mode": '["stretch", "pad"]',
                "crop_margin": "[0.0, 0.1, 0.2]", "tile_size": "[224, 256]", "tile_scale": "[1.0, 2.0]"}
    return f"{key} = {examples.get(key, '[a, b]')}"


def _check_pixel_keys(space, space_file) -> None:
    """A range on a key that changes the cached pixels builds a new cache for every trial."""
    from histosweep.search._inputs import ranged_pixel_keys

    ranged = ranged_pixel_keys(space)
    if ranged:
        raise UserError(
            f"space {space_file or 'default'}: {', '.join(ranged)} change(s) the cached pixels, so "
            f"each value is a cache of its own; give a list of values (e.g. {_list_example(ranged[0])}"
            "), not a range"
        )


def _check_options(opts: CreateOptions) -> None:
    if opts.folds < 2:
        raise UserError(f"--folds {opts.folds}: need at least 2 folds")
    # NOTE: the holdout is one of round(1/holdout) stratified group splits: at most half
    if not 0 <= opts.holdout <= 0.5:  # 0: no lockbox; export-best's BBC-CV is the estimate
        raise UserError(f"--holdout {opts.holdout}: use 0 (no lockbox) or a fraction in (0, 0.5], e.g. 0.2")
    pruner_kind(opts.pruner, flag="--pruner")
    if opts.budget_gpu_hours is not None:
        check_budget_hours(opts.budget_gpu_hours)
    if opts.keep_top < 0:
        raise UserError(f"--keep-top {opts.keep_top}: use 0 (keep every checkpoint) or N >= 1, at "
                        "least the --candidates export-best will select from")
    needs = sampler_kind(opts.sampler, flag="--sampler").needs
    if needs:  # optuna imports it only when it samples: a worker would fail every trial
        import importlib.util

        if importlib.util.find_spec(needs) is None:
            raise UserError(f"--sampler {opts.sampler} needs the {needs} package: pip install {needs}")


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
    differs = _difference(old, settings) if old is not None else "a different space, data or split"
    raise UserError(
        f"study {name!r} already exists with {differs} "
        "(use another name, or --force to delete it and its trials)"
    )


def _difference(old: StudySettings, new: StudySettings) -> str:
    """What keeps a re-create from being the same study, as one phrase naming it."""
    if old.fingerprint != new.fingerprint:
        return f"other data (fingerprint {old.fingerprint[:12]}, not {new.fingerprint[:12]})"
    for flag in ("folds", "holdout", "seed"):
        if getattr(old, flag) != getattr(new, flag):
            return f"--{flag} {getattr(old, flag)}, not {getattr(new, flag)}"
    if old.keep_flagged != new.keep_flagged:
        return f"--keep-flagged {'on' if old.keep_flagged else 'off'}, not {'on' if new.keep_flagged else 'off'}"
    keys = sorted(k for k in old.space.keys() | new.space.keys() if old.space.get(k) != new.space.get(k))
    if keys:
        return f"another space (differs in: {', '.join(keys)})"
    return "settings of another histosweep version"


def open_study(name: str, storage_url: str | None, *, heartbeat: int | None = None,
               create_hint: bool = True):
    """Load an existing study; a missing name is one clear error listing what exists.

    create_hint: a name with no close match ends with the command that creates it (False for
    delete-study, where creating the study is not what was asked)."""
    import optuna

    storage = open_storage(storage_url, heartbeat=heartbeat, create=False)
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        known = ", ".join(names) if names else "none"
        if close := did_you_mean(name, names):  # a typo: not a hint to create a second study
            raise UserError(f"no study named {name!r} in this storage{close} (studies: {known})") from None
        fix = f"create it with: histosweep create {shlex.quote(name)} --data DATA" if create_hint else (
            "check the name, and --storage for the storage that holds it")
        raise UserError(f"no study named {name!r} in this storage (studies: {known}); {fix}") from None
    return study


def make_pruner(settings: StudySettings, epochs: int, *, snapshot_s: float | None = None):
    """The per-epoch pruner a worker builds from the study settings (pruners are not stored).

    snapshot_s: how old the finished trials that percentile and median read may be (default
    search._pruner.SNAPSHOT_MAX_AGE_S; 0 reads the database at every report).
    """
    kind = pruner_kind(settings.pruner)
    inner = kind.build(settings.folds, epochs)
    if not kind.reads_finished:
        return inner
    snapshot_s = SNAPSHOT_MAX_AGE_S if snapshot_s is None else snapshot_s
    return SnapshotPruner(inner, snapshot_s) if snapshot_s > 0 else inner


def make_sampler(name: str = "tpe", *, seed: int | None = None, worker: str | None = None):
    """The sampler named in the study settings, as every worker builds it (search._samplers).

    seed: the study seed. worker: this worker's identity; mixed into the seed of the random
    draws, so parallel workers (one study seed) do not propose the same points.
    """
    import warnings

    import optuna

    kind = sampler_kind(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return kind.build(seed, worker_seed(seed, worker))


def worker_seed(seed: int | None, worker: str | None) -> int | None:
    """A seed derived from the study seed and a worker's identity (the study seed without one).

    The same worker identity on the same study seed draws the same stream: a lone worker's
    search repeats; distinct identities draw distinct streams.
    """
    if seed is None or worker is None:
        return seed
    digest = hashlib.sha256(f"{seed}/{worker}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def _space_text(spec: dict) -> str:
    """A space entry as a person reads it: `1`, `224` · `384`, `1e-05` – `0.001` (log)."""
    if "value" in spec:
        return f"`{spec['value']}`"
    if "choices" in spec:
        return " · ".join(f"`{c}`" for c in spec["choices"])
    extra = [x for x in ("log" if spec.get("log") else "",
                         f"step {spec['step']}" if spec.get("step") is not None else "") if x]
    return f"`{spec['low']}` – `{spec['high']}`" + (f" ({', '.join(extra)})" if extra else "")


def _save_note(study, settings: StudySettings) -> None:
    """A markdown note on the study page in optuna-dashboard: data, split, space, export."""
    from optuna_dashboard import save_note

    split = settings.split
    space_lines = "\n".join(f"| `{k}` | {_space_text(v)} |" for k, v in settings.space.items())
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
