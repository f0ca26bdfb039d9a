"""Backbone registry: the timm names the search space offers, name checks, and weight loading.

Backbones always come from `timm.create_model(name, num_classes=0, in_chans=...)`.
Exercise: `python -c "from model import IMAGE_BACKBONES; print(IMAGE_BACKBONES)"`.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import TYPE_CHECKING

from histosweep.exceptions import one_line
from histosweep.model._errors import ModelError
from histosweep.model._hub import is_hub_name, missing_hub_weights_message, timm_kwargs

if TYPE_CHECKING:
    from torch import nn

# Ordered small -> large; the reference found Small overfitting where Tiny did not.
IMAGE_BACKBONES: tuple[str, ...] = (
    "convnext_atto",
    "convnext_femto",
    "convnext_pico",
    "convnext_nano",
    "convnext_tiny",
    "convnext_small",
    "convnext_base",
)
MASK_BACKBONES: tuple[str, ...] = ("resnet10t", "resnet14t", "resnet18", "resnet26", "resnet34")


def check_backbone(name: str, *, field: str) -> None:
    """Raise ModelError when timm does not know `name` (a `.tag` suffix is allowed)."""
    if name in IMAGE_BACKBONES or name in MASK_BACKBONES:  # ours: known to timm (a test checks)
        return  # NOTE: without importing timm and torch, seconds that `create` need not spend
    import timm

    if isinstance(name, str) and name and (timm.is_model(name) or _valid_hub_name(name)):
        return
    suggestions = difflib.get_close_matches(str(name), timm.list_models(), n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(suggestions)}?" if suggestions else "no close match"
    family = re.match(r"[A-Za-z]+", str(name))  # resnet99 -> resnet*: names of its family
    pattern = f"{family.group(0).lower()}*" if family else "*"
    raise ModelError(
        f"{field}: timm has no backbone named {name!r} ({hint}); list names with "
        f"`python -c \"import timm; print(timm.list_models('{pattern}'))\"`"
    )


def _valid_hub_name(name: str) -> bool:
    """`hf-hub:Org/Repo`: timm resolves it from the hub (or its cache) at build time."""
    from timm.models import parse_model_name

    if not is_hub_name(name):
        return False
    try:
        return bool(parse_model_name(name)[1])
    except ValueError:
        return False


def create_backbone(
    name: str,
    *,
    field: str,
    in_chans: int,
    pretrained: bool,
    weights_path: str = "",
    drop_path_rate: float = 0.0,
) -> nn.Module:
    """A timm feature extractor (pooled, no classifier) with `in_chans` input channels.

    drop_path_rate > 0 turns on the backbone's stochastic depth (timm's DropPath blocks).

    `weights_path` (a local .safetensors/.pth/.bin state dict) wins over the hub; timm's own
    loader drops the classifier and adapts the first conv to `in_chans` (sums RGB for 1 channel).
    """
    import timm

    check_backbone(name, field=field)
    # the foundation-model table's construction kwargs (UNI: init_values, dynamic_img_size ...)
    kwargs: dict = {**timm_kwargs(name), "num_classes": 0, "in_chans": in_chans}
    if drop_path_rate > 0:  # only when asked: not every timm model takes the argument
        kwargs["drop_path_rate"] = drop_path_rate
    if pretrained and weights_path:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise ModelError(
                f"{field}: pretrained weights file {str(path)!r} for {name!r} does not exist; "
                f"fix the *_pretrained_path setting or leave it empty to use timm's own weights"
            )
        kwargs["pretrained_cfg_overlay"] = {"file": str(path)}
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except ModelError:
        raise
    except Exception as exc:  # timm/hub/torch raise many types; the person needs one line
        if is_hub_name(name) and _hub_fetch_failed(exc):
            message = missing_hub_weights_message(name, field, type(exc).__name__)
            raise ModelError(message) from exc
        if pretrained:
            raise _weights_error(name, field, weights_path, exc) from exc
        reason = one_line(exc, name=False)
        raise ModelError(
            f"{field}: timm cannot build {name!r} (in_chans={in_chans}): {reason}"
        ) from exc


def _weights_error(name: str, field: str, weights_path: str, exc: Exception) -> ModelError:
    reason = one_line(exc)
    if weights_path:
        return ModelError(
            f"{field}: could not load weights for {name!r} from {weights_path!r} ({reason}); "
            f"the file must hold a timm state dict for {name!r} (.safetensors, or .pth/.bin "
            f"readable with weights_only=True)"
        )
    path_field = "image_pretrained_path" if field.startswith("image") else "mask_pretrained_path"
    return ModelError(
        f"{field}: no pretrained weights for {name!r} ({reason}); on a connected machine run "
        f"`python -c \"import timm; timm.create_model('{name}', pretrained=True)\"` and copy its "
        f"Hugging Face cache (HF_HOME, default ~/.cache/huggingface) here (HF_HUB_OFFLINE=1 then "
        f"keeps timm off the network), or set {path_field} to a local weights file, or set "
        f"pretrained=false"
    )


def _hub_fetch_failed(exc: BaseException) -> bool:
    """huggingface_hub could not get a file (offline and not cached, gated, no network)."""
    from huggingface_hub import errors

    chain = [exc, exc.__cause__, exc.__context__]
    kinds = (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled,
             errors.GatedRepoError, errors.RepositoryNotFoundError, OSError)
    return any(isinstance(e, kinds) for e in chain if e is not None)


