"""Worker processes: one per GPU slot (or CPU slot), each running trials until the study
holds N finished trials over all workers on all machines, or until time is up or a signal.

Exercise: `histosweep worker STUDY --gpus all --trials-per-gpu 2 --n-trials 50`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from histosweep.constants import ENV_ARTIFACTS, ENV_STORAGE
from histosweep.search._check import CheckOptions, preflight
from histosweep.search._db import fail_stale, gated_ask, heartbeat, is_db_outage, retry_db
from histosweep.search._errors import UserError, WorkerStopped
from histosweep.search._gc import retention_pass
from histosweep.search._logging import make_formatter, without_epoch_lines
from histosweep.search._objective import Objective, Runtime
from histosweep.search._settings import check_current, load_settings
from histosweep.search._slots import AUTO, auto_slots
from histosweep.search._study import make_pruner, make_sampler, open_study
from histosweep.storage import (
    StoreError,
    count_trials_by_state,
    open_artifact_store,
    probe_store,
    redact,
    redact_text,
    resolve_storage_url,
    retry_callback,
)

log = logging.getLogger("histosweep")
IDLE_POLL_S = 5.0  # how often an idle worker re-checks whether running trials freed a slot
MAX_CONSECUTIVE_FAILURES = 5  # a space that fails every trial should stop, not spin
# Fail reasons of trials that are re-queued (resumed from their finished folds), not counted as
# failures of the space: a stop signal, a database or artifact-store outage mid-trial.
REQUEUED = ("worker stopped", "database unavailable", "artifact store unavailable")
STORE_RETRY_S = 300.0  # how long an artifact store may keep failing before the worker gives up
STORE_BACKOFF_MAX_S = 30.0


@dataclass(frozen=True)
class WorkerOptions:
    study: str
    storage: str | None
    artifacts: str | None
    gpus: str = "cpu"
    trials_per_gpu: int | str = 1  # or "auto": from free memory and the space's largest config
    n_trials: int | None = None
    timeout: float | None = None
    heartbeat: int = 60
    data: str | None = None
    log_dir: str = "histosweep-logs"
    progress: bool = True
    log_format: str = "text"  # text | json (JSON lines for log shippers)


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
    log_dir.mkdir(parents=True, exist_ok=True)
    # NOTE: the pid keeps two workers on one host (same slot label) out of each other's file
    path = log_dir / f"{opts.study}-{socket.gethostname()}-{os.getpid()}-{label}.log"
    fmt = make_formatter(opts.log_format, label)
    root = logging.getLogger("histosweep")
    root.setLevel(logging.INFO)
    root.handlers.clear()
    terminal = logging.StreamHandler(sys.stderr)
    if shows_bars(opts):  # the epoch's tqdm bar already says it; the log file still gets the line
        terminal.addFilter(without_epoch_lines)
    for handler in (logging.FileHandler(path), terminal):
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

    started = sum(count_trials_by_state(study._storage, study._study_id).values())
    return f"{socket.gethostname()}/{os.getpid()}/{label}/{started}"


def _log_categorical_fallback(settings) -> None:
    if settings.sampler not in ("cmaes", "qmc"):
        return
    space = settings.space_obj()
    categorical = [n for n in space.searched() if space.params[n].kind == "choice"]
    if categorical:
        log.warning("sampler %s cannot model categorical params; %s are sampled at random "
                    "(see docs/real-data.md: Samplers)", settings.sampler, ", ".join(categorical))


def _quiet_stop_hook(default):
    """sys.unraisablehook that turns a stop signal landing in a finaliser into one debug line
    (the trial stops at its next epoch instead); anything else goes to the previous hook."""
    if getattr(default, "histosweep_quiet", False):
        return default

    def hook(unraisable) -> None:
        if isinstance(unraisable.exc_value, (WorkerStopped, KeyboardInterrupt)):
            log.debug("stop signal arrived inside a finaliser; the trial stops at its next epoch")
            return
        default(unraisable)

    hook.histosweep_quiet = True
    return hook


class TrialLoop:
    """ask -> objective -> tell, gated so that --n-trials is exact across all workers."""

    def __init__(self, study, objective, opts: WorkerOptions, label: str, *, store=None) -> None:
        self.study = study
        self.objective = objective
        self.opts = opts
        self.label = label
        self.store = store  # probed after a store failure before the next trial (None: just wait)
        self.store_failing_since: float | None = None
        self.store_failures = 0
        self.stop = threading.Event()
        self.pid = os.getpid()
        self.in_trial = False
        self.finished_here = 0
        self.failures_in_a_row = 0
        self.last_failure = ""
        self.last_store_failure = ""
        self.stopped_by: int | None = None  # the first stop signal received
        if isinstance(getattr(objective, "rt", None), Runtime):
            objective.rt.check_stop = self.raise_if_stopped  # checked at every epoch's end

    def raise_if_stopped(self) -> None:
        """Stop the running trial if a stop signal came: the backstop for a WorkerStopped that
        the handler raised inside a finaliser (a weakref callback), where Python swallows it."""
        if self.stop.is_set():
            raise WorkerStopped(_signal_name(self.stopped_by))

    def run(self) -> int:
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        sys.unraisablehook = _quiet_stop_hook(sys.unraisablehook)
        start = time.monotonic()
        try:
            while not self.stop.is_set():
                if self.opts.timeout and time.monotonic() - start >= self.opts.timeout:
                    log.info("timeout reached")
                    break
                trial = self._ask()
                if trial is False:
                    break
                if trial is None:
                    # others' running trials fill the study; one may still fail or die
                    self.stop.wait(min(IDLE_POLL_S, max(1.0, self.opts.heartbeat / 2)))
                    continue
                self._run_trial(trial)
                if self.store_failing_since is not None:
                    self._wait_for_store()
                if self.failures_in_a_row >= MAX_CONSECUTIVE_FAILURES:
                    raise UserError(
                        f"{self.failures_in_a_row} trials in a row failed on {self.label}; last: "
                        f"{self.last_failure} (see the worker log; fix the space or the data)"
                    )
        finally:
            # NOTE: once stopped, later stop signals stay no-ops (a Ctrl-C on the process group
            # reaches a slot twice: from the terminal and forwarded by its parent).
            for s, h in old.items():
                if self.stopped_by is None:
                    signal.signal(s, h)
        log.info("worker done: %d trials finished here", self.finished_here)
        # NOTE: 128 + signal, as a shell reports a process the signal ended: schedulers
        # requeue on 143 (SIGTERM) and 130 (SIGINT); 0 would read as "study done".
        return 0 if self.stopped_by is None else 128 + self.stopped_by

    def _on_signal(self, signum, _frame) -> None:
        if os.getpid() != self.pid:
            # NOTE: a forked helper (the cache's decode pool) inherited this handler; its pool
            # ends it with SIGTERM, which must simply end it, as without us.
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        first = self.stopped_by is None
        if first:
            log.warning("received %s: stopping", signal.Signals(signum).name)
            self.stopped_by = signum
        self.stop.set()
        if self.in_trial and first:  # a second signal must not interrupt the clean stop
            raise WorkerStopped(signal.Signals(signum).name)

    def _ask(self):
        """A new trial, None when the study is full of running trials, False when done."""

        fail_stale(self.study)
        if self.stop.is_set():
            return False
        return gated_ask(self.study, self.opts.n_trials)

    def _run_trial(self, trial) -> None:
        import optuna
        from optuna.trial import TrialState

        state, value, reason = TrialState.FAIL, None, None
        self.in_trial = True
        try:
            with heartbeat(trial._trial_id, self.study._storage):
                try:
                    if self.stop.is_set():  # signalled during the ask (in_trial was False then)
                        raise WorkerStopped(f"{_signal_name(self.stopped_by)} before the trial started")
                    value = self.objective(trial)
                    self.raise_if_stopped()  # the signal's own raise may have been swallowed
                    state = TrialState.COMPLETE
                except optuna.TrialPruned as exc:
                    state, reason = TrialState.PRUNED, str(exc)
                except WorkerStopped as exc:
                    reason = f"worker stopped by {exc}; re-queued to resume"
                except Exception as exc:  # noqa: BLE001 - a bad trial must not kill the worker
                    reason = _reason(exc)
                    if is_db_outage(exc):
                        reason = f"database unavailable during the trial ({reason}); re-queued to resume"
                    elif isinstance(exc, StoreError):
                        reason = (f"artifact store unavailable during the trial ({reason}); "
                                  "re-queued to resume")
                    log.error("trial %d failed: %s", trial.number, reason)
        finally:
            self.in_trial = False
        retry_db(lambda: self._tell(trial, state, value, reason))
        if reason and reason.startswith(REQUEUED):
            retry_db(lambda: self._requeue(trial))
        self._log_result(trial, state, value, reason)
        keep_top = getattr(getattr(self.objective, "settings", None), "keep_top", 0)
        if keep_top:  # create --keep-top N: the same gc as `histosweep gc`, newly out-of-top only
            retention_pass(self.study, self.objective.rt.store, self.opts.artifacts, keep_top)

    def _tell(self, trial, state, value, reason) -> None:
        import optuna
        from optuna.trial import TrialState

        # NOTE: idempotent: retry_db re-runs this when the connection drops after the server
        # committed the finish; the retry then finds the trial finished and must not raise.
        if reason:
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                trial.set_user_attr("fail_reason" if state == TrialState.FAIL else "pruned_reason", reason)
        self.study.tell(trial, value if state == TrialState.COMPLETE else None, state=state,
                        skip_if_finished=True)

    def _wait_for_store(self) -> None:
        """Back off after a trial failed on the artifact store, as for a database outage: wait
        (doubling, at most STORE_BACKOFF_MAX_S) until a probe succeeds; give up with one line once
        the store has failed for STORE_RETRY_S. A stop signal ends the wait at once."""
        delay = min(2.0 ** (self.store_failures - 1), STORE_BACKOFF_MAX_S)
        while not self.stop.is_set():
            if time.monotonic() - self.store_failing_since >= STORE_RETRY_S:
                raise StoreError(f"the artifact store kept failing for {STORE_RETRY_S:.0f} s on "
                                 f"{self.label}; last: {self.last_store_failure}")
            log.warning("artifact store unavailable; retrying in %.1f s", delay)
            if self.stop.wait(delay):
                return
            try:
                if self.store is not None:
                    probe_store(self.store)
                return
            except StoreError as exc:
                self.last_store_failure = str(exc)
                delay = min(delay * 2, STORE_BACKOFF_MAX_S)

    def _requeue(self, trial) -> None:
        frozen = self.study._storage.get_trial(trial._trial_id)
        retry_callback()(self.study, frozen)

    def _log_result(self, trial, state, value, reason) -> None:
        from optuna.trial import TrialState

        if state != TrialState.FAIL:
            self.finished_here += 1
            self.failures_in_a_row = 0
        elif not (reason or "").startswith(REQUEUED):
            self.failures_in_a_row += 1
            self.last_failure = reason or "unknown"
        if (reason or "").startswith("artifact store unavailable"):
            self.store_failures += 1
            self.last_store_failure = reason
            if self.store_failing_since is None:
                self.store_failing_since = time.monotonic()
        else:  # the store worked for a whole trial (or the trial failed on its own)
            self.store_failing_since, self.store_failures = None, 0
        if state == TrialState.COMPLETE:
            log.info("trial %d complete: out-of-fold macro-F1 %.4f", trial.number, value)
        else:
            log.info("trial %d %s: %s", trial.number, state.name.lower(), reason)


def _signal_name(signum: int | None) -> str:
    return signal.Signals(signum).name if signum else "a stop request"


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return redact_text(f"{type(exc).__name__}: {text}"[:500])
