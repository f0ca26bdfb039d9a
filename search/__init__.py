"""The search: space files, study settings, samplers, pruners, the objective (pruned folds,
out-of-fold value). The fleet that runs it (workers, gc, check, status) is histosweep.fleet.
Imports torch only when a trial trains.

Exercise: `histosweep create S --data DATA && histosweep worker S --gpus cpu --n-trials 4`.
"""

from histosweep.search._enqueue import (
    REFERENCE_PARAMS,
    check_params,
    enqueue,
    read_params_file,
    reference_params,
)
from histosweep.search._errors import UserError, WorkerStopped
from histosweep.search._inputs import space_input_targets
from histosweep.search._objective import Objective, Runtime
from histosweep.search._settings import (
    OBJECTIVE_NAME,
    PRUNERS,
    SETTINGS_KEY,
    StudySettings,
    check_current,
    load_settings,
)
from histosweep.search._space import Space, SpaceError, default_space_path, load_space, parse_space
from histosweep.search._study import (
    SAMPLERS,
    CreateOptions,
    create_study,
    make_pruner,
    make_sampler,
    open_study,
)

__all__ = [
    "CreateOptions",
    "OBJECTIVE_NAME",
    "Objective",
    "PRUNERS",
    "REFERENCE_PARAMS",
    "Runtime",
    "SAMPLERS",
    "SETTINGS_KEY",
    "Space",
    "SpaceError",
    "StudySettings",
    "UserError",
    "WorkerStopped",
    "check_current",
    "check_params",
    "create_study",
    "default_space_path",
    "enqueue",
    "load_settings",
    "load_space",
    "make_pruner",
    "make_sampler",
    "open_study",
    "parse_space",
    "read_params_file",
    "reference_params",
    "space_input_targets",
]
