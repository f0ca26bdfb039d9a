"""`histosweep predict BUNDLE --images TEST --out CSV`: the bundle's weighted ensemble of trials
(with its decision offsets) on a test folder, written as `sample_index,label`. Exercise: `histosweep predict b --images TEST --out s.csv`.
"""

from __future__ import annotations

from histosweep.cli._common import UserError, device_arg, print_json

OPTIONS = ("json",)  # the common options this command reads (cli._common)


def add_arguments(parser) -> None:
    parser.add_argument("bundle", help="bundle folder written by histosweep export-best")
    parser.add_argument("--images", required=True, help="test folder: img_*.png + mask_*.png (no labels)")
    parser.add_argument("--out", required=True, help="submission CSV to write (sample_index,label)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.add_argument("--tta", action="store_true", help="average over the 8 flips/rot90s")
    parser.add_argument("--batch-size", type=int, default=32, help="inference batch size (default 32)")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when present)")
    parser.add_argument("--workers", type=int, default=None, help="decode processes (default: up to 8)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args) -> int:
    from histosweep.bundle import check_out_place, predict_folder

    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers {args.workers}: give a number of decode processes >= 1 "
                        "(or leave it out: up to 8)")
    check_out_place(args.out, bundle_dir=args.bundle, images_dir=args.images,
                    overwrite=args.overwrite)
    summary = predict_folder(
        args.bundle, args.images, args.out, tta=args.tta, batch_size=args.batch_size,
        device=device_arg(args), workers=args.workers, progress=not (args.no_progress or args.json),
    )
    if args.json:
        print_json(summary)
    else:
        counts = ", ".join(f"{k}: {v}" for k, v in summary["label_counts"].items())
        print(f"wrote {summary['out']}: {summary['rows']} rows ({counts})")
    return 0
