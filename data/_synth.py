"""Synthetic dataset in the challenge layout, with a learnable class signal and contaminants.

Ground truth for the contaminants and duplicates goes to OUT/synth_truth.json.
Exercise: `histosweep synth /tmp/synth --n-train 120 --n-test 24`.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from histosweep.data import _synth_draw as draw
from histosweep.data._dataset import CLASSES, LABELS_CSV, TRAIN_DIR, DataError
from histosweep.storage import atomic_dir

TEST_DIR = "TEST"
TRUTH_FILE = "synth_truth.json"
# NOTE: the last class is rare (~10%), as in the challenge; fold stratification must cope.
_CLASS_SHARES = (0.34, 0.30, 0.26, 0.10)
SIGNAL_KINDS = ("stain", "detail")  # class in stain colour (survives a resize) | in nuclei detail
_PNG_LEVEL = 1  # fast zlib level: synthesis time matters more than disk here


def synthesize(
    out, *, n_train: int = 120, n_test: int = 24, seed: int = 0, short_side: int = 160,
    signal: float = 1.0, signal_kind: str = "stain",
) -> Path:
    """Write OUT/train_labels.csv, OUT/train_data/, OUT/TEST/ and OUT/synth_truth.json
    (n_test 0: no TEST folder rather than an empty one).

    The TEST images' labels are in synth_truth.json ("test_labels"): a labelled test set for
    benchmarks. signal < 1 weakens the class signal (see _synth_draw.tissue). signal_kind
    "detail" puts the class only in the tumour nuclei's size and density, which a downsampled
    whole picture loses and native-resolution tiles keep (_synth_draw.tissue_detail).
    """

    out = Path(out).expanduser()
    params = {"n_train": n_train, "n_test": n_test, "seed": seed, "short_side": short_side}
    if signal != 1.0:  # NOTE: only then, so folders written before the option still match
        params["signal"] = float(signal)
    if signal_kind != "stain":  # NOTE: only then, as for signal
        params["signal_kind"] = signal_kind
    _check_args(n_train, n_test, short_side)
    if signal_kind not in SIGNAL_KINDS:
        raise DataError(f"--signal-kind {signal_kind!r}: use one of {', '.join(SIGNAL_KINDS)}")
    if not 0.0 <= signal <= 1.0:
        raise DataError(f"--signal {signal}: use a number in [0, 1] (1 = the default, easy signal)")
    if _already_there(out, params):
        return out
    try:
        with atomic_dir(out, replace=True) as tmp:
            _write_all(tmp, params)
    except OSError as exc:
        raise DataError(
            f"{out}: cannot write the synthetic dataset ({exc}); choose a writable folder"
        ) from exc
    return out


def _check_args(n_train: int, n_test: int, short_side: int) -> None:
    if n_train < 24:
        raise DataError(
            f"--n-train {n_train} is too small; use at least 24 (contaminants + 4 classes)"
        )
    if n_test < 0:
        raise DataError(f"--n-test {n_test}: use 0 or more unlabelled test samples")
    if short_side < 32:
        raise DataError(f"--short-side {short_side}: use at least 32 (pixels)")


def _already_there(out: Path, params: dict) -> bool:
    """True when OUT holds this very dataset already; DataError when it holds anything else."""
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder; choose a new folder")
    if not out.exists() or not any(out.iterdir()):
        return False
    truth = out / TRUTH_FILE
    if truth.is_file() and json.loads(truth.read_text()).get("params") == params:
        return True
    raise DataError(f"{out}: folder exists and is not empty; choose a new folder or delete it")


def _write_all(root: Path, params: dict) -> None:
    rng = np.random.default_rng(params["seed"])
    plan = _plan(rng, params["n_train"])
    (root / TRAIN_DIR).mkdir()
    with _threads() as pool:  # numpy and the PNG encoder release the GIL
        rows = list(
            pool.map(
                lambda i: _write_train_sample(root / TRAIN_DIR, params, plan, i), range(len(plan))
            )
        )
    with open(root / LABELS_CSV, "w", newline="") as fh:
        fh.write("sample_index,label\n" + "".join(f"{name},{label}\n" for name, label in rows))
    test_labels = _write_test(root / TEST_DIR, params) if params["n_test"] else {}
    truth = _truth(plan, params)
    truth["test_labels"] = test_labels
    (root / TRUTH_FILE).write_text(json.dumps(truth, indent=2))


def _threads() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1))


def _plan(rng: np.random.Generator, n_train: int) -> list[dict]:
    """One entry per train sample: kind (clean/cartoon/slime/exact/near), label, source, stock mask."""
    n_cartoon = max(3, n_train // 30)
    n_slime = max(2, n_train // 40)
    kinds = ["cartoon"] * n_cartoon + ["slime"] * n_slime + ["exact", "near"]
    n_clean = n_train - len(kinds)
    kinds = list(rng.permutation(["clean"] * n_clean + kinds))
    labels = iter(rng.permutation(_clean_labels(n_clean)))
    plan = [{"kind": kind, "label": next(labels) if kind == "clean" else None} for kind in kinds]
    clean_ids = [i for i, e in enumerate(plan) if e["kind"] == "clean"]
    sources = iter(rng.choice(clean_ids, size=n_slime + 2, replace=False))
    shared = 0
    for entry in plan:
        if entry["kind"] in ("slime", "exact", "near"):
            entry["source"] = int(next(sources))
        if entry["kind"] == "cartoon":  # all cartoons but one share the stock mask (>= 3 of them)
            entry["stock_mask"] = shared < max(3, n_cartoon - 1)
            shared += 1
    for entry in plan:
        if entry["kind"] in ("exact", "near"):
            entry["label"] = plan[entry["source"]]["label"]
        elif entry["label"] is None:
            entry["label"] = int(
                rng.integers(0, len(CLASSES) - 1)
            )  # contaminants: never the rare class
    return plan


def _clean_labels(n: int) -> list[int]:
    # NOTE: at least 8 of the rare class (n permitting): 5 folds still fit after a 20% holdout.
    rare = max(round(_CLASS_SHARES[-1] * n), min(8, n // 5))
    common = np.array(_CLASS_SHARES[:-1]) / sum(_CLASS_SHARES[:-1])
    counts = [round(share * (n - rare)) for share in common]
    counts[0] += n - rare - sum(counts)
    return [c for c, count in enumerate([*counts, rare]) for _ in range(count)]


def _sample_rng(params: dict, index: int, stream: int) -> np.random.Generator:
    """Each picture draws from its own stream, so a source can be redrawn for its copies."""
    return np.random.default_rng([params["seed"], stream, index])


def _clean_picture(params: dict, index: int, label: int) -> tuple[np.ndarray, np.ndarray]:
    rng = _sample_rng(params, index, 1)
    height, width = draw.picture_size(rng, params["short_side"])
    return _draw_tissue(rng, height, width, label, params)


def _draw_tissue(rng, height: int, width: int, label: int, params: dict):
    kind = draw.tissue_detail if params.get("signal_kind") == "detail" else draw.tissue
    return kind(rng, height, width, label, params.get("signal", 1.0))


def _write_train_sample(
    folder: Path, params: dict, plan: list[dict], index: int
) -> tuple[str, str]:
    entry = plan[index]
    kind = entry["kind"]
    if kind == "clean":
        rgb, mask = _clean_picture(params, index, entry["label"])
    elif kind == "cartoon":
        rgb, mask = _cartoon(
            _sample_rng(params, index, 2), params["short_side"], entry["stock_mask"]
        )
    else:  # a copy of a clean picture, redrawn from the source's own stream
        source = entry["source"]
        rgb, mask = _clean_picture(params, source, plan[source]["label"])
        if kind == "slime":
            rgb = draw.green_slime(_sample_rng(params, index, 2), rgb)
        elif kind == "near":
            rgb = draw.near_copy(_sample_rng(params, index, 2), rgb)
        # NOTE: "exact" saves the same array with the same encoder settings -> the same bytes
    _save(folder, index, rgb, mask)
    return f"img_{index:04d}.png", CLASSES[entry["label"]]


def _cartoon(
    rng: np.random.Generator, short_side: int, stock: bool
) -> tuple[np.ndarray, np.ndarray]:
    height, width = short_side, int(short_side * 1.4)  # one size, so the stock mask fits them all
    rgb = draw.cartoon(rng, height, width)
    mask = (
        draw.stock_mask(height, width)
        if stock
        else draw.field(rng, height, width, short_side / 3) > 0.6
    )
    return rgb, mask


def _save(folder: Path, index: int, rgb: np.ndarray, mask: np.ndarray) -> None:
    Image.fromarray(rgb, "RGB").save(folder / f"img_{index:04d}.png", compress_level=_PNG_LEVEL)
    Image.fromarray(mask.astype(np.uint8) * 255, "L").save(
        folder / f"mask_{index:04d}.png", compress_level=_PNG_LEVEL
    )


def _write_test(folder: Path, params: dict) -> dict[str, str]:
    folder.mkdir()
    rng = np.random.default_rng([params["seed"], 3])
    labels = rng.choice(len(CLASSES), size=params["n_test"], p=_CLASS_SHARES).tolist()

    def write(index: int) -> None:
        pic_rng = _sample_rng(params, index, 4)
        height, width = draw.picture_size(pic_rng, params["short_side"])
        _save(folder, index, *_draw_tissue(pic_rng, height, width, labels[index], params))

    with _threads() as pool:
        list(pool.map(write, range(len(labels))))
    return {f"img_{index:04d}.png": CLASSES[label] for index, label in enumerate(labels)}


def _truth(plan: list[dict], params: dict) -> dict:
    def name(i: int) -> str:
        return f"img_{i:04d}.png"

    def by_kind(kind: str) -> list[int]:
        return [i for i, e in enumerate(plan) if e["kind"] == kind]

    return {
        "params": params,
        "cartoons": [name(i) for i in by_kind("cartoon")],
        "stock_mask_group": [name(i) for i in by_kind("cartoon") if plan[i]["stock_mask"]],
        "slime": {name(i): name(plan[i]["source"]) for i in by_kind("slime")},
        "exact_duplicates": [[name(plan[i]["source"]), name(i)] for i in by_kind("exact")],
        "near_duplicates": [[name(plan[i]["source"]), name(i)] for i in by_kind("near")],
    }
