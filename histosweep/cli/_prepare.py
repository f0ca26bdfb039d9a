"""`histosweep prepare DATA`: validate a dataset, audit it, build its per-resolution caches.

Prints a table, or one JSON document with --json; progress bars go to stderr.
Exercise: `histosweep prepare synth-data --resolutions 224,384 --json`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from histosweep.cli._common import print_json
from histosweep.constants import ENV_CACHE

OPTIONS = ("json",)  # the common options this command reads (cli._common)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "data",
        metavar="DATA",
        help="dataset folder (train_labels.csv + train_data/) or a test folder",
    )
    parser.add_argument(
        "--resolutions", default=None,
        help="comma-separated cache sides in px (default 384; with --space: none beyond the space's)"
    )
    parser.add_argument(
        "--modes",
        default=None,
        help="comma-separated resize modes: stretch,pad,reflect (default stretch)",
    )
    parser.add_argument(
        "--space",
        default=None,
        help="also build every input (whole, mask_crop crops, tiles) this space file can pick",
    )
    parser.add_argument(
        "--keep-flagged", action="store_true", help="report flagged samples but keep them"
    )
    parser.add_argument(
        "--cache", default=None, help=f"cache folder (env {ENV_CACHE}, default ~/.cache/histosweep)"
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="decode processes (default: CPU count)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")


def run(args: argparse.Namespace) -> int:
    from histosweep import data

    # NOTE: with --space alone, only what the space can pick (a tiles-only space needs no 384-stretch)
    only_space = args.space is not None and args.resolutions is None and args.modes is None
    resolutions = [] if only_space else _ints(_given(args.resolutions, "384"), "--resolutions")
    modes = [] if only_space else _modes(_given(args.modes, "stretch"))
    _check_workers(args.workers)
    root = Path(args.data).expanduser()
    ds = data.load_dataset(root, labeled=_looks_labeled(root))
    progress = not args.no_progress
    inputs = _space_inputs(args.space)
    whole = [(r, m) for m in modes for r in resolutions]
    # NOTE: one build: each image decoded once for every cache (and the audit features)
    data.build_inputs(ds, whole + inputs, cache_dir=args.cache, workers=args.workers,
                      progress=progress)
    report = data.audit_dataset(ds, cache_dir=args.cache, workers=args.workers, progress=progress)
    document = _document(ds, report, resolutions, modes, args)
    document["cache"].update({data.input_key(t): str(Path(document["cache_root"]) / data.input_key(t))
                              for t in inputs})
    if args.json:
        print_json(document)
    else:
        _print_table(document)
    return 0


def _given(value: str | None, default: str) -> str:
    return default if value is None else value


def _space_inputs(space_file) -> list:
    """Every input the space can pick ([] without --space); one line when a key is a range."""
    if space_file is None:
        return []
    from histosweep.data import DataError
    from histosweep.search import load_space, space_input_targets

    targets = space_input_targets(load_space(space_file))
    if targets is None:
        raise DataError(f"--space {space_file}: a key that changes the cached pixels (resolution, "
                        "tile_size, ...) is a range; make it a list so prepare knows what to build")
    return targets


def _ints(text: str, option: str) -> list[int]:
    from histosweep.data import DataError

    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 32:
        raise DataError(
            f"{option} {text!r}: use comma-separated sides of at least 32 px, like 224,384"
        )
    return values


def _modes(text: str) -> list[str]:
    from histosweep.constants import RESIZE_MODES
    from histosweep.data import DataError

    modes = [m.strip() for m in text.split(",") if m.strip()]
    if not modes or not set(modes) <= set(RESIZE_MODES):
        raise DataError(
            f"--modes {text!r}: use comma-separated resize modes of {', '.join(RESIZE_MODES)}, "
            "like stretch,pad"
        )
    return modes


def _check_workers(workers: int | None) -> None:
    from histosweep.data import DataError

    if workers is not None and workers < 1:
        raise DataError(f"--workers {workers}: use a count of decode processes >= 1, "
                        "or leave it out for the CPU count")


def _looks_labeled(root: Path) -> bool:
    """The challenge layout has train_labels.csv and/or train_data/; a test folder has neither.
    A dataset's own train_data/ counts as labelled, so that loading it says to pass its parent."""
    inside = root.name == "train_data" and (root.parent / "train_labels.csv").is_file()
    return (root / "train_labels.csv").exists() or (root / "train_data").is_dir() or inside


def _document(ds, report, resolutions, modes, args) -> dict:
    from histosweep import data

    flagged = report.excluded
    excluded = [] if args.keep_flagged else flagged
    dropped = {e["sample_index"] for e in excluded}
    kept = [s for s in ds.samples if s.sample_index not in dropped]
    cache_root = Path(args.cache).expanduser() if args.cache else data.default_cache_dir()
    base = cache_root / report.fingerprint[:16]
    document = {
        "data": str(ds.root),
        "labeled": ds.labeled,
        "fingerprint": report.fingerprint,
        "samples": report.samples,
        "kept": len(kept),
        "excluded": [
            {"sample_index": e["sample_index"], "reason": e["reason"], "kind": e["kind"]}
            for e in excluded
        ],
        "flagged": [e["sample_index"] for e in flagged],
        "keep_flagged": bool(args.keep_flagged),
        "duplicate_groups": report.duplicate_groups,
        "warnings": list(dict.fromkeys(ds.warnings + report.warnings)),
        "cache_root": str(base),
        "cache": {f"{r}-{m}": str(base / f"{r}-{m}") for m in modes for r in resolutions},
    }
    if ds.labeled:
        document["classes"] = {name: sum(s.label == name for s in kept) for name in data.CLASSES}
    return document


def _print_table(doc: dict) -> None:
    print(
        f"{'dataset':<12} {doc['data']}  ({doc['samples']} samples, {'labelled' if doc['labeled'] else 'unlabelled'})"
    )
    print(f"{'fingerprint':<12} {doc['fingerprint'][:16]}")
    hint = "" if doc["keep_flagged"] else "  (--keep-flagged keeps them)"
    print(f"{'excluded':<12} {len(doc['excluded'])}{hint}")
    for entry in doc["excluded"]:
        print(f"  {entry['sample_index']:<16} {entry['kind']:<10} {entry['reason']}")
    if doc["keep_flagged"] and doc["flagged"]:
        print(f"{'flagged':<12} {len(doc['flagged'])} kept: {', '.join(doc['flagged'])}")
    print(f"{'duplicates':<12} {len(doc['duplicate_groups'])} group(s), each kept inside one fold")
    for group in doc["duplicate_groups"]:
        print(f"  {' = '.join(group)}")
    print(f"{'warnings':<12} {len(doc['warnings'])}")
    for warning in doc["warnings"]:
        print(f"  {warning}")
    classes = doc.get("classes")
    counts = "  " + " | ".join(f"{k} {v}" for k, v in classes.items()) if classes else ""
    print(f"{'kept':<12} {doc['kept']}{counts}")
    for name, path in doc["cache"].items():
        print(f"{'cache':<12} {name:<12} {path}")
