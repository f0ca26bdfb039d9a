"""`histosweep dashboard`: optuna-dashboard on the study storage, with every trial's artifacts.

Exercise: `histosweep dashboard --storage sqlite:///histosweep.db --port 8080`.
"""

from __future__ import annotations

import argparse
import errno
import sys
from pathlib import Path

from histosweep.cli._common import UserError, artifacts_arg, storage_arg

DEFAULT_HOST = "127.0.0.1"  # NOTE: loopback by default: the dashboard can delete studies
DEFAULT_PORT = 8080


OPTIONS = ("storage", "artifacts")  # the common options this command reads (cli._common)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to bind (default {DEFAULT_HOST}; 0.0.0.0 exposes it to the network)",
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port to bind (default {DEFAULT_PORT})"
    )


def run(args: argparse.Namespace) -> int:
    from histosweep.fleet import (
        listening_on,
        make_dashboard_server,
        serve_until_stopped,
    )
    from histosweep.storage import open_artifact_store, open_storage, redact, resolve_storage_url

    if not 0 < args.port < 65536:
        raise UserError(f"--port {args.port} is not a TCP port: pass 1..65535")
    url = resolve_storage_url(storage_arg(args))
    rdb = open_storage(url, create=False)
    artifacts = artifacts_arg(args)
    store = open_artifact_store(artifacts, create=False)
    try:
        server = make_dashboard_server(rdb, store, host=args.host, port=args.port)
    except OSError as exc:
        raise UserError(_bind_error(args.host, args.port, exc)) from None
    if not artifacts.startswith("s3://") and not Path(artifacts).is_dir():
        server.server_close()
        raise UserError(f"no artifact folder at {artifacts}: pass --artifacts (or set "
                        "HISTOSWEEP_ARTIFACTS) to the folder the workers write to")
    print(
        f"dashboard for {redact(url)} (artifacts: {artifacts}) "
        f"{listening_on(args.host, args.port)} (Ctrl-C to stop)",
        file=sys.stderr,
        flush=True,
    )
    serve_until_stopped(server)
    return 0


def _bind_error(host: str, port: int, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return f"port {port} on {host} is already in use: pass another --port"
    if exc.errno == errno.EACCES:
        return f"not allowed to bind port {port} on {host}: pass a --port above 1023"
    return f"cannot bind {host}:{port}: {exc.strerror or exc} (check --host and --port)"
