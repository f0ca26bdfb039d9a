"""Artifacts: an upload that dies midway is never referenced by a trial; a fold checkpoint that
cannot be loaded is reported by export-best with its trial and fold, and no bundle is left."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from optuna.artifacts import FileSystemArtifactStore
from optuna.trial import TrialState

from tests.reliability._helpers import error_line, run_cli, snapshot
from tests.search._helpers import load, tiny_space

pytestmark = pytest.mark.slow
UPLOADS_PER_FOLD = 4  # checkpoint, probabilities, metrics, learning-curve picture


class HalfWriteStore(FileSystemArtifactStore):
    """A real folder store whose `fail_at`-th write stores half the bytes, then raises (a lost
    connection to S3, a full disk) and calls `on_fail`. Records the sha256 of complete writes."""

    def __init__(self, root: str, fail_at: int) -> None:
        Path(root).mkdir(parents=True, exist_ok=True)
        super().__init__(root)
        self.root = root
        self.fail_at = fail_at
        self.on_fail = lambda: None
        self.writes = 0
        self.complete: dict[str, str] = {}
        self.broken: str | None = None

    def write(self, artifact_id, content_body) -> None:
        self.writes += 1
        data = content_body.read()
        if self.writes == self.fail_at:
            self.broken = artifact_id
            with open(f"{self.root}/{artifact_id}", "wb") as fh:
                fh.write(data[: len(data) // 2])
            self.on_fail()
            raise OSError(f"injected: upload of {artifact_id} interrupted after {len(data) // 2} bytes")
        with open(f"{self.root}/{artifact_id}", "wb") as fh:
            fh.write(data)
        self.complete[artifact_id] = hashlib.sha256(data).hexdigest()


def _referenced(trial) -> set[str]:
    """Artifact ids a trial points at: its fold records and its artifact list (the dashboard's)."""
    ids = {key.split(":", 1)[1] for key in trial.system_attrs if key.startswith("artifacts:")}
    for key, value in trial.user_attrs.items():
        if key.startswith("fold_") and isinstance(value, dict):
            ids |= {v for k, v in value.items() if k in ("checkpoint", "probs", "metrics", "curves_png")}
    if "confusion_png" in trial.user_attrs:
        ids.add(trial.user_attrs["confusion_png"])
    return ids


def test_interrupted_upload_is_never_referenced(synth_root, tmp_path):
    from histosweep.fleet import TrialLoop, WorkerOptions
    from histosweep.model import load_checkpoint
    from histosweep.search import (
        CreateOptions,
        Objective,
        Runtime,
        create_study,
        load_settings,
        open_study,
    )

    url = f"sqlite:///{tmp_path / 'study.db'}"
    create_study("up", url, CreateOptions(data=synth_root, space_file=tiny_space(tmp_path, epochs=1),
                                          folds=2, pruner="none"), progress=False)
    study = open_study("up", url, heartbeat=60)
    settings = load_settings(study)
    # dies on fold 1's checkpoint: fold 0 is fully uploaded, fold 1 is not
    store = HalfWriteStore(str(tmp_path / "artifacts"), fail_at=UPLOADS_PER_FOLD + 1)
    rt = Runtime(study=study, settings=settings, store=store, device="cpu", slot="t", progress=False)
    opts = WorkerOptions(study="up", storage=url, artifacts=store.root, n_trials=1, progress=False)
    loop = TrialLoop(study, Objective(rt), opts, "t")
    store.on_fail = loop.stop.set  # the worker stops after this trial, as after a SIGTERM
    assert loop.run() == 0

    trials = load("up", url).get_trials()
    # a store failure is infrastructure: the trial is re-queued (WAITING) to resume from fold 0
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    hit = trials[0]
    assert "injected: upload" in hit.user_attrs["fail_reason"]
    assert hit.user_attrs["fail_reason"].startswith("artifact store unavailable during the trial")
    assert "fold_0" in hit.user_attrs and "fold_1" not in hit.user_attrs
    assert store.broken is not None
    for trial in trials:
        ids = _referenced(trial)
        assert store.broken not in ids, f"trial {trial.number} references the interrupted upload"
        for artifact_id in ids:  # every referenced artifact is there, byte for byte
            data = (tmp_path / "artifacts" / artifact_id).read_bytes()
            assert hashlib.sha256(data).hexdigest() == store.complete[artifact_id]
    assert not (tmp_path / "artifacts" / store.broken).exists()  # the half file was removed
    # and the referenced fold 0 of the failed trial is usable: a full checkpoint, full probs
    load_checkpoint(tmp_path / "artifacts" / hit.user_attrs["fold_0"]["checkpoint"])
    with np.load(tmp_path / "artifacts" / hit.user_attrs["fold_0"]["probs"]) as npz:
        assert npz["holdout_probs"].shape[1] == 4


def _shipped_fold(trained) -> tuple[int, int, dict]:
    """(trial number, fold, record) of a fold the exported bundle ships (its first member's)."""
    manifest = json.loads((trained.bundle / "manifest.json").read_text())
    member = manifest["members"][0]
    trial = next(t for t in load("rel", trained.url).get_trials() if t.number == member["trial"])
    k = member["folds"][0]["fold"]
    return trial.number, k, trial.user_attrs[f"fold_{k}"]


@pytest.mark.postgres
@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_unloadable_checkpoint_is_reported_with_trial_and_fold(trained, tmp_path, damage):
    store = tmp_path / "artifacts"
    shutil.copytree(trained.artifacts, store)
    number, k, record = _shipped_fold(trained)
    ckpt = store / record["checkpoint"]
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"\x00garbage" * 1000)
    out = tmp_path / "parent" / "bundle"
    out.parent.mkdir()
    proc = run_cli("export-best", "rel", "--out", str(out), "--storage", trained.url,
                   "--artifacts", str(store), "--no-progress")
    line = error_line(proc)
    assert f"trial {number} fold {k}" in line and record["checkpoint"] in line
    assert "cannot be loaded" in line
    assert snapshot(out.parent) == {str(out.parent): -1}  # no bundle, no temp folder
