"""The exported ensemble: export-best (bundle, manifest, report), predict, the report's figures.

Reads a finished search through `histosweep.search`; the CLI is a thin layer over both.
Exercise: `histosweep export-best STUDY --out bundle --test TEST` and `histosweep predict`.
"""

from histosweep.bundle._estimate import EstimateOptions, estimate
from histosweep.bundle._export import ExportOptions, export_best
from histosweep.bundle._predict import (
    Bundle,
    BundleFold,
    check_out_place,
    decode_samples,
    ensemble_predict,
    load_bundle,
    predict_folder,
)
from histosweep.bundle._report import bootstrap_ci, per_class_scores
from histosweep.bundle._selection import DEFAULT_METHOD as DEFAULT_ENSEMBLE
from histosweep.bundle._selection import METHODS as ENSEMBLE_METHODS
from histosweep.bundle._source import pick_trial

__all__ = [
    "DEFAULT_ENSEMBLE",
    "ENSEMBLE_METHODS",
    "EstimateOptions",
    "estimate",
    "Bundle",
    "BundleFold",
    "ExportOptions",
    "bootstrap_ci",
    "check_out_place",
    "decode_samples",
    "ensemble_predict",
    "export_best",
    "load_bundle",
    "per_class_scores",
    "pick_trial",
    "predict_folder",
]
