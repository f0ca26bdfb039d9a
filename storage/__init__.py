"""Where things are kept: the study storage (SQLite or PostgreSQL), artifact stores
(folder or S3), atomic file writes, and password redaction. Imports nothing of ours.
"""

from histosweep.storage._artifacts import (
    artifact_size,
    artifact_sizes,
    is_s3,
    open_artifact_store,
    probe_store,
    resolve_artifacts,
    store_name,
)
from histosweep.storage._atomic import (
    TMP_MARKER,
    atomic_dir,
    atomic_path,
    atomic_write_bytes,
    atomic_write_text,
    current_umask,
    exclusive_lock,
    nearest_existing,
    not_a_folder,
    stale_temp_dirs,
)
from histosweep.storage._errors import StorageError, StoreError
from histosweep.storage._queries import (
    count_trials_by_state,
    heartbeat_ages,
    set_finished_user_attr,
    start_ages,
    study_gate,
    trials_with_user_attr,
)
from histosweep.storage._rdb import (
    DEFAULT_HEARTBEAT_S,
    DEFAULT_MAX_RETRY,
    engine_options,
    open_storage,
    retry_callback,
)
from histosweep.storage._url import (
    is_sqlite,
    redact,
    redact_text,
    remember_secrets,
    remember_secrets_in,
    resolve_storage_url,
)

__all__ = [
    "TMP_MARKER",
    "nearest_existing",
    "not_a_folder",
    "DEFAULT_HEARTBEAT_S",
    "DEFAULT_MAX_RETRY",
    "StorageError",
    "artifact_size",
    "artifact_sizes",
    "StoreError",
    "atomic_dir",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "current_umask",
    "count_trials_by_state",
    "heartbeat_ages",
    "set_finished_user_attr",
    "stale_temp_dirs",
    "start_ages",
    "study_gate",
    "trials_with_user_attr",
    "engine_options",
    "is_s3",
    "exclusive_lock",
    "is_sqlite",
    "open_artifact_store",
    "open_storage",
    "probe_store",
    "redact",
    "redact_text",
    "remember_secrets",
    "remember_secrets_in",
    "resolve_artifacts",
    "resolve_storage_url",
    "retry_callback",
    "store_name",
]
