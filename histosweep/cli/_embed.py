"""`histosweep embed DATA --backbone NAME`: fp16 embeddings of every image (or of every tile with
`--input-mode tiles`), computed once into the per-machine cache (keyed by backbone, weights
sha256 and the input's pixel-cache key) so that
train_mode = frozen trials only train heads. Workers compute a missing entry on demand too.
Exercise: `histosweep embed synth-data --backbone test_vit --resolution 64 --json`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from histosweep.cli._common import device_arg, print_json
from histosweep.constants import ENV_CACHE, INPUT_MODES, RESIZE_MODES
from histosweep.model import TrainConfig, field_defaults

OPTIONS = ("json",)  # the common options this command reads (cli._common)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", metavar="DATA", help="dataset folder (train_labels.csv + train_data/)")
    parser.add_argument("--backbone", required=True,
                        help="any timm name, hf-hub: names included (e.g. hf-hub:MahmoodLab/uni)")
    parser.add_argument("--weights", default="",
                        help="local weights file (.safetensors) instead of the hub cache")
    parser.add_argument("--pretrained", action="store_true",
                        help="load the backbone's own weights (hub cache; HF_HUB_OFFLINE=1 offline)")
    parser.add_argument("--resolution", type=int, default=224,
                        help="cache side in px the images are resized to (default 224; the "
                             "study's resolution)")
    parser.add_argument("--mode", default="stretch", choices=RESIZE_MODES, help="resize mode")
    defaults = field_defaults()  # NOTE: not TrainConfig(): validating it loads histosweep.data
    parser.add_argument("--input-mode", default="whole", choices=INPUT_MODES,
                        help="whole pictures, mask crops or native-resolution tiles (one "
                             "embedding per tile); the study's input_mode (default whole)")
    for flag, kind, what in (("crop-margin", float, "mask_crop: box margin"),
                             ("tile-size", int, "tiles: side in px"),
                             ("tile-scale", float, "tiles: scale of native resolution"),
                             ("tiles-per-image", int, "tiles: tiles per image"),
                             ("tile-min-mask", float, "tiles: least tumour share of a ranked tile")):
        field = flag.replace("-", "_")
        parser.add_argument(f"--{flag}", type=kind, default=defaults[field],
                            help=f"{what} (the study's {field}; default {defaults[field]})")
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward (default 64)")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when present)")
    parser.add_argument("--cache", default=None,
                        help=f"cache folder (env {ENV_CACHE}, default ~/.cache/histosweep)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def run(args: argparse.Namespace) -> int:
    from histosweep import data
    from histosweep.exceptions import UserError
    from histosweep.model import ConfigError, build_embedder, ensure_embeddings, input_key_for

    if args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size}: must be >= 1")
    if args.weights and not Path(args.weights).expanduser().is_file():
        raise UserError(f"--weights {args.weights}: no such file; pass the backbone's weights "
                        "file (.safetensors), or leave --weights out to use the hub cache")
    try:
        cfg = TrainConfig(train_mode="frozen", image_backbone=args.backbone,
                          resolution=args.resolution, resize_mode=args.mode,
                          pretrained=args.pretrained, image_pretrained_path=args.weights,
                          input_mode=args.input_mode, crop_margin=args.crop_margin,
                          tile_size=args.tile_size, tile_scale=args.tile_scale,
                          tiles_per_image=args.tiles_per_image, tile_min_mask=args.tile_min_mask)
    except ConfigError as exc:
        raise UserError(_flag_error(args, exc)) from None
    from histosweep.model import check_backbone

    check_backbone(cfg.image_backbone, field="--backbone")
    _check_weights(args)
    ds = data.load_dataset(Path(args.data).expanduser(), labeled=True)
    embedder = build_embedder(cfg, device=device_arg(args))
    if not (args.pretrained or args.weights):
        print(f"warning: --backbone {args.backbone} without --pretrained or --weights: the "
              "embeddings come from a randomly initialised backbone", file=sys.stderr)
    target = data.embedding_dir(ds, backbone=embedder.name, weights_sha256=embedder.weights_sha256,
                                input_key=input_key_for(cfg), cache_dir=args.cache)
    reused = data.embeddings_present(target)
    started = time.perf_counter()
    emb = ensure_embeddings(ds, cfg, cache_dir=args.cache, batch_size=args.batch_size,
                            progress=not (args.no_progress or args.json), embedder=embedder)
    seconds = time.perf_counter() - started
    document = _document(emb, reused, seconds, str(embedder.device))
    if args.json:
        print_json(document)
    else:
        verb = "reused" if reused else f"computed in {seconds:.1f} s ({document['images_per_s']} img/s)"
        print(f"{document['backbone']} {document['shape']} fp16 {verb}: {document['path']}")
    return 0


# TrainConfig fields this command sets, and the option that sets each
FLAGS = {"image_backbone": "backbone", "resolution": "resolution", "resize_mode": "mode",
         "input_mode": "input_mode", "crop_margin": "crop_margin", "tile_size": "tile_size",
         "tile_scale": "tile_scale", "tiles_per_image": "tiles_per_image",
         "tile_min_mask": "tile_min_mask"}


def _flag_error(args: argparse.Namespace, exc: Exception) -> str:
    """TrainConfig's complaint as one line about the option that caused it."""
    text = str(exc).removeprefix("invalid TrainConfig: ")
    field = text.split(" ", 1)[0]
    if field not in FLAGS:
        return f"embed: {text}"
    option = FLAGS[field]
    return f"--{option.replace('_', '-')} {getattr(args, option)}: {text}"


def _document(emb, reused: bool, seconds: float, device: str) -> dict:
    n = int(emb.counts.sum())
    return {
        **emb.identity, "path": str(emb.path), "shape": list(emb.features.shape),
        "images": len(emb.sample_ids), "views": n, "reused": reused, "device": device,
        "seconds": round(seconds, 3),
        "images_per_s": None if reused else round(n / max(seconds, 1e-9), 2),
    }


def _check_weights(args) -> None:
    """Pretrained weights not at hand (offline, not cached): one line before any decoding, the
    same answer `histosweep check` and the workers get (model.weights_status)."""
    if not (args.pretrained or args.weights):
        return
    from histosweep.exceptions import UserError
    from histosweep.model import weights_status

    status = weights_status(args.backbone, field="--backbone",
                            paths=[args.weights] if args.weights else ())
    if not status.ok:
        raise UserError(status.detail)
