"""`histosweep export-best STUDY --out DIR`: an ensemble searched across the top trials on
out-of-fold predictions (or one trial) as a bundle: checkpoints, manifest, report.html with the
lockbox estimate, and with --test a submission.csv. Exercise: `histosweep export-best demo --out b`.
"""

from __future__ import annotations

from pathlib import Path

from histosweep.cli._common import artifacts_arg, device_arg, print_json, storage_arg
from histosweep.constants import DEFAULT_CANDIDATES

# bundle._selection.METHODS / DEFAULT_METHOD and bundle._bootstrap.BBC_RESAMPLES, spelled here so
# that `--help` does not import numpy
METHODS = ("greedy", "bagged", "cmaes")
DEFAULT_METHOD = "cmaes"
BBC_RESAMPLES = 1000

OPTIONS = ("storage", "artifacts", "json")  # the common options this command reads (cli._common)


def add_arguments(parser) -> None:
    parser.add_argument("study", nargs="+",
                        help="study name; several studies on one data and split (create --like) "
                             "pool their trials: candidates, selection and estimate across them")
    parser.add_argument("--out", required=True, help="bundle folder to write (must not exist, or be empty)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--candidates", type=int, default=DEFAULT_CANDIDATES,
                       help="select the ensemble from the top N complete trials by out-of-fold "
                            f"macro-F1 (default {DEFAULT_CANDIDATES})")
    which.add_argument("--single", action="store_true", help="a single-trial bundle of the best trial")
    which.add_argument("--trial", type=int, nargs="+", action="extend", default=[], metavar="N",
                       help="a single-trial bundle of trial N (must be COMPLETE); several N: their "
                            "equal-weight ensemble, no selection")
    parser.add_argument("--no-calibrate", action="store_true",
                        help="plain argmax: no per-class decision offsets fitted on out-of-fold data")
    parser.add_argument("--test", default=None, help="test folder (img_*.png + mask_*.png): also write submission.csv")
    parser.add_argument("--data", default=None, help="training data folder, when it moved since create")
    parser.add_argument("--batch-size", type=int, default=32, help="inference batch size (default 32)")
    parser.add_argument("--tta", action="store_true", help="flip/rot90 test-time augmentation for submission.csv")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing bundle in --out")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when present)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars or stage lines")
    add_estimate_arguments(parser)


def add_estimate_arguments(parser) -> None:
    """--ensemble and --bootstrap: export-best and estimate read them alike."""
    parser.add_argument("--ensemble", choices=METHODS, default=DEFAULT_METHOD,
                        help=f"ensemble selection on out-of-fold data: greedy (Caruana 2004), bagged "
                             f"(Caruana 2006: sorted init, random halves), cmaes (CMA-ES weights, "
                             f"Purucker & Beel 2023) (default {DEFAULT_METHOD})")
    parser.add_argument("--bootstrap", type=int, default=BBC_RESAMPLES, metavar="N",
                        help=f"BBC-CV resamples: the selection re-run on in-bag out-of-fold rows, "
                             f"scored out of bag (at least 100; default {BBC_RESAMPLES}, seeded)")


def print_estimate(bbc: dict) -> None:
    """The BBC-CV lines export-best and estimate print."""
    from histosweep.trial_files import gain_sentence, selection_label

    def ci(x: dict) -> str:
        return f"{x['mean']:.4f} [{x['ci95'][0]:.4f}, {x['ci95'][1]:.4f}]"

    where = (f"{bbc['reference_study']!r} trial" if len(bbc.get("studies") or ()) > 1
             else "trial")
    ref = (f"; reference recipe ({where} {bbc['reference_trial']}) {ci(bbc['reference'])}"
           if bbc["reference"] else "")
    print(f"BBC-CV estimate ({bbc['resamples']} resamples, {selection_label(bbc['method'])} re-run in bag, "
          f"scored out of bag): ensemble {ci(bbc['ensemble'])}; single best trial "
          f"{ci(bbc['single_best'])}{ref}")
    print(gain_sentence(bbc["search_gain"]))


def run(args) -> int:
    from histosweep.bundle import ExportOptions, export_best

    opts = ExportOptions(
        study=args.study[0], more_studies=tuple(args.study[1:]), out=Path(args.out), storage=storage_arg(args), artifacts=artifacts_arg(args),
        trials=tuple(args.trial), single=args.single, candidates=args.candidates,
        calibrate=not args.no_calibrate, test=Path(args.test) if args.test else None, data=args.data,
        batch_size=args.batch_size, tta=args.tta, overwrite=args.overwrite, device=device_arg(args),
        progress=not (args.no_progress or args.json), ensemble=args.ensemble,
        bootstrap=args.bootstrap,
    )
    summary = export_best(opts)
    if args.json:
        print_json(summary)
        return 0
    m = summary["metrics"]
    pooled = len(summary["studies"]) > 1
    members = ", ".join(f"{x['study'] + ' ' if pooled else ''}trial {x['trial']} x{x['weight']:.2f}"
                        for x in summary["members"])
    print(f"exported {members} of {' + '.join(map(repr, summary['studies']))} to {summary['out']}")
    # NOTE: both OOF figures are in-sample (selected and fitted on these rows); BBC-CV is the honest one
    oof = (f"out-of-fold macro-F1 (selection data, in-sample): {m['oof_f1']:.4f} argmax, "
           f"{m['oof_f1_calibrated']:.4f} with the decision offsets")
    if m["lockbox_f1"] is not None:
        low, high = m["lockbox_f1_ci95"]
        print(f"{oof}; lockbox macro-F1 "
              f"(holdout, read once): {m['lockbox_f1']:.4f} (95% CI {low:.4f}-{high:.4f}); single best "
              f"trial {_single(m['single_best'], pooled)} on the lockbox: {m['single_best']['lockbox_f1']:.4f}")
    else:
        print(f"{oof}; no lockbox (--holdout 0)")
    print_estimate({**m["bbc"], "studies": summary["studies"]})
    print(f"report: {summary['report']}")
    if summary["submission"]:
        print(f"submission: {summary['submission']} ({summary['submission_rows']} rows)")
    return 0


def _single(best: dict, pooled: bool) -> str:
    return f"{best['trial']} of {best['study']!r}" if pooled else str(best["trial"])
