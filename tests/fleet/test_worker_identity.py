"""Every worker process has its own identity: two workers started at the same moment on one host
(same slot label) never propose the same trial, write their own log files, and show apart."""

from __future__ import annotations

import pytest

from histosweep.fleet._supervisor import child_visible_device
from histosweep.search import UserError
from tests.search._helpers import cli, load, start_worker, tiny_space


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["tpe", "random", "qmc"])
def test_two_workers_started_together_never_propose_the_same_params(sampler, synth_root, tmp_path,
                                                                   sqlite_url):
    cli("create", "pair", "--data", str(synth_root), "--space", str(tiny_space(tmp_path, epochs=1)),
        "--folds", "2", "--pruner", "none", "--sampler", sampler, "--storage", sqlite_url)
    logs = tmp_path / "logs"
    # NOTE: 4 trials are enough: two workers drawing from one seed repeat their very first point
    workers = [start_worker("pair", sqlite_url, tmp_path / "a", "--n-trials", "4", log_dir=logs)
               for _ in range(2)]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    trials = [t for t in load("pair", sqlite_url).get_trials() if t.params]
    assert len(trials) == 4
    points = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(points)) == len(points), points
    pids = {t.user_attrs["pid"] for t in trials}
    assert pids == {w.pid for w in workers}  # both took trials, each under its own pid
    files = sorted(p.name for p in logs.glob("*.log"))
    assert len(files) == 2 and all(str(w.pid) in " ".join(files) for w in workers), files


def test_a_slot_gpu_maps_through_the_parents_visible_devices():
    assert child_visible_device("1", None) == "1"
    assert child_visible_device("0", "3") == "3"  # a Slurm task given the node's GPU 3
    assert child_visible_device("1", "2,5") == "5"
    with pytest.raises(UserError, match="only 1 GPU"):
        child_visible_device("1", "3")
