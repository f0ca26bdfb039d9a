"""Preflight: can this machine run trials of a study? Storage, artifact store, data, caches,
pretrained weights and GPUs, each in seconds and without downloading anything.

Run by `histosweep check STUDY [--gpus …]` and by every `histosweep worker` before its first trial.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from histosweep.exceptions import HistosweepError, UserError, one_line
from histosweep.search import Space, StudySettings, check_current, load_settings
from histosweep.storage import (
    open_artifact_store,
    probe_store,
    redact,
    redact_text,
    resolve_artifacts,
    store_folder,
    study_id,
    study_storage,
)

CHECK_ATTR = "histosweep:check"  # study system attr: the last check's host and time


class PreflightError(UserError):
    """The preflight found problems: one line each, the first on the error line."""


@dataclass(frozen=True)
class Check:
    name: str  # storage | artifacts | data | caches | weights | gpus
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{self.name}: {self.detail}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CheckOptions:
    study: str
    storage: str | None = None
    artifacts: str | None = None
    data: str | None = None  # the data root, when it moved since create
    gpus: str = "cpu"


def run_checks(opts: CheckOptions) -> list[Check]:
    """Every check that can run; a check that needs the study settings is left out when the
    storage check failed (its line says why)."""
    checks: list[Check] = []
    settings = _check_storage(opts, checks)
    checks.append(check_artifacts(opts.artifacts, finished=_finished(opts) if settings else 0))
    if settings is not None:
        ds = _check_data(settings, opts.data, checks)
        space = settings.space_obj()
        if ds is not None:
            checks.append(check_caches(space, ds))
        checks.extend(check_weights(space))
    checks.append(check_gpus(opts.gpus))
    return [Check(c.name, c.ok, redact_text(c.detail)) for c in checks]


def preflight(opts: CheckOptions) -> list[Check]:
    """run_checks, raising PreflightError (one line per problem) when any failed."""
    checks = run_checks(opts)
    problems = [c.line() for c in checks if not c.ok]
    if problems:
        raise PreflightError("\n".join(problems))
    return checks


# --- storage -----------------------------------------------------------------------------------
def _check_storage(opts: CheckOptions, checks: list[Check]) -> StudySettings | None:
    """The study opens, its settings load, and a study system attr can be written and read."""
    from histosweep.search import open_study
    from histosweep.storage import resolve_storage_url

    try:
        url = redact(resolve_storage_url(opts.storage))
        study = open_study(opts.study, opts.storage)
        settings = load_settings(study)
        check_current(study, settings)
    except HistosweepError as exc:
        checks.append(Check("storage", False, str(exc).splitlines()[0]))
        return None
    stamp = {"host": socket.gethostname(), "pid": os.getpid(), "at": round(time.time(), 3)}
    try:
        storage, sid = study_storage(study), study_id(study)
        storage.set_study_system_attr(sid, CHECK_ATTR, stamp)
        back = storage.get_study_system_attrs(sid).get(CHECK_ATTR)
    except Exception as exc:  # noqa: BLE001 - read-only database, permission denied, ...
        checks.append(Check("storage", False, f"{url} is readable but not writable ({one_line(exc)}); "
                            "workers must write trials: check the file's or role's permissions"))
        return settings
    if back != stamp and not _newer_stamp(back, stamp):
        checks.append(Check("storage", False, f"{url}: a study attribute written was not read back"))
        return settings
    checks.append(Check("storage", True, f"{url}: study {opts.study!r} readable and writable"))
    return settings


def _newer_stamp(back, stamp: dict) -> bool:
    """Another worker's check stamp written at about the same time (workers that start together
    run their checks together, and the last write wins): the write went through all the same.
    why 60 s: clocks of the machines sharing a database may differ a little."""
    return isinstance(back, dict) and set(back) == set(stamp) and back["at"] >= stamp["at"] - 60


# --- artifact store ----------------------------------------------------------------------------
def _finished(opts: CheckOptions) -> int:
    """The study's own COMPLETE trials (their files live in some artifact store already)."""
    import optuna

    from histosweep.search import open_study

    try:
        trials = open_study(opts.study, opts.storage).get_trials(
            deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    except HistosweepError:
        return 0
    return stored_trials(trials)


def stored_trials(trials) -> int:
    """How many of `trials` have files in an artifact store: this study's own trials with fold
    records (not imported ones, nor ones added by hand, e.g. via add_trial)."""
    from histosweep.search import is_imported
    from histosweep.trial_files import fold_key

    return sum(not is_imported(t) and fold_key(0) in t.user_attrs for t in trials)


def check_artifacts(spec: str | None, *, finished: int = 0) -> Check:
    """Write a probe artifact, read it back, remove it (the worker's own probe_store). A folder
    store that does not exist is refused when the study already has `finished` trials: their
    files are elsewhere (a mistyped --artifacts would split the study's files in two)."""
    made: list[Path] = []
    try:
        spec = resolve_artifacts(spec)
        folder = store_folder(spec)
        if folder is not None and finished and not folder.exists():
            return Check("artifacts", False, (
                f"{spec} does not exist, but the study has {finished} finished trial(s) whose "
                "files are in another store; pass --artifacts where they are (env "
                "HISTOSWEEP_ARTIFACTS)"))
        if folder is not None:  # the probe makes the folders; a check leaves no empty one behind
            made = [p for p in (folder, *folder.parents) if not (p.exists() or p.is_symlink())]
        probe_store(open_artifact_store(spec))
    except HistosweepError as exc:  # StoreError from the probe, StorageError from opening
        return Check("artifacts", False, str(exc))
    finally:
        for folder in made:  # deepest first: a/b/c, then a/b, then a
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
    return Check("artifacts", True, f"{spec}: a probe artifact was written, read back and removed")


# --- data and caches ---------------------------------------------------------------------------
def _check_data(settings: StudySettings, override: str | None, checks: list[Check]):
    """The dataset loads and its fingerprint is the study's; returns it (None on a problem)."""
    from histosweep.data import DataError, dataset_fingerprint, load_dataset, problems_line

    root = settings.data_path(override)
    try:
        ds = load_dataset(root, labeled=True)
    except DataError as exc:
        checks.append(Check("data", False, f"training data at {root} is not usable "
                            f"({problems_line(str(exc))}); pass --data DATA where it is"))
        return None
    found = dataset_fingerprint(ds)
    if found != settings.fingerprint:
        checks.append(Check("data", False, (
            f"data at {root} differs from what the study was created with (fingerprint "
            f"{found[:12]}, study {settings.fingerprint[:12]}): point --data at the original data "
            "or create a new study")))
        return None
    checks.append(Check("data", True, f"{root}: {len(ds.samples)} samples, fingerprint matches"))
    return ds


def check_caches(space: Space, ds) -> Check:
    """The caches for every (resolution, resize_mode) the space can pick are present and current,
    or the cache folder is writable so that workers build them."""
    from histosweep.data import DataError, default_cache_dir, input_key, input_present, open_target
    from histosweep.search import space_input_targets

    targets = space_input_targets(space)
    present, missing = [], []
    for target in targets or []:
        if not input_present(ds, target):
            missing.append(input_key(target))
            continue
        try:
            open_target(ds, target, build=False, progress=False)
        except DataError as exc:  # stale or foreign
            return Check("caches", False, str(exc).splitlines()[0])
        present.append(input_key(target))
    if targets is not None and not missing:
        return Check("caches", True, f"present: {', '.join(present)}")
    base = default_cache_dir()
    what = ("an input key (resolution, tile_size, ...) is a range" if targets is None
            else f"missing: {', '.join(missing)}")
    problem = _unwritable(base)
    if problem:
        return Check("caches", False, (
            f"{what}, and the cache folder {base} is not writable ({problem}): run "
            f"`histosweep prepare {ds.root}` with a writable HISTOSWEEP_CACHE, or point "
            "HISTOSWEEP_CACHE at a writable folder with room"))
    return Check("caches", True, f"{what}; workers build them in {base}")


def cache_targets(space: Space) -> list[tuple[int, str]] | None:
    """Every (resolution, resize_mode) the space can pick; None when resolution is a range."""
    resolutions, modes = space.values("resolution"), space.values("resize_mode")
    if resolutions is None or modes is None:
        return None
    return [(int(r), str(m)) for r in resolutions for m in modes]


def _unwritable(folder: Path) -> str | None:
    """Why a file cannot be created in `folder` (made when missing), or None."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".histosweep-check-"):
            pass
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


# --- pretrained weights ------------------------------------------------------------------------
def check_weights(space: Space) -> list[Check]:
    """With pretrained possible: every backbone's weights are a configured file, in the local
    Hugging Face cache, or (online) reachable on the hub. Nothing is downloaded."""
    if True not in (space.values("pretrained") or [True]):
        return [Check("weights", True, "pretrained = false: no weights needed")]
    from histosweep.model import HubProbe, weights_status

    hub = HubProbe()
    checks = []
    for field, path_field in (("image_backbone", "image_pretrained_path"),
                              ("mask_backbone", "mask_pretrained_path")):
        paths = [p for p in space.values(path_field) or [] if p]
        for name in space.values(field) or []:
            status = weights_status(str(name), field=field, paths=paths, probe=hub)
            checks.append(Check("weights", status.ok, status.detail))
    return checks


# --- GPUs --------------------------------------------------------------------------------------
def repeated_gpu(spec: str, ids: list[str]) -> str | None:
    """The error for a GPU id named twice in --gpus (0,0 would start two slots both labelled
    gpu0, writing one log file); None when each is named once."""
    seen: set[int] = set()
    for gpu in ids:
        if int(gpu) in seen:
            return (f"--gpus {spec}: GPU {int(gpu)} is named twice; name each GPU once "
                    "(--trials-per-gpu 2 runs two trials on each GPU)")
        seen.add(int(gpu))
    return None


def check_gpus(spec: str) -> Check:
    spec = spec.strip().lower()
    if spec == "cpu":
        return Check("gpus", True, "cpu: no GPU needed")
    ids = [p.strip() for p in spec.split(",") if p.strip()]
    if spec != "all" and (not ids or not all(i.isdigit() for i in ids)):
        return Check("gpus", False, f"--gpus {spec!r}: use cpu, all, or a list of GPU ids like 0,1,3")
    if spec != "all" and (twice := repeated_gpu(spec, ids)):
        return Check("gpus", False, twice)
    import torch

    n = torch.cuda.device_count()
    visible = f"{n} visible (torch.cuda.device_count(); CUDA_VISIBLE_DEVICES="
    visible += f"{os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})"
    if spec == "all":
        if n == 0:
            return Check("gpus", False, f"--gpus all: no CUDA GPU is visible here, {visible}; use "
                         "--gpus cpu, or check nvidia-smi and the driver")
        return Check("gpus", True, f"all: {visible}")
    absent = [i for i in ids if int(i) >= n]
    if absent:
        fix = f"pass ids below {n}" if n else "use --gpus cpu"
        return Check("gpus", False, f"--gpus {spec}: GPU {', '.join(absent)} not visible here, "
                     f"{visible}; {fix}")
    return Check("gpus", True, f"{spec}: {visible}")


