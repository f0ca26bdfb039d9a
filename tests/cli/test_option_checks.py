"""Nonsensical or conflicting options are refused before any work: one line on stderr naming the
value and the fix (exit 1), or an argparse usage error for a conflict (exit 2); nothing on disk."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def histosweep(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the real command."""
    return subprocess.run([sys.executable, "-m", "histosweep", *args], capture_output=True,
                          text=True, timeout=300, cwd=cwd)


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    """The single `error: ...` line of a refused command (exit 1, no traceback)."""
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "unexpected" not in lines[0]
    return lines[0]


def test_create_refuses_skip_if_exists_with_force(tmp_path):
    db = tmp_path / "s.db"
    proc = histosweep("create", "s", "--data", str(tmp_path), "--storage", f"sqlite:///{db}",
                      "--skip-if-exists", "--force")
    assert proc.returncode == 2
    assert "argument --force: not allowed with argument --skip-if-exists" in proc.stderr
    assert not db.exists()


@pytest.mark.parametrize(("args", "expected"), [
    (("--n-trials", "0"), "error: --n-trials 0: give a number of finished trials >= 1"),
    (("--n-trials", "-1"), "error: --n-trials -1: give a number of finished trials >= 1"),
    (("--timeout", "-5"), "error: --timeout -5: give a number of seconds > 0"),
    (("--timeout", "0"), "error: --timeout 0: give a number of seconds > 0"),
    (("--heartbeat", "0"), "error: --heartbeat 0: give a number of seconds >= 1"),
])
def test_worker_refuses_a_run_that_does_nothing(tmp_path, args, expected):
    db, logs = tmp_path / "s.db", tmp_path / "logs"
    proc = histosweep("worker", "s", "--storage", f"sqlite:///{db}", "--log-dir", str(logs), *args)
    assert one_error_line(proc).startswith(expected)
    assert not db.exists() and not logs.exists()  # refused before the storage was opened


@pytest.mark.parametrize("gpus", ["0,0", "1, 0,1", "0,00"])
def test_worker_refuses_a_gpu_named_twice(tmp_path, gpus):
    """--gpus 0,0 would start two slots both labelled gpu0 (one log file); --trials-per-gpu is the
    way to run two trials on one GPU. check says the same."""
    db, logs = tmp_path / "s.db", tmp_path / "logs"
    twice = "0" if "00" in gpus else gpus.split(",")[-1].strip()
    expected = (f"error: --gpus {gpus}: GPU {twice} is named twice; name each GPU once "
                "(--trials-per-gpu 2 runs two trials on each GPU)")
    proc = histosweep("worker", "s", "--gpus", gpus, "--storage", f"sqlite:///{db}", "--log-dir", str(logs))
    assert one_error_line(proc) == expected
    assert not db.exists() and not logs.exists()
    check = histosweep("check", "s", "--gpus", gpus, "--storage", f"sqlite:///{db}")
    assert check.returncode == 1 and expected.replace("error: ", "error: gpus: ") in check.stderr.splitlines()


def test_worker_refuses_a_log_dir_under_a_file(tmp_path):
    db, space = tmp_path / "s.db", tmp_path / "space.toml"
    space.write_text("[params]\n")
    log_dir = f"{space}/x"
    proc = histosweep("worker", "s", "--storage", f"sqlite:///{db}", "--log-dir", log_dir)
    line = one_error_line(proc)
    assert line.startswith(f"error: --log-dir {log_dir}: {space} is a file, not a folder")
    assert not db.exists() and space.read_text() == "[params]\n"


def test_trials_refuses_json_with_another_format(tmp_path):
    import optuna

    url = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="s", storage=url)
    study.enqueue_trial({"x": 1.0})
    proc = histosweep("trials", "s", "--storage", url, "--format", "csv", "--json")
    assert one_error_line(proc) == ("error: --json and --format csv ask for two formats; "
                                    "drop --json or --format csv")
    assert proc.stdout == ""
    for args in (("--json",), ("--json", "--format", "json"), ("--format", "json")):
        listed = histosweep("trials", "s", "--storage", url, *args)
        assert listed.returncode == 0, listed.stderr
        assert [t["state"] for t in json.loads(listed.stdout)["trials"]] == ["WAITING"]
    csv = histosweep("trials", "s", "--storage", url, "--format", "csv")
    assert csv.returncode == 0 and csv.stdout.startswith("number,")


