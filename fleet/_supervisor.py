"""Worker processes: one per GPU slot (or CPU slot), each running trials until the study
holds N finished trials over all workers on all machines, or until time is up or a signal.

Exercise: `histosweep worker STUDY --gpus all --trials-per-gpu 2 --n-trials 50`.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from histosweep.constants import ENV_ARTIFACTS, ENV_STORAGE
from histosweep.fleet._check import CheckOptions, preflight, repeated_gpu
from histosweep.fleet._logging import make_formatter, without_epoch_lines
from histosweep.fleet._options import WorkerOptions
from histosweep.fleet._slots import AUTO, auto_slots
from histosweep.fleet._trial_loop import TrialLoop
from histosweep.search import (
    Objective,
    Runtime,
    UserError,
    check_current,
    load_settings,
    make_pruner,
    make_sampler,
    open_study,
    sampler_kind,
)
from histosweep.storage import (
    open_artifact_store,
    probe_store,
    redact,
    resolve_storage_url,
    trial_counts,
)

log = logging.getLogger("histosweep")


def parse_gpus(spec: str) -> list[str]:
    """'cpu' -> ['cpu']; 'all' -> visible CUDA ids; '0,1,3' -> those ids."""
    spec = spec.strip().lower()
    if spec == "cpu":
        return ["cpu"]
    if spec == "all":
        import torch

        n = torch.cuda.device_count()
        if n == 0:
            raise UserError("--gpus all: no CUDA GPU is visible here (use --gpus cpu, or check nvidia-smi)")
        return [str(i) for i in range(n)]
    ids = [p.strip() for p in spec.split(",") if p.strip()]
    if not ids or not all(i.isdigit() for i in ids):
        raise UserError(f"--gpus {spec!r}: use cpu, all, or a list of GPU ids like 0,1,3")
    if twice := repeated_gpu(spec, ids):
        raise UserError(twice)
    return ids


def slots_for(opts: WorkerOptions) -> list[tuple[str, str]]:
    """(label, gpu id or 'cpu') for every worker process to start."""
    gpus = parse_gpus(opts.gpus)
    for gpu in gpus:  # a GPU id past what CUDA_VISIBLE_DEVICES shows: one line, before any spawn
        if gpu != "cpu":
            child_visible_device(gpu, os.environ.get("CUDA_VISIBLE_DEVICES"))
    if opts.trials_per_gpu == AUTO:
        per_gpu = auto_slots(load_settings(open_study(opts.study, opts.storage)), gpus)
    elif opts.trials_per_gpu < 1:
        raise UserError(f"--trials-per-gpu {opts.trials_per_gpu}: must be >= 1")
    else:
        per_gpu = dict.fromkeys(gpus, opts.trials_per_gpu)
    slots = []
    for gpu in gpus:
        for k in range(per_gpu[gpu]):
            base = "cpu" if gpu == "cpu" else f"gpu{gpu}"
            slots.append((base if per_gpu[gpu] == 1 else f"{base}.{k}", gpu))
    return slots


def run_workers(opts: WorkerOptions) -> int:
    """Start one process per slot (or run in-process for a single slot); wait for all."""
    slots = slots_for(opts)
    # NOTE: once here, before any slot asks for a trial: a broken study exits 1 with one line
    # per problem instead of failing its first trials (slot children skip it: the parent ran it).
    preflight(CheckOptions(study=opts.study, storage=opts.storage, artifacts=opts.artifacts,
                           data=opts.data, gpus=opts.gpus))
    if len(slots) == 1:
        label, gpu = slots[0]
        return run_slot(opts, label=label, device="cpu" if gpu == "cpu" else f"cuda:{gpu}", threads=None)
    threads = max(1, (os.cpu_count() or 1) // len(slots)) if slots[0][1] == "cpu" else None
    procs: list[subprocess.Popen] = []
    received: list[int] = []

    def forward(signum, _frame) -> None:
        received.append(signum)
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    # NOTE: handlers first, then children: a SIGTERM during the spawns still reaches them all
    old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        for label, gpu in slots:
            if received:  # stopped while starting: start no more
                break
            procs.append(_spawn(opts, label, gpu, threads))
        codes = [p.wait() for p in procs]
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    return parent_exit_code(codes, received[0] if received else None)


def _child_argv(opts: WorkerOptions) -> list[str]:
    argv = ["worker", opts.study, "--heartbeat", str(opts.heartbeat), "--log-dir", opts.log_dir,
            "--log-format", opts.log_format]
    for flag, value in (("--n-trials", opts.n_trials), ("--timeout", opts.timeout), ("--data", opts.data)):
        if value is not None:
            argv += [flag, str(value)]
    # NOTE: always --no-progress: the slots share one terminal, where their tqdm bars would
    # overwrite each other; each slot prints one `[slot] ... epoch` line per epoch instead.
    return argv + ["--no-progress"]




def _spawn(opts: WorkerOptions, label: str, gpu: str, threads: int | None) -> subprocess.Popen:
    env = dict(os.environ)
    # NOTE: the storage URL travels in the environment, not argv: argv is visible in `ps`.
    env[ENV_STORAGE] = opts.storage or env.get(ENV_STORAGE, "")
    env[ENV_ARTIFACTS] = opts.artifacts or env.get(ENV_ARTIFACTS, "")
    if gpu != "cpu":
        env["CUDA_VISIBLE_DEVICES"] = child_visible_device(gpu, os.environ.get("CUDA_VISIBLE_DEVICES"))
    cmd = [sys.executable, "-m", "histosweep", *_child_argv(opts), "--_slot", label, "--_gpu", gpu]
    if threads:
        cmd += ["--_threads", str(threads)]
    return subprocess.Popen(cmd, env=env)


def child_visible_device(gpu: str, visible: str | None) -> str:
    """CUDA_VISIBLE_DEVICES for the slot on GPU id `gpu` (as this process numbers them).

    Where the parent already sees a subset (Slurm's --gpus-per-task, a container), GPU 0 here
    is the first of that subset, not the machine's GPU 0: every Slurm task would otherwise
    land its slots on the node's first GPU.
    """
    ids = [v.strip() for v in (visible or "").split(",") if v.strip()]
    if not ids:
        return gpu
    if int(gpu) >= len(ids):
        raise UserError(f"--gpus {gpu}: only {len(ids)} GPU(s) visible here "
                        f"(CUDA_VISIBLE_DEVICES={visible}); number them from 0")
    return ids[int(gpu)]


def parent_exit_code(codes: list[int], signum: int | None = None) -> int:
    """The multi-slot parent's exit code: 128 + the signal that stopped it (143 SIGTERM, 130
    SIGINT); else the worst child, where a child killed by signal N (returncode -N, e.g. SIGKILL
    from the OOM killer) counts as 128 + N, never as 0."""
    if signum is not None:
        return 128 + signum
    shell_codes = [128 - c if c < 0 else c for c in codes]
    return max(shell_codes, default=0)


def shows_bars(opts: WorkerOptions) -> bool:
    """Whether this slot draws tqdm bars on stderr: not with --no-progress, and not with
    --log-format json, whose promise is that every line on stderr is a JSON object; without
    bars the slot logs one line per epoch instead (as multi-slot children do)."""
    return opts.progress and opts.log_format != "json"


def setup_logging(opts: WorkerOptions, label: str) -> Path:
    import socket

    log_dir = Path(opts.log_dir)
    # NOTE: the pid keeps two workers on one host (same slot label) out of each other's file
    path = log_dir / f"{opts.study}-{socket.gethostname()}-{os.getpid()}-{label}.log"
    try:  # the CLI checked the path; a mount or /proc can still refuse (root passes os.access)
        log_dir.mkdir(parents=True, exist_ok=True)
        logfile = logging.FileHandler(path)
    except OSError as exc:
        raise UserError(f"--log-dir {opts.log_dir}: cannot write the worker log there "
                        f"({exc.strerror or exc}); pass a folder you can write to") from None
    fmt = make_formatter(opts.log_format, label)
    root = logging.getLogger("histosweep")
    root.setLevel(logging.INFO)
    root.handlers.clear()
    terminal = logging.StreamHandler(sys.stderr)
    if shows_bars(opts):  # the epoch's tqdm bar already says it; the log file still gets the line
        terminal.addFilter(without_epoch_lines)
    for handler in (logfile, terminal):
        handler.setFormatter(fmt)
        root.addHandler(handler)
    root.propagate = False
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return path


def run_slot(opts: WorkerOptions, *, label: str, device: str, threads: int | None) -> int:
    """The trial loop of one worker process."""

    logfile = setup_logging(opts, label)
    if threads:
        import torch

        torch.set_num_threads(threads)
    study = open_study(opts.study, opts.storage, heartbeat=opts.heartbeat)
    settings = load_settings(study)
    check_current(study, settings)
    study.pruner = make_pruner(settings, settings.space_obj().max_epochs())
    study.sampler = build_sampler(study, settings, label)
    store = open_artifact_store(opts.artifacts)
    probe_store(store)  # an unusable store is one line here, not a failed trial on the GPU
    rt = Runtime(study=study, settings=settings, store=store,
                 device=device, slot=label, data_root=opts.data, progress=shows_bars(opts))
    rt.dataset()  # fail fast on moved or changed data
    loop = TrialLoop(study, Objective(rt), opts, label, store=store)
    log.info("worker on %s (%s), log %s, storage %s", label, device, logfile,
             redact(resolve_storage_url(opts.storage)))
    return loop.run()


def build_sampler(study, settings, label: str):
    """The study's stored sampler (create --sampler), seeded for this worker."""
    _log_categorical_fallback(settings)
    return make_sampler(settings.sampler, seed=settings.seed, worker=worker_identity(study, label))


def worker_identity(study, label: str) -> str:
    """Host, process id, slot and the study's trial count when this worker starts: every worker
    process draws its own random stream from the one study seed, also two started at the same
    moment on one host with the same slot label (same host, label and count: the pid differs)."""
    import socket

    started = sum(trial_counts(study).values())
    return f"{socket.gethostname()}/{os.getpid()}/{label}/{started}"


def _log_categorical_fallback(settings) -> None:
    if not sampler_kind(settings.sampler).categorical_at_random:
        return
    space = settings.space_obj()
    categorical = [n for n in space.searched() if space.params[n].kind == "choice"]
    if categorical:
        log.warning("sampler %s cannot model categorical params; %s are sampled at random "
                    "(see docs/real-data.md: Samplers)", settings.sampler, ", ".join(categorical))
