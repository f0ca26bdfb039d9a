"""A mixed fleet of real processes on one study: worker A (direct, default 60 s heartbeat) and
worker P (behind the real `histosweep storage-proxy`) run trials; worker B (direct,
`--heartbeat 2`) reaps neither; `status` shows P's trial as via proxy; a trial failed and
re-queued by another worker is one info line for its old owner (direct and through the proxy).
Synchronised on log lines and database state, never on sleeps."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState

from histosweep.cli import main
from histosweep.fleet import HEARTBEAT_ATTR, PROXY_ATTR
from histosweep.storage import heartbeat_ages, retry_callback, study_id, study_storage, trial_id
from tests.ops._helpers import free_port
from tests.search._helpers import cli, kill, load, tiny_space, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")]
B_GRACE_S = 4  # worker B's --heartbeat 2, twice


def _start(args: list[str], out: Path) -> subprocess.Popen:
    """`histosweep ARGS` with its output in a file (a pipe would fill up with epoch lines); one
    thread each, as three trainers share the test machine's cores."""
    with open(out, "wb") as fh:
        return subprocess.Popen([sys.executable, "-m", "histosweep.cli", *args], stdout=fh,
                                stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})


def _worker(study: str, storage: str, tmp: Path, name: str, *extra: str) -> subprocess.Popen:
    return _start(["worker", study, "--storage", storage, "--artifacts", str(tmp / "artifacts"),
                   "--gpus", "cpu", "--no-progress", "--log-dir", str(tmp / "logs"), *extra],
                  tmp / f"{name}.out")


def _says(path: Path, text: str):
    return lambda: path.exists() and text in path.read_text()


def _running(study, *procs: subprocess.Popen) -> dict[str, object]:
    """'direct' / 'proxy' -> the RUNNING trial each kind of worker holds (once both are marked)."""
    for proc in procs:
        assert proc.poll() is None, f"{proc.args[3:5]} exited {proc.returncode}"
    found = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.system_attrs.get(PROXY_ATTR):
            found["proxy"] = t
        elif t.system_attrs.get(HEARTBEAT_ATTR) == 60:
            found["direct"] = t
    return found if len(found) == 2 else {}


def test_short_heartbeat_worker_reaps_neither_a_long_heartbeat_nor_a_proxy_trial(sqlite_url, synth_root,
                                                                               tmp_path, capsys):
    pytest.importorskip("grpc", reason="grpcio not installed (optional: pip install grpcio protobuf)")
    space = tiny_space(tmp_path, epochs=200)  # trials that outlast the test; stopped at the end
    cli("create", "mix", "--data", str(synth_root), "--space", str(space), "--folds", "2",
        "--pruner", "none", "--no-reference", "--storage", sqlite_url)
    port = free_port()
    proxy = _start(["storage-proxy", "--storage", sqlite_url, "--port", str(port)], tmp_path / "proxy.out")
    procs = [proxy]
    try:
        wait_for(_says(tmp_path / "proxy.out", f"on 127.0.0.1:{port}"), timeout=120, what="the proxy",
                 proc=proxy)
        a = _worker("mix", sqlite_url, tmp_path, "a", "--n-trials", "2")  # default --heartbeat 60
        p = _worker("mix", f"grpc://127.0.0.1:{port}", tmp_path, "p", "--n-trials", "2")
        procs += [a, p]
        study = load("mix", sqlite_url)
        held = wait_for(lambda: _running(study, a, p), timeout=300, what="A's and P's trials")
        b = _worker("mix", sqlite_url, tmp_path, "b", "--n-trials", "2", "--heartbeat", "2")
        procs.append(b)
        wait_for(_says(tmp_path / "b.out", "worker on cpu"), timeout=300, what="worker B", proc=b)
        b_ready = time.monotonic()
        storage, sid = study_storage(study), study_id(study)

        def silent_past_b_grace():  # B polls every 1 s while the study is full: 3 polls at least
            ages = heartbeat_ages(storage, sid)
            return (time.monotonic() - b_ready > 3
                    and all(ages.get(t.number, 0) > B_GRACE_S + 2 for t in held.values()))
        wait_for(silent_past_b_grace, timeout=120, what="both trials silent past B's grace", proc=b)

        trials = {t.number: t for t in load("mix", sqlite_url).get_trials()}
        assert [trials[t.number].state for t in held.values()] == [TrialState.RUNNING] * 2
        b_out = (tmp_path / "b.out").read_text()
        assert "re-queued" not in b_out and "never sent a heartbeat" not in b_out, b_out

        assert main(["status", "mix", "--storage", sqlite_url, "--json"]) == 0
        status = json.loads(capsys.readouterr().out)
        rows = {r["number"]: r for r in status["running"]}
        proxied, direct = rows[held["proxy"].number], rows[held["direct"].number]
        assert proxied["via_proxy"] is True and proxied["heartbeat_age_s"] is None
        assert direct["via_proxy"] is False and direct["heartbeat_every_s"] == 60
        assert direct["heartbeat_age_s"] > B_GRACE_S
        assert main(["status", "mix", "--storage", sqlite_url]) == 0
        text = capsys.readouterr().out
        proxy_row = [line for line in text.splitlines() if line.strip().startswith(f"{held['proxy'].number} ")]
        assert len(proxy_row) == 1 and proxy_row[0].rstrip().endswith("via proxy, no heartbeat"), text

        # Another worker takes both trials over (what its reaper does): each old owner says so
        # in one info line at its next epoch and goes on; nothing counts as a failure.
        for t in held.values():
            storage.set_trial_state_values(trial_id(t), state=TrialState.FAIL)
            retry_callback()(study, storage.get_trial(trial_id(t)))
        for name, t in (("a", held["direct"]), ("p", held["proxy"])):
            line = f"trial {t.number} was taken over by another worker (its heartbeat looked stale)"
            wait_for(_says(tmp_path / f"{name}.out", line), timeout=120, what=f"{name}'s take-over line")
        for name in ("a", "p"):
            out = (tmp_path / f"{name}.out").read_text()
            assert "UpdateFinishedTrialError" not in out and "failed" not in out, out

        # A failure through the proxy arrives as an exception without a message (Optuna's client
        # raises the bare type); the worker's fail reason takes the server's details instead.
        from optuna.storages import GrpcStorageProxy

        from histosweep.fleet._trial_loop import _reason

        client = GrpcStorageProxy(host="127.0.0.1", port=port)
        with pytest.raises(Exception) as caught:
            client.set_trial_state_values(trial_id(held["proxy"]), state=TrialState.COMPLETE, values=[1.0])
        client.close()
        assert str(caught.value) == ""
        reason = _reason(caught.value)
        assert reason.startswith(f"{type(caught.value).__name__}: ") and len(reason) > 30, reason
    finally:
        for proc in reversed(procs):  # B first: it would take up the trials the others leave
            kill(proc, signal.SIGTERM)