def test_gc_help_and_behaviour_agree_that_keep_top_is_required():
    helped = histosweep("gc", "--help")
    assert helped.returncode == 0
    keep_top = " ".join(helped.stdout.split("--keep-top N", 2)[2].split("--dry-run")[0].split())
    assert keep_top.startswith("required:") and "(default 20)" not in keep_top
    proc = histosweep("gc", "s")
    assert proc.returncode == 2 and "the following arguments are required: --keep-top" in proc.stderr


@pytest.mark.parametrize(("args", "expected"), [
    (("--folds", "1"), "error: --folds 1: need at least 2 folds"),
    (("--trials", "0"), "error: --trials 0: give a number of finished trials >= 1"),
    (("--workers", "0"), "error: --workers 0: give a number of CPU worker processes >= 1"),
])
def test_demo_checks_its_options_before_writing(tmp_path, args, expected):
    workdir = tmp_path / "d0"
    proc = histosweep("demo", "--workdir", str(workdir), "--no-progress", *args, cwd=tmp_path)
    assert one_error_line(proc) == expected
    assert not workdir.exists() and sorted(p.name for p in tmp_path.iterdir()) == []


def test_demo_refuses_a_workdir_under_a_file(tmp_path):
    space = tmp_path / "some_file.toml"
    space.write_text("x = 1\n")
    proc = histosweep("demo", "--workdir", str(space / "x"), "--no-progress", cwd=tmp_path)
    assert one_error_line(proc) == (f"error: --workdir {space / 'x'}: {space} is a file, not a "
                                    "folder; pass a folder path")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["some_file.toml"]


@pytest.mark.parametrize(("args", "expected"), [
    (("--modes", ""), "error: --modes '': use comma-separated resize modes of stretch, pad, reflect"),
    (("--modes", " , "), "error: --modes ' , ': use comma-separated resize modes of stretch, pad"),
    (("--modes", "stretch,bogus"), "error: --modes 'stretch,bogus': use comma-separated resize modes"),
    (("--workers", "-2"), "error: --workers -2: use a count of decode processes >= 1"),
    (("--resolutions", ""), "error: --resolutions '': use comma-separated sides of at least 32 px"),
])
def test_prepare_refuses_empty_modes_and_negative_workers(synth_root, tmp_path, args, expected):
    cache = tmp_path / "cache"
    proc = histosweep("prepare", str(synth_root), "--cache", str(cache), "--resolutions", "32",
                      "--no-progress", *args)
    assert one_error_line(proc).startswith(expected)
    assert not cache.exists()  # nothing built


def test_predict_refuses_zero_decode_workers(tmp_path):
    out = tmp_path / "sub.csv"
    proc = histosweep("predict", str(tmp_path / "bundle"), "--images", str(tmp_path),
                      "--out", str(out), "--workers", "0")
    assert one_error_line(proc).startswith("error: --workers 0: give a number of decode processes")
    assert not out.exists()


@pytest.mark.parametrize("where", ["bundle manifest", "bundle subfolder", "images", "existing"])
def test_predict_out_never_replaces_the_bundle_the_images_or_a_file_unasked(tmp_path, where):
    bundle, images = tmp_path / "bundle", tmp_path / "TEST"
    (bundle / "folds").mkdir(parents=True)
    images.mkdir()
    manifest = bundle / "manifest.json"
    manifest.write_text('{"members": []}')
    existing = tmp_path / "old.csv"
    existing.write_text("sample_index,label\n")
    out = {"bundle manifest": manifest, "bundle subfolder": bundle / "folds" / "s.csv",
           "images": images / "s.csv", "existing": existing}[where]
    proc = histosweep("predict", str(bundle), "--images", str(images), "--out", str(out))
    line = one_error_line(proc)
    assert (f"--out {out} exists; pass --overwrite" in line if where == "existing"
            else f"--out {out} is inside" in line), line
    assert manifest.read_text() == '{"members": []}' and existing.read_text() == "sample_index,label\n"
    assert not (bundle / "folds" / "s.csv").exists() and not (images / "s.csv").exists()


