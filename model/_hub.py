"""Foundation backbones: one table of per-model timm kwargs + normalisation, and the one-line
message for an `hf-hub:` weight that is not staged on an offline machine.

Any timm name works as a backbone; names in FOUNDATION_MODELS get their model card's extra
construction kwargs and mean/std. Exercise: `pytest tests/model/test_hub.py`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EMBED_POOLS = ("pooled", "cls_mean_patch")


@dataclass(frozen=True)
class BackboneSpec:
    """What timm needs beyond the name, and how the embedder feeds and reads the model."""

    kwargs: dict[str, Any] = field(default_factory=dict)  # extra timm.create_model kwargs
    mean: tuple[float, float, float] | None = None  # None: timm's resolve_data_config
    std: tuple[float, float, float] | None = None
    input_size: int | None = None  # side the model card feeds (px); None: the cache's side
    # pooled: timm's own pooled output (num_classes=0); cls_mean_patch: [CLS, mean of patch
    # tokens] from forward_features, register tokens skipped (Virchow2's card)
    embed_pool: str = "pooled"
    gated: bool = False  # the hub repo asks each user to accept its terms (own HF token)
    source: str = ""  # where these values come from


# NOTE: layer classes are written as names ("timm.layers.SwiGLUPacked", "torch.nn.SiLU") and
# resolved at build time, so this table imports neither torch nor timm.
FOUNDATION_MODELS: dict[str, BackboneSpec] = {
    "hf-hub:mahmoodlab/uni": BackboneSpec(
        kwargs={"init_values": 1e-5, "dynamic_img_size": True},
        mean=IMAGENET_MEAN, std=IMAGENET_STD, input_size=224, gated=True,
        source="huggingface.co/MahmoodLab/UNI model card (ViT-L/16, timm.create_model example)",
    ),
    "hf-hub:mahmoodlab/uni2-h": BackboneSpec(
        kwargs={
            "img_size": 224, "patch_size": 14, "depth": 24, "num_heads": 24, "init_values": 1e-5,
            "embed_dim": 1536, "mlp_ratio": 2.66667 * 2, "no_embed_class": True,
            "mlp_layer": "timm.layers.SwiGLUPacked", "act_layer": "torch.nn.SiLU",
            "reg_tokens": 8, "dynamic_img_size": True,
        },
        mean=IMAGENET_MEAN, std=IMAGENET_STD, input_size=224, gated=True,
        source="huggingface.co/MahmoodLab/UNI2-h model card (timm_kwargs, ViT-H/14 + 8 registers)",
    ),
    "hf-hub:paige-ai/virchow2": BackboneSpec(
        kwargs={"mlp_layer": "timm.layers.SwiGLUPacked", "act_layer": "torch.nn.SiLU"},
        mean=IMAGENET_MEAN, std=IMAGENET_STD, input_size=224, embed_pool="cls_mean_patch",
        gated=True,
        source="huggingface.co/paige-ai/Virchow2 model card (SwiGLUPacked + SiLU; embedding = "
               "CLS concatenated with the mean of the patch tokens, 4 registers skipped: 2560-d)",
    ),
    "hf-hub:bioptimus/h-optimus-0": BackboneSpec(
        kwargs={"init_values": 1e-5, "dynamic_img_size": False},
        mean=(0.707223, 0.578729, 0.703617), std=(0.211883, 0.230117, 0.177517),
        input_size=224, gated=True,
        source="huggingface.co/bioptimus/H-optimus-0 model card (ViT-g/14, own H&E mean/std)",
    ),
    "hf-hub:bioptimus/h-optimus-1": BackboneSpec(
        kwargs={"init_values": 1e-5, "dynamic_img_size": False},
        mean=(0.707223, 0.578729, 0.703617), std=(0.211883, 0.230117, 0.177517),
        input_size=224, gated=True,
        source="huggingface.co/bioptimus/H-optimus-1 model card (same recipe as H-optimus-0)",
    ),
    "hf-hub:prov-gigapath/prov-gigapath": BackboneSpec(
        mean=IMAGENET_MEAN, std=IMAGENET_STD, input_size=224, gated=True,
        source="huggingface.co/prov-gigapath/prov-gigapath model card (tile encoder, ViT-g/14; "
               "resize 256 + centre crop 224, ImageNet mean/std)",
    ),
}


def canonical_name(name: str) -> str:
    """Lower-cased, with timm's deprecated `hf_hub:` prefix spelt `hf-hub:` (table lookup key)."""
    text = str(name).strip()
    if text.lower().startswith("hf_hub:"):
        text = "hf-hub:" + text[len("hf_hub:"):]
    return text.lower()


