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
    "embed": ("_embed", "frozen-feature cache: embed every image once with a backbone"),
    "create": ("_create", "create (or check) a study: space, data fingerprint, split"),
    "worker": ("_worker", "run trials of a study on the CPU or on GPUs"),
    "status": ("_status", "trials by state, best trial, pruning savings"),
    "budget": ("_budget", "a study's GPU-hour budget: show it, --set H or --clear"),
    "check": ("_check", "preflight: storage, artifact store, data, caches, weights, GPUs"),
    "enqueue": ("_enqueue", "queue a trial with given params (TOML or JSON file)"),
    "studies": ("_studies", "every study in the storage: trials by state, best value"),
    "trials": ("_trials", "one row per trial of a study: state, value, params, duration"),
    "delete-study": ("_delete_study", "delete a study and its trials from the storage"),
    "gc": ("_gc", "delete fold checkpoints of pruned, failed and out-of-top-N trials"),
    "dashboard": ("_dashboard", "serve optuna-dashboard on the study storage and artifacts"),
    "export-best": ("_export", "select an ensemble across the top trials and bundle it: checkpoints, manifest, report, CSV"),
    "estimate": ("_estimate", "BBC-CV estimate and search gain of a study, without a bundle"),
    "predict": ("_predict", "predict a test folder with an exported bundle"),
    "demo": ("_demo", "the whole path on the CPU with SQLite and synthetic data"),
    "storage-proxy": ("_storage_proxy", "optional Optuna gRPC storage proxy for very many workers"),
}


# The common options, in pieces: each command module names the ones it reads in OPTIONS (a
# command that never opens the storage has no --storage, so a stray one is a usage error).
COMMON_OPTIONS = ("storage", "artifacts", "json")


def option_parents(names) -> list[argparse.ArgumentParser]:
    """Parent parsers for the named common options, plus --debug (every command has it)."""
    unknown = set(names) - set(COMMON_OPTIONS)
    if unknown:
        raise ValueError(f"unknown common options {sorted(unknown)}; known: {COMMON_OPTIONS}")
    parents = [_PARENT_BUILDERS[name]() for name in COMMON_OPTIONS if name in names]
    return parents + [_debug_parent()]


def _storage_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--storage",
        default=None,
        help=f"study storage URL (env {ENV_STORAGE}, default {DEFAULT_STORAGE})",
    )
    return parent


def _artifacts_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--artifacts",
        default=None,
        help=f"artifact store: a folder or s3://bucket/prefix (env {ENV_ARTIFACTS}, default {DEFAULT_ARTIFACTS})",
    )
    return parent


def _json_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    return parent


def _debug_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    return parent


_PARENT_BUILDERS = {"storage": _storage_parent, "artifacts": _artifacts_parent, "json": _json_parent}


def storage_arg(args: argparse.Namespace) -> str:
    return args.storage or os.environ.get(ENV_STORAGE) or DEFAULT_STORAGE


def artifacts_arg(args: argparse.Namespace) -> str:
    return args.artifacts or os.environ.get(ENV_ARTIFACTS) or DEFAULT_ARTIFACTS


def device_arg(args: argparse.Namespace) -> str | None:
    """--device checked before any work: cpu, cuda or cuda:N, and that GPU must be visible."""
    import re

    device = args.device
    if device is None:
        return None
    match = re.fullmatch(r"cpu|cuda(?::(\d+))?", device.strip().lower())
    if match is None:
        raise UserError(f"--device {device!r}: use cpu, cuda or cuda:N")
    if device.strip().lower() == "cpu":
        return "cpu"
    import torch

    index = int(match.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise UserError(f"--device {device}: CUDA GPU {index} is not visible here "
                        f"({torch.cuda.device_count()} visible; pass --device cpu or check nvidia-smi)")
    return device.strip().lower()


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
