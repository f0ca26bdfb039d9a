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
# end (-ra in pyproject.toml), then the 30 slowest. Under 47 min on 2 CPU cores (CI, 2026-12: 2,806 s).
bash scripts/test-needs.sh
python -m pytest -q "$@"
