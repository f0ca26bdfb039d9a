"""Artifact stores behind one spec string: a folder (default) or s3://bucket/prefix.

S3 goes through Optuna's Boto3ArtifactStore; AWS_ENDPOINT_URL points it at MinIO.
"""

from __future__ import annotations

import io
import os
import re
import uuid
from pathlib import Path

from histosweep.constants import DEFAULT_ARTIFACTS, ENV_ARTIFACTS
from histosweep.storage._errors import StorageError, StoreError
from histosweep.storage._url import redact

PROBE_PREFIX = "histosweep-probe-"  # the probe's object name; removed again at once


def resolve_artifacts(spec: str | None = None) -> str:
    """`spec`, else $HISTOSWEEP_ARTIFACTS, else the default folder; a URL other than s3:// (or a
    mistyped s3:/bucket) is refused rather than taken for a folder of that name."""
    spec = (spec or os.environ.get(ENV_ARTIFACTS) or DEFAULT_ARTIFACTS).strip()
    if re.match(r"[A-Za-z][A-Za-z0-9+.\-]+:/", spec) and not spec.startswith("s3://"):
        raise StorageError(f"unsupported artifact store {redact(spec)!r}: give a folder path or "
                           "s3://BUCKET/PREFIX")
    return spec


def is_s3(spec: str | None = None) -> bool:
    return resolve_artifacts(spec).startswith("s3://")


def artifact_size(spec: str | None, artifact_id: str) -> int | None:
    """Bytes of one artifact in a folder store (0 when absent); None for S3, where asking costs
    a request per artifact (artifact_sizes lists a whole prefix at once)."""
    if is_s3(spec):
        return None
    path = Path(resolve_artifacts(spec)) / artifact_id
    try:
        return path.stat().st_size
    except OSError:
        return 0


def artifact_sizes(spec: str | None, artifact_ids) -> dict[str, int]:
    """Bytes of each artifact (0 when absent): a stat per file in a folder store; on S3 one
    listing of the store's prefix (a request per 1,000 objects), not a request per artifact."""
    spec = resolve_artifacts(spec)
    if not is_s3(spec):
        return {a: artifact_size(spec, a) for a in artifact_ids}
    bucket, _, prefix = spec[len("s3://"):].partition("/")
    prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
    store = _open_s3(spec)
    client = getattr(store, "_inner", store).client
    listed: dict[str, int] = {}
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            listed.update({o["Key"][len(prefix):]: o["Size"] for o in page.get("Contents", [])})
    except Exception as exc:  # noqa: BLE001 - botocore's errors: one line for the caller
        raise StorageError(f"artifact store {spec}: cannot list its objects ({exc})") from None
    return {a: listed.get(a, 0) for a in artifact_ids}


def open_artifact_store(spec: str | None = None, *, create: bool = True):
    """An Optuna ArtifactStore for a folder path or an s3://bucket/prefix spec; create=False (for
    commands that only read) never makes the folder, so a mistyped path leaves nothing behind."""
    spec = resolve_artifacts(spec)
    if spec.startswith("s3://"):
        return _open_s3(spec)
    from optuna.artifacts import FileSystemArtifactStore

    path = Path(spec)
    if not create and not path.is_dir():
        return FileSystemArtifactStore(str(path))
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(
            f"cannot create artifact folder {path}: {exc.strerror} "
            "(pass --artifacts with a writable folder)"
        ) from None
    if not os.access(path, os.W_OK):
        raise StorageError(f"artifact folder {path} is not writable (pass --artifacts with a writable folder)")
    return FileSystemArtifactStore(str(path))


def store_name(store) -> str:
    """The store as a person would name it: its folder, or s3://bucket[/prefix]."""
    if isinstance(store, _PrefixedStore):
        return f"{store_name(store._inner)}/{store._prefix}"
    if hasattr(store, "bucket"):
        return f"s3://{store.bucket}"
    return str(getattr(store, "_base_path", type(store).__name__))


def probe_store(store) -> None:
    """Write, read back and remove a small object: StoreError (one line) when the store cannot.

    Cheap enough for every worker start and `histosweep check`; run before any GPU work so an
    unusable store is one line, not a failed trial.
    """
    probe_id = f"{PROBE_PREFIX}{uuid.uuid4().hex}"
    body = f"histosweep probe {probe_id}".encode()
    step = "write"
    try:
        store.write(probe_id, io.BytesIO(body))
        step = "read back"
        with store.open_reader(probe_id) as fh:
            back = fh.read()
        step = "remove"
        store.remove(probe_id)
    except Exception as exc:  # OSError, botocore errors, ArtifactNotFound
        raise StoreError(
            f"artifact store {store_name(store)} is not usable: cannot {step} a test object "
            f"({one_line(exc)}); check --artifacts / {ENV_ARTIFACTS} (folder writable with free "
            "space, or the S3 endpoint, bucket and credentials)"
        ) from None
    if back != body:
        raise StoreError(f"artifact store {store_name(store)} returned other bytes than were written "
                         "to it; check the store")


def one_line(exc: BaseException) -> str:
    """`Name: first line` of an exception, for one-line messages."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:300]


def _open_s3(spec: str):
    try:
        import boto3
    except ImportError:
        raise StorageError(
            f"artifact store {spec} needs boto3: pip install 'histosweep[s3]'"
        ) from None
    from optuna.artifacts import Boto3ArtifactStore

    bucket, _, prefix = spec[len("s3://") :].partition("/")
    if not bucket:
        raise StorageError(f"artifact store {spec!r} has no bucket: use s3://BUCKET/PREFIX")
    client = boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None)
    store = Boto3ArtifactStore(bucket, client=client)
    return _PrefixedStore(store, prefix.strip("/")) if prefix.strip("/") else store


class _PrefixedStore:
    """Keep all of a deployment's artifacts under one key prefix of a shared bucket."""

    def __init__(self, inner, prefix: str) -> None:
        self._inner = inner
        self._prefix = prefix

    def _key(self, artifact_id: str) -> str:
        return f"{self._prefix}/{artifact_id}"

    def open_reader(self, artifact_id: str):
        return self._inner.open_reader(self._key(artifact_id))

    def write(self, artifact_id: str, content_body) -> None:
        self._inner.write(self._key(artifact_id), content_body)

    def remove(self, artifact_id: str) -> None:
        self._inner.remove(self._key(artifact_id))