def is_hub_name(name: str) -> bool:
    return canonical_name(name).startswith("hf-hub:")


def hub_repo_id(name: str) -> str:
    """`hf-hub:Org/Repo@rev` -> `Org/Repo` (case kept: the cache folder name keeps it)."""
    text = str(name).strip()
    return text.split(":", 1)[1].split("@", 1)[0]


def backbone_spec(name: str) -> BackboneSpec:
    """The table's entry for `name`; plain timm names (and unknown hub repos) get the default."""
    return FOUNDATION_MODELS.get(canonical_name(name), BackboneSpec())


def timm_kwargs(name: str) -> dict[str, Any]:
    """The table's construction kwargs with layer names resolved to classes (imports timm)."""
    return {key: _resolve(value) for key, value in backbone_spec(name).kwargs.items()}


def _resolve(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(("timm.", "torch.")):
        import importlib

        module, _, attr = value.rpartition(".")
        return getattr(importlib.import_module(module), attr)
    return value


_OFFLINE = {"1", "ON", "YES", "TRUE"}


def hf_offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub reads it (read now, so a changed environment counts)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in _OFFLINE


def hf_cache_dir() -> Path:
    """Where huggingface_hub keeps downloads: HF_HUB_CACHE, else HF_HOME/hub (read now, not at
    import, so a changed environment counts)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "huggingface"
    return Path(home).expanduser() / "hub"


def hub_cache_dir(name: str) -> Path:
    """Where huggingface_hub keeps `name`'s files: HF_HUB_CACHE/models--Org--Repo."""
    return hf_cache_dir() / ("models--" + hub_repo_id(name).replace("/", "--"))


def hub_offline() -> bool:
    return hf_offline()


def missing_hub_weights_message(name: str, field_name: str, reason: str, *,
                                cache: Path | None = None, offline: bool | None = None) -> str:
    """One line: the model, the cache folder looked in, and how to stage it."""
    spec = backbone_spec(name)
    folder = (cache / hub_cache_dir(name).name) if cache is not None else hub_cache_dir(name)
    offline = hub_offline() if offline is None else offline
    kwargs = ", ".join(f"{k}={v!r}" for k, v in spec.kwargs.items() if not isinstance(v, str))
    build = f"timm.create_model('{name}', pretrained=True{', ' + kwargs if kwargs else ''})"
    gated = (" (gated: accept its terms on huggingface.co and `hf auth login` with your own "
             "token; histosweep ships no weights)") if spec.gated else ""
    mode = "offline (HF_HUB_OFFLINE=1)" if offline else "the hub was not reachable"
    return (
        f"{field_name}: {name} is not in the Hugging Face cache {folder} and {mode} "
        f"({reason}); stage it: on a connected machine{gated} run `python -c \"import timm; "
        f"{build}\"`, copy its {folder.name} folder into this machine's "
        f"{_cache_env_hint()} and keep HF_HUB_OFFLINE=1, or set image_pretrained_path to a local "
        f"weights file"
    )


def _cache_env_hint() -> str:
    if os.environ.get("HF_HUB_CACHE"):
        return "HF_HUB_CACHE"
    return "HF_HOME/hub (default ~/.cache/huggingface/hub)"
