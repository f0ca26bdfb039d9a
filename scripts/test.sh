#!/usr/bin/env bash
# Set up a virtual environment with the package and its dev extra, then run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# NOTE: torch/torchvision pinned to the builds this project is tested with (CPU works too).
python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
python -m pip install -q -e ".[dev]"
# What this machine lacks, named before the run; pytest lists every skip and its reason at the
# end (-ra in pyproject.toml).
bash scripts/test-needs.sh
# Two phases (tests/conftest.py): every test on HISTOSWEEP_TEST_WORKERS pytest-xdist workers
# (default 2; a test file per worker, so a module's fixture is built once), then the tests that
# restart the shared PostgreSQL server, alone. Exit 5 of a phase: it had no test to run.
run_phase() {
  local code=0
  HISTOSWEEP_TEST_PHASE=$1 python -m pytest -q "${@:2}" || code=$?
  if [ "$code" = 5 ]; then empty=$((empty + 1)); code=0; fi
  return "$code"
}
empty=0
status=0
run_phase parallel -n "${HISTOSWEEP_TEST_WORKERS:-2}" --dist loadfile "$@" || status=$?
run_phase alone "$@" || status=$?
if [ "$empty" = 2 ]; then echo "test.sh: no test matched: $*" >&2; exit 5; fi
exit "$status"
