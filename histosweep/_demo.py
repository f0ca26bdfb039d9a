"""The whole path on one CPU machine: synthetic data -> prepare -> SQLite study -> two CPU
workers -> export-best with a submission CSV, in a few minutes. Exercise: `histosweep demo`.

Re-runnable: DIR keeps the synthetic data and its cache; the study, artifacts, logs and bundle
of the previous run are deleted and made anew (DIR carries a marker file, so the demo never
deletes anything in a folder it did not make).
"""

from __future__ import annotations

import shlex
import shutil
import sys
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from histosweep.constants import DEFAULT_HOLDOUT, DEMO_WORKDIR
from histosweep.exceptions import UserError

STUDY = "demo"
MARKER = ".histosweep-demo"
DEFAULT_WORKDIR = DEMO_WORKDIR
# NOTE: 96 train images at short side 128 keep decoding cheap while 3 folds still see every class.
DEMO_N_TRAIN = 96
DEMO_N_TEST = 16
DEMO_SHORT_SIDE = 128


@dataclass(frozen=True)
class DemoOptions:
    workdir: Path = Path(DEFAULT_WORKDIR)
    trials: int = 10
    workers: int = 2  # CPU worker processes running trials in parallel
    folds: int = 3
    n_train: int = DEMO_N_TRAIN
    n_test: int = DEMO_N_TEST
    short_side: int = DEMO_SHORT_SIDE
    space_file: Path | None = None  # default: the packaged demo_space.toml
    # NOTE: hyperband, chosen when median was the default: with a handful of noisy 3-epoch
    # trials the median rule (best-so-far vs. the median) almost never fired, and the demo
    # should show pruning. The demo has not been tried with the percentile default.
    pruner: str = "hyperband"
    heartbeat: int = 20
    progress: bool = True


@dataclass(frozen=True)
class DemoPaths:
    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def test(self) -> Path:
        return self.data / "TEST"

    @property
    def db(self) -> Path:
        return self.root / "demo.db"

    @property
    def storage(self) -> str:
        return f"sqlite:///{self.db}"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def bundle(self) -> Path:
        return self.root / "bundle"

    @property
    def cache(self) -> Path:
        return self.root / "cache"


def demo_space_path() -> Path:
    return Path(str(resources.files("histosweep.search") / "demo_space.toml"))


def run_demo(opts: DemoOptions) -> dict[str, Any]:
    """Run every stage; returns the summary (best trial, paths, dashboard command, seconds)."""
    check_options(opts)  # every option before anything is written
    from histosweep.bundle import ExportOptions, export_best

    start = time.monotonic()
    paths = DemoPaths(Path(opts.workdir).expanduser().resolve())
    claim_workdir(paths)
    _use_cache(paths)
    space = opts.space_file or demo_space_path()
    stage(opts, f"1/5 synthesising {opts.n_train} train + {opts.n_test} test images in {paths.data}")
    make_data(paths, opts)
    stage(opts, "2/5 preparing: validate, audit, build the image caches")
    prepare_data(paths.data, space, progress=opts.progress)
    stage(opts, f"3/5 creating SQLite study {STUDY!r} in {paths.db}")
    # the reference recipe's point of the demo space: the search gain's baseline
    create_demo_study(paths, space, folds=opts.folds, pruner=opts.pruner, reference=True,
                      progress=opts.progress)
    stage(opts, f"4/5 running {opts.trials} trials on {opts.workers} CPU worker(s) (logs in {paths.logs})")
    code = run_demo_workers(paths, trials=opts.trials, workers=opts.workers,
                            heartbeat=opts.heartbeat, progress=opts.progress)
    if code != 0:
        raise UserError(f"a demo worker exited with code {code}; see the logs in {paths.logs}")
    stage(opts, f"5/5 exporting the ensemble selected across trials to {paths.bundle}")
    export = export_best(ExportOptions(
        study=STUDY, out=paths.bundle, storage=paths.storage, artifacts=str(paths.artifacts),
        test=paths.test, overwrite=True, progress=opts.progress,
    ))
    return _summary(paths, export, time.monotonic() - start)


def stage(opts: DemoOptions, text: str) -> None:
    if opts.progress:
        print(f"demo: {text}", file=sys.stderr, flush=True)


def check_options(opts: DemoOptions) -> None:
    """The counts the stages would refuse late (create: --folds), refused up front."""
    if opts.trials < 1:
        raise UserError(f"--trials {opts.trials}: give a number of finished trials >= 1")
    if opts.workers < 1:
        raise UserError(f"--workers {opts.workers}: give a number of CPU worker processes >= 1")
    if opts.folds < 2:
        raise UserError(f"--folds {opts.folds}: need at least 2 folds")


def claim_workdir(paths: DemoPaths) -> None:
    """Make DIR (or accept one the demo made) and clear the previous run's study and outputs."""
    root = paths.root
    _check_workdir(root)
    if root.is_dir() and any(root.iterdir()) and not (root / MARKER).is_file():
        raise UserError(
            f"--workdir {root} is not empty and was not made by histosweep demo; "
            "pass a new or empty folder"
        )
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--workdir {root}: cannot make the folder ({exc.strerror}); "
                        "pass a folder you can write to") from None
    (root / MARKER).write_text("made by histosweep demo; a rerun replaces the study and bundle\n")
    for old in (paths.artifacts, paths.logs, paths.bundle):
        shutil.rmtree(old, ignore_errors=True)
    for old in root.glob("demo.db*"):  # the database and its SQLite/gate lock files
        old.unlink()


def _check_workdir(root: Path) -> None:
    """DIR, or its nearest existing parent, must be a folder (writes nothing)."""
    from histosweep.storage import not_a_folder

    if root.is_file():
        raise UserError(f"--workdir {root} is a file; pass a folder")
    if why := not_a_folder(root):
        raise UserError(f"--workdir {root}: {why}; pass a folder path")


