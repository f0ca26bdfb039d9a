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


_WILDCARD_HOSTS = ("", "0.0.0.0", "::")  # a bind on these answers on every interface


def dashboard_url(host: str, port: int) -> str:
    """The URL a person opens; a wildcard bind is shown by this machine's name, which the
    network can reach (loopback would name whichever machine the reader sits at)."""
    shown = socket.gethostname() if host in _WILDCARD_HOSTS else host
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"  # an IPv6 literal in a URL needs brackets
    return f"http://{shown}:{port}/dashboard"


def listening_on(host: str, port: int) -> str:
    """Where the dashboard listens, in words: its URL; for a wildcard bind, that every interface
    answers (the network included), and the loopback URL for this machine."""
    if host not in _WILDCARD_HOSTS:
        return f"at {dashboard_url(host, port)}"
    bound = "[::]" if host == "::" else "0.0.0.0"
    loopback = "[::1]" if host == "::" else "127.0.0.1"
    return (
        f"on all interfaces ({bound}:{port}, reachable from the network) at "
        f"{dashboard_url(host, port)}, or http://{loopback}:{port}/dashboard on this machine"
    )


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
