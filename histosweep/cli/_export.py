"""`histosweep export-best STUDY --out DIR`: the best trial as a bundle (checkpoints, manifest,
report.html, and with --test a submission.csv). Exercise: `histosweep export-best demo --out b`.
"""

from __future__ import annotations

from pathlib import Path

from histosweep.cli._common import artifacts_arg, print_json, storage_arg


def add_arguments(parser) -> None:
    parser.add_argument("study", help="study name")
    parser.add_argument("--out", required=True, help="bundle folder to write (must not exist, or be empty)")
    parser.add_argument("--trial", type=int, default=None, help="export trial N (must be COMPLETE) instead of the best")
    parser.add_argument("--test", default=None, help="test folder (img_*.png + mask_*.png): also write submission.csv")
    parser.add_argument("--data", default=None, help="training data folder, when it moved since create")
    parser.add_argument("--batch-size", type=int, default=32, help="inference batch size (default 32)")
    parser.add_argument("--tta", action="store_true", help="flip/rot90 test-time augmentation for submission.csv")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing bundle in --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars or stage lines")


def run(args) -> int:
    from histosweep.bundle._export import ExportOptions, export_best

    opts = ExportOptions(
        study=args.study, out=Path(args.out), storage=storage_arg(args), artifacts=artifacts_arg(args),
        trial=args.trial, test=Path(args.test) if args.test else None, data=args.data,
        batch_size=args.batch_size, tta=args.tta, overwrite=args.overwrite,
        progress=not (args.no_progress or args.json),
    )
    summary = export_best(opts)
    if args.json:
        print_json(summary)
        return 0
    m = summary["metrics"]
    low, high = m["holdout_f1_ci95"]
    bundle_f1 = "n/a" if m["holdout_f1_bundle"] is None else f"{m['holdout_f1_bundle']:.4f}"
    print(f"exported trial {summary['trial']} of {summary['study']!r} to {summary['out']}: "
          f"holdout macro-F1 {m['holdout_f1']:.4f} (95% CI {low:.4f}-{high:.4f}; from the bundle "
          f"{bundle_f1}), folds {summary['folds']}")
    print(f"report: {summary['report']}")
    if summary["submission"]:
        print(f"submission: {summary['submission']} ({summary['submission_rows']} rows)")
    return 0
