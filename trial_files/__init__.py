"""What a trial leaves behind and how it looks: fold checkpoints, probabilities and metrics in
the artifact store, their figures, and the trial's and export's dashboard pages. The search
writes them, the bundle reads them. Exercise: `histosweep worker STUDY` then `export-best`.
"""

from histosweep.trial_files._estimate import ESTIMATE_ATTR, gain_sentence, selection_label
from histosweep.trial_files._fold import (
    fetch_checkpoint,
    fetch_metrics,
    fetch_probs,
    fold_key,
    upload_file,
    upload_fold,
)
from histosweep.trial_files._plots import confusion_png, learning_curves_png
from histosweep.trial_files._trial_page import publish_trial, save_export_note

__all__ = [
    "ESTIMATE_ATTR",
    "gain_sentence",
    "selection_label",
    "confusion_png",
    "fetch_checkpoint",
    "fetch_metrics",
    "fetch_probs",
    "fold_key",
    "learning_curves_png",
    "publish_trial",
    "save_export_note",
    "upload_file",
    "upload_fold",
]
