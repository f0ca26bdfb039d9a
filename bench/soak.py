"""A chaos soak: does a fleet that is killed, whose database restarts and whose artifact store
goes away lose anything? PostgreSQL (a private server this script starts, so restarting it
disturbs nobody), W worker processes x S CPU slots, a tiny space; every 30-90 s a random worker
gets SIGKILL (its whole process group, as a lost node) or SIGTERM and is restarted; once the
database restarts; once the artifact store is unavailable for a minute. Then the workers are
stopped, one clean worker finishes what was re-queued, and the study is audited:

- no trial RUNNING or WAITING; finished trials exactly the count the last worker was told;
- every COMPLETE trial's K fold checkpoints load (safetensors) and its K probability files
  read back, and its value recomputes from them (out-of-fold macro-F1, to 1e-9);
- no trial trained twice to completion (each chain of retries completes once).

Run: `python bench/soak.py [--minutes 15] [--workers 4] [--slots 2]` (as root or as a user that
may run PostgreSQL's initdb; needs PostgreSQL's server binaries). Last line: JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _spaces import small_space


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=15.0, help="length of the fault phase")
    parser.add_argument("--workers", type=int, default=4, help="worker processes")
    parser.add_argument("--slots", type=int, default=2, help="CPU slots per worker (--trials-per-gpu)")
    parser.add_argument("--min-gap", type=float, default=30.0, help="seconds between kills, at least")
    parser.add_argument("--max-gap", type=float, default=90.0, help="seconds between kills, at most")
    parser.add_argument("--store-outage", type=float, default=60.0, help="seconds the store is away")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="keep everything here (default: a temp folder)")
    return parser.parse_args(argv)


def _histosweep(*args: str, env: dict, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "histosweep", *args], env=env, text=True,
                          capture_output=True, check=True, **kw)


# --- a private PostgreSQL ----------------------------------------------------------------------
class Postgres:
    """initdb + pg_ctl in a folder of ours, on a port of ours (runs as the postgres user when
    started as root: the server refuses root)."""

    def __init__(self, root: Path, port: int) -> None:
        self.data, self.port = root / "pgdata", port
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
        self.bin = bins[-1] if bins else Path(shutil.which("pg_ctl") or "pg_ctl").parent
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        root.mkdir(parents=True, exist_ok=True)
        if self.as_user:
            shutil.chown(root, "postgres")

    def _run(self, *cmd: str) -> None:
        subprocess.run([*self.as_user, *cmd], check=True, capture_output=True, text=True)

    def init(self) -> None:
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust")
        self.start()

    def start(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-l", str(self.data / "log"),
                  "-o", f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1", "start")

    def restart(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-m", "fast",
                  "-l", str(self.data / "log"), "-o",
                  f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1", "restart")

    def stop(self) -> None:
        subprocess.run([*self.as_user, str(self.bin / "pg_ctl"), "-D", str(self.data), "-m",
                        "immediate", "stop"], capture_output=True)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the fleet ---------------------------------------------------------------------------------
class Fleet:
    def __init__(self, n: int, argv: list[str], env: dict, logs: Path) -> None:
        self.argv, self.env, self.logs = argv, env, logs
        self.procs: list[subprocess.Popen | None] = [None] * n
        self.exits: list[int] = []

    def start(self, i: int) -> None:
        out = (self.logs / f"worker{i}.out").open("a")
        self.procs[i] = subprocess.Popen([sys.executable, "-m", "histosweep", *self.argv],
                                         env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def hit(self, i: int, sig: int) -> None:
        proc = self.procs[i]
        if sig == signal.SIGKILL:  # a lost node: the parent and its slot children at once
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.send_signal(sig)  # the parent forwards SIGTERM to its slots
        self.exits.append(proc.wait(timeout=600))
        self.start(i)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            if proc:
                self.exits.append(proc.wait(timeout=900))


def _store_outage(artifacts: Path, seconds: float) -> None:
    aside = artifacts.with_name(artifacts.name + ".away")
    artifacts.rename(aside)
    artifacts.write_text("the store is gone")
    time.sleep(seconds)  # the outage itself (this is the fault, not a synchronisation)
    artifacts.unlink()
    aside.rename(artifacts)


# --- the audit ---------------------------------------------------------------------------------
def audit(study_name: str, url: str, artifacts: Path, expected_finished: int) -> dict:
    import numpy as np
    import optuna
    import safetensors.torch
    from optuna.trial import TrialState

    from histosweep.model import macro_f1
    from histosweep.search import load_settings
    from histosweep.storage import open_artifact_store, open_storage
    from histosweep.trial_files import fetch_checkpoint, fetch_probs

    study = optuna.load_study(study_name=study_name, storage=open_storage(url))
    settings = load_settings(study)
    labels = np.asarray(settings.labels)
    store = open_artifact_store(str(artifacts))
    trials = study.get_trials(deepcopy=False)
    states = [t.state for t in trials]
    problems: list[str] = []
    if TrialState.RUNNING in states or TrialState.WAITING in states:
        problems.append(f"left running/waiting: {[t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]}")
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    if len(finished) != expected_finished:
        problems.append(f"{len(finished)} finished trials, expected {expected_finished}")
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    origins: dict[int, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for t in complete:
            origin = _origin(t, {x.number: x for x in trials})
            if origin in origins:
                problems.append(f"trials {origins[origin]} and {t.number} both completed trial {origin}")
            origins[origin] = t.number
            rows, probs = [], []
            for k in range(settings.folds):
                record = t.user_attrs.get(f"fold_{k}")
                if record is None:
                    problems.append(f"trial {t.number}: no fold {k}")
                    continue
                try:
                    safetensors.torch.load_file(fetch_checkpoint(store, record, Path(tmp) / "c", what="soak"))
                    npz = fetch_probs(store, record, what="soak")
                except Exception as exc:  # noqa: BLE001 - every unreadable file is a finding
                    problems.append(f"trial {t.number} fold {k}: {type(exc).__name__}: {exc}")
                    continue
                rows.append(npz["val_rows"])
                probs.append(npz["val_probs"])
            if len(rows) == settings.folds:
                value = macro_f1(labels[np.concatenate(rows)], np.concatenate(probs))
                if abs(value - t.value) > 1e-9:
                    problems.append(f"trial {t.number}: value {t.value} but its files give {value}")
    return {"trials": len(trials), "complete": len(complete), "finished": len(finished),
            "failed_and_retried": states.count(TrialState.FAIL), "problems": problems}


def _origin(trial, by_number: dict) -> int:
    """The first trial of a chain of retries (optuna's RetryFailedTrialCallback attr)."""
    seen = trial
    while (parent := seen.system_attrs.get("failed_trial")) is not None:
        seen = by_number[parent]
    return seen.number


# --- main --------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict:
    args = _args(argv)
    rng = random.Random(args.seed)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="histosweep-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o755)  # the postgres user must reach its data folder inside
    pg = Postgres(work / "pg", _free_port())
    pg.init()
    env = {**os.environ, "HISTOSWEEP_STORAGE": pg.url, "HISTOSWEEP_CACHE": str(work / "cache")}
    artifacts, logs = work / "artifacts", work / "logs"
    logs.mkdir(exist_ok=True)
    faults = {"SIGKILL": 0, "SIGTERM": 0, "postgres restart": 0, "store outage": 0}
    try:
        _histosweep("synth", str(work / "data"), "--n-train", "64", "--n-test", "8",
                    "--short-side", "96", env=env)
        (work / "space.toml").write_text(small_space(resolution=32, epochs=2))
        _histosweep("create", "soak", "--data", str(work / "data"), "--space", str(work / "space.toml"),
                    "--folds", "2", "--pruner", "median", env=env)
        worker = ["worker", "soak", "--gpus", "cpu", "--trials-per-gpu", str(args.slots),
                  "--heartbeat", "5", "--artifacts", str(artifacts), "--no-progress",
                  "--log-dir", str(logs), "--n-trials", "100000"]
        fleet = Fleet(args.workers, worker, env, logs)
        for i in range(args.workers):
            fleet.start(i)
        end = time.monotonic() + args.minutes * 60
        once = {"postgres restart": end - args.minutes * 40, "store outage": end - args.minutes * 20}
        while time.monotonic() < end:
            time.sleep(rng.uniform(args.min_gap, args.max_gap))  # the fault schedule
            for name, at in list(once.items()):
                if time.monotonic() >= at:
                    if name == "postgres restart":
                        pg.restart()
                    else:
                        _store_outage(artifacts, args.store_outage)
                    faults[name] += 1
                    del once[name]
            sig = rng.choice([signal.SIGKILL, signal.SIGTERM])
            fleet.hit(rng.randrange(args.workers), sig)
            faults[signal.Signals(sig).name] += 1
            print(f"[{time.strftime('%H:%M:%S')}] faults so far: {faults}", flush=True)
        fleet.stop_all()
        result = _finish(work, env, artifacts, logs, faults, fleet)
    finally:
        pg.stop()
    print(json.dumps(result))
    return result


def _finish(work: Path, env: dict, artifacts: Path, logs: Path, faults: dict, fleet: Fleet) -> dict:
    """One clean worker completes what the stops re-queued, then the audit."""
    import optuna
    from optuna.trial import TrialState

    from histosweep.storage import open_storage

    study = optuna.load_study(study_name="soak", storage=open_storage(env["HISTOSWEEP_STORAGE"]))
    trials = study.get_trials(deepcopy=False)
    finished = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    pending = sum(t.state in (TrialState.WAITING, TrialState.RUNNING) for t in trials)
    target = finished + pending
    _histosweep("worker", "soak", "--gpus", "cpu", "--heartbeat", "5", "--artifacts", str(artifacts),
                "--no-progress", "--log-dir", str(logs), "--n-trials", str(target), env=env)
    report = audit("soak", env["HISTOSWEEP_STORAGE"], artifacts, target)
    injected = sum(faults.values())
    return {"bench": "soak", **report, "faults": faults, "faults_injected": injected,
            "faults_survived": injected if not report["problems"] else None,
            "lost": len(report["problems"]), "worker_exit_codes": sorted(set(fleet.exits))}


if __name__ == "__main__":
    main()
