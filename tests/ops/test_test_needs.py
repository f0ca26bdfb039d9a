"""scripts/test.sh names what this machine lacks before the suite runs (scripts/test-needs.sh):
which tests will be skipped (or fail, under HISTOSWEEP_REQUIRE_POSTGRES=1) and how to get the tool.
Exercise: `python -m pytest -q tests/ops/test_test_needs.py`."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CLOSED_PG = "postgresql://postgres:s3cret-pw@127.0.0.1:9/postgres"  # port 9 (discard): closed


def _bin(tmp_path: Path, *fake_tools: str) -> Path:
    """A PATH folder with only this interpreter as `python`, plus tools that do nothing."""
    folder = tmp_path / "bin"
    folder.mkdir()
    tools = [("python", f'exec "{sys.executable}" "$@"'), *((t, "exit 0") for t in fake_tools)]
    for name, body in tools:
        tool = folder / name
        tool.write_text(f"#!/bin/sh\n{body}\n")
        tool.chmod(0o755)
    return folder


def _needs(path: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [shutil.which("bash") or "/bin/bash", str(ROOT / "scripts" / "test-needs.sh")],
        env={"PATH": str(path), **env}, capture_output=True, text=True, timeout=60,
    )


def test_a_bare_machine_is_told_which_tests_will_be_skipped_and_why(tmp_path: Path) -> None:
    result = _needs(_bin(tmp_path), HISTOSWEEP_TEST_PG=CLOSED_PG)
    assert result.returncode == 0 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 3, result.stderr
    assert "test_compose.py will be skipped (apt-get install -y docker-compose)" in lines[0]
    assert "test_dashboard.py will be skipped (apt-get install -y chromium)" in lines[1]
    assert "PostgreSQL unreachable at postgresql://postgres:***@127.0.0.1:9/postgres" in lines[2]
    assert "HISTOSWEEP_TEST_PG" in lines[2] and "s3cret-pw" not in result.stderr


def test_under_require_postgres_they_will_fail(tmp_path: Path) -> None:
    result = _needs(_bin(tmp_path), HISTOSWEEP_TEST_PG=CLOSED_PG, HISTOSWEEP_REQUIRE_POSTGRES="1")
    assert result.returncode == 0
    assert result.stderr.count(" will fail (") == 3 and "skipped" not in result.stderr


def test_a_complete_machine_hears_nothing(tmp_path: Path, pg_server: str) -> None:
    result = _needs(_bin(tmp_path, "docker-compose", "chromium"), HISTOSWEEP_TEST_PG=pg_server)
    assert (result.returncode, result.stderr) == (0, "")


def test_the_test_command_runs_it_before_pytest() -> None:
    script = (ROOT / "scripts" / "test.sh").read_text().splitlines()
    assert script.index("bash scripts/test-needs.sh") < script.index('python -m pytest -q "$@"')
