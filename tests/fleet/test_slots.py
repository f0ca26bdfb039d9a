"""`--trials-per-gpu auto`: the slot arithmetic, the space's largest config, and the CPU path
through the real command (the CUDA measurement needs a GPU: see fleet/_slots.py)."""

from __future__ import annotations

import pytest

from histosweep.fleet._slots import (
    MAX_AUTO_SLOTS,
    largest_config,
    parse_trials_per_gpu,
    slots_from_memory,
)
from histosweep.search import Space, UserError
from tests.search._helpers import cli, load, tiny_space

GIB = 1 << 30


def test_slots_from_memory():
    # 80 GiB free -> 72 usable; 8 GiB peak -> 8 x 1.25 + 1 = 11 GiB a slot -> 6 slots
    assert slots_from_memory(80 * GIB, 8 * GIB) == 6
    assert slots_from_memory(140 * GIB, GIB // 8) == MAX_AUTO_SLOTS  # capped
    assert slots_from_memory(10 * GIB, 40 * GIB) == 1  # never 0: one trial shrinks on OOM
    assert slots_from_memory(23 * GIB, 8 * GIB) == 1 and slots_from_memory(25 * GIB, 8 * GIB) == 2


@pytest.mark.parametrize(("text", "value"), [("auto", "auto"), (" AUTO", "auto"), ("3", 3)])
def test_parse_trials_per_gpu(text, value):
    assert parse_trials_per_gpu(text) == value


@pytest.mark.parametrize("text", ["0", "-1", "two", ""])
def test_parse_trials_per_gpu_refuses(text):
    with pytest.raises(UserError, match="count >= 1 or auto"):
        parse_trials_per_gpu(text)


def test_largest_config_picks_what_needs_most_memory():
    space = Space.from_dict({
        "resolution": {"choices": [384, 224]},
        "batch_size": {"low": 8, "high": 32},
        "accumulation": {"choices": [2, 1]},
        "image_backbone": {"choices": ["convnext_tiny", "convnext_atto"]},
        "mask_backbone": {"choices": ["resnet10t", "resnet18"]},
        "lr": {"low": 1e-5, "high": 1e-3, "log": True},
        "epochs": {"value": 3},
    })
    cfg = largest_config(space)
    assert (cfg.resolution, cfg.batch_size, cfg.accumulation) == (384, 32, 1)
    assert (cfg.image_backbone, cfg.mask_backbone) == ("convnext_tiny", "resnet18")
    assert cfg.epochs == 3 and cfg.lr == 1e-5  # the rest: the space's first values


@pytest.mark.slow
def test_auto_on_the_cpu_runs_one_slot(synth_root, tmp_path, sqlite_url):
    cli("create", "auto", "--data", str(synth_root), "--space", str(tiny_space(tmp_path, epochs=1)),
        "--folds", "2", "--pruner", "none", "--storage", sqlite_url)
    proc = cli("worker", "auto", "--storage", sqlite_url, "--artifacts", str(tmp_path / "a"),
               "--gpus", "cpu", "--trials-per-gpu", "auto", "--n-trials", "1", "--no-progress",
               "--log-dir", str(tmp_path / "logs"))
    assert "--trials-per-gpu auto on the CPU: 1 worker slot" in proc.stderr
    assert [p.name.rsplit("-", 1)[1] for p in (tmp_path / "logs").glob("*.log")] == ["cpu.log"]
    assert len(load("auto", sqlite_url).get_trials()) == 1


def test_a_bad_count_is_one_line_and_exit_1(tmp_path, sqlite_url):
    proc = cli("worker", "nope", "--storage", sqlite_url, "--trials-per-gpu", "0", check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == ["error: --trials-per-gpu '0': use a count >= 1 or auto"]


def test_the_measuring_child_starts_and_answers():
    """The spawned child that measures (no GPU here: asked about no GPU) imports and returns."""
    from histosweep.fleet._slots import measure_gpus

    cfg = largest_config(Space.from_dict({"resolution": {"value": 32}}))
    assert measure_gpus(cfg, [], n_rows=10) == {}


def test_peaks_cache_round_trip_and_a_damaged_file_means_measure_again(tmp_path):
    from histosweep.fleet._slots import _read_peaks, _write_peaks

    path = tmp_path / "cache" / "slot-peaks.json"
    assert _read_peaks(path) == {}
    _write_peaks(path, {"NVIDIA H200|torch 2|{}": 123})
    assert _read_peaks(path) == {"NVIDIA H200|torch 2|{}": 123}
    path.write_text("[not a dict")
    assert _read_peaks(path) == {}
