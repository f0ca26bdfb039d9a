"""`--trials-per-gpu auto`: worker slots per GPU from its free memory and the measured peak of
the largest configuration the study's space can pick. Exercise:
`histosweep worker STUDY --gpus all --trials-per-gpu auto` (on the CPU, auto is one slot).

NOTE: the CUDA measurement (`measure_gpus`) has not run on a GPU in this project's tests (no
GPU where they run); the arithmetic, the choice of the largest config and the CPU path are tested.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import replace
from pathlib import Path

from histosweep.model import TrainConfig
from histosweep.search import UserError

log = logging.getLogger("histosweep")

AUTO = "auto"
# why: max_memory_allocated leaves out what every process also holds: the CUDA context, cuBLAS
# and cuDNN workspaces (~0.5-1 GiB on recent GPUs), and the caching allocator's slack.
SLOT_OVERHEAD_BYTES = 1 << 30
PEAK_MARGIN = 1.25  # reserved/allocated ratio of the caching allocator, with room to spare
FREE_SHARE = 0.9  # leave a tenth of what is free to whatever else runs on the GPU
MAX_AUTO_SLOTS = 8  # more processes than this on one GPU only time-slice it
PEAKS_FILE = "slot-peaks.json"  # cached measurements, in the image cache folder

# space keys whose largest value needs the most memory (accumulation: its smallest)
LARGEST = ("resolution", "batch_size", "head_hidden")
SMALLEST = ("accumulation",)
BACKBONES = ("image_backbone", "mask_backbone")


def parse_trials_per_gpu(text: str) -> int | str:
    """'auto' or a count >= 1 (argparse type)."""
    if text.strip().lower() == AUTO:
        return AUTO
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise UserError(f"--trials-per-gpu {text!r}: use a count >= 1 or auto")
    return value


def slots_from_memory(free_bytes: int, peak_bytes: int) -> int:
    """How many trial processes fit: FREE_SHARE of the free memory over (peak x PEAK_MARGIN +
    SLOT_OVERHEAD_BYTES) each, at least 1 (a lone trial still shrinks its micro-batch on OOM),
    at most MAX_AUTO_SLOTS."""
    per_slot = peak_bytes * PEAK_MARGIN + SLOT_OVERHEAD_BYTES
    return max(1, min(MAX_AUTO_SLOTS, int(free_bytes * FREE_SHARE // per_slot)))


def largest_config(space) -> TrainConfig:
    """The config the space can pick that needs the most memory: largest resolution, batch and
    head, least accumulation, the backbones with the most parameters; the rest at first values."""
    from histosweep.model import backbone_parameters

    cfg = space.fixed_config()
    values = {}
    for name, p in space.params.items():
        options = _options(p)
        if name in LARGEST:
            values[name] = max(options)
        elif name in SMALLEST:
            values[name] = min(options)
        elif name in BACKBONES:
            values[name] = max(options, key=backbone_parameters)
    return replace(cfg, **values)


def _options(p) -> list:
    if p.kind == "fixed":
        return [p.value]
    if p.kind == "choice":
        return list(p.choices)
    return [p.low, p.high]


def auto_slots(settings, gpus: list[str]) -> dict[str, int]:
    """Slots per GPU id ('cpu' -> 1, said in one line)."""
    if gpus == ["cpu"]:
        log.warning("--trials-per-gpu auto on the CPU: 1 worker slot")
        return {"cpu": 1}
    cfg = largest_config(settings.space_obj())
    measured = measure_gpus(cfg, gpus, n_rows=len(settings.sample_ids))
    slots = {}
    for gpu in gpus:
        free, peak, name = measured[gpu]
        slots[gpu] = slots_from_memory(free, peak)
        log.warning("--trials-per-gpu auto: GPU %s (%s) has %.1f GiB free; the largest config "
                    "(%s + %s, %d px, batch %d) peaks at %.1f GiB: %d slot(s)", gpu, name,
                    free / 2**30, cfg.image_backbone, cfg.mask_backbone, cfg.resolution,
                    cfg.batch_size, peak / 2**30, slots[gpu])
    return slots


def measure_gpus(cfg: TrainConfig, gpus: list[str], *, n_rows: int) -> dict[str, tuple[int, int, str]]:
    """gpu id -> (free bytes, peak bytes of cfg incl. staged rows, GPU name), measured in a
    spawned child so that this parent process never holds a CUDA context on any GPU."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_measure_in_child, cfg.to_dict(), gpus, n_rows, str(_peaks_file())).result()


def _measure_in_child(cfg_dict: dict, gpus: list[str], n_rows: int, peaks_file: str):
    import torch

    from histosweep.model import staged_bytes, train_step_peak_bytes

    cfg = TrainConfig.from_dict(cfg_dict)
    cache = _read_peaks(Path(peaks_file))
    out = {}
    for gpu in gpus:
        device = torch.device(f"cuda:{gpu}")
        name = torch.cuda.get_device_name(device)
        key = f"{name}|torch {torch.__version__}|{json.dumps(cfg_dict, sort_keys=True)}"
        if key not in cache:  # one measurement per GPU model and config
            cache[key] = train_step_peak_bytes(cfg, device)
            _write_peaks(Path(peaks_file), cache)
        free, _total = torch.cuda.mem_get_info(device)
        out[gpu] = (int(free), cache[key] + staged_bytes(n_rows, cfg.resolution), name)
    return out


def _peaks_file() -> Path:
    from histosweep.data import default_cache_dir

    return Path(default_cache_dir()) / PEAKS_FILE


def _read_peaks(path: Path) -> dict[str, int]:
    try:
        return {k: int(v) for k, v in json.loads(path.read_text()).items()}
    except (OSError, ValueError, AttributeError):
        return {}  # absent or unreadable: measure again


def _write_peaks(path: Path, peaks: dict[str, int]) -> None:
    from histosweep.storage import atomic_write_text

    try:
        os.makedirs(path.parent, exist_ok=True)
        atomic_write_text(path, json.dumps(peaks, indent=1, sort_keys=True))
    except OSError as exc:  # a read-only cache folder: measure again next time
        log.warning("could not cache GPU peak memory in %s: %s", path, exc)
