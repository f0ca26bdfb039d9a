"""`histosweep synth` and `histosweep prepare`, run as commands: exit codes and output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from histosweep.cli import main


def test_synth_then_prepare_json(tmp_path, capsys):
    out = tmp_path / "synth"
    assert (
        main(
            ["synth", str(out), "--n-train", "24", "--n-test", "2", "--short-side", "48", "--json"]
        )
        == 0
    )
    synth = json.loads(capsys.readouterr().out)
    assert synth["root"] == str(out) and (out / "train_labels.csv").is_file()
    truth = json.loads((out / "synth_truth.json").read_text())
    cache = tmp_path / "cache"
    code = main(
        [
            "prepare",
            str(out),
            "--resolutions",
            "32,40",
            "--cache",
            str(cache),
            "--workers",
            "1",
            "--json",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0
    doc = json.loads(captured.out)  # ONE JSON document on stdout
    assert doc["samples"] == 24 and doc["kept"] == 24 - len(doc["excluded"])
    assert {e["sample_index"] for e in doc["excluded"]} == set(truth["cartoons"]) | set(
        truth["slime"]
    )
    assert all(e["reason"] for e in doc["excluded"])
    assert len(doc["fingerprint"]) == 64 and isinstance(doc["warnings"], list)
    assert any(set(truth["exact_duplicates"][0]) <= set(g) for g in doc["duplicate_groups"])
    assert set(doc["cache"]) == {"32-stretch", "40-stretch"}
    assert all((Path(p) / "images.npy").is_file() for p in doc["cache"].values())


def test_prepare_table_and_keep_flagged(synth_root, tmp_path, capsys):
    args = [
        "prepare",
        str(synth_root),
        "--resolutions",
        "32",
        "--cache",
        str(tmp_path),
        "--workers",
        "1",
    ]
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "excluded" in table and "cartoon" in table and "32-stretch" in table
    assert main(args + ["--keep-flagged", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["excluded"] == [] and doc["kept"] == 64 and len(doc["flagged"]) > 0


def test_prepare_broken_dataset_exits_1_without_traceback(labeled_copy, capsys):
    (labeled_copy / "train_data" / "img_0002.png").write_bytes(b"")
    assert main(["prepare", str(labeled_copy), "--resolutions", "32"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "img_0002.png" in err and "Traceback" not in err


def test_prepare_of_the_train_data_folder_names_its_dataset(labeled_copy, capsys):
    # the images folder of a dataset is not a test folder: prepare (and create --data) name the parent
    assert main(["prepare", str(labeled_copy / "train_data"), "--resolutions", "32"]) == 1
    err = capsys.readouterr().err
    assert err == (f"error: {labeled_copy / 'train_data'}: this is the train_data/ folder of the dataset "
                   f"{labeled_copy}; pass {labeled_copy} (the folder holding train_labels.csv and train_data/)\n")


def test_prepare_bad_resolution(synth_root, capsys):
    assert main(["prepare", str(synth_root), "--resolutions", "big"]) == 1
    assert "--resolutions" in capsys.readouterr().err


def test_real_command_in_a_subprocess(labeled_copy, tmp_path):
    (labeled_copy / "train_labels.csv").write_text("sample_index,label\nimg_0000.png,Luminal Z\n")
    script = Path(sys.executable).with_name("histosweep")  # the installed console script
    command = [str(script), "prepare", str(labeled_copy), "--cache", str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "Luminal Z" in result.stderr and "Traceback" not in result.stderr and result.stdout == ""


def test_prepare_space_builds_every_crop_and_tile_input(tmp_path, capsys):
    out = tmp_path / "synth"
    assert main(["synth", str(out), "--n-train", "24", "--n-test", "2", "--short-side", "48"]) == 0
    space = tmp_path / "space.toml"
    space.write_text('[params]\nresolution = 32\ninput_mode = ["mask_crop", "tiles"]\n'
                     'tile_size = 32\ntile_scale = [0.5, 1.0]\ntiles_per_image = 3\n')
    cache = tmp_path / "cache"
    capsys.readouterr()
    code = main(["prepare", str(out), "--resolutions", "32", "--space", str(space), "--cache",
                 str(cache), "--workers", "1", "--no-progress", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0
    keys = {"crop-32-stretch-m0.1", "tiles-32-s0.5-k3-m0.5", "tiles-32-s1-k3-m0.5"}
    assert keys <= set(doc["cache"])
    assert all((Path(doc["cache"][k]) / "index.json").is_file() for k in keys)
    space.write_text("[params]\ninput_mode = \"tiles\"\ntile_size = { low = 32, high = 64 }\n")
    code = main(["prepare", str(out), "--resolutions", "32", "--space", str(space), "--cache",
                 str(cache), "--workers", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and "tile_size" in err and "range" in err and "Traceback" not in err
