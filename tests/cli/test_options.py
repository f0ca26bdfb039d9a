"""Each command takes only the common options it reads (--storage, --artifacts, --json), plus
--debug; a stray one is a usage error (exit 2) that never echoes a storage password."""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys

import pytest

from histosweep.cli import build_parser, main
from histosweep.cli._common import COMMANDS

EXPECTED = {
    "synth": {"--json"},
    "prepare": {"--json"},
    "embed": {"--json"},
    "create": {"--storage", "--json"},
    "worker": {"--storage", "--artifacts"},
    "status": {"--storage", "--artifacts", "--json"},  # --artifacts: the study's bytes in the store
    "budget": {"--storage", "--json"},
    "check": {"--storage", "--artifacts", "--json"},
    "gc": {"--storage", "--artifacts", "--json"},
    "enqueue": {"--storage", "--json"},
    "studies": {"--storage", "--json"},
    "trials": {"--storage", "--json"},
    "delete-study": {"--storage", "--json"},
    "dashboard": {"--storage", "--artifacts"},
    "export-best": {"--storage", "--artifacts", "--json"},
    "estimate": {"--storage", "--artifacts", "--json"},
    "predict": {"--json"},
    "demo": {"--json"},
    "storage-proxy": {"--storage"},
}
COMMON = {"--storage", "--artifacts", "--json"}


def _options(command: str) -> set[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {opt for action in sub.choices[command]._actions for opt in action.option_strings}


def test_every_command_declares_its_common_options():
    for name, (module_name, _) in COMMANDS.items():
        module = importlib.import_module(f"histosweep.cli.{module_name}")
        assert hasattr(module, "OPTIONS"), f"{name}: declare OPTIONS in histosweep.cli.{module_name}"
    assert set(EXPECTED) == set(COMMANDS)  # a new command gets a row here


@pytest.mark.parametrize("command", sorted(EXPECTED))
def test_command_takes_only_the_common_options_it_reads(command):
    options = _options(command)
    assert options & COMMON == EXPECTED[command]
    assert "--debug" in options


def test_synth_with_storage_is_a_usage_error(tmp_path):
    out = tmp_path / "synth"
    proc = subprocess.run([sys.executable, "-m", "histosweep.cli", "synth", str(out), "--storage", "x"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "unrecognized arguments: --storage x" in proc.stderr
    assert not out.exists()  # nothing was written


@pytest.mark.parametrize("argv", [
    ["prepare", "DATA", "--artifacts", "a"],
    ["predict", "B", "--images", "T", "--out", "s.csv", "--storage", "sqlite:///x.db"],
    ["demo", "--artifacts", "a"],
    ["worker", "s", "--json"],
    ["dashboard", "--json"],
])
def test_stray_common_option_is_a_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "expected"), [
    (["export-best", "s", "--out", "o", "--ensembl", "greedy"],
     "histosweep export-best: error: unrecognized arguments: --ensembl greedy; did you mean --ensemble?"),
    (["worker", "s", "--n-trial", "3"],
     "histosweep worker: error: unrecognized arguments: --n-trial 3; did you mean --n-trials?"),
    (["studies", "--stor=sqlite:///x.db"],
     "histosweep studies: error: unrecognized arguments: --stor=sqlite:///x.db; did you mean --storage?"),
    (["--vers"], "histosweep: error: unrecognized arguments: --vers; did you mean --version?"),
])
def test_an_abbreviated_flag_is_a_typo_not_a_prefix(argv, expected, capsys):
    """allow_abbrev is off on every parser: argparse took `--ensembl` for --ensemble, silently."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith(expected)


def test_no_parser_takes_abbreviations():
    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert not parser.allow_abbrev and not any(sub.allow_abbrev for sub in commands.choices.values())


def test_usage_error_hides_the_storage_password(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["prepare", "DATA", "--storage", "postgresql://u:s3cret-pw@db:5432/h"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert "s3cret-pw" not in err and "postgresql://u:***@db:5432/h" in err


@pytest.mark.parametrize(("command", "device", "expected"), [
    (["predict", "B", "--images", "T", "--out", "s.csv"], "tpu", "--device 'tpu': use cpu, cuda or cuda:N"),
    (["export-best", "s", "--out", "o", "--storage", "sqlite:///{tmp}/x.db"], "cuda:99",
     "--device cuda:99: CUDA GPU 99 is not visible here"),
])
def test_device_is_checked_before_any_work(command, device, expected, tmp_path, capsys):
    argv = [part.format(tmp=tmp_path) for part in command] + ["--device", device]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {expected}") and len(err.splitlines()) == 1
    assert not (tmp_path / "x.db").exists()  # export-best stopped before opening the storage


def test_prepare_no_progress_keeps_stderr_quiet(tmp_path):
    data = tmp_path / "synth"
    assert main(["synth", str(data), "--n-train", "24", "--n-test", "1", "--short-side", "40"]) == 0
    base = [sys.executable, "-m", "histosweep.cli", "prepare", str(data), "--resolutions", "32",
            "--workers", "1", "--json"]
    quiet = subprocess.run(base + ["--cache", str(tmp_path / "c1"), "--no-progress"],
                           capture_output=True, text=True, timeout=300)
    loud = subprocess.run(base + ["--cache", str(tmp_path / "c2")], capture_output=True, text=True,
                          timeout=300)
    assert quiet.returncode == 0 and loud.returncode == 0, quiet.stderr + loud.stderr
    assert "it/s" in loud.stderr or "%|" in loud.stderr  # bars are on by default
    assert "it/s" not in quiet.stderr and "%|" not in quiet.stderr


@pytest.mark.parametrize("command", ["export-best", "estimate"])
def test_trial_given_twice_keeps_both(command):
    # `--trial 2 --trial 3` exported trial 3 alone (the last --trial replaced the first)
    extra = ["--out", "b"] if command == "export-best" else []
    args = build_parser().parse_args([command, "s", *extra, "--trial", "2", "--trial", "3", "4"])
    assert args.trial == [2, 3, 4]
    assert build_parser().parse_args([command, "s", *extra]).trial == []


@pytest.mark.parametrize(("argv", "needle"), [
    (["export-best", "s", "--out", "b", "--ensemble", "greedyy"], "invalid choice: 'greedyy'"),
    (["budget", "s", "--set", "abc"], "invalid float value: 'abc'"),
    (["export-best", "s", "--out", "b", "--single", "--trial", "3"], "not allowed with argument --single"),
])
def test_a_bad_value_is_one_usage_line(argv, needle, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and needle in err, err
    assert "usage:" not in err and err.rstrip().endswith("--help lists its options)")


def test_the_clis_spelled_out_estimate_defaults_match_the_bundles():
    # cli._export spells these so that --help needs no numpy; they must not drift apart
    from histosweep.bundle import _bootstrap, _selection
    from histosweep.cli import _export

    assert _export.DEFAULT_METHOD == _selection.DEFAULT_METHOD == "cmaes"
    assert _export.METHODS == _selection.METHODS
    assert _export.BBC_RESAMPLES == _bootstrap.BBC_RESAMPLES
