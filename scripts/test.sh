#!/usr/bin/env bash
# README command 2 (and what .ci/run calls): set up with test tools, then run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
# Lint first (seconds): ruff with the rules in pyproject.toml. The import contracts are checked by
# tests/unit/test_structure.py, against a plain install as a user gets it.
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
