"""The search: space files, study settings, the objective (pruned folds, out-of-fold value),
the pruner, the worker loop and status. Imports torch only when a trial trains.

Exercise: `histosweep create S --data DATA && histosweep worker S --gpus cpu --n-trials 4`.
"""

from histosweep.search._check import Check, CheckOptions, PreflightError, preflight, run_checks
from histosweep.search._enqueue import (
    ESTIMATE_ATTR,
    REFERENCE_PARAMS,
    check_params,
    gain_sentence,
    is_reference,
    reference_params,
)
from histosweep.search._errors import UserError, WorkerStopped
from histosweep.search._listing import list_studies, list_trials
from histosweep.search._settings import (
    OBJECTIVE_NAME,
    PRUNERS,
    StudySettings,
    check_current,
    load_settings,
)
from histosweep.search._space import Space, SpaceError, default_space_path, load_space, parse_space
from histosweep.search._status import format_status, study_status
from histosweep.search._study import (
    SAMPLERS,
    CreateOptions,
    create_study,
    make_pruner,
    make_sampler,
    open_study,
)
from histosweep.search._worker import WorkerOptions, run_slot, run_workers

__all__ = [
    "Check",
    "CheckOptions",
    "PreflightError",
    "OBJECTIVE_NAME",
    "PRUNERS",
    "check_current",
    "REFERENCE_PARAMS",
    "SAMPLERS",
    "CreateOptions",
    "Space",
    "SpaceError",
    "StudySettings",
    "UserError",
    "WorkerOptions",
    "WorkerStopped",
    "check_params",
    "create_study",
    "default_space_path",
    "ESTIMATE_ATTR",
    "format_status",
    "gain_sentence",
    "is_reference",
    "list_studies",
    "list_trials",
    "load_settings",
    "load_space",
    "make_pruner",
    "make_sampler",
    "open_study",
    "parse_space",
    "preflight",
    "reference_params",
    "run_checks",
    "run_slot",
    "run_workers",
    "study_status",
]
