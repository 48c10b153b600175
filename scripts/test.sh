#!/usr/bin/env bash
# README command 2 (and what .ci/run calls): set up with test tools, then run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
exec .venv/bin/python -m pytest "$@"
