"""Pretrained weights not at hand on an offline machine: embed and predict answer with the same
line `histosweep check` gives (model.weights_status), before any image is decoded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from histosweep.model import weights_status

OFFLINE = {"HF_HUB_OFFLINE": "1"}


def _run(*args: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "histosweep", *args], capture_output=True,
                          text=True, timeout=300, env={**os.environ, **env}, cwd=cwd)


def test_embed_offline_without_cached_weights_is_the_weights_status_line(tmp_path, synth_root,
                                                                         monkeypatch):
    env = {**OFFLINE, "HF_HOME": str(tmp_path / "hf"), "HISTOSWEEP_CACHE": str(tmp_path / "cache")}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    expected = weights_status("convnext_atto", field="--backbone")
    assert not expected.ok
    proc = _run("embed", str(synth_root), "--backbone", "convnext_atto", "--pretrained",
                env=env, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines() == [f"error: {expected.detail}"]
    assert not (tmp_path / "cache").exists()  # nothing decoded, nothing cached


def test_predict_checks_a_frozen_members_weights_before_decoding(tmp_path, monkeypatch):
    """predict_folder calls this right after loading the bundle, before load_test_folder."""
    import pytest

    from histosweep.bundle._frozen import check_frozen_weights
    from histosweep.exceptions import UserError
    from histosweep.model import TrainConfig

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    frozen = TrainConfig(train_mode="frozen", image_backbone="convnext_atto", pretrained=True)
    tuned = TrainConfig(image_backbone="convnext_atto", pretrained=True)  # weights in its folds
    check_frozen_weights([SimpleNamespace(trial=3, config=tuned)])
    with pytest.raises(UserError) as info:
        check_frozen_weights([SimpleNamespace(trial=3, config=tuned),
                              SimpleNamespace(trial=7, config=frozen)])
    line = str(info.value)
    assert line == f"trial 7 of the bundle: {weights_status('convnext_atto').detail}"
    assert "HF_HUB_OFFLINE=1" in line and "\n" not in line
