"""What a study stores so that every worker trains the same thing: space, data, split, settings.

Written once by `histosweep create`, read once per worker process (never per trial).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from histosweep.data import Split
from histosweep.search._errors import UserError
from histosweep.search._space import Space

SETTINGS_KEY = "histosweep"
# 2: the trial value is out-of-fold macro-F1 (1: holdout F1 of a weighted fold ensemble)
FORMAT_VERSION = 2
OBJECTIVE_NAME = "oof_macro_f1"


@dataclass(frozen=True)
class StudySettings:
    data_root: str
    fingerprint: str
    space: dict[str, Any]
    sample_ids: list[str]  # kept samples, in split index order
    labels: list[int]  # class id per kept sample
    split: dict[str, Any]  # data.Split.to_dict()
    folds: int
    holdout: float
    seed: int
    pruner: str
    keep_flagged: bool
    excluded: list[dict[str, str]]
    version: int = FORMAT_VERSION
    sampler: str = "tpe"  # search._samplers.SAMPLERS; default: settings stored before it existed
    # create --keep-top N: workers gc fold checkpoints outside the top N after each trial; 0 keeps all
    keep_top: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StudySettings:
        return cls(**data)

    def identity(self) -> dict[str, Any]:
        """What must match for a re-create to be the same study."""
        return {
            "fingerprint": self.fingerprint, "space": self.space, "folds": self.folds,
            "holdout": self.holdout, "seed": self.seed, "keep_flagged": self.keep_flagged,
            "version": self.version,
        }

    def space_obj(self) -> Space:
        return Space.from_dict(self.space)

    def split_obj(self):
        return Split.from_dict(self.split)

    def label_array(self) -> np.ndarray:
        return np.asarray(self.labels, dtype=np.int64)

    def data_path(self, override: str | None = None) -> Path:
        return Path(override or self.data_root)


def save_settings(study, settings: StudySettings) -> None:
    study.set_user_attr(SETTINGS_KEY, settings.to_json())


def load_settings(study) -> StudySettings:
    raw = study.user_attrs.get(SETTINGS_KEY)
    if raw is None:
        raise UserError(
            f"study {study.study_name!r} was not created by histosweep create "
            "(create it with: histosweep create STUDY --data DATA)"
        )
    if isinstance(raw, str):
        raw = json.loads(raw)
    return StudySettings.from_json(raw)


def check_current(study, settings: StudySettings) -> None:
    """Workers and export-best refuse a study whose trial values mean something else."""
    if settings.version < FORMAT_VERSION:
        raise UserError(
            f"study {study.study_name!r} was created by histosweep 0.1: its trial values are "
            "holdout scores, so selecting on them would read the lockbox; create a new study "
            f"(histosweep create NEW --data {settings.data_root}) to search and export with "
            f"out-of-fold selection"
        )
