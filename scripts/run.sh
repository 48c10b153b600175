#!/usr/bin/env bash
# README command 1: set up (idempotent), then run skiff's main job offline on the bundled model.
#   bash scripts/run.sh                 index the example notes, then open the chat (TUI) in a
#                                       terminal; without a terminal, answer a question from them
#   bash scripts/run.sh ask "..."       any skiff command
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export SKIFF_OFFLINE=${SKIFF_OFFLINE:-true}
if [ $# -gt 0 ]; then
    exec .venv/bin/skiff "$@"
fi
.venv/bin/skiff index examples/notes
if [ -t 0 ] && [ -t 1 ]; then
    exec .venv/bin/skiff
fi
exec .venv/bin/skiff ask "How do I keep a note from ever being sent to the cloud?"
