#!/usr/bin/env bash
# skiff's cloud side on a GPU host: vLLM's OpenAI-compatible server, key-protected.
#   VLLM_API_KEY=$(openssl rand -hex 32) bash serve-vllm.sh            # Qwen2.5-7B-Instruct
#   SKIFF_CLOUD_HF_MODEL=Qwen/Qwen2.5-14B-Instruct-AWQ bash serve-vllm.sh
# Needs an NVIDIA GPU (7B in bf16: ~16 GB for weights plus KV cache; 24 GB is comfortable) and
# `pip install vllm`. The model is downloaded from the Hugging Face hub once, on the GPU host;
# the laptop side of skiff never contacts a hub.
set -euo pipefail
: "${VLLM_API_KEY:?set VLLM_API_KEY: vLLM refuses requests without it (and the key never goes on a command line)}"
export VLLM_API_KEY
model=${SKIFF_CLOUD_HF_MODEL:-Qwen/Qwen2.5-7B-Instruct}
exec vllm serve "$model" \
    --served-model-name skiff-cloud \
    --host "${HOST:-0.0.0.0}" --port "${PORT:-8000}" \
    --max-model-len "${MAX_MODEL_LEN:-32768}" \
    --gpu-memory-utilization 0.90 \
    --enable-prefix-caching \
    --disable-log-requests
