"""Unwritable and full output folders: `prepare` (image cache) and `export-best` (bundle) stop
with one clear line naming the folder, exit 1, and leave no half-written cache or bundle.

"Unwritable" is a path below a regular file (permission bits do not stop root); "full" is a
64 KiB tmpfs (real ENOSPC), or where mounting is refused, a 64 KiB file-size limit (EFBIG).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability._helpers import error_line, fsize_limit, full_folder, run_cli, snapshot

pytestmark = pytest.mark.slow


@pytest.fixture()
def full(tmp_path):
    """(folder, preexec_fn): a folder whose writes fail as on a full disk."""
    with full_folder(tmp_path / "full") as mounted:
        yield (mounted, None) if mounted else (tmp_path / "full", fsize_limit())


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_prepare_with_cache_below_a_file(synth_root, tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    before = snapshot(tmp_path)
    line = error_line(run_cli("prepare", str(synth_root), "--resolutions", "32",
                              "--cache", str(blocker / "sub")))
    assert str(blocker / "sub") in line and "HISTOSWEEP_CACHE" in line and "--cache" in line
    assert snapshot(tmp_path) == before


def test_prepare_with_cache_on_a_full_disk(synth_root, full):
    folder, preexec = full
    line = error_line(run_cli("prepare", str(synth_root), "--resolutions", "32", "--cache",
                              str(folder), preexec_fn=preexec))
    assert str(folder) in line and "cannot write the image cache" in line
    assert "HISTOSWEEP_CACHE" in line and "--cache" in line
    assert _files(folder) == []  # no half-written arrays, no index.json
    assert not list(folder.rglob("*.tmp"))


@pytest.mark.postgres
def test_export_best_out_below_a_file(trained, tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    before = snapshot(tmp_path)
    line = error_line(run_cli("export-best", "rel", "--out", str(blocker / "bundle"), "--storage",
                              trained.url, "--artifacts", str(trained.artifacts), "--no-progress"))
    assert f"--out {blocker / 'bundle'}" in line and f"{blocker} is a file" in line
    assert snapshot(tmp_path) == before


@pytest.mark.postgres
def test_export_best_out_on_a_full_disk(trained, full):
    folder, preexec = full
    out = folder / "bundle"
    line = error_line(run_cli("export-best", "rel", "--out", str(out), "--storage", trained.url,
                              "--artifacts", str(trained.artifacts), "--no-progress",
                              preexec_fn=preexec))
    assert f"--out {out}" in line and "cannot write the bundle" in line
    assert list(folder.iterdir()) == []  # no bundle, no temp folder
