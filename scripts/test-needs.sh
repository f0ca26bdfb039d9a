#!/usr/bin/env bash
# Say which tests this machine will skip and why, before the suite runs (scripts/test.sh).
# Needs the venv's python (psycopg2). HISTOSWEEP_REQUIRE_POSTGRES=1 (.ci/run): they fail instead.
set -uo pipefail
if [ "${HISTOSWEEP_REQUIRE_POSTGRES:-}" = 1 ]; then outcome="fail"; else outcome="be skipped"; fi
say() { echo "test.sh: $1: $2 will $outcome ($3)" >&2; }

if ! command -v docker-compose >/dev/null && ! docker compose version >/dev/null 2>&1; then
  say "no docker-compose" "the real-compose tests of tests/ops/test_compose.py" \
    "apt-get install -y docker-compose"
fi
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
  say "no chromium" "the dashboard screenshot tests of tests/ops/test_dashboard.py" \
    "apt-get install -y chromium"
fi
if ! problem=$(python - 2>&1 <<'PY'
import os
import re
import sys

import psycopg2

dsn = os.environ.get("HISTOSWEEP_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
try:
    psycopg2.connect(dsn, connect_timeout=5).close()
except psycopg2.Error as exc:
    shown = re.sub(r"(//[^:/@]*):[^@/]*@", r"\1:***@", dsn)  # never print a password
    sys.exit(f"{shown}: {str(exc).strip().splitlines()[0]}")
PY
); then
  say "PostgreSQL unreachable at ${problem}" "the database tests" \
    "start it, or point HISTOSWEEP_TEST_PG at an admin DSN"
fi
exit 0
