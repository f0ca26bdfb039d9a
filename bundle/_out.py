"""The --out folder of export-best: checks, a lock so one export writes there at a time, the
leftovers of a killed export, and what the final rename may replace (only an earlier bundle).

Exercise: two `histosweep export-best STUDY --out b` at once; the second says another is writing.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from histosweep.bundle._predict import MANIFEST
from histosweep.exceptions import UserError
from histosweep.storage import exclusive_lock, stale_temp_dirs


def lock_path(out: Path) -> Path:
    return out.parent / f".{out.name}.lock"


def check_out(out: Path, overwrite: bool) -> None:
    above = next((p for p in out.parents if p.exists()), None)
    if above is not None and not above.is_dir():
        raise UserError(f"--out {out}: {above} is a file, not a folder; pass --out with a folder path")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; pass a folder for the bundle")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not overwrite:
        raise UserError(f"--out {out} exists and is not empty; choose a new folder or pass --overwrite")
    if not (out / MANIFEST).is_file():
        # NOTE: --overwrite only ever replaces a bundle, never an arbitrary folder.
        raise UserError(f"--out {out} is not an export-best bundle (no {MANIFEST}); refusing to replace it")


@contextlib.contextmanager
def out_lock(out: Path, overwrite: bool) -> Iterator[Callable[[Path], bool]]:
    """Hold the lock beside --out, re-check --out under it, clean a killed export's temp
    folders; yields what the final rename may replace."""
    started = time.time()
    check_out(out, overwrite)  # before the lock file: a bad --out writes nothing
    with contextlib.ExitStack() as stack:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            stack.enter_context(exclusive_lock(lock_path(out)))
        except BlockingIOError:
            raise UserError(
                f"--out {out}: another export-best is writing there (lock {lock_path(out)} held "
                f"by {_holder(out)}); wait for it to finish or choose another --out"
            ) from None
        except OSError as exc:
            raise UserError(f"--out {out}: cannot write the bundle ({exc.strerror or exc}); free "
                            "some space or pass --out with a writable folder") from None
        check_out(out, overwrite)  # again: an export that held the lock may just have finished
        _clean_leftovers(out, started)
        yield replaceable(out, overwrite)


def replaceable(out: Path, overwrite: bool) -> Callable[[Path], bool]:
    """At the final rename, what is at --out may be replaced only if it is an earlier bundle
    (--overwrite) or the empty folder that was there at the start: never someone else's."""
    empty_at_start = out.is_dir() and not out.is_symlink() and not any(out.iterdir())

    def may_replace(target: Path) -> bool:
        if target.is_symlink() or not target.is_dir():
            return False
        if overwrite and (target / MANIFEST).is_file():
            return True
        return empty_at_start and not any(target.iterdir())

    return may_replace


def _clean_leftovers(out: Path, started: float) -> None:
    """Remove the marked temp folders of killed exports to --out (we hold the lock: none is
    live); name an earlier bundle that a kill left moved aside, never touching it."""
    for tmp in stale_temp_dirs(out, before=started):
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"export-best: removed {tmp}, the temp folder of an interrupted export",
              file=sys.stderr, flush=True)
    for old in sorted(out.parent.glob(f".{out.name}.old-*")):
        if (old / MANIFEST).is_file():
            print(f"export-best: note: {old} holds an earlier bundle moved aside by an "
                  "interrupted export; move it back or remove it", file=sys.stderr, flush=True)


def _holder(out: Path) -> str:
    with contextlib.suppress(OSError):
        text = lock_path(out).read_text().strip()
        if text:
            return text
    return "another process"
