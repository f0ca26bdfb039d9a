"""Atomic writes: a temporary name in the same folder, then os.replace.

Every file or folder histosweep writes goes through here, so a crash leaves either the old
content or the new, never half. Exercise: the cache build and `histosweep export-best`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

# Written into a marked temp folder (atomic_dir(marker=True)) and removed before the rename: a
# folder that still holds it was left by a killed run, and only such a folder is ever cleaned.
TMP_MARKER = ".histosweep-partial"


def nearest_existing(path: Path) -> Path:
    """`path` or its nearest parent that exists (a broken link counts: it is there)."""
    return next((p for p in (path, *path.parents) if p.exists() or p.is_symlink()), Path("."))


def not_a_folder(path: Path) -> str | None:
    """Why a folder cannot be (made) at `path`, found without writing anything: the nearest part
    of it that exists is a file or a broken link. None when that part is a folder. For options
    naming where output goes (worker --log-dir, demo --workdir, predict --out's folder)."""
    existing = nearest_existing(path)
    if existing.is_dir():
        return None
    what = "a broken link" if existing.is_symlink() and not existing.exists() else "a file"
    return f"{existing} is {what}, not a folder"


def current_umask() -> int:
    """The process umask, read without changing it where Linux says it (os.umask(0) would
    briefly let another thread create world-writable files)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], *, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary file path next to `target`; rename onto `target` on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{suffix}", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # NOTE: mkstemp makes 0600 files; give the result the permissions a plain open() would.
        os.chmod(tmp_path, 0o666 & ~current_umask())
        os.replace(tmp_path, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()


def atomic_write_bytes(target: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def atomic_write_text(target: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(target, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike[str], *, replace: bool | Callable[[Path], bool] = False,
               marker: bool = False) -> Iterator[Path]:
    """Yield a temporary folder next to `target`; rename it onto `target` on success.

    replace=True swaps out whatever is at `target` (old copy removed afterwards). A callable is
    asked, at the start and again at the final rename, whether what is there may be replaced
    (e.g. only an earlier bundle). Otherwise, or when it says no, a target that exists or
    appeared meanwhile raises FileExistsError and is left untouched. Another writer's copy that
    lands at `target` during the swap is asked about the same way (replace=True: the last
    rename wins). marker=True puts TMP_MARKER in the temp folder until the rename (see
    stale_temp_dirs).
    """
    target = Path(target)
    if _exists(target) and not _may_replace(replace, target):
        raise FileExistsError(errno.EEXIST, f"{target} already exists")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        if marker:
            (tmp / TMP_MARKER).write_text(f"pid {os.getpid()} on {socket.gethostname()}\n")
        yield tmp
        if marker:
            (tmp / TMP_MARKER).unlink()
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700 folders
        _swap_in(tmp, target, replace)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def _may_replace(replace: bool | Callable[[Path], bool], target: Path) -> bool:
    return replace(target) if callable(replace) else bool(replace)


def _swap_in(tmp: Path, target: Path, replace) -> None:
    """Rename `tmp` onto `target`, moving what is there aside when `replace` allows it.

    Another writer's rename can land between our move-aside and our rename (two workers building
    the same cache entry): then what is there now is asked about again, and the swap retried.
    """
    for attempt in range(_SWAP_ATTEMPTS):
        old = None
        if _exists(target):
            if not _may_replace(replace, target):
                raise FileExistsError(errno.EEXIST, f"{target} appeared while it was being written")
            old = target.parent / f".{target.name}.old-{os.getpid()}-{attempt}"
            try:
                os.replace(target, old)
            except FileNotFoundError:  # another writer moved it aside first
                old = None
        try:
            # NOTE: rename, never replace, once the target is out of the way: a non-empty folder
            # that appears there in between makes it fail (ENOTEMPTY) instead of being swapped out.
            os.rename(tmp, target)
        except OSError as exc:
            if not _exists(target):
                if old is not None:
                    os.replace(old, target)  # put the earlier copy back
                raise
            if old is not None:  # a newer copy than the one we moved aside is there now
                shutil.rmtree(old, ignore_errors=True)
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            continue
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return
    raise FileExistsError(errno.EEXIST, f"{target} kept being replaced by other writers while this "
                          f"copy was written ({_SWAP_ATTEMPTS} tries)")


_SWAP_ATTEMPTS = 5


def stale_temp_dirs(target: str | os.PathLike[str], *, before: float) -> list[Path]:
    """Temp folders of atomic_dir(target, marker=True) still holding their marker, made before
    `before` (a time.time()): left by a run that was killed. Nothing else is ever listed."""
    target = Path(target)
    prefix = f".{target.name}."
    found = []
    if not target.parent.is_dir():
        return found
    for path in target.parent.iterdir():
        name = path.name
        middle = name[len(prefix):-len(".tmp")] if name.startswith(prefix) and name.endswith(".tmp") else ""
        # mkdtemp's random part has no dot: `.b.x.XXXX.tmp` belongs to target b.x, not b
        if not middle or "." in middle or path.is_symlink() or not path.is_dir():
            continue
        mark = path / TMP_MARKER
        if mark.is_file() and not mark.is_symlink() and mark.stat().st_mtime < before:
            found.append(path)
    return sorted(found)


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an flock on `path` (created; removed on release) for the block, or raise
    BlockingIOError at once when another process holds it. The kernel drops the lock of a
    killed process, so a SIGKILL never leaves a stale lock (only a file the next run reuses)."""
    path = Path(path)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        # NOTE: the previous holder removed the file between our open and our lock: the lock we
        # got is on an unlinked file nobody else will see; take the lock on the new one.
        os.close(fd)
    try:
        with contextlib.suppress(OSError):  # for people reading the file; a full disk is fine
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # while still holding it: see the NOTE above
        os.close(fd)
