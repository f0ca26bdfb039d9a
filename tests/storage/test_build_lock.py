"""The build lock of a cache entry, with a real process holding it: a waiter learns who builds
(host, pid, start), a temp folder is live while its builder holds the lock or runs on this host
(whatever its age), and a killed builder's folder is found dead."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

from histosweep.storage import (
    TMP_MARKER,
    build_lock,
    dead_build_temps,
    is_locked,
    read_holder,
    sweep_dead_build_temps,
)

HOLD = """
import sys
from histosweep.storage import build_lock
with build_lock(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.readline()
"""


def _holder(target):
    """A process holding the build lock of `target` until a line arrives on its stdin."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(target)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def _aged_temp(folder, name: str, marker: str | None = None):
    tmp = folder / name
    tmp.mkdir()
    if marker is not None:
        (tmp / TMP_MARKER).write_text(marker)
    two_days_ago = time.time() - 2 * 86400
    for path in (tmp, *tmp.iterdir()):
        os.utime(path, (two_days_ago, two_days_ago))
    return tmp


def test_a_waiter_names_the_holder_and_gets_the_lock_once_it_is_released(tmp_path):
    target = tmp_path / "64-stretch"
    holder = _holder(target)
    try:
        seen, waiting, got = [], threading.Event(), threading.Event()

        def wait_for_it() -> None:
            def on_wait(who) -> None:
                seen.append(who)
                waiting.set()

            with build_lock(target, on_wait=on_wait):
                got.set()

        thread = threading.Thread(target=wait_for_it)
        thread.start()
        assert waiting.wait(60), "the waiter never reported waiting"
        assert not got.is_set()
        who = seen[0]
        assert (who.host, who.pid) == (socket.gethostname(), holder.pid)
        assert f"{socket.gethostname()}:{holder.pid} (started " in who.describe()
        holder.communicate("release\n", timeout=60)
        thread.join(60)
        assert got.is_set() and len(seen) == 1
    finally:
        if holder.poll() is None:
            holder.kill()
    assert read_holder(target) is None  # a released lock names nobody


def test_an_old_temp_folder_is_live_while_its_builder_holds_the_lock(tmp_path):
    target = tmp_path / "crop-32-stretch-m0.1"  # a name with a dot: the lock is still found
    holder = _holder(target)
    # no marker, two days old: only the lock says the build is alive
    tmp = _aged_temp(tmp_path, ".crop-32-stretch-m0.1.ab_c123.tmp")
    try:
        assert is_locked(target)
        assert dead_build_temps(tmp_path) == []
        assert sweep_dead_build_temps(tmp_path) == [] and tmp.is_dir()
    finally:
        holder.kill()
        holder.wait(60)
    assert not is_locked(target)
    assert sweep_dead_build_temps(tmp_path) == [tmp] and not tmp.exists()


def test_a_marker_keeps_a_temp_while_its_pid_runs_on_this_host(tmp_path):
    host = socket.gethostname()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(gone.stdout)  # reaped: no process has it now (pids are not reused at once)
    live = _aged_temp(tmp_path, ".a.xyz1.tmp", f"pid {os.getpid()} on {host}\n")
    dead = _aged_temp(tmp_path, ".b.xyz2.tmp", f"pid {dead_pid} on {host}\n")
    elsewhere = _aged_temp(tmp_path, ".c.xyz3.tmp", f"pid {os.getpid()} on not-{host}\n")
    lookalike = tmp_path / "d.tmp"  # not one of ours: no leading dot
    lookalike.mkdir()
    (tmp_path / ".e.xyz4.tmp").write_text("a file, not a build folder")
    assert dead_build_temps(tmp_path) == [dead, elsewhere]
    assert live.is_dir() and lookalike.is_dir() and (tmp_path / ".e.xyz4.tmp").is_file()