def _use_cache(paths: DemoPaths) -> None:
    """Keep the image cache inside DIR unless HISTOSWEEP_CACHE says otherwise (workers inherit it)."""
    import os

    from histosweep.constants import ENV_CACHE

    os.environ.setdefault(ENV_CACHE, str(paths.cache))


def make_data(paths: DemoPaths, opts: DemoOptions) -> Path:
    from histosweep.data import synthesize

    return synthesize(paths.data, n_train=opts.n_train, n_test=opts.n_test, seed=0,
                      short_side=opts.short_side)


def prepare_data(root: Path, space_file: Path, *, progress: bool = True) -> None:
    """What `histosweep prepare` does: validate, build the caches the space can ask for, audit."""
    from histosweep import data
    from histosweep.search import load_space

    ds = data.load_dataset(root, labeled=True)
    space = load_space(space_file)
    resolutions, modes = _cache_targets(space)
    whole = [(r, m) for m in modes for r in resolutions]
    data.build_inputs(ds, whole + _other_inputs(space), progress=progress)  # one decode per image
    data.audit_dataset(ds, progress=progress)


def _other_inputs(space) -> list:
    """The inputs the space can pick (build_inputs drops those _cache_targets already names)."""
    from histosweep.search import space_input_targets

    return space_input_targets(space) or []


def _cache_targets(space) -> tuple[list[int], list[str]]:
    """Every resolution and resize mode the space can suggest (choices or a fixed value)."""
    spec = space.to_dict()

    def values(name: str, default):
        p = spec.get(name)
        if p is None:
            return [default]
        return list(p["choices"]) if "choices" in p else [p.get("value", default)]

    return [int(r) for r in values("resolution", 384)], [str(m) for m in values("resize_mode", "stretch")]


def create_demo_study(paths: DemoPaths, space_file: Path, *, folds: int, pruner: str,
                      holdout: float = DEFAULT_HOLDOUT, reference: bool = False,
                      progress: bool = True) -> dict[str, Any]:
    from histosweep.search import CreateOptions, create_study

    opts = CreateOptions(data=paths.data, space_file=Path(space_file), folds=folds, pruner=pruner,
                         holdout=holdout, force=True, enqueue_reference=reference)
    return create_study(STUDY, paths.storage, opts, progress=progress)


def run_demo_workers(paths: DemoPaths, *, trials: int, workers: int, heartbeat: int = 20,
                     progress: bool = True) -> int:
    """`workers` CPU worker processes (one in-process when 1) until `trials` trials finished."""
    from histosweep.fleet import WorkerOptions, run_workers

    return run_workers(WorkerOptions(
        study=STUDY, storage=paths.storage, artifacts=str(paths.artifacts), gpus="cpu",
        trials_per_gpu=workers, n_trials=trials, heartbeat=heartbeat, log_dir=str(paths.logs),
        progress=progress,
    ))


def dashboard_command(paths: DemoPaths) -> str:
    return (f"histosweep dashboard --storage {shlex.quote(paths.storage)} "
            f"--artifacts {shlex.quote(str(paths.artifacts))}")


def _summary(paths: DemoPaths, export: dict[str, Any], seconds: float) -> dict[str, Any]:
    from histosweep.fleet import study_status
    from histosweep.search import open_study

    status = study_status(open_study(STUDY, paths.storage))
    return {
        "study": STUDY, "storage": paths.storage, "artifacts": str(paths.artifacts),
        "trials": status["trials"], "epochs": status["epochs"],
        "best_trial": status["best"]["number"], "best_value": status["best"]["value"],
        "best_params": status["best"]["params"],
        "members": export["members"], "oof_f1": export["metrics"]["oof_f1"],
        "lockbox_f1": export["metrics"]["lockbox_f1"],
        "lockbox_f1_ci95": export["metrics"]["lockbox_f1_ci95"],
        "bbc": export["metrics"]["bbc"]["ensemble"],
        "search_gain_text": export["metrics"]["search_gain_text"],
        "bundle": export["out"], "report": export["report"], "submission": export["submission"],
        "dashboard": dashboard_command(paths), "seconds": round(seconds, 1),
    }


def format_summary(s: dict[str, Any]) -> str:
    params = ", ".join(f"{k}={_short(v)}" for k, v in sorted(s["best_params"].items()))
    low, high = s["bbc"]["ci95"]
    trials = ", ".join(f"{n} {state.lower()}" for state, n in sorted((s["trials"] or {}).items()) if n)
    members = ", ".join(f"trial {m['trial']} x{m['weight']:.2f}" for m in s["members"])
    return "\n".join([
        f"demo finished in {s['seconds']:.0f} s: {trials}",
        f"best trial {s['best_trial']}: out-of-fold macro-F1 {s['best_value']:.4f}",
        f"  params: {params}",
        f"exported ensemble: {members}; out-of-fold macro-F1 {s['oof_f1']:.4f}",
        f"honest estimate (BBC-CV) macro-F1 {s['bbc']['mean']:.4f} (95% CI {low:.4f}-{high:.4f})",
        *([f"lockbox (holdout, read once) macro-F1 {s['lockbox_f1']:.4f} (95% CI "
           f"{s['lockbox_f1_ci95'][0]:.4f}-{s['lockbox_f1_ci95'][1]:.4f})"]
          if s["lockbox_f1"] is not None else []),
        s["search_gain_text"],
        f"bundle:     {s['bundle']}",
        f"report:     {s['report']}",
        f"submission: {s['submission']}",
        "look at the study:",
        f"  {s['dashboard']}",
    ])


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
