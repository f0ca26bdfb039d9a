"""Serve optuna-dashboard (trials, intermediate values, artifacts) with a threaded WSGI server.

Exercise: `histosweep dashboard --storage sqlite:///histosweep.db --artifacts ./artifacts`.
"""

from __future__ import annotations

import signal
import socket
import socketserver
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server


class _ThreadedWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    # NOTE: the browser polls the study every few seconds; one thread per request keeps a slow
    # plot from blocking the trial table. optuna-dashboard's own CLI makes the same choice.
    daemon_threads = True


class _ThreadedWSGIServer6(_ThreadedWSGIServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    """No access log: the page's polling would bury the one line that matters (the URL)."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass


def dashboard_url(host: str, port: int) -> str:
    """The URL a person opens; a wildcard bind is shown as loopback."""
    shown = "127.0.0.1" if host in ("", "0.0.0.0") else "[::1]" if host == "::" else host
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"  # an IPv6 literal in a URL needs brackets
    return f"http://{shown}:{port}/dashboard"


def make_dashboard_server(storage, artifact_store, *, host: str, port: int) -> WSGIServer:
    """Bind (raises OSError when the port is taken) an optuna-dashboard app on `storage`."""
    import optuna_dashboard

    app = optuna_dashboard.wsgi(storage, artifact_store=artifact_store)
    server_class = _ThreadedWSGIServer6 if ":" in host else _ThreadedWSGIServer
    return make_server(host, port, app, server_class=server_class, handler_class=_QuietHandler)


def serve_until_stopped(server: WSGIServer) -> None:
    """Serve until Ctrl-C or SIGTERM (`docker stop`, `kubectl delete`), then close the socket."""

    def _stop(signum, frame) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.server_close()
