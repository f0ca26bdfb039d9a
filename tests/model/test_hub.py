"""Backbone registry for foundation models: the kwargs/normalisation table, `hf-hub:` names,
weights from a staged Hugging Face cache offline, and the one-line missing-weight message
(through the real CLI, HF_HUB_OFFLINE=1, a temp HF cache; no network)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from histosweep.model import FOUNDATION_MODELS, backbone_spec

HUB_NAMES = ["hf-hub:MahmoodLab/uni", "hf-hub:MahmoodLab/UNI2-h", "hf-hub:paige-ai/Virchow2",
             "hf-hub:bioptimus/H-optimus-0", "hf-hub:bioptimus/H-optimus-1",
             "hf_hub:prov-gigapath/prov-gigapath"]


@pytest.mark.parametrize("name", HUB_NAMES)
def test_every_foundation_model_has_a_sourced_entry(name):
    spec = backbone_spec(name)
    assert spec is not backbone_spec("convnext_tiny") and spec.source.startswith("huggingface.co/")
    assert len(spec.mean) == 3 and len(spec.std) == 3 and spec.input_size == 224 and spec.gated


def test_table_values_of_the_issue():
    import timm.layers
    import torch

    from histosweep.model._hub import timm_kwargs

    assert backbone_spec("HF-HUB:mahmoodlab/UNI").kwargs == {"init_values": 1e-5,
                                                            "dynamic_img_size": True}
    uni2 = timm_kwargs("hf-hub:MahmoodLab/UNI2-h")
    assert uni2["mlp_layer"] is timm.layers.SwiGLUPacked and uni2["act_layer"] is torch.nn.SiLU
    assert backbone_spec("hf-hub:bioptimus/H-optimus-0").mean == (0.707223, 0.578729, 0.703617)
    assert backbone_spec("hf-hub:paige-ai/Virchow2").embed_pool == "cls_mean_patch"
    assert backbone_spec("convnext_tiny").kwargs == {} and len(FOUNDATION_MODELS) == 6


def test_hub_names_pass_the_name_check_and_typos_do_not():
    from histosweep.model import ModelError, check_backbone

    check_backbone("hf-hub:MahmoodLab/uni", field="image_backbone")
    with pytest.raises(ModelError, match="no backbone named"):
        check_backbone("hf-hub:", field="image_backbone")


def _stage_hub_cache(hub_cache: Path, repo: str, mean: list[float]) -> None:
    """What `timm.create_model('hf-hub:repo', pretrained=True)` leaves in HF_HUB_CACHE."""
    import safetensors.torch
    import timm
    import torch

    torch.manual_seed(3)
    state = timm.create_model("test_vit", num_classes=0).state_dict()
    folder = hub_cache / ("models--" + repo.replace("/", "--"))
    snapshot = folder / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text("0" * 40)
    config = {"architecture": "test_vit", "num_classes": 0, "model_args": {"img_size": 160},
              "pretrained_cfg": {
        "input_size": [3, 160, 160], "mean": mean, "std": [0.2, 0.2, 0.2], "num_classes": 0,
        "interpolation": "bicubic", "crop_pct": 1.0}}
    (snapshot / "config.json").write_text(json.dumps(config))
    safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()},
                                snapshot / "model.safetensors")


def _cli(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "histosweep.cli", *args], env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture()
def offline_env(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"),
               HISTOSWEEP_CACHE=str(tmp_path / "cache"))
    env.pop("HF_HUB_CACHE", None)
    return env


def test_missing_hub_weights_is_one_line_naming_model_cache_and_staging(synth_root, offline_env):
    result = _cli(["embed", str(synth_root), "--backbone", "hf-hub:MahmoodLab/uni",
                   "--pretrained"], offline_env)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and "Traceback" not in result.stderr
    line = lines[0]
    cache = Path(offline_env["HF_HOME"]) / "hub" / "models--MahmoodLab--uni"
    assert "hf-hub:MahmoodLab/uni" in line and str(cache) in line
    assert "HF_HUB_OFFLINE=1" in line and "copy its models--MahmoodLab--uni folder" in line
    assert "init_values=1e-05" in line and "own token" in line  # how to build it, gated
    assert not list(Path(offline_env["HISTOSWEEP_CACHE"]).rglob("embed"))  # nothing written


def test_hub_weights_load_offline_from_a_staged_cache(synth_root, offline_env):
    repo = "histosweep-test/tiny-vit"
    _stage_hub_cache(Path(offline_env["HF_HOME"]) / "hub", repo, mean=[0.6, 0.5, 0.4])
    result = _cli(["embed", str(synth_root), "--backbone", f"hf-hub:{repo}", "--pretrained",
                   "--resolution", "32", "--json", "--no-progress"], offline_env)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["backbone"] == f"hf-hub:{repo}" and doc["dim"] == 64 and doc["reused"] is False
    import timm
    import torch

    from histosweep.model import state_sha256

    torch.manual_seed(3)  # the staged weights, not a random init, were embedded with
    assert doc["weights_sha256"] == state_sha256(timm.create_model("test_vit", num_classes=0))
