"""export-best and other writers of the same --out: a second export at once fails with one line
(lock beside --out) and the first bundle is whole; a folder that appears at --out during an export
is left untouched; the temp folder of a SIGKILLed export is removed by the next one, and nothing
that is not ours is. Real `histosweep export-best` processes, paused with SIGSTOP at a known point
(their marked temp folder exists) instead of racing them."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from histosweep.bundle import load_bundle
from histosweep.cli import main
from histosweep.storage import TMP_MARKER
from tests.bundle.test_export import build_tiny_study, export_args, one_error_line
from tests.search._helpers import kill, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return build_tiny_study(tmp_path_factory.mktemp("export-race-study"))


def _start_export(paths, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "histosweep.cli", *export_args(paths, out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _temp_dirs(out: Path) -> list[Path]:
    return sorted(p for p in out.parent.glob(f".{out.name}.*.tmp") if (p / TMP_MARKER).is_file())


def _paused_in_its_temp_folder(proc: subprocess.Popen, out: Path) -> Path:
    """Wait until the export is writing its temp folder (it holds the lock), then SIGSTOP it."""
    tmp = wait_for(lambda: _temp_dirs(out), timeout=300, what="the export's temp folder", proc=proc)
    proc.send_signal(signal.SIGSTOP)
    return tmp[0]


def _whole(bundle: Path) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    loaded = load_bundle(bundle)  # checks every fold file against its sha256
    assert len(loaded.members) == len(manifest["members"]) > 0
    assert (bundle / "report.html").is_file() and not (bundle / TMP_MARKER).exists()


def test_second_export_to_the_same_out_fails_with_one_line(study, tmp_path):
    out = tmp_path / "b"
    first = _start_export(study, out)
    try:
        _paused_in_its_temp_folder(first, out)
        second = subprocess.run([sys.executable, "-m", "histosweep.cli", *export_args(study, out)],
                                capture_output=True, text=True, timeout=300)
        first.send_signal(signal.SIGCONT)
        _, err = first.communicate(timeout=300)
    finally:
        first.send_signal(signal.SIGCONT)
        kill(first)
    assert second.returncode == 1
    line = one_error_line(second.stderr)
    assert f"--out {out}: another export-best is writing there" in line and f"pid {first.pid}" in line
    assert first.returncode == 0, err
    _whole(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]  # no temp folder, no lock file


def test_folder_appearing_at_out_during_an_export_is_left_untouched(study, tmp_path):
    out = tmp_path / "b"
    proc = _start_export(study, out)
    try:
        _paused_in_its_temp_folder(proc, out)
        out.mkdir()  # someone else's folder, made between the export's check and its rename
        (out / "notes.txt").write_text("not a bundle")
        proc.send_signal(signal.SIGCONT)
        _, err = proc.communicate(timeout=300)
    finally:
        proc.send_signal(signal.SIGCONT)
        kill(proc)
    assert proc.returncode == 1
    line = one_error_line(err)
    assert f"--out {out}: a folder that is not an earlier bundle appeared there" in line
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert (out / "notes.txt").read_text() == "not a bundle"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_overwrite_replaces_only_an_earlier_bundle_that_is_still_there(study, tmp_path):
    """--overwrite of an earlier bundle, which someone replaces by their own folder meanwhile."""
    out = tmp_path / "b"
    assert main(export_args(study, out)) == 0
    proc = subprocess.Popen([sys.executable, "-m", "histosweep.cli",
                             *export_args(study, out, "--overwrite")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _paused_in_its_temp_folder(proc, out)
        (out / "manifest.json").rename(out / "theirs.json")  # no longer a bundle of ours
        proc.send_signal(signal.SIGCONT)
        _, err = proc.communicate(timeout=300)
    finally:
        proc.send_signal(signal.SIGCONT)
        kill(proc)
    assert proc.returncode == 1, err
    assert (out / "theirs.json").is_file() and (out / "folds").is_dir()


def test_sigkilled_exports_temp_folder_is_removed_by_the_next(study, tmp_path, capsys):
    out = tmp_path / "b"
    proc = _start_export(study, out)
    try:
        leftover = _paused_in_its_temp_folder(proc, out)
    finally:
        kill(proc, signal.SIGKILL)
    assert leftover.is_dir()
    lookalike = tmp_path / ".b.abcdefgh.tmp"  # named like ours, but without our marker
    lookalike.mkdir()
    (lookalike / "keep.txt").write_text("someone's")
    other = tmp_path / ".b.x.abcdefgh.tmp"  # ours, but the temp folder of --out b.x
    other.mkdir()
    (other / TMP_MARKER).write_text("pid 1")

    assert main(export_args(study, out)) == 0
    err = capsys.readouterr().err
    assert f"removed {leftover}, the temp folder of an interrupted export" in err
    assert not leftover.exists()
    assert (lookalike / "keep.txt").read_text() == "someone's" and (other / TMP_MARKER).is_file()
    _whole(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["b", lookalike.name, other.name])


def test_export_lease_keeps_gc_off_its_candidates_until_it_ends(study, tmp_path, capsys):
    """A running export-best holds a lease on its candidates (a study system attr): gc plans to
    keep them while the export runs, and plans to delete them once it has ended and let go."""
    from histosweep.fleet import LEASE_PREFIX, live_leases
    from tests.search._helpers import load

    def gc_plan() -> dict:
        assert main(["gc", "demo", "--keep-top", "1", "--dry-run", "--json", "--storage",
                     study.storage, "--artifacts", str(study.artifacts)]) == 0
        return json.loads(capsys.readouterr().out)

    numbers = sorted(t.number for t in load("demo", study.storage).get_trials())
    out = tmp_path / "b"
    proc = _start_export(study, out)
    try:
        _paused_in_its_temp_folder(proc, out)  # past the choice of candidates, before the end
        leases = list(live_leases(load("demo", study.storage)).values())
        plan = gc_plan()
        proc.send_signal(signal.SIGCONT)
        _, err = proc.communicate(timeout=300)
    finally:
        proc.send_signal(signal.SIGCONT)
        kill(proc)
    assert proc.returncode == 0, err
    assert len(leases) == 1 and leases[0]["trials"] == numbers  # every candidate
    assert leases[0]["by"] == f"export-best on {socket.gethostname()} pid {proc.pid}"
    kept = {k["trial"]: k["reason"] for k in plan["kept"]}
    assert plan["deleted"] == [] and len(kept) == len(numbers)
    assert sum(reason.startswith("export lease: export-best on ") for reason in kept.values()) == 2
    after = load("demo", study.storage)
    # this export's lease is removed; a SIGKILLed export's (earlier in the module) stays stored
    # but is not live (its pid is gone on this host), and gc drops it
    assert not [k for k, v in after._storage.get_study_system_attrs(after._study_id).items()
                if k.startswith(LEASE_PREFIX) and v["by"].endswith(f"pid {proc.pid}")]
    assert not live_leases(after)
    assert len(gc_plan()["deleted"]) == 2  # the lease is gone: gc would clean them now
