"""The search: space files, study settings, samplers, pruners, the objective (pruned folds,
out-of-fold value). The fleet that runs it (workers, gc, check, status) is histosweep.fleet.

Callers import from here, never from the private modules. The registries load at once (the
CLI's help text reads them); the rest loads on first use, so `histosweep --help` stays fast.
Imports torch only when a trial trains.
Exercise: `histosweep create S --data DATA && histosweep worker S --gpus cpu --n-trials 4`.
"""

from __future__ import annotations

import importlib

from histosweep.search._errors import UserError, WorkerStopped
from histosweep.search._pruners import (
    DEFAULT_PRUNER,
    PRUNER_KINDS,
    PRUNERS,
    PrunerKind,
    pruner_help,
    pruner_kind,
    pruner_table,
)
from histosweep.search._samplers import (
    DEFAULT_SAMPLER,
    SAMPLER_KINDS,
    SAMPLERS,
    SamplerKind,
    sampler_help,
    sampler_kind,
    sampler_table,
)

# name -> private module that defines it (imported on first use: numpy, the data package)
_LAZY = {
    "BUDGET_ATTR": "_budget",
    "budget_line": "_budget",
    "budget_report": "_budget",
    "check_budget_hours": "_budget",
    "hours_text": "_budget",
    "read_budget": "_budget",
    "set_budget": "_budget",
    "spent_line": "_budget",
    "REFERENCE_PARAMS": "_enqueue",
    "is_reference": "_enqueue",
    "check_params": "_enqueue",
    "enqueue": "_enqueue",
    "read_params_file": "_enqueue",
    "reference_params": "_enqueue",
    "space_input_targets": "_inputs",
    "IMPORTED_ATTR": "_campaign",
    "IMPORTS_KEY": "_campaign",
    "fit_params": "_campaign",
    "imported_finished": "_campaign",
    "is_imported": "_campaign",
    "rebase_steps": "_campaign",
    "split_difference": "_campaign",
    "split_key": "_campaign",
    "Objective": "_objective",
    "Runtime": "_objective",
    "OBJECTIVE_NAME": "_settings",
    "SETTINGS_KEY": "_settings",
    "StudySettings": "_settings",
    "check_current": "_settings",
    "load_settings": "_settings",
    "Space": "_space",
    "SpaceError": "_space",
    "default_space_path": "_space",
    "load_space": "_space",
    "parse_space": "_space",
    "CreateOptions": "_study",
    "create_study": "_study",
    "make_pruner": "_study",
    "make_sampler": "_study",
    "open_study": "_study",
}

__all__ = [
    "DEFAULT_PRUNER",
    "DEFAULT_SAMPLER",
    "PRUNERS",
    "PRUNER_KINDS",
    "PrunerKind",
    "SAMPLERS",
    "SAMPLER_KINDS",
    "SamplerKind",
    "UserError",
    "WorkerStopped",
    "pruner_help",
    "pruner_kind",
    "pruner_table",
    "sampler_help",
    "sampler_kind",
    "sampler_table",
    *sorted(_LAZY),
]


def __getattr__(name: str):
    if name in _LAZY:
        module = importlib.import_module(f"histosweep.search.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'histosweep.search' has no attribute {name!r}")
