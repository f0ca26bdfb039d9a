"""Checkpoint I/O: fold weights as safetensors (never pickle), the TrainConfig JSON in the
header metadata. Exercise: `pytest tests/model/test_checkpoint.py`.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping

import torch

from histosweep import storage
from histosweep.model._config import ConfigError, TrainConfig
from histosweep.model._errors import ModelError
from histosweep.model._net import DualBranchNet
from histosweep.model._networks import build_model

FORMAT_VERSION = "1"
_RESERVED_KEYS = ("histosweep_format", "train_config", "num_classes")
# Fields that decide the state dict's keys and shapes; a mismatch means "another network".
ARCHITECTURE_FIELDS = ("image_backbone", "mask_backbone", "head_hidden", "input_mode", "tile_pool")
_SHOW = 5  # how many keys an error names before "... (N in all)"


def save_checkpoint(
    path: str | os.PathLike[str],
    model: DualBranchNet | Mapping[str, torch.Tensor],
    cfg: TrainConfig,
    *,
    num_classes: int | None = None,
    metadata: dict[str, str] | None = None,
) -> None:
    """Write the weights + `cfg` atomically to `path` (a .safetensors file).

    model: the network, or its state dict (then num_classes is required): a worker saves the
    fold's kept state dict as it is instead of building a CPU network to hold it.
    """
    import safetensors.torch


    if isinstance(model, torch.nn.Module):
        state, num_classes = model.state_dict(), model.num_classes
    elif num_classes is None:
        raise ModelError("save_checkpoint: a state dict needs num_classes")
    else:
        state = model

    extra = dict(metadata or {})
    clash = sorted(set(extra) & set(_RESERVED_KEYS))
    if clash:
        raise ModelError(f"checkpoint metadata key(s) {', '.join(clash)} are reserved; rename them")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in extra.items()):
        raise ModelError("checkpoint metadata must map str to str; convert values with str()")
    header = {
        **extra,
        "histosweep_format": FORMAT_VERSION,
        "train_config": json.dumps(cfg.to_dict(), sort_keys=True),
        "num_classes": str(num_classes),
    }
    # clone(): safetensors refuses tensors that share storage; contiguous() undoes channels_last
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
    storage.atomic_write_bytes(path, safetensors.torch.save(tensors, metadata=header))


def _check_safetensors_header(path: str) -> None:
    """Refuse anything that is not safetensors by its first bytes (nothing is deserialised)."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            head = fh.read(9)
    except OSError as exc:
        raise ModelError(f"cannot read checkpoint {path!r}: {exc.strerror or exc}") from exc
    # safetensors = u64 little-endian header length + a JSON object header
    ok = len(head) == 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] + 8 <= size
    if not ok:
        raise ModelError(
            f"{path!r} is not a safetensors checkpoint (refusing to unpickle it); "
            f"re-save it with model.save_checkpoint"
        )


def _read_header(path: str | os.PathLike[str]) -> dict[str, str]:
    from safetensors import SafetensorError, safe_open

    path = os.fspath(path)
    _check_safetensors_header(path)
    try:
        with safe_open(path, framework="pt") as fh:
            header = fh.metadata() or {}
    except SafetensorError as exc:
        raise ModelError(f"{path!r} is not a safetensors checkpoint ({exc})") from exc
    if "train_config" not in header:
        raise ModelError(
            f"{path!r} is a safetensors file but not a histosweep checkpoint (no train_config "
            f"in its metadata); write checkpoints with model.save_checkpoint"
        )
    if header.get("histosweep_format") != FORMAT_VERSION:
        raise ModelError(
            f"{path!r} has checkpoint format {header.get('histosweep_format')!r}, this version "
            f"reads {FORMAT_VERSION!r}; load it with the histosweep version that wrote it"
        )
    return header


def read_checkpoint_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """All header metadata of a checkpoint (train_config JSON, num_classes, caller's keys)."""
    return dict(_read_header(path))


def read_checkpoint_config(path: str | os.PathLike[str]) -> TrainConfig:
    """The TrainConfig a checkpoint was trained with (reads only the header)."""
    return _config_from_header(os.fspath(path), _read_header(path))


def _config_from_header(path: str, header: Mapping[str, str]) -> TrainConfig:
    try:
        return TrainConfig.from_dict(json.loads(header["train_config"]))
    except (ConfigError, ValueError, TypeError) as exc:
        raise ModelError(f"{path!r}: stored train_config is not usable here: {exc}") from exc


def _architecture_diff(stored: TrainConfig, expect: TrainConfig) -> list[str]:
    return [
        f"{name}={getattr(stored, name)!r} (expected {getattr(expect, name)!r})"
        for name in ARCHITECTURE_FIELDS
        if getattr(stored, name) != getattr(expect, name)
    ]


def _listing(label: str, items: list[str]) -> str:
    shown = ", ".join(items[:_SHOW])
    more = f" ... ({len(items)} in all)" if len(items) > _SHOW else ""
    return f"{label}: {shown}{more}"


def state_dict_mismatch(
    model_state: Mapping[str, torch.Tensor], loaded: Mapping[str, torch.Tensor]
) -> str:
    """'' when keys and shapes agree, else one line naming missing/unexpected/reshaped keys."""
    missing = sorted(set(model_state) - set(loaded))
    unexpected = sorted(set(loaded) - set(model_state))
    reshaped = [
        f"{k} {tuple(loaded[k].shape)} vs model {tuple(model_state[k].shape)}"
        for k in sorted(set(model_state) & set(loaded))
        if tuple(loaded[k].shape) != tuple(model_state[k].shape)
    ]
    parts = [
        _listing(label, items)
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape", reshaped))
        if items
    ]
    return "; ".join(parts)


def _frozen_head(path: str, cfg: TrainConfig, tensors, num_classes: int):
    from histosweep.model._frozen import frozen_head_for_state

    try:
        return frozen_head_for_state(cfg, tensors, num_classes=num_classes)
    except KeyError as exc:
        raise ModelError(f"{path!r} is not a frozen-feature head (no {exc} tensor)") from exc


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    expect: TrainConfig | None = None,
    device: str | torch.device = "cpu",
) -> tuple[DualBranchNet, TrainConfig]:
    """Rebuild the stored network (no pretrained download) and load its weights strictly."""
    from safetensors.torch import load_file

    path = os.fspath(path)
    header = _read_header(path)
    cfg = _config_from_header(path, header)
    if expect is not None:
        diff = _architecture_diff(cfg, expect)
        if diff:
            raise ModelError(f"{path!r} holds another architecture: {'; '.join(diff)}")
    tensors = load_file(path, device="cpu")
    num_classes = int(header.get("num_classes", "4"))
    if cfg.train_mode == "frozen":  # a head on cached embeddings (model._frozen)
        model = _frozen_head(path, cfg, tensors, num_classes)
    else:
        model = build_model(cfg, num_classes=num_classes, pretrained=False)
    problem = state_dict_mismatch(model.state_dict(), tensors)
    if problem:
        raise ModelError(
            f"{path!r} does not fit {cfg.image_backbone}+{cfg.mask_backbone}: {problem}"
        )
    model.load_state_dict(tensors, strict=True)
    return model.to(device).eval(), cfg
