"""Everything that stays on the laptop: the llama.cpp engine, the embedder, the notes index.

Nothing here imports skiff.router, skiff.app or skiff.cloud.
"""

import os

# Offline by construction, set before any of these libraries is imported:
# - onnxruntime >= 1.29 uploads usage telemetry from a native thread on Linux (seen with strace:
#   a DNS lookup of a Microsoft host ~10 s into a run) and keeps a device id on disk;
# - Hugging Face libraries must load from folders, never from a hub.
for _name in ("ORT_DISABLE_TELEMETRY", "ORT_TELEMETRY_DISABLED", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
              "HF_HUB_DISABLE_TELEMETRY"):
    os.environ[_name] = "1"