def test_predict_overwrite_gets_past_the_existing_file_check(tmp_path):
    existing = tmp_path / "old.csv"
    existing.write_text("x")
    proc = histosweep("predict", str(tmp_path / "nobundle"), "--images", str(tmp_path / "T"),
                      "--out", str(existing), "--overwrite")
    assert "exists; pass --overwrite" not in proc.stderr and proc.returncode == 1
    assert existing.read_text() == "x"  # the missing bundle stopped it before any write


def test_check_artifacts_leaves_no_empty_folder_at_any_depth(tmp_path):
    proc = histosweep("check", "nope", "--storage", f"sqlite:///{tmp_path / 'x.db'}",
                      "--artifacts", str(tmp_path / "a" / "b" / "c"))
    assert "ok: artifacts:" in proc.stdout  # the probe ran in a/b/c
    assert not (tmp_path / "a").exists() and not (tmp_path / "x.db").exists()


def test_a_params_file_that_is_not_utf8_is_one_line(tmp_path, synth_root):
    storage = f"sqlite:///{tmp_path / 'x.db'}"
    assert histosweep("create", "s", "--data", str(synth_root), "--folds", "2", "--no-reference",
                      "--storage", storage).returncode == 0
    params = tmp_path / "p.toml"
    params.write_bytes(b"lr = 0.001 # caf\xe9\n")
    proc = histosweep("enqueue", "s", "--params", str(params), "--storage", storage)
    assert "is not UTF-8 text" in one_error_line(proc)


@pytest.mark.parametrize("name, fault", [("s" * 250, "at most 120 bytes"), ("a\tb", "control characters"),
                                         ("subtypes ", "begins or ends with a space, which no listing shows; use 'subtypes'"),
                                         (" s", "begins or ends with a space")])
def test_create_refuses_a_study_name_no_log_file_can_carry(tmp_path, name, fault):
    db = tmp_path / "s.db"
    proc = histosweep("create", name, "--data", str(tmp_path), "--storage", f"sqlite:///{db}")
    assert fault in one_error_line(proc)
    assert not db.exists()


def test_synth_names_the_one_wrong_flag(tmp_path):
    assert one_error_line(histosweep("synth", str(tmp_path / "d"), "--short-side", "5")) == (
        "error: --short-side 5: use at least 32 (pixels)")
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize(("flag", "value", "expected"), [
    ("--n-train", "-24", "error: --n-train -24 is too small; use at least 24"),
    ("--n-test", "-1", "error: --n-test -1: use 0 or more unlabelled test samples"),
])
def test_synth_refuses_a_negative_count_in_one_line(tmp_path, flag, value, expected):
    assert one_error_line(histosweep("synth", str(tmp_path / "d"), flag, value)).startswith(expected)
    assert not (tmp_path / "d").exists()


def test_synth_n_test_0_writes_no_test_folder(tmp_path):
    out = tmp_path / "d"
    proc = histosweep("synth", str(out), "--n-train", "24", "--n-test", "0", "--short-side", "40")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"wrote 24 training samples and no TEST folder (--n-test 0) to {out}\n")
    assert not (out / "TEST").exists() and len(list((out / "train_data").glob("img_*.png"))) == 24
    assert json.loads((out / "synth_truth.json").read_text())["test_labels"] == {}
    assert "(default 24; 0: no TEST folder)" in " ".join(histosweep("synth", "--help").stdout.split())


def test_create_prints_no_optuna_log_line(tmp_path, synth_root):
    proc = histosweep("create", "quiet", "--data", str(synth_root), "--folds", "2",
                      "--storage", f"sqlite:///{tmp_path / 's.db'}")
    assert proc.returncode == 0, proc.stderr
    assert "A new study created" not in proc.stderr + proc.stdout


def test_create_refuses_a_range_on_a_key_that_changes_cached_pixels(tmp_path, synth_root):
    space = tmp_path / "space.toml"
    space.write_text('[params]\ninput_mode = ["whole", "mask_crop"]\nresolution = 32\n'
                     'crop_margin = { low = 0.0, high = 0.3 }\npretrained = false\n')
    db = tmp_path / "s.db"
    proc = histosweep("create", "px", "--data", str(synth_root), "--space", str(space),
                      "--storage", f"sqlite:///{db}")
    line = one_error_line(proc)
    assert "crop_margin change(s) the cached pixels" in line and "not a range" in line
    assert not db.exists()
