"""Fold artifacts of a trial: upload after each fold, fetch for resume and export.

Each fold uploads its checkpoint (safetensors), probabilities (npz, no pickle), metrics
(JSON) and learning-curve picture; their ids go into the trial's user attr `fold_<k>` only
after every upload succeeded, so an interrupted upload is never referenced. A store that
fails to write or read raises StoreError (infrastructure: the worker re-queues the trial).
"""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from histosweep.exceptions import UserError, one_line
from histosweep.storage import StoreError, link_artifact, store_name, trial_id
from histosweep.trial_files._plots import learning_curves_png


def fold_key(fold: int) -> str:
    return f"fold_{fold}"


def upload_file(store, trial, path: Path) -> str:
    """Write `path` into the store, then register it on the trial (what the dashboard lists).

    NOTE: optuna's upload_artifact registers the artifact before writing it, so an upload that
    dies midway would leave the trial listing a partial file. Here the write comes first, and a
    failed write removes what it left.
    """
    import contextlib
    import mimetypes
    import uuid
    from dataclasses import asdict

    from optuna.artifacts import ArtifactMeta

    artifact_id = str(uuid.uuid4())
    try:
        with open(path, "rb") as fh:
            store.write(artifact_id, fh)
    except BaseException as exc:
        with contextlib.suppress(Exception):
            store.remove(artifact_id)
        if not isinstance(exc, Exception):  # WorkerStopped, KeyboardInterrupt: not the store's
            raise
        raise StoreError(
            f"artifact store {store_name(store)}: cannot write {path.name} ({one_line(exc)}); "
            "check that the store is reachable, writable and not full"
        ) from exc
    mimetype, encoding = mimetypes.guess_type(path.name)
    meta = ArtifactMeta(artifact_id=artifact_id, filename=path.name,
                        mimetype=mimetype or "application/octet-stream", encoding=encoding)
    link_artifact(trial.storage, trial_id(trial), asdict(meta))
    return artifact_id


def upload_fold(store, trial, fold: int, result, cfg, val_rows, holdout_rows, *, plots=True) -> dict:
    """Upload one finished fold; returns the record stored in user attr fold_<k>."""
    from histosweep.model import save_checkpoint

    metrics = {
        "fold": fold, "epochs": [e.__dict__ for e in result.epochs], "best_epoch": result.best_epoch,
        "seconds": result.seconds, "device": result.device, "oom_events": result.oom_events,
    }
    with tempfile.TemporaryDirectory(prefix="histosweep-fold-") as tmp:
        tmp = Path(tmp)
        ckpt = tmp / f"trial{trial.number}-fold{fold}.safetensors"
        save_checkpoint(ckpt, result.state_dict, cfg, num_classes=result.num_classes,
                        metadata={"fold": str(fold)})
        probs = tmp / f"trial{trial.number}-fold{fold}-probs.npz"
        np.savez(probs, val_probs=result.val_probs, holdout_probs=result.holdout_probs,
                 val_rows=np.asarray(val_rows), holdout_rows=np.asarray(holdout_rows))
        mfile = tmp / f"trial{trial.number}-fold{fold}-metrics.json"
        mfile.write_text(json.dumps(metrics, indent=1))
        record = {
            "checkpoint": upload_file(store, trial, ckpt),
            "probs": upload_file(store, trial, probs),
            "metrics": upload_file(store, trial, mfile),
        }
        if plots:

            png = tmp / f"trial{trial.number}-fold{fold}-curves.png"
            learning_curves_png(png, {fold: metrics["epochs"]}, title=f"trial {trial.number} fold {fold + 1}")
            record["curves_png"] = upload_file(store, trial, png)
    return record


def read_bytes(store, artifact_id: str, *, what: str) -> bytes:
    """The artifact's bytes. A missing artifact is UserError (a wrong store, or lost data: no
    retry brings it back); any other failure of the store is StoreError (it may come back)."""
    from optuna.artifacts.exceptions import ArtifactNotFound

    try:
        with store.open_reader(artifact_id) as fh:
            return fh.read()
    except ArtifactNotFound as exc:
        raise UserError(
            f"artifact {artifact_id} ({what}) cannot be read from the artifact store: {exc} "
            "(check --artifacts / HISTOSWEEP_ARTIFACTS points at the store the workers used)"
        ) from None
    except Exception as exc:  # OSError, botocore errors
        raise StoreError(
            f"artifact {artifact_id} ({what}) cannot be read from the artifact store "
            f"{store_name(store)}: {one_line(exc)} (check that the store is reachable and "
            "--artifacts / HISTOSWEEP_ARTIFACTS points at the store the workers used)"
        ) from None




def fetch_probs(store, record: dict, *, what: str) -> dict[str, np.ndarray]:
    data = read_bytes(store, record["probs"], what=f"{what} probabilities")
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def fetch_metrics(store, record: dict, *, what: str) -> dict[str, Any]:
    return json.loads(read_bytes(store, record["metrics"], what=f"{what} metrics"))


def fetch_checkpoint(store, record: dict, dest: Path, *, what: str) -> Path:
    dest.write_bytes(read_bytes(store, record["checkpoint"], what=f"{what} checkpoint"))
    return dest
