"""Whether a backbone's pretrained weights are at hand, asked in one place: `histosweep check`,
the embedder, workers and predict read the same answer (file, Hugging Face cache, or the hub).

Never downloads. Exercise: `histosweep check STUDY` on a machine with HF_HUB_OFFLINE=1.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from histosweep.exceptions import one_line
from histosweep.model._hub import (
    hf_cache_dir,
    hf_offline,
    hub_repo_id,
    is_hub_name,
    missing_hub_weights_message,
)

HUB_PROBE_TIMEOUT_S = 5.0  # one HEAD request to the hub, only when offline mode is off


@dataclass(frozen=True)
class WeightsStatus:
    ok: bool  # the weights load here without a download that would fail
    detail: str  # one line: where they are, or what is missing and how to stage them


def weights_status(name: str, *, field: str = "image_backbone", paths: list[str] | tuple = (),
                   probe: HubProbe | None = None) -> WeightsStatus:
    """Whether backbone `name`'s pretrained weights are at hand: a configured file (`paths`, the
    space's *_pretrained_path values), the local Hugging Face cache, or (online, when a `probe`
    is given: one HEAD request per probe) the hub. Nothing is downloaded; `detail` is one line for a person."""
    path_field = "image_pretrained_path" if field.startswith("image") else "mask_pretrained_path"
    if paths:
        absent = [p for p in paths if not Path(p).expanduser().is_file()]
        if absent:
            return WeightsStatus(False, f"{field} {name!r}: {path_field} {absent[0]!r} does not "
                                 "exist; fix the path in the space, or leave it empty to use timm's weights")
        return WeightsStatus(True, f"{field} {name!r}: {path_field} {paths[0]}")
    if is_hub_name(name):  # hf-hub:Org/Repo (UNI, Virchow2 ...): config + weights in the cache
        return _hub_name_weights(name, field)
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        return WeightsStatus(False, f"{field} {name!r}: timm has no pretrained weights for it; set "
                             f"{path_field} to a weights file or pretrained = false")
    where = cached_weights(cfg)
    if where:
        return WeightsStatus(True, f"{field} {name!r}: cached at {where}")
    source = cfg.hf_hub_id or cfg.url
    fix = (f"on a connected machine run `python -c \"import timm; timm.create_model('{name}', "
           f"pretrained=True)\"` and copy its Hugging Face cache (HF_HOME) here, or set "
           f"{path_field} to a local weights file, or pretrained = false")
    if hf_offline():
        return WeightsStatus(False, f"{field} {name!r}: weights {source} are not in the Hugging "
                             f"Face cache {hf_cache_dir()} and HF_HUB_OFFLINE=1; {fix}")
    reason = probe.unreachable(cfg) if probe is not None else None  # None: not asked
    if reason:
        return WeightsStatus(False, f"{field} {name!r}: weights {source} are not in the Hugging "
                             f"Face cache {hf_cache_dir()} and the hub is unreachable ({reason}); {fix}")
    return WeightsStatus(True, f"{field} {name!r}: not cached; timm downloads {source} at first use")


def _hub_name_weights(name: str, field: str) -> WeightsStatus:
    from huggingface_hub import try_to_load_from_cache

    repo = hub_repo_id(name)
    found = [try_to_load_from_cache(repo, f, cache_dir=hf_cache_dir())
             for f in ("config.json", "model.safetensors", "pytorch_model.bin")]
    if isinstance(found[0], str) and any(isinstance(f, str) for f in found[1:]):
        return WeightsStatus(True, f"{field} {name!r}: cached at {Path(found[0]).parent}")
    if hf_offline():
        return WeightsStatus(False, missing_hub_weights_message(
            name, field, "not cached", cache=hf_cache_dir(), offline=True))
    return WeightsStatus(True, f"{field} {name!r}: not cached; timm downloads it at first use "
                         "(gated models need your own Hugging Face token)")


def _hub_files(cfg) -> tuple[str, str | None, list[str]]:
    repo, _, revision = cfg.hf_hub_id.partition("@")
    # timm tries the safetensors file first, then the pickle-free-loaded .bin
    files = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
    return repo, revision or None, files


def cached_weights(cfg) -> str | None:
    """The local file timm would load for this pretrained cfg, or None; never downloads."""
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        repo, revision, files = _hub_files(cfg)
        for filename in files:
            hit = try_to_load_from_cache(repo, filename, cache_dir=hf_cache_dir(), revision=revision)
            if isinstance(hit, str):
                return hit
        return None
    import torch.hub

    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(cfg.url.split("?")[0]).name
    return str(path) if path.is_file() else None


class HubProbe:
    """One HEAD request to the hub per check run (a metadata query, no download)."""

    def __init__(self) -> None:
        self._reason: str | None = None
        self._asked = False

    def unreachable(self, cfg) -> str | None:
        if self._asked or not cfg.hf_hub_id:
            return self._reason
        self._asked = True
        from huggingface_hub import get_hf_file_metadata, hf_hub_url

        repo, revision, files = _hub_files(cfg)
        try:
            get_hf_file_metadata(hf_hub_url(repo, files[0], revision=revision), timeout=HUB_PROBE_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - no network, DNS, proxy, 404 of the first name
            self._reason = one_line(exc)
        return self._reason
