"""`histosweep status STUDY --watch`: running trials' worker, fold, epoch and time left, refreshed
through the real CLI on a study whose trials are written directly with optuna (no training)."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys

import optuna
import pytest

from tests.search._helpers import cli, load, tiny_space

EPOCHS = 4  # the space's max epochs: step = fold * 4 + epoch
FOLDS = 3


@pytest.fixture()
def study_with_running(synth_root, tmp_path, sqlite_url) -> str:
    """A complete trial (3 folds of 1000 s), a running trial at fold 2 epoch 3, one not started."""
    cli("create", "w", "--data", str(synth_root), "--space", str(tiny_space(tmp_path, epochs=EPOCHS)),
        "--folds", str(FOLDS), "--storage", sqlite_url, "--no-reference")
    study = load("w", sqlite_url)
    study.add_trial(optuna.trial.create_trial(
        value=0.5, user_attrs={"config": {"epochs": EPOCHS}, "fold_seconds": [1000.0] * FOLDS},
    ))
    for host, slot, step in (("host-a", "gpu0", 1 * EPOCHS + 2), ("host-b", "gpu3", None)):
        trial = study.ask()
        for key, value in (("host", host), ("slot", slot), ("device", f"cuda:{slot[-1]}"),
                           ("config", {"epochs": EPOCHS})):
            trial.set_user_attr(key, value)
        if step is not None:
            trial.report(0.4, step)
    return "w"


def test_watch_prints_count_snapshots_with_fold_epoch_and_time_left(study_with_running, sqlite_url):
    proc = cli("status", study_with_running, "--storage", sqlite_url, "--watch", "--interval", "0.2",
               "--count", "3")
    out = proc.stdout
    assert out.count("refresh ") == 3 and "refresh 3/3 at" in out
    assert "\x1b[" not in out  # not a terminal: plain snapshots, no redraw codes
    last = out[out.index("refresh 3/3"):]
    assert "running: 2" in last and "complete 1" in last and "best: trial 0" in last
    rows = {line.split()[0]: line.split() for line in last.splitlines() if "host-" in line}
    # trial 1: last step 6 = fold 1 * 4 + epoch 2 -> fold 2/3, epoch 3/4 (1-based)
    assert rows["1"][1:5] == ["host-a/gpu0", "cuda:0", "2/3", "3/4"]
    assert rows["2"][1:5] == ["host-b/gpu3", "cuda:3", "-", "-"]
    # not reported yet: ~ marks the estimate from complete trials (12 epochs x 250 s - elapsed)
    assert rows["2"][6][:3] in ("49m", "50m") and rows["2"][7] == "~"
    assert rows["1"][7] != "~"  # its own pace


def test_watch_json_is_one_document_per_refresh(study_with_running, sqlite_url):
    proc = cli("status", study_with_running, "--storage", sqlite_url, "--watch", "--interval", "0.2",
               "--count", "2", "--json")
    docs = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [d["refresh"] for d in docs] == [1, 2]
    running = {r["number"]: r for r in docs[-1]["running"]}
    started = running[1]
    assert (started["fold"], started["epoch"], started["folds"], started["epochs"]) == (1, 2, 3, 4)
    assert started["host"] == "host-a" and started["slot"] == "gpu0" and started["last_step"] == 6
    # its own pace: elapsed over the 7 epochs reported, times the 5 left
    assert started["eta_from"] == "trial"
    assert started["eta_s"] == pytest.approx(started["elapsed_s"] / 7 * 5, abs=0.2)
    waiting = running[2]
    assert waiting["fold"] is None and waiting["eta_from"] == "finished"
    # complete trials: 3000 s / 12 epochs = 250 s per epoch; 12 epochs minus what has elapsed
    assert 3000 - waiting["elapsed_s"] - 0.2 <= waiting["eta_s"] <= 3000


def test_watch_redraws_in_place_on_a_terminal(study_with_running, sqlite_url):
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "histosweep.cli", "status", study_with_running, "--storage", sqlite_url,
         "--watch", "--interval", "0.2", "--count", "2"],
        stdout=slave, stderr=subprocess.PIPE, text=True,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=120) == 0, proc.stderr.read()
    out = b"".join(chunks).decode()
    assert out.count("\x1b[H\x1b[2J") == 2 and "refresh 2/2" in out and "3/4" in out


def test_ctrl_c_ends_the_watch_with_exit_0(study_with_running, sqlite_url):
    proc = subprocess.Popen(
        [sys.executable, "-m", "histosweep.cli", "status", study_with_running, "--storage", sqlite_url,
         "--watch", "--interval", "30"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        first = [proc.stdout.readline()]  # blocks until the first snapshot is out
        while "host-b" not in first[-1]:  # its last row
            first.append(proc.stdout.readline())
            assert first[-1], first  # EOF before the snapshot's end
        assert first[0].startswith("refresh 1 at") and any("host-a/gpu0" in x for x in first)
        proc.send_signal(signal.SIGINT)  # lands in the 30 s wait
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=60)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert "refresh 2" not in out  # ended in the wait, before a second refresh


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--count", "2"), "only apply with --watch"),
        (("--watch", "--interval", "0"), "--interval 0: give a number of seconds > 0"),
        (("--watch", "--count", "0"), "--count 0: give a number of refreshes >= 1"),
    ],
)
def test_watch_option_errors_are_one_line(study_with_running, sqlite_url, args, needle):
    proc = cli("status", study_with_running, "--storage", sqlite_url, *args, check=False)
    assert proc.returncode == 1 and needle in proc.stderr and "Traceback" not in proc.stderr


def test_status_says_when_the_stored_estimate_was_made(study_with_running, sqlite_url):
    """An export's BBC-CV figure carries its time, its age and the trials finished since."""
    import datetime

    from histosweep.trial_files import ESTIMATE_ATTR

    study = load(study_with_running, sqlite_url)
    made = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=3, minutes=5)
    at = made.isoformat(timespec="seconds")
    record = {"ensemble": {"mean": 0.61, "ci95": [0.55, 0.67]}, "method": "bagged",
              "search_gain": None, "by": "export-best", "at": at}
    study.set_user_attr(ESTIMATE_ATTR, record)  # as export-best keeps it
    # the complete trial (created with this test's clock) finished after the export
    text = cli("status", study_with_running, "--storage", sqlite_url).stdout
    local = datetime.datetime.fromisoformat(at).astimezone()
    assert (f"BBC-CV estimate (export-best, bagged selection): 0.6100 [0.5500, 0.6700], "
            f"from the export of {local:%Y-%m-%d %H:%M %Z}, 3 h ago; 1 trial(s) finished since"
            in text.splitlines())
    doc = json.loads(cli("status", study_with_running, "--storage", sqlite_url, "--json").stdout)
    assert doc["estimate_at"] == at and doc["trials_finished_since_estimate"] == 1
    assert doc["estimate"]["ensemble"]["mean"] == 0.61  # the existing key stays

    del record["at"]  # an estimate stored before its time was
    study.set_user_attr(ESTIMATE_ATTR, record)
    text = cli("status", study_with_running, "--storage", sqlite_url).stdout
    assert "from the export at a time not recorded (histosweep estimate STUDY makes a current one)" in text
    doc = json.loads(cli("status", study_with_running, "--storage", sqlite_url, "--json").stdout)
    assert doc["estimate_at"] is None and doc["trials_finished_since_estimate"] is None
