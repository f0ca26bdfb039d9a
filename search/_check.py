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

from histosweep.exceptions import HistosweepError, UserError
from histosweep.search._settings import StudySettings, check_current, load_settings
from histosweep.search._space import Space
from histosweep.storage import (
    is_s3,
    open_artifact_store,
    probe_store,
    redact,
    redact_text,
    resolve_artifacts,
)

CHECK_ATTR = "histosweep:check"  # study system attr: the last check's host and time
HUB_PROBE_TIMEOUT_S = 5.0  # one HEAD request to the hub, only when offline mode is off
_OFFLINE = {"1", "ON", "YES", "TRUE"}


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
    checks.append(check_artifacts(opts.artifacts))
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
    from histosweep.search._study import open_study
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
        study._storage.set_study_system_attr(study._study_id, CHECK_ATTR, stamp)
        back = study._storage.get_study_system_attrs(study._study_id).get(CHECK_ATTR)
    except Exception as exc:  # noqa: BLE001 - read-only database, permission denied, ...
        checks.append(Check("storage", False, f"{url} is readable but not writable ({_first(exc)}); "
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
def check_artifacts(spec: str | None) -> Check:
    """Write a probe artifact, read it back, remove it (the worker's own probe_store)."""
    made: list[Path] = []
    try:
        spec = resolve_artifacts(spec)
        if not is_s3(spec):  # the probe makes the folders; a check leaves no empty one behind
            folder = Path(spec)
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
    from histosweep.data import DataError, dataset_fingerprint, load_dataset

    root = settings.data_path(override)
    try:
        ds = load_dataset(root, labeled=True)
    except DataError as exc:
        checks.append(Check("data", False, f"training data at {root} is not usable "
                            f"({str(exc).splitlines()[0]}); pass --data DATA where it is"))
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
    from histosweep.search._inputs import space_input_targets

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
    hub = _HubProbe()
    checks = []
    for field, path_field in (("image_backbone", "image_pretrained_path"),
                              ("mask_backbone", "mask_pretrained_path")):
        paths = [p for p in space.values(path_field) or [] if p]
        for name in space.values(field) or []:
            checks.append(_weights_of(str(name), field, path_field, paths, hub))
    return checks


def _weights_of(name: str, field: str, path_field: str, paths: list[str], hub) -> Check:
    if paths:
        absent = [p for p in paths if not Path(p).expanduser().is_file()]
        if absent:
            return Check("weights", False, f"{field} {name!r}: {path_field} {absent[0]!r} does not "
                         "exist; fix the path in the space, or leave it empty to use timm's weights")
        return Check("weights", True, f"{field} {name!r}: {path_field} {paths[0]}")
    from histosweep.model._hub import is_hub_name

    if is_hub_name(name):  # hf-hub:Org/Repo (UNI, Virchow2 ...): config + weights in the cache
        return _hub_name_weights(name, field)
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        return Check("weights", False, f"{field} {name!r}: timm has no pretrained weights for it; set "
                     f"{path_field} to a weights file or pretrained = false")
    where = cached_weights(cfg)
    if where:
        return Check("weights", True, f"{field} {name!r}: cached at {where}")
    source = cfg.hf_hub_id or cfg.url
    fix = (f"on a connected machine run `python -c \"import timm; timm.create_model('{name}', "
           f"pretrained=True)\"` and copy its Hugging Face cache (HF_HOME) here, or set "
           f"{path_field} to a local weights file, or pretrained = false")
    if hf_offline():
        return Check("weights", False, f"{field} {name!r}: weights {source} are not in the Hugging "
                     f"Face cache {hf_cache_dir()} and HF_HUB_OFFLINE=1; {fix}")
    reason = hub.unreachable(cfg)
    if reason:
        return Check("weights", False, f"{field} {name!r}: weights {source} are not in the Hugging "
                     f"Face cache {hf_cache_dir()} and the hub is unreachable ({reason}); {fix}")
    return Check("weights", True, f"{field} {name!r}: not cached; timm downloads {source} at first use")


def _hub_name_weights(name: str, field: str) -> Check:
    from huggingface_hub import try_to_load_from_cache

    from histosweep.model._hub import hub_repo_id, missing_hub_weights_message

    repo = hub_repo_id(name)
    found = [try_to_load_from_cache(repo, f, cache_dir=hf_cache_dir())
             for f in ("config.json", "model.safetensors", "pytorch_model.bin")]
    if isinstance(found[0], str) and any(isinstance(f, str) for f in found[1:]):
        return Check("weights", True, f"{field} {name!r}: cached at {Path(found[0]).parent}")
    if hf_offline():
        return Check("weights", False, missing_hub_weights_message(
            name, field, "not cached", cache=hf_cache_dir(), offline=True))
    return Check("weights", True, f"{field} {name!r}: not cached; timm downloads it at first use "
                 "(gated models need your own Hugging Face token)")


def hf_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in _OFFLINE


def hf_cache_dir() -> Path:
    """Where huggingface_hub keeps downloads: HF_HUB_CACHE, else HF_HOME/hub (read now, not at
    import, so a changed environment counts)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "huggingface"
    return Path(home).expanduser() / "hub"


def _hub_files(cfg) -> tuple[str, str | None, list[str]]:
    repo, _, revision = cfg.hf_hub_id.partition("@")
    # timm tries the safetensors file first, then the pickle-free-loaded .bin
    files = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
    return repo, revision or None, files


def cached_weights(cfg) -> str | None:
    """The local file timm would load for this pretrained cfg, or None; never downloads."""
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        repo, revision, files = _hub_files(cfg)
        for filename in files:
            hit = try_to_load_from_cache(repo, filename, cache_dir=hf_cache_dir(), revision=revision)
            if isinstance(hit, str):
                return hit
        return None
    import torch.hub

    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(cfg.url.split("?")[0]).name
    return str(path) if path.is_file() else None


class _HubProbe:
    """One HEAD request to the hub per check run (a metadata query, no download)."""

    def __init__(self) -> None:
        self._reason: str | None = None
        self._asked = False

    def unreachable(self, cfg) -> str | None:
        if self._asked or not cfg.hf_hub_id:
            return self._reason
        self._asked = True
        from huggingface_hub import get_hf_file_metadata, hf_hub_url

        repo, revision, files = _hub_files(cfg)
        try:
            get_hf_file_metadata(hf_hub_url(repo, files[0], revision=revision), timeout=HUB_PROBE_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - no network, DNS, proxy, 404 of the first name
            self._reason = _first(exc)
        return self._reason


# --- GPUs --------------------------------------------------------------------------------------
def check_gpus(spec: str) -> Check:
    spec = spec.strip().lower()
    if spec == "cpu":
        return Check("gpus", True, "cpu: no GPU needed")
    ids = [p.strip() for p in spec.split(",") if p.strip()]
    if spec != "all" and (not ids or not all(i.isdigit() for i in ids)):
        return Check("gpus", False, f"--gpus {spec!r}: use cpu, all, or a list of GPU ids like 0,1,3")
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


def _first(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:300]}" if text else type(exc).__name__
