"""Helpers for the reliability tests: the real CLI in a subprocess, one-line error checks, folder
snapshots, a PostgreSQL role with a password, a server restart that always comes back up, a
full filesystem, tiny hand-made datasets.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import numpy as np

from tests.search._helpers import wait_for

PASSWORD = "S3cretPw-XYZ"  # every storage URL these tests use carries it; no output may show it
CLOSED_PORT = 9  # discard: nothing listens there, a connection is refused at once


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 300,
            preexec_fn=None) -> subprocess.CompletedProcess:
    """The real `histosweep` command in a subprocess, without a user's storage settings."""
    from tests.ops._helpers import histosweep_cmd

    base = {k: v for k, v in os.environ.items()
            if k not in ("HISTOSWEEP_STORAGE", "HISTOSWEEP_ARTIFACTS", "HISTOSWEEP_DEBUG")}
    return subprocess.run(
        [*histosweep_cmd(), *args], capture_output=True, text=True, cwd=cwd,
        env={**base, **(env or {})}, timeout=timeout, preexec_fn=preexec_fn,
    )


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"exit {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


def error_line(proc: subprocess.CompletedProcess, *, listing: bool = False) -> str:
    """Exit 1, no traceback, and stderr ends with its one and only `error: ...` line.

    listing=True also accepts indented lines after it (a DataError listing several problems).
    """
    err = proc.stderr
    assert proc.returncode == 1, f"exit {proc.returncode}, stderr:\n{err[-3000:]}"
    assert "Traceback" not in err and "Traceback" not in proc.stdout, err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [i for i, line in enumerate(lines) if line.startswith("error:")]
    assert len(errors) == 1, f"not one error line:\n{err[-3000:]}"
    tail = lines[errors[0] + 1:]
    assert not tail or (listing and all(line.startswith("  ") for line in tail)), err[-3000:]
    assert "unexpected" not in lines[errors[0]], lines[errors[0]]  # written for people, not a crash
    return "\n".join(lines[errors[0]:])


def snapshot(*roots: Path) -> dict[str, int]:
    """Every file and folder under `roots` (path -> size, -1 for folders)."""
    seen: dict[str, int] = {}
    for root in roots:
        if root.exists():
            for p in [root, *root.rglob("*")]:
                seen[str(p)] = -1 if p.is_dir() else p.stat().st_size
    return seen


# the same deadline-bounded poll the search tests use
wait_until = wait_for


def pg_admin():
    from tests.conftest import _pg_admin_connect

    return _pg_admin_connect()


@contextlib.contextmanager
def pg_role_database(password: str = PASSWORD):
    """A fresh role with `password` owning a fresh database: its storage URL (trust auth here
    accepts any password, but the URL still carries it through every command)."""
    name = f"hs_rel_{uuid.uuid4().hex[:10]}"
    conn = pg_admin()
    cur = conn.cursor()
    cur.execute(f"CREATE ROLE {name} LOGIN PASSWORD %s", (password,))
    cur.execute(f"CREATE DATABASE {name} OWNER {name}")
    conn.close()
    try:
        yield f"postgresql+psycopg2://{name}:{password}@127.0.0.1:5432/{name}"
    finally:
        conn = pg_admin()
        cur = conn.cursor()
        cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        cur.execute(f"DROP DATABASE IF EXISTS {name}")
        cur.execute(f"DROP ROLE IF EXISTS {name}")
        conn.close()


def pg_version() -> str | None:
    root = Path("/etc/postgresql")
    versions = sorted(p.name for p in root.iterdir()) if root.is_dir() else []
    return versions[0] if versions and shutil.which("pg_ctlcluster") else None


def pg_ready() -> bool:
    return subprocess.run(["pg_isready", "-h", "127.0.0.1", "-q"], timeout=30).returncode == 0


def pg_ctl(action: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", pg_version() or "", "main", action],
        capture_output=True, text=True, timeout=120,
    )


def ensure_pg_up(timeout: float = 60) -> None:
    """Bring the server back (start it if a restart left it down) and wait until it answers."""
    deadline = time.monotonic() + timeout
    started = False
    while time.monotonic() < deadline:
        if pg_ready():
            return
        if not started and pg_ctl("status").returncode != 0:  # 3: the cluster is down
            pg_ctl("start")
            started = True
        time.sleep(0.5)  # a poll interval, bounded by the deadline
    raise AssertionError(f"PostgreSQL not ready {timeout} s after the restart")


# --- filesystems -----------------------------------------------------------------------------
@contextlib.contextmanager
def full_folder(path: Path, size: str = "64k"):
    """A folder on a tiny tmpfs (writes beyond `size` fail with ENOSPC); None when this machine
    refuses the mount (no CAP_SYS_ADMIN)."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True, timeout=30).returncode == 0
    try:
        yield path if mounted else None
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def fsize_limit(limit: int = 64 * 1024):
    """preexec_fn: any file write past `limit` bytes fails (EFBIG), like a full quota."""
    import resource

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


# --- tiny datasets ---------------------------------------------------------------------------
CLASSES = ("Luminal A", "Luminal B", "HER2(+)", "Triple negative")


def write_png(path: Path, size: tuple[int, int], *, mask: bool = False, seed: int = 0) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    if mask:
        arr = np.zeros((h, w), dtype=np.uint8)
        top, left = rng.integers(0, h // 2), rng.integers(0, w // 2)  # no two masks alike
        arr[top: top + h // 3, left: left + w // 3] = 255
        Image.fromarray(arr, mode="L").save(path)
    else:
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)


def tiny_dataset(root: Path, labels: list[str] | None = None, *, size=(40, 32)) -> Path:
    """A valid labelled dataset in the challenge layout (default: 3 samples of each class)."""
    labels = labels if labels is not None else [c for c in CLASSES for _ in range(3)]
    train = root / "train_data"
    train.mkdir(parents=True)
    rows = ["sample_index,label"]
    for i, label in enumerate(labels):
        write_png(train / f"img_{i:04d}.png", size, seed=i)
        write_png(train / f"mask_{i:04d}.png", size, mask=True, seed=i)
        rows.append(f"img_{i:04d}.png,{label}")
    (root / "train_labels.csv").write_text("\n".join(rows) + "\n")
    return root
