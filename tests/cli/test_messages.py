"""Error messages name the value a person typed and the fix that applies to it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.search._helpers import cli, tiny_space


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "histosweep", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


def _one_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def test_unknown_backbone_lists_its_own_family():
    from histosweep.model import ModelError, check_backbone

    with pytest.raises(ModelError) as info:
        check_backbone("resnet99", field="mask_backbone")
    assert "mask_backbone" in str(info.value) and "list_models('resnet*')" in str(info.value)


def test_space_blames_the_field_whose_value_is_wrong(tmp_path):
    from histosweep.search import SpaceError, load_space

    space = tmp_path / "space.toml"
    space.write_text('[params]\ninput_mode = ["whole", "tiles"]\ntile_size = 8\n')
    with pytest.raises(SpaceError, match=r"space.toml: tile_size = 8 is not allowed: .*tile_size"):
        load_space(space)


@pytest.mark.parametrize("args, expected", [
    (["--weights", "missing.safetensors"], "error: --weights missing.safetensors: no such file"),
    (["--resolution", "8"], "error: --resolution 8: resolution must be >= 32"),
])
def test_embed_errors_name_the_option(tmp_path, args, expected):
    line = _one_line(_run("embed", "DATA", "--backbone", "test_vit", *args, cwd=tmp_path))
    assert line.startswith(expected), line


def test_a_mistyped_s3_spec_is_refused_not_made_a_folder(tmp_path):
    proc = _run("check", "x", "--storage", f"sqlite:///{tmp_path / 'none.db'}",
                "--artifacts", "s3:/bucket", cwd=tmp_path)  # check: one line per problem
    assert proc.returncode == 1
    assert ("error: artifacts: unsupported artifact store 's3:/bucket': give a folder path or "
            "s3://BUCKET/PREFIX") in proc.stderr.splitlines()
    assert list(tmp_path.iterdir()) == []


def test_check_leaves_no_artifact_folder_behind(tmp_path):
    proc = _run("check", "x", "--storage", "postgresql://u:pw@127.0.0.1:9/db", cwd=tmp_path)
    assert proc.returncode == 1 and "pw@" not in proc.stdout + proc.stderr
    assert list(tmp_path.iterdir()) == []  # the probe's ./artifacts is removed again


def test_status_warns_when_the_artifact_folder_is_not_there(synth_root, tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    cli("create", "s", "--data", str(synth_root), "--space", str(tiny_space(tmp_path)),
        "--storage", url)
    missing = tmp_path / "not-here"
    proc = _run("status", "s", "--storage", url, "--artifacts", str(missing), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"warning: artifact folder {missing} does not exist" in proc.stderr
    assert not missing.exists()
    present = _run("status", "s", "--storage", url, "--artifacts", str(tmp_path), cwd=tmp_path)
    assert present.returncode == 0 and "warning" not in present.stderr
