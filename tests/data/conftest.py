"""Fixtures for data tests: writable copies of the synthetic dataset, a shared audit."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest


@pytest.fixture()
def labeled_copy(synth_root: Path, tmp_path: Path) -> Path:
    """A writable copy of the synthetic training set (train_labels.csv + train_data/), to break."""
    root = tmp_path / "data"
    root.mkdir()
    shutil.copy(synth_root / "train_labels.csv", root / "train_labels.csv")
    shutil.copytree(synth_root / "train_data", root / "train_data")
    return root


@pytest.fixture(scope="session")
def truth(synth_root: Path) -> dict:
    return json.loads((synth_root / "synth_truth.json").read_text())


@pytest.fixture(scope="session")
def synth_dataset(synth_root: Path):
    from histosweep.data import load_dataset

    return load_dataset(synth_root)


@pytest.fixture(scope="session")
def synth_audit(synth_dataset, tmp_path_factory):
    """Cache (64 px) + audit of the synthetic set, in a cache folder of its own."""
    from histosweep.data import audit_dataset, build_cache

    cache = tmp_path_factory.mktemp("audit-cache")
    build_cache(synth_dataset, resolutions=[64], cache_dir=cache, workers=1, progress=False)
    return audit_dataset(synth_dataset, cache_dir=cache, progress=False), cache
