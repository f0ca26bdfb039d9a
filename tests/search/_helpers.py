"""Helpers for search tests: a tiny space, the real CLI, real worker processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna

TINY_SPACE = """
[params]
resolution = 32
resize_mode = "stretch"
image_backbone = "convnext_atto"
mask_backbone = "resnet10t"
pretrained = false
head_hidden = 32
epochs = {epochs}
batch_size = 8
t0 = 2
lr = {{ low = 5e-4, high = 2e-3, log = true }}
cutmix_prob = [0.0, 0.5]
"""


def tiny_space(tmp_path: Path, *, epochs: int = 2) -> Path:
    path = tmp_path / "space.toml"
    path.write_text(TINY_SPACE.format(epochs=epochs))
    return path


def cli(*args: str, check: bool = True, env: dict | None = None, timeout: float = 600):
    """Run the real `histosweep` command; returns the CompletedProcess."""
    proc = subprocess.run(
        [sys.executable, "-m", "histosweep.cli", *args], capture_output=True, text=True,
        env={**os.environ, **(env or {})}, timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"histosweep {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


def start_worker(study: str, storage: str, artifacts: Path, *extra: str, log_dir: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "histosweep.cli", "worker", study, "--storage", storage,
         "--artifacts", str(artifacts), "--gpus", "cpu", "--no-progress",
         "--log-dir", str(log_dir), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def wait_for(predicate, *, timeout: float, what: str, proc: subprocess.Popen | None = None):
    """Poll a condition on the database with a deadline (not a sleep standing in for sync)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"worker exited {proc.returncode} while waiting for {what}:\n{out[-3000:]}")
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def load(study: str, storage: str) -> optuna.Study:
    from histosweep.storage import open_storage

    return optuna.load_study(study_name=study, storage=open_storage(storage))


def kill(proc: subprocess.Popen, sig=signal.SIGKILL) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
    proc.wait(timeout=60)


