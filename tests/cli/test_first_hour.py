"""Rough edges a newcomer met in the first hour (issue 27): each is one line or the right
behaviour. Exercise: `python -m pytest -q tests/cli/test_first_hour.py`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.ops._helpers import free_port


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "histosweep", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


def _one_line(proc: subprocess.CompletedProcess, code: int = 1) -> str:
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def _empty_study(tmp_path: Path) -> str:
    import optuna

    from histosweep.storage import open_storage

    url = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.create_study(study_name="s", storage=open_storage(url), direction="maximize")
    return url


def test_dashboard_on_a_missing_artifact_folder_is_one_line_and_creates_nothing(tmp_path):
    url = _empty_study(tmp_path)
    typo = tmp_path / "typo" / "artifacts"
    proc = _run("dashboard", "--storage", url, "--artifacts", str(typo),
                "--port", str(free_port()), cwd=tmp_path)
    line = _one_line(proc)
    assert line.startswith(f"error: no artifact folder at {typo}") and "--artifacts" in line
    assert not (tmp_path / "typo").exists()


def test_export_best_leaves_no_artifact_folder_behind(tmp_path):
    url = _empty_study(tmp_path)
    proc = _run("export-best", "s", "--storage", url, "--artifacts", str(tmp_path / "typo"),
                "--out", str(tmp_path / "bundle"), cwd=tmp_path)
    _one_line(proc)
    assert not (tmp_path / "typo").exists() and not (tmp_path / "bundle").exists()


def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path):
    """`histosweep studies | head -0`: the pipe's reader is gone before the first write."""
    import os

    url = _empty_study(tmp_path)
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run([sys.executable, "-m", "histosweep", "studies", "--storage", url],
                              stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=300)
    finally:
        os.close(write_end)
    assert (proc.returncode, proc.stderr) == (141, "")


def test_a_mistyped_flag_gets_the_close_flag_of_its_subcommand(tmp_path):
    proc = _run("worker", "s", "--ntrials", "3", cwd=tmp_path)
    assert _one_line(proc, code=2) == (
        "histosweep worker: error: unrecognized arguments: --ntrials 3; did you mean --n-trials?"
        " (histosweep worker --help lists its flags)")
    far = _one_line(_run("synth", str(tmp_path / "d"), "--storage", "x", cwd=tmp_path), code=2)
    assert "unrecognized arguments: --storage x (histosweep synth --help" in far
    assert "did you mean" not in far and not (tmp_path / "d").exists()


def test_a_mistyped_command_gets_the_close_command(tmp_path):
    """Python 3.11's argparse lists all nineteen commands; one line names the close one (exit 2)."""
    assert _one_line(_run("exprot-best", "s", cwd=tmp_path), code=2) == (
        "histosweep: error: unknown command 'exprot-best'; did you mean 'export-best'?"
        " (histosweep --help lists the commands)")
    assert _one_line(_run("studys", cwd=tmp_path), code=2).endswith("did you mean 'studies'? "
                                                                   "(histosweep --help lists the commands)")
    far = _one_line(_run("xyzzy", cwd=tmp_path), code=2)
    assert far == "histosweep: error: unknown command 'xyzzy' (histosweep --help lists the commands)"
    assert _run("--version", cwd=tmp_path).returncode == 0


def test_a_commands_option_before_the_command_says_where_it_goes(tmp_path):
    assert _one_line(_run("--debug", "studies", cwd=tmp_path), code=2) == (
        "histosweep: error: --debug goes after the command: histosweep studies --debug ... "
        "(histosweep studies --help lists its options)")
    # not an option of that command either: the plain unrecognized-flag line
    assert "unrecognized arguments: --nope" in _one_line(_run("--nope", "studies", cwd=tmp_path), code=2)


FROZEN = '[params]\ntrain_mode = "frozen"\nimage_backbone = "test_vit"\nresolution = 32\n'


def test_frozen_with_a_random_backbone_is_a_warning_line(synth_root, tmp_path, capsys):
    from histosweep.cli import main

    space = tmp_path / "space.toml"
    space.write_text(FROZEN + "pretrained = false\n")
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"")  # create never reads it; only whether the space names one matters
    staged = tmp_path / "staged.toml"
    staged.write_text(FROZEN + f'pretrained = false\nimage_pretrained_path = "{weights}"\n')
    base = ["create", "--data", str(synth_root), "--folds", "2",
            "--storage", f"sqlite:///{tmp_path / 's.db'}"]
    assert main([*base[:1], "random", *base[1:], "--space", str(space)]) == 0
    warned = [x for x in capsys.readouterr().err.splitlines() if x.startswith("warning: ")]
    assert warned == [f'warning: {space}: train_mode = "frozen" with pretrained = false embeds '
                      "with a randomly initialised image_backbone; set pretrained = true (or "
                      "image_pretrained_path) for features worth a head"]
    assert main([*base[:1], "staged", *base[1:], "--space", str(staged)]) == 0
    assert "randomly initialised" not in capsys.readouterr().err

    embed = ["embed", str(synth_root), "--backbone", "test_vit", "--resolution", "32",
             "--cache", str(tmp_path / "c"), "--device", "cpu", "--no-progress"]
    assert main(embed) == 0
    assert ("warning: --backbone test_vit without --pretrained or --weights: the embeddings "
            "come from a randomly initialised backbone") in capsys.readouterr().err


def test_prepare_with_a_tiles_only_space_builds_no_whole_picture_cache(tmp_path, capsys):
    import json

    from histosweep.cli import main

    out = tmp_path / "synth"
    assert main(["synth", str(out), "--n-train", "24", "--n-test", "2", "--short-side", "48"]) == 0
    space = tmp_path / "space.toml"
    space.write_text('[params]\ninput_mode = "tiles"\ntile_size = 32\ntiles_per_image = 2\n')
    capsys.readouterr()
    assert main(["prepare", str(out), "--space", str(space), "--cache", str(tmp_path / "c"),
                 "--workers", "1", "--no-progress", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert list(doc["cache"]) == ["tiles-32-s1-k2-m0.5"]
    built = {p.name for p in Path(doc["cache_root"]).iterdir() if p.is_dir()}
    assert "384-stretch" not in built and "tiles-32-s1-k2-m0.5" in built


def test_export_best_wording_says_ensemble_not_best_trial(tmp_path):
    import optuna
    import pytest

    from histosweep.bundle._source import pick_trial
    from histosweep.exceptions import HistosweepError

    helps = _run("--help", cwd=tmp_path).stdout + _run("export-best", "--help", cwd=tmp_path).stdout
    assert "bundle the best trial" not in helps
    assert "select an ensemble across the top trials" in helps
    study = optuna.create_study(study_name="s")
    study.tell(study.ask(), state=optuna.trial.TrialState.FAIL)
    with pytest.raises(HistosweepError) as info:
        pick_trial(study, 0)
    assert "leave out --trial to select an ensemble across the top trials" in str(info.value)
    assert "for the best one" not in str(info.value)
