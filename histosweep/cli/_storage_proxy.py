"""`histosweep storage-proxy`: Optuna's gRPC storage proxy in front of the study database.

Hundreds of workers then share the proxy's few database connections instead of opening their
own. Trade-off: trials behind the proxy get no heartbeats, so a dead worker's trial is not
retried (see docs/operations.md). Exercise: `histosweep storage-proxy --port 13000`.
"""

from __future__ import annotations

import argparse
import errno
import socket
import sys
import warnings

from histosweep.cli._common import UserError, storage_arg

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 13000  # Optuna's own default for run_grpc_proxy_server


OPTIONS = ("storage",)  # the common options this command reads (cli._common)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to bind (default {DEFAULT_HOST}; 0.0.0.0 serves other machines)",
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port to bind (default {DEFAULT_PORT})"
    )


def run(args: argparse.Namespace) -> int:
    _require_grpc()
    import optuna

    from histosweep.storage import open_storage, redact, resolve_storage_url

    if not 0 < args.port < 65536:
        raise UserError(f"--port {args.port} is not a TCP port: pass 1..65535")
    url = resolve_storage_url(storage_arg(args))
    # NOTE: get_storage wraps the RDBStorage in Optuna's trial cache, as its docs advise for
    # the proxy; without it every client call becomes several SQL queries.
    proxied = optuna.storages.get_storage(open_storage(url))
    _check_port_free(args.host, args.port)
    print(
        f"gRPC storage proxy for {redact(url)} on {args.host}:{args.port} "
        f"(workers: optuna.storages.GrpcStorageProxy(host, port); Ctrl-C to stop)",
        file=sys.stderr,
        flush=True,
    )
    try:
        with warnings.catch_warnings():
            # run_grpc_proxy_server is marked experimental; the warning only confuses people.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.run_grpc_proxy_server(proxied, host=args.host, port=args.port)
    except KeyboardInterrupt:
        pass
    except RuntimeError as exc:  # grpc reports a failed bind as RuntimeError
        raise UserError(
            f"cannot serve on {args.host}:{args.port}: {exc} (check --host/--port)"
        ) from None
    return 0


def _require_grpc() -> None:
    try:
        import google.protobuf  # noqa: F401
        import grpc  # noqa: F401
    except ImportError:
        raise UserError(
            "the gRPC storage proxy needs grpcio and protobuf: pip install grpcio protobuf"
        ) from None


def _check_port_free(host: str, port: int) -> None:
    """A clear line for a taken port; grpc itself only logs it and raises a bare error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise UserError(
                    f"port {port} on {host} is already in use: pass another --port"
                ) from None
            raise UserError(
                f"cannot bind {host}:{port}: {exc.strerror or exc} (check --host)"
            ) from None
