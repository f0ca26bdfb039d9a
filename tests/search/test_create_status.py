"""`histosweep create` and `status`: stored settings, refusal rules, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from histosweep.search import load_settings
from tests.search._helpers import cli, load, tiny_space


def test_create_stores_space_data_and_split(synth_root, tmp_path, sqlite_url):
    space = tiny_space(tmp_path)
    out = cli("create", "s1", "--data", str(synth_root), "--space", str(space), "--folds", "3",
              "--storage", sqlite_url, "--json")
    summary = json.loads(out.stdout)
    assert summary["action"] == "created" and summary["folds"] == 3
    settings = load_settings(load("s1", sqlite_url))
    assert settings.folds == 3 and len(settings.split["folds"]) == 3
    assert settings.space["image_backbone"] == {"value": "convnext_atto"}
    assert len(settings.sample_ids) == summary["samples"] == len(settings.labels)
    holdout = set(settings.split["holdout"])
    for fold in settings.split["folds"]:
        train, val = fold["train"], fold["val"]
        assert not holdout & set(val) and not set(train) & set(val)
    # excluded samples (audit flags) are not in the split
    excluded = {e["sample_index"] for e in settings.excluded}
    assert excluded and not excluded & set(settings.sample_ids)


def test_create_with_the_registry_backbones_imports_neither_torch_nor_timm(synth_root, tmp_path):
    # NOTE: seconds per `create`: the names we ship are trusted; others still go to timm
    code = (
        "import sys\n"
        "from histosweep.search import CreateOptions, create_study\n"
        f"create_study('light', 'sqlite:///{tmp_path / 'light.db'}', CreateOptions("
        f"data=r'{synth_root}', space_file=r'{tiny_space(tmp_path)}', folds=2), progress=False)\n"
        "print(sorted(m for m in ('torch', 'timm') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_recreate_rules(synth_root, tmp_path, sqlite_url):
    space = tiny_space(tmp_path)
    base = ("create", "s2", "--data", str(synth_root), "--space", str(space), "--folds", "2",
            "--storage", sqlite_url)
    assert "2 folds, no holdout (--holdout 0)," in cli(*base).stdout  # the summary line
    same = cli(*base, check=False)
    assert same.returncode == 1 and "--skip-if-exists" in same.stderr
    assert "Traceback" not in same.stderr
    assert cli(*base, "--skip-if-exists", "--json").stdout.count('"exists"') == 1
    (tmp_path / "other").mkdir()
    other_space = tiny_space(tmp_path / "other", epochs=3)
    changed = cli("create", "s2", "--data", str(synth_root), "--space", str(other_space),
                  "--folds", "2", "--storage", sqlite_url, "--skip-if-exists", check=False)
    assert changed.returncode == 1 and "another space (differs in: epochs)" in changed.stderr
    assert "--force" in changed.stderr
    folds = cli(*base[:-4], "--folds", "3", "--storage", sqlite_url, check=False)
    assert folds.returncode == 1 and "already exists with --folds 2, not 3" in folds.stderr
    forced = cli("create", "s2", "--data", str(synth_root), "--space", str(other_space), "--folds", "2",
                 "--storage", sqlite_url, "--force", "--json")
    assert json.loads(forced.stdout)["action"] == "replaced"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--folds", "1"), "need at least 2 folds"),
        (("--pruner", "magic"), "choose one of percentile, median"),
        (("--holdout", "1.5"), "--holdout 1.5"),
    ],
)
def test_create_option_errors(synth_root, tmp_path, sqlite_url, args, needle):
    proc = cli("create", "s3", "--data", str(synth_root), "--space", str(tiny_space(tmp_path)),
               "--storage", sqlite_url, *args, check=False)
    assert proc.returncode == 1
    assert needle in proc.stderr and "Traceback" not in proc.stderr


def test_unknown_backbone_in_space(synth_root, tmp_path, sqlite_url):
    space = tmp_path / "bad.toml"
    space.write_text('[params]\nimage_backbone = ["convnext_tiny", "convnext_tinyy"]\n')
    proc = cli("create", "s4", "--data", str(synth_root), "--space", str(space), "--storage", sqlite_url, check=False)
    assert proc.returncode == 1
    assert "convnext_tinyy" in proc.stderr and "bad.toml" in proc.stderr


def test_status_of_unknown_study_lists_known(synth_root, tmp_path, sqlite_url):
    cli("create", "known", "--data", str(synth_root), "--space", str(tiny_space(tmp_path)), "--folds", "2",
        "--storage", sqlite_url, "--no-reference")
    proc = cli("status", "nope", "--storage", sqlite_url, check=False)
    assert proc.returncode == 1 and "known" in proc.stderr and "histosweep create nope" in proc.stderr
    status = json.loads(cli("status", "known", "--storage", sqlite_url, "--json").stdout)
    assert status["trials"] == {"COMPLETE": 0, "PRUNED": 0, "FAIL": 0, "RUNNING": 0, "WAITING": 0}
    # a typo or another case of an existing name: the close name, not a hint to create a second study
    for typo in ("Known", "knwon", "known ", " KNOWN"):  # stray spaces too, shown quoted
        proc = cli("status", typo, "--storage", sqlite_url, check=False)
        assert proc.returncode == 1 and "did you mean 'known'?" in proc.stderr
        assert "histosweep create" not in proc.stderr and len(proc.stderr.splitlines()) == 1
        assert proc.stderr.startswith(f"error: no study named {typo!r} in this storage;")
    spaced = cli("create", "new", "--like", "known ", "--storage", sqlite_url, check=False)
    assert spaced.stderr.startswith("error: --like 'known ': no such study in this storage; did you mean 'known'?")
    far = cli("status", "no pe", "--storage", sqlite_url, check=False)  # the hint is a command to paste
    assert far.stderr.rstrip().endswith("create it with: histosweep create 'no pe' --data DATA")
    like = cli("create", "new", "--like", "knwn", "--storage", sqlite_url, check=False)
    assert like.returncode == 1 and "--like knwn: no such study" in like.stderr and "did you mean 'known'?" in like.stderr
    assert status["best"] is None and status["study"] == "known"
