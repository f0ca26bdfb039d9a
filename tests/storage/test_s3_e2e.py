"""The S3 artifact store for real: create -> worker -> export-best -> predict -> gc -> status on
an S3-compatible server on 127.0.0.1 (moto's standalone server: an emulator of the S3 API, not
AWS), and the store going away mid-trial and coming back (the trial is re-queued and resumed from
its finished folds).

The store "goes away" behind a TCP relay the test owns: the relay stops listening and drops its
connections, so the worker sees refused connections exactly as with a dead endpoint, while the
emulator keeps its objects (it holds them in memory) for the store's return.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from optuna.trial import TrialState

from tests.ops._helpers import free_port
from tests.reliability._helpers import ok, run_cli, wait_until
from tests.search._helpers import kill, load, tiny_space

pytestmark = pytest.mark.slow
BUCKET = "hs-e2e"


class Relay:
    """A TCP relay 127.0.0.1:port -> target port that can be taken down and brought back."""

    def __init__(self, target: int) -> None:
        self.target, self.port = target, free_port()
        self.conns: list[socket.socket] = []
        self.server: socket.socket | None = None
        self.lock = threading.Lock()

    def up(self) -> None:
        self.server = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        threading.Thread(target=self._accept, args=(self.server,), daemon=True).start()

    def down(self) -> None:
        with self.lock:
            self.server.close()
            for conn in self.conns:
                conn.close()
            self.conns.clear()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:  # closed by down()
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            with self.lock:
                self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@pytest.fixture()
def s3(tmp_path):
    """An S3 emulator behind a relay; yields (env for the CLI, boto3 client, relay)."""
    boto3 = pytest.importorskip("boto3")
    pytest.importorskip("moto.server")  # the dev extra installs moto[server]
    port = free_port()
    log = (tmp_path / "moto.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=log, stderr=subprocess.STDOUT)
    relay = Relay(port)
    relay.up()
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{relay.port}", "AWS_ACCESS_KEY_ID": "test",
           "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
    client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                          aws_access_key_id="test", aws_secret_access_key="test")

    def bucket_made() -> bool:
        try:
            client.create_bucket(Bucket=BUCKET)
            return True
        except Exception:  # noqa: BLE001 - not listening yet
            return server.poll() is not None and pytest.fail((tmp_path / "moto.log").read_text())
    wait_until(bucket_made, timeout=120, what="the S3 emulator to answer")
    yield env, client, relay
    kill(server)
    log.close()


def _keys(client, prefix: str) -> dict[str, int]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return {o["Key"]: o["Size"] for page in pages for o in page.get("Contents", [])}


def _create(url: str, data: Path, tmp_path: Path, *, epochs: int, env: dict) -> None:
    ok(run_cli("create", "s3", "--data", str(data), "--space", str(tiny_space(tmp_path, epochs=epochs)),
               "--folds", "2", "--pruner", "none", "--storage", url, env=env))


def test_s3_store_end_to_end(s3, synth_root, tmp_path):
    env, client, _ = s3
    url, spec = f"sqlite:///{tmp_path / 'study.db'}", f"s3://{BUCKET}/runs"
    common = ["--storage", url, "--artifacts", spec]
    _create(url, synth_root, tmp_path, epochs=1, env=env)
    ok(run_cli("worker", "s3", *common, "--gpus", "cpu", "--n-trials", "2", "--no-progress",
               "--log-dir", str(tmp_path / "logs"), env=env))
    stored = _keys(client, "runs/")
    assert stored and all(k.startswith("runs/") for k in stored)  # everything under the prefix
    assert _keys(client, "") == stored  # and nothing outside it
    bundle, csv = tmp_path / "bundle", tmp_path / "sub.csv"
    ok(run_cli("export-best", "s3", *common, "--out", str(bundle), "--test",
               str(synth_root / "TEST"), "--no-progress", env=env))
    ok(run_cli("predict", str(bundle), "--images", str(synth_root / "TEST"), "--out", str(csv),
               "--no-progress", env=env))
    assert csv.read_bytes() == (bundle / "submission.csv").read_bytes()
    status = json.loads(ok(run_cli("status", "s3", *common, "--json", env=env)).stdout)
    assert status["artifact_bytes"] == sum(stored.values())
    gc = json.loads(ok(run_cli("gc", "s3", *common, "--keep-top", "1", "--json", env=env)).stdout)
    after = _keys(client, "runs/")
    assert len(after) < len(stored)  # the other trial's checkpoints left the bucket
    assert gc["bytes_freed"] == sum(stored.values()) - sum(after.values()) > 0
    status = json.loads(ok(run_cli("status", "s3", *common, "--json", env=env)).stdout)
    assert status["artifact_bytes"] == sum(after.values())


def test_s3_store_going_away_mid_trial_requeues_and_resumes(s3, synth_root, tmp_path):
    env, client, relay = s3
    url, spec = f"sqlite:///{tmp_path / 'study.db'}", f"s3://{BUCKET}/away"
    _create(url, synth_root, tmp_path, epochs=3, env=env)
    logs = tmp_path / "logs"
    worker = subprocess.Popen(
        [sys.executable, "-m", "histosweep.cli", "worker", "s3", "--storage", url, "--artifacts", spec,
         "--gpus", "cpu", "--no-progress", "--log-dir", str(logs), "--n-trials", "1",
         "--heartbeat", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, **env})
    study = load("s3", url)
    try:
        def fold0_done():
            trials = study.get_trials(deepcopy=False)
            return trials and "fold_0" in trials[0].user_attrs and trials[0]
        first = wait_until(fold0_done, timeout=300, what="fold 0 to be uploaded", proc=worker)
        relay.down()

        def log_text() -> str:
            return "".join(p.read_text() for p in logs.glob("*.log"))
        wait_until(lambda: log_text().count("artifact store unavailable; retrying") >= 2,
                   timeout=300, what="the trial to fail on the store and the worker to back off",
                   proc=worker)
        assert [t.state for t in load("s3", url).get_trials()] == [TrialState.FAIL, TrialState.WAITING]
        relay.up()
        out = worker.communicate(timeout=400)[0]
    finally:
        if worker.poll() is None:
            kill(worker)
    assert worker.returncode == 0, out
    trials = load("s3", url).get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert trials[0].user_attrs["fail_reason"].startswith("artifact store unavailable during the trial")
    retry = trials[1]
    assert retry.user_attrs["resumed_folds"] == [0]
    assert retry.user_attrs["fold_0"]["checkpoint"] == first.user_attrs["fold_0"]["checkpoint"]
    assert any(k.startswith("away/") for k in _keys(client, "away/"))
