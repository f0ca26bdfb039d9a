"""`histosweep synth OUT`: write a synthetic dataset in the challenge layout (+ TEST/, synth_truth.json).

Exercise: `histosweep synth /tmp/synth --n-train 120 --n-test 24 --seed 0`.
"""

from __future__ import annotations

import argparse

from histosweep.cli._common import print_json

OPTIONS = ("json",)  # the common options this command reads (cli._common)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", metavar="OUT", help="folder to create (must be new or empty)")
    parser.add_argument(
        "--n-train", type=int, default=120, help="labelled training samples (default 120)"
    )
    parser.add_argument(
        "--n-test", type=int, default=24, help="unlabelled test samples in OUT/TEST (default 24; 0: no TEST folder)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="random seed; same seed, same files (default 0)"
    )
    parser.add_argument(
        "--short-side",
        type=int,
        default=160,
        help="short side of each picture in px (default 160; the challenge: 1024)",
    )
    parser.add_argument(
        "--signal", type=float, default=1.0,
        help="strength of the class signal in [0, 1] (default 1; lower: classes overlap, for benchmarks)",
    )
    parser.add_argument(
        "--signal-kind", choices=("stain", "detail"), default="stain",
        help="stain: class in the tumour's colour (survives a resize); detail: only in nuclei "
        "size and density, erased by downsampling (tells input modes apart)",
    )


def run(args: argparse.Namespace) -> int:
    import json

    from histosweep.data import synthesize

    root = synthesize(
        args.out,
        n_train=args.n_train,
        n_test=args.n_test,
        seed=args.seed,
        short_side=args.short_side,
        signal=args.signal,
        signal_kind=args.signal_kind,
    )
    truth = json.loads((root / "synth_truth.json").read_text())
    document = {
        "root": str(root),
        "train": args.n_train,
        "test": args.n_test,
        "labels": str(root / "train_labels.csv"),
        "test_dir": str(root / "TEST") if args.n_test else None,
        "truth": str(root / "synth_truth.json"),
        "contaminants": len(truth["cartoons"]) + len(truth["slime"]),
    }
    if args.json:
        print_json(document)
    else:
        wrote = (f"{args.n_train} training + {args.n_test} test samples" if args.n_test
                 else f"{args.n_train} training samples and no TEST folder (--n-test 0)")
        print(f"wrote {wrote} to {root}")
        print(
            f"  {document['contaminants']} planted contaminants and 2 duplicates (see {document['truth']})"
        )
        print(f"  next: histosweep prepare {root}")
    return 0
