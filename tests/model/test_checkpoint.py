"""Checkpoints: bit-exact safetensors round trip, clear mismatch errors, pickles refused."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import safetensors.torch
import torch

from histosweep.model import (
    ModelError,
    TrainConfig,
    build_model,
    load_checkpoint,
    read_checkpoint_config,
    read_checkpoint_metadata,
    save_checkpoint,
)

CFG = TrainConfig(
    image_backbone="convnext_atto",
    mask_backbone="resnet10t",
    head_hidden=32,
    resolution=32,
    lr=3e-4,
)


def _trained_model(seed: int = 0):
    """A model whose running stats and weights differ from a fresh build."""
    torch.manual_seed(seed)
    net = build_model(CFG)
    image, mask = torch.randn(4, 3, 32, 32), (torch.rand(4, 1, 32, 32) > 0.5).float()
    net.train()
    net(image, mask).sum().backward()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.01 * p.grad)
    return net.eval(), image, mask


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    net, image, mask = _trained_model()
    path = tmp_path_factory.mktemp("ckpt") / "fold0.safetensors"
    save_checkpoint(path, net, CFG, metadata={"fold": "0", "val_f1": "0.5"})
    return path, net, image, mask


def test_round_trip_is_bit_exact(saved):
    path, net, image, mask = saved
    loaded, cfg = load_checkpoint(path)
    assert cfg == CFG
    original, restored = net.state_dict(), loaded.state_dict()
    assert set(original) == set(restored)
    for key, value in original.items():
        assert restored[key].dtype == value.dtype, key
        assert torch.equal(restored[key], value), key
    assert not loaded.training
    with torch.no_grad():
        assert torch.equal(loaded(image, mask), net(image, mask))


def test_header_holds_config_and_caller_metadata(saved):
    path = saved[0]
    meta = read_checkpoint_metadata(path)
    assert meta["fold"] == "0" and meta["val_f1"] == "0.5"
    assert meta["num_classes"] == "4"
    assert json.loads(meta["train_config"])["image_backbone"] == "convnext_atto"
    assert read_checkpoint_config(path) == CFG


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path):
    net, _, _ = _trained_model()
    target = tmp_path / "deep" / "fold.safetensors"
    save_checkpoint(target, net, CFG)
    save_checkpoint(target, net, CFG)  # overwrite in place
    assert sorted(p.name for p in target.parent.iterdir()) == ["fold.safetensors"]
    with pytest.raises(ModelError, match="reserved"):
        save_checkpoint(tmp_path / "x.safetensors", net, CFG, metadata={"train_config": "{}"})
    assert not (tmp_path / "x.safetensors").exists()


def test_expect_with_other_architecture_lists_the_fields(saved):
    path = saved[0]
    load_checkpoint(path, expect=CFG.replace(lr=1.0, epochs=3))  # training fields may differ
    other = CFG.replace(mask_backbone="resnet18", head_hidden=64)
    with pytest.raises(ModelError) as info:
        load_checkpoint(path, expect=other)
    message = str(info.value)
    assert "mask_backbone='resnet10t' (expected 'resnet18')" in message
    assert "head_hidden=32 (expected 64)" in message
    assert "image_backbone" not in message


def test_key_and_shape_mismatch_names_the_keys(saved, tmp_path):
    path = saved[0]
    tensors = safetensors.torch.load_file(path)
    meta = read_checkpoint_metadata(path)
    del tensors["head.5.bias"]
    tensors["head.9.weight"] = torch.zeros(2)
    tensors["head.2.weight"] = torch.zeros(7, 3)
    broken = tmp_path / "broken.safetensors"
    safetensors.torch.save_file(tensors, broken, metadata=meta)
    with pytest.raises(ModelError) as info:
        load_checkpoint(broken)
    message = str(info.value)
    assert "missing: head.5.bias" in message
    assert "unexpected: head.9.weight" in message
    assert "head.2.weight (7, 3) vs model (32, 832)" in message
    assert "\n" not in message


def test_many_missing_keys_are_counted(saved, tmp_path):
    path = saved[0]
    tensors = safetensors.torch.load_file(path)
    meta = read_checkpoint_metadata(path)
    kept = {k: v for k, v in tensors.items() if not k.startswith("mask_branch.")}
    dropped = len(tensors) - len(kept)
    broken = tmp_path / "half.safetensors"
    safetensors.torch.save_file(kept, broken, metadata=meta)
    with pytest.raises(ModelError, match=rf"missing: mask_branch\..* \({dropped} in all\)"):
        load_checkpoint(broken)


class _Planted:
    """Unpickling this creates `marker` (open(marker, 'w')) — proof that pickle code ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_planted_pickle_would_run_code_when_unpickled(tmp_path):
    """Control: the payload really works, so the refusal test below can fail."""
    marker = tmp_path / "control-marker"
    blob = pickle.dumps({"w": _Planted(str(marker))})
    pickle.loads(blob)
    assert marker.exists()


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_pickle_files_are_refused_without_unpickling(tmp_path, writer):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.safetensors"
    payload = {"state_dict": {"w": torch.zeros(2)}, "evil": _Planted(str(marker))}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    for reader in (load_checkpoint, read_checkpoint_config, read_checkpoint_metadata):
        with pytest.raises(ModelError, match="not a safetensors checkpoint"):
            reader(path)
    assert not marker.exists()


def test_other_bad_files_are_model_errors(tmp_path):
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(ModelError, match="cannot read checkpoint"):
        load_checkpoint(missing)
    truncated = tmp_path / "short.safetensors"
    truncated.write_bytes(b"\x10\x00")
    with pytest.raises(ModelError, match="not a safetensors checkpoint"):
        load_checkpoint(truncated)
    foreign = tmp_path / "foreign.safetensors"
    safetensors.torch.save_file({"w": torch.zeros(2)}, foreign)
    with pytest.raises(ModelError, match="not a histosweep checkpoint"):
        load_checkpoint(foreign)
    assert os.path.exists(foreign)


def test_state_dict_checkpoint_equals_the_model_checkpoint(saved, tmp_path):
    import safetensors.torch

    path, net, _, _ = saved
    from_state = tmp_path / "from_state.safetensors"
    save_checkpoint(from_state, net.state_dict(), CFG, num_classes=net.num_classes,
                    metadata={"fold": "0", "val_f1": "0.5"})
    assert read_checkpoint_metadata(from_state) == read_checkpoint_metadata(path)
    a, b = safetensors.torch.load_file(from_state), safetensors.torch.load_file(path)
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ModelError, match="needs num_classes"):
        save_checkpoint(tmp_path / "x.safetensors", net.state_dict(), CFG)
    assert not (tmp_path / "x.safetensors").exists()
