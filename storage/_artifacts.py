"""Artifact stores behind one spec string: a folder (default) or s3://bucket/prefix, chosen by
the URL scheme through one registry (STORE_KINDS); an unknown scheme is refused in one line.

S3 goes through Optuna's Boto3ArtifactStore; AWS_ENDPOINT_URL points it at MinIO.
"""

from __future__ import annotations

import io
import os
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from histosweep.constants import DEFAULT_ARTIFACTS, ENV_ARTIFACTS
from histosweep.exceptions import one_line
from histosweep.storage._errors import StorageError, StoreError
from histosweep.storage._optuna import folder_store_path
from histosweep.storage._url import redact

PROBE_PREFIX = "histosweep-probe-"  # the probe's object name; removed again at once


@dataclass(frozen=True)
class StoreKind:
    """One kind of artifact store: its URL scheme ("" for a folder), how to open it, what it can."""

    scheme: str
    example: str  # how a person writes it, for messages and help
    open: Callable[..., Any]  # (resolved spec, *, create) -> an optuna ArtifactStore
    # a local folder: sizes are one stat per artifact (on S3 each costs a request: not asked)
    local_folder: bool = False


def resolve_artifacts(spec: str | None = None) -> str:
    """`spec`, else $HISTOSWEEP_ARTIFACTS, else the default folder; a URL of a scheme no store
    is registered for (gs://, or a mistyped s3:/bucket) is refused rather than taken for a
    folder of that name."""
    spec = (spec or os.environ.get(ENV_ARTIFACTS) or DEFAULT_ARTIFACTS).strip()
    store_kind(spec)
    return spec


def store_kind(spec: str | None = None) -> StoreKind:
    """The registered store kind for `spec` (by URL scheme); StorageError for an unknown one."""
    spec = (spec or os.environ.get(ENV_ARTIFACTS) or DEFAULT_ARTIFACTS).strip()
    url = re.match(r"([A-Za-z][A-Za-z0-9+.\-]+):/", spec)
    scheme = url.group(1).lower() if url else ""
    kind = STORE_KINDS.get(scheme)
    if kind is None or (scheme and not spec.lower().startswith(f"{scheme}://")):
        choices = " or ".join(k.example for k in STORE_KINDS.values())
        raise StorageError(f"unsupported artifact store {redact(spec)!r}: give {choices}")
    return kind


def store_folder(spec: str | None = None) -> Path | None:
    """The folder of a folder store; None for a remote one (S3)."""
    return Path(resolve_artifacts(spec)) if store_kind(spec).local_folder else None


def artifact_size(spec: str | None, artifact_id: str) -> int | None:
    """Bytes of one artifact in a folder store (0 when absent); None for S3, where asking costs
    a request per artifact (artifact_sizes lists a whole prefix at once)."""
    folder = store_folder(spec)
    if folder is None:
        return None
    path = folder / artifact_id
    try:
        return path.stat().st_size
    except OSError:
        return 0


def artifact_sizes(spec: str | None, artifact_ids) -> dict[str, int]:
    """Bytes of each artifact (0 when absent): a stat per file in a folder store; on S3 one
    listing of the store's prefix (a request per 1,000 objects), not a request per artifact."""
    spec = resolve_artifacts(spec)
    if store_kind(spec).local_folder:
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
    return store_kind(spec).open(spec, create=create)


def _open_folder(spec: str, *, create: bool = True):
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
    return folder_store_path(store) or type(store).__name__


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


def _open_s3(spec: str, *, create: bool = True):
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


STORE_KINDS: dict[str, StoreKind] = {k.scheme: k for k in (
    StoreKind("", "a folder path", _open_folder, local_folder=True),
    StoreKind("s3", "s3://BUCKET/PREFIX", _open_s3),
)}
