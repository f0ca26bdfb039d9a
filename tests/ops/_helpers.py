"""Shared helpers for the operations tests: free ports, a real `histosweep` subprocess, HTTP."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REQUIRE_TOOLS = os.environ.get("HISTOSWEEP_REQUIRE_POSTGRES") == "1"  # set by .ci/run


def histosweep_cmd() -> list[str]:
    """The installed console script, as a person runs it (the module as a fallback)."""
    script = shutil.which("histosweep", path=str(Path(sys.executable).parent))
    if script:
        return [script]
    return [sys.executable, "-c", "import sys; from histosweep.cli import main; sys.exit(main())"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def clean_env() -> dict[str, str]:
    """The test's environment without a user's storage settings leaking in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HISTOSWEEP_STORAGE")}
    env.pop("HISTOSWEEP_ARTIFACTS", None)
    return env


def start(args: list[str], log_dir: Path) -> tuple[subprocess.Popen, Path]:
    """Start `histosweep ARGS` with stderr in a file (a pipe could fill up and block it)."""
    stderr_path = log_dir / "stderr.txt"
    with open(stderr_path, "wb") as stderr:
        proc = subprocess.Popen(
            histosweep_cmd() + args, stdout=subprocess.DEVNULL, stderr=stderr, env=clean_env()
        )
    return proc, stderr_path


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


def get_json(url: str, timeout: float = 10.0):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        assert response.status == 200, url
        return json.loads(response.read())


def wait_http(
    url: str, proc: subprocess.Popen, stderr_path: Path, deadline_s: float = 60.0
) -> None:
    """Poll `url` until it answers 200; fail at once if the process died, or at the deadline."""
    deadline = time.monotonic() + deadline_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(
                f"process exited {proc.returncode} before serving: {stderr_path.read_text()}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            last_error = exc
        time.sleep(0.2)  # a poll interval, not synchronisation: the deadline bounds the loop
    raise AssertionError(
        f"{url} not ready after {deadline_s} s ({last_error}): {stderr_path.read_text()}"
    )


def require_tool(found: str | None, message: str) -> str:
    """`found` (a tool's path); else skip here, but fail in CI so no check passes by skipping."""
    if found:
        return found
    import pytest

    if REQUIRE_TOOLS:
        pytest.fail(f"{message} (HISTOSWEEP_REQUIRE_POSTGRES=1 marks CI: it must be installed)")
    pytest.skip(message)


def venv_tool(name: str) -> str | None:
    """A console script installed next to this Python (pip extras), else one on PATH."""
    return shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
