"""One build per machine: a blocking file lock next to each cache entry (who holds it written in
it), and the test that tells a live build's temp folder from one a killed build left behind.

Exercise: two `histosweep worker STUDY --trials-per-gpu 2` slots on a frozen space embed once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from histosweep.storage._atomic import TMP_MARKER


@dataclass(frozen=True)
class LockHolder:
    """Who builds an entry: written into its lock file by the process holding the lock."""

    host: str
    pid: int
    started: float  # time.time() when the lock was taken

    def describe(self) -> str:
        """host:pid (started 12:03:04); the date too when it did not start today."""
        start = time.localtime(self.started)
        fmt = "%H:%M:%S" if start[:3] == time.localtime()[:3] else "%Y-%m-%d %H:%M:%S"
        return f"{self.host}:{self.pid} (started {time.strftime(fmt, start)})"


def lock_path(target: str | os.PathLike[str]) -> Path:
    """The lock file of the entry at `target`: `.NAME.lock` beside it (the key is the name)."""
    target = Path(target)
    return target.parent / f".{target.name}.lock"


def read_holder(target: str | os.PathLike[str]) -> LockHolder | None:
    """The holder the lock file of `target` names; None when it names none (free, or just taken)."""
    return _holder_in(lock_path(target))


def _holder_in(path: Path) -> LockHolder | None:
    try:
        doc = json.loads(path.read_text())
        return LockHolder(host=str(doc["host"]), pid=int(doc["pid"]), started=float(doc["started"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


@contextlib.contextmanager
def build_lock(target: str | os.PathLike[str], *,
               on_wait: Callable[[LockHolder | None], None] | None = None) -> Iterator[None]:
    """Hold the build lock of the entry at `target` for the block, waiting for another holder.

    on_wait(holder) is called once, before waiting, when another process holds it. The kernel
    drops the lock of a killed process: a SIGKILL never leaves a stale lock, only a lock file
    the next build reuses. A release removes the file (while still holding it).
    """
    path = lock_path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _acquire(path, on_wait)
    try:
        _write_holder(fd)
        yield
    finally:
        with contextlib.suppress(OSError):  # a waiter must not read us as its holder
            os.ftruncate(fd, 0)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)  # releases the lock


def _acquire(path: Path, on_wait) -> int:
    """An fd holding the flock of the file at `path` now (see the NOTE)."""
    waited = False
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if on_wait is not None and not waited:
                    on_wait(_holder_in(path))
                waited = True
                fcntl.flock(fd, fcntl.LOCK_EX)
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        except BaseException:
            os.close(fd)
            raise
        # NOTE: the holder we waited for removed the file on release: the lock we got is on an
        # unlinked file nobody else sees; take the lock of the file at `path` now.
        os.close(fd)


def _write_holder(fd: int) -> None:
    doc = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}
    with contextlib.suppress(OSError):  # for the waiters' line only; a full disk is fine
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(doc).encode(), 0)


def is_locked(target: str | os.PathLike[str]) -> bool:
    """Whether a process holds the build lock of `target` now (never creates the lock file)."""
    try:
        fd = os.open(lock_path(target), os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


# atomic_dir's temp folders: `.NAME.RANDOM.tmp`, mkdtemp's random part has no dot
_TEMP = re.compile(r"^\.(?P<name>.+)\.[^.]+\.tmp$")
_MARK = re.compile(r"pid (?P<pid>\d+) on (?P<host>\S+)")


def dead_build_temps(folder: str | os.PathLike[str]) -> list[Path]:
    """Temp folders in `folder` left by builds that are gone: no process holds the lock of the
    entry they were for, and their marker names no live process on this host. Never judged by
    age: a memory-mapped build writes for hours without touching its folder's mtime."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    dead = []
    for path in folder.iterdir():
        match = _TEMP.match(path.name)
        if not match or path.is_symlink() or not path.is_dir():
            continue
        if is_locked(folder / match["name"]) or _builder_alive(path):
            continue
        dead.append(path)
    return sorted(dead)


def sweep_dead_build_temps(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove what dead_build_temps finds (SIGKILL skips a build's own cleanup); -> removed."""
    removed = dead_build_temps(folder)
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed


def _builder_alive(tmp: Path) -> bool:
    """The temp folder's marker names a process on this host that still runs."""
    try:
        match = _MARK.search((tmp / TMP_MARKER).read_text())
    except OSError:
        return False
    if match is None or match["host"] != socket.gethostname():
        return False
    return pid_alive(int(match["pid"]))


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists on this host (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
