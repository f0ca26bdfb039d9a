"""Shared CLI plumbing: the command table, common options, env-var names, error output."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from histosweep.constants import (
    DEFAULT_ARTIFACTS,
    DEFAULT_STORAGE,
    ENV_ARTIFACTS,
    ENV_DEBUG,
    ENV_STORAGE,
)
from histosweep.exceptions import UserError

__all__ = ["UserError"]  # re-exported for command modules


# name -> (module in histosweep.cli, one-line summary)
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("_synth", "write a synthetic dataset in the challenge layout"),
    "prepare": ("_prepare", "validate and audit a dataset, build its caches"),
    "create": ("_create", "create (or check) a study: space, data fingerprint, split"),
    "worker": ("_worker", "run trials of a study on the CPU or on GPUs"),
    "status": ("_status", "trials by state, best trial, pruning savings"),
    "enqueue": ("_enqueue", "queue a trial with given params (TOML or JSON file)"),
    "studies": ("_studies", "every study in the storage: trials by state, best value"),
    "trials": ("_trials", "one row per trial of a study: state, value, params, duration"),
    "delete-study": ("_delete_study", "delete a study and its trials from the storage"),
    "dashboard": ("_dashboard", "serve optuna-dashboard on the study storage and artifacts"),
    "export-best": ("_export", "bundle the best trial: checkpoints, manifest, report, CSV"),
    "predict": ("_predict", "predict a test folder with an exported bundle"),
    "demo": ("_demo", "the whole path on the CPU with SQLite and synthetic data"),
    "storage-proxy": ("_storage_proxy", "optional Optuna gRPC storage proxy for very many workers"),
}


def common_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--storage",
        default=None,
        help=f"study storage URL (env {ENV_STORAGE}, default {DEFAULT_STORAGE})",
    )
    parent.add_argument(
        "--artifacts",
        default=None,
        help=f"artifact store: a folder or s3://bucket/prefix (env {ENV_ARTIFACTS}, default {DEFAULT_ARTIFACTS})",
    )
    parent.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    parent.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    return parent


def storage_arg(args: argparse.Namespace) -> str:
    return args.storage or os.environ.get(ENV_STORAGE) or DEFAULT_STORAGE


def artifacts_arg(args: argparse.Namespace) -> str:
    return args.artifacts or os.environ.get(ENV_ARTIFACTS) or DEFAULT_ARTIFACTS


def debug_enabled(args: argparse.Namespace | None) -> bool:
    return bool(getattr(args, "debug", False)) or os.environ.get(ENV_DEBUG) == "1"


def print_error(message: str) -> None:
    from histosweep.storage import redact_text

    lines = redact_text(message).rstrip().splitlines() or ["error"]
    print(f"error: {lines[0]}", file=sys.stderr)
    for line in lines[1:]:
        print(f"  {line}", file=sys.stderr)


def print_json(document: Any) -> None:
    print(json.dumps(document, indent=2, sort_keys=False, default=str))
