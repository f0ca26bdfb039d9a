"""A multi-slot worker's terminal: one `[slot] ... epoch` line per epoch and slot, no tqdm bars;
--log-format json writes JSON lines to stderr and the log files. Real worker processes."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from histosweep.fleet._supervisor import WorkerOptions, _child_argv, setup_logging
from histosweep.search import UserError
from tests.search._helpers import cli, tiny_space

pytestmark = pytest.mark.slow
SLOTS = {"cpu.0", "cpu.1"}


def _worker(url: str, artifacts, logs, n_trials: int, *extra: str, slots: int = 2) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "histosweep.cli", "worker", "logs", "--storage", url, "--artifacts",
         str(artifacts), "--gpus", "cpu", "--trials-per-gpu", str(slots), "--n-trials", str(n_trials),
         "--heartbeat", "10", "--log-dir", str(logs), *extra],
        capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def runs(synth_root, tmp_path_factory):
    """The same study: 2 trials with text logs (bars left on), then 2 more with JSON logs."""
    tmp = tmp_path_factory.mktemp("worker-logs")
    url = f"sqlite:///{tmp / 'study.db'}"
    cli("create", "logs", "--data", str(synth_root), "--space", str(tiny_space(tmp, epochs=1)),
        "--folds", "2", "--pruner", "none", "--storage", url)
    text = _worker(url, tmp / "artifacts", tmp / "text-logs", 2)
    as_json = _worker(url, tmp / "artifacts", tmp / "json-logs", 4, "--log-format", "json")
    return text, as_json, tmp


def test_slots_print_epoch_lines_not_progress_bars(runs):
    text, _, _ = runs
    err = text.stderr
    assert "\r" not in err and "it/s" not in err and "%|" not in err  # no tqdm bar anywhere
    epoch = re.compile(r"\[(cpu\.[01])\] INFO trial (\d+) fold ([12])/2 epoch 1/1: train loss "
                       r"\d+\.\d{4}, val F1 \d\.\d{4}, \d+\.\d s$")
    lines = [m for m in map(epoch.search, err.splitlines()) if m]
    assert len(lines) == 4  # 2 trials x 2 folds x 1 epoch, one line each
    # each trial's lines come from the one slot that ran it
    slot_of = {}
    for m in lines:
        assert slot_of.setdefault(m.group(2), m.group(1)) == m.group(1)
    assert set(slot_of.values()) <= SLOTS


def test_json_log_format_on_stderr_and_in_log_files(runs):
    _, as_json, tmp = runs
    docs = [json.loads(line) for line in as_json.stderr.splitlines() if line.strip()]
    assert docs and all({"ts", "level", "slot", "msg"} <= set(d) for d in docs)
    assert {d["slot"] for d in docs} == SLOTS  # both slots logged
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", d["ts"]) for d in docs)
    epochs = [d for d in docs if "epoch" in d]
    assert len(epochs) == 4 and all(d["epoch"] == 0 and d["fold"] in (0, 1) for d in epochs)
    assert {d["trial"] for d in epochs} == {2, 3}  # the two new trials of this run
    files = sorted((tmp / "json-logs").glob("logs-*-cpu.*.log"))
    assert len(files) == 2
    in_files = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    assert len([d for d in in_files if "epoch" in d]) == 4


@pytest.fixture(scope="module")
def single_json(runs):
    """One more trial of the same study by a single slot with --log-format json and bars left on
    (no --no-progress), as `histosweep worker STUDY --log-format json 2> err` runs it."""
    _, _, tmp = runs
    return _worker(f"sqlite:///{tmp / 'study.db'}", tmp / "artifacts", tmp / "single-logs", 5,
                   "--log-format", "json", slots=1)


def test_single_slot_json_has_no_bars_and_logs_epochs_as_json(single_json):
    err = single_json.stderr
    assert "\r" not in err and "it/s" not in err and "%|" not in err  # no tqdm bar anywhere
    docs = [json.loads(line) for line in err.splitlines() if line.strip()]  # every line is JSON
    assert docs and {d["slot"] for d in docs} == {"cpu"}
    epochs = [d for d in docs if "epoch" in d]  # what the bars would have shown, as JSON lines
    assert [(d["trial"], d["fold"], d["epoch"]) for d in epochs] == [(4, 0, 0), (4, 1, 0)]
    assert [d["msg"].split(":")[0] for d in epochs] == ["trial 4 fold 1/2 epoch 1/1",
                                                        "trial 4 fold 2/2 epoch 1/1"]


def test_fold_lines_name_the_slot_once_and_count_folds_from_one(runs, single_json):
    text, as_json, _ = runs
    assert "] INFO [" not in text.stderr  # the formatter's slot prefix, not a second one
    fold = re.compile(r"\[(cpu\.[01])\] INFO trial (\d+) fold ([12])/2: val F1 \d\.\d{4}, \d+\.\d s$")
    lines = [m for m in map(fold.search, text.stderr.splitlines()) if m]
    assert sorted((int(m.group(2)), m.group(3)) for m in lines) == [(0, "1"), (0, "2"), (1, "1"), (1, "2")]
    for proc in (as_json, single_json):
        docs = [json.loads(line) for line in proc.stderr.splitlines() if line.strip()]
        assert not [d["msg"] for d in docs if d["msg"].startswith("[")]  # the slot is its own field
        folds = [d for d in docs if "fold" in d and "epoch" not in d]
        assert folds and all(  # 1-based in the message, the `fold` field stays 0-based
            re.fullmatch(rf"trial {d['trial']} fold {d['fold'] + 1}/2: val F1 \d\.\d{{4}}, \d+\.\d s", d["msg"])
            for d in folds)
        epochs = [d for d in docs if "epoch" in d]
        assert epochs and all(d["msg"].startswith(f"trial {d['trial']} fold {d['fold'] + 1}/2 epoch ")
                              for d in epochs)


def test_children_always_run_without_bars():
    for progress in (True, False):
        argv = _child_argv(WorkerOptions(study="s", storage=None, artifacts=None, progress=progress,
                                         log_format="json"))
        assert "--no-progress" in argv and argv[argv.index("--log-format") + 1] == "json"


def test_unknown_log_format_is_a_usage_error():
    proc = subprocess.run([sys.executable, "-m", "histosweep.cli", "worker", "s", "--log-format",
                           "xml"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "invalid choice: 'xml'" in proc.stderr


def test_a_log_dir_the_system_refuses_is_one_user_error(tmp_path):
    # the CLI's check passes what os.access allows (root: /proc); the mkdir can still fail
    (tmp_path / "file").write_text("")
    opts = WorkerOptions(study="s", storage=None, artifacts=None, log_dir=str(tmp_path / "file" / "logs"))
    with pytest.raises(UserError, match=r"^--log-dir .*/file/logs: cannot write the worker log there \(Not a directory\); pass a folder"):
        setup_logging(opts, "cpu")
