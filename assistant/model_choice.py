"""Which local model answers, and the models skiff can install (`skiff model`).

The model that answers is, in order: the `model_path` setting (a GGUF file, as before), else the
one `skiff model use` chose (a catalog name or a GGUF path), else DEFAULT_MODEL. DEFAULT_MODEL is
the most accurate model whose median time to a complete answer on the notes benchmark stays
within 8 s on a 2-core laptop (bench/notes_qa.py; the figures are in bench/RESULTS.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from skiff.local import models
from skiff.local.models import CATALOG, ModelInstallError  # noqa: F401 - the app catches it from here
from skiff.config.settings import Settings

DEFAULT_MODEL = "qwen2.5-coder-1.5b"


@dataclass(frozen=True)
class ModelChoice:
    name: str  # a catalog name, or the GGUF path given
    path: Path | None  # None when the chosen catalog model is not installed
    why: str  # "model_path setting", "chosen with `skiff model use`", "the default"

    def require(self) -> Path:
        if self.path is None:
            raise ModelInstallError(f"the local model {self.name} ({self.why}) is not installed: "
                                    f"`skiff model install {self.name}`")
        return self.path


def _resolve(name_or_path: str, data_dir: Path) -> Path | None:
    if name_or_path in CATALOG:
        return models.installed_file(CATALOG[name_or_path], data_dir)
    path = Path(name_or_path).expanduser()
    return path if path.is_file() else None


def current_model(settings: Settings) -> ModelChoice:
    if settings.model_path:
        path = Path(settings.model_path).expanduser()
        return ModelChoice(str(path), path, "model_path setting")
    chosen = models.selected(settings.data_dir)
    if chosen:
        return ModelChoice(chosen, _resolve(chosen, settings.data_dir), "chosen with `skiff model use`")
    return ModelChoice(DEFAULT_MODEL, _resolve(DEFAULT_MODEL, settings.data_dir), "the default")


def catalog(settings: Settings) -> list[dict]:
    """Every installable model: name, title, size, installed, in use."""
    in_use = current_model(settings)
    rows = []
    for model in CATALOG.values():
        path = models.installed_file(model, settings.data_dir)
        size = path.stat().st_size if path is not None else model.size_bytes
        rows.append({"name": model.name, "title": model.title, "size_bytes": size, "installed": path is not None,
                     "path": str(path) if path else None, "in_use": in_use.name == model.name,
                     "default": model.name == DEFAULT_MODEL})
    return rows


def install(settings: Settings, name: str, progress: Callable[[str, int, int], None] | None = None) -> Path:
    return models.install(name, settings.data_dir, progress)


def use(settings: Settings, name_or_path: str) -> ModelChoice:
    """Choose the model that answers from now on. It must be installed (or a GGUF file)."""
    if name_or_path not in CATALOG:
        path = Path(name_or_path).expanduser().resolve()
        if not path.is_file():
            raise ModelInstallError(f"{name_or_path!r} is neither a model `skiff model list` shows nor a GGUF file")
        with open(path, "rb") as handle:
            if handle.read(4) != models.GGUF_MAGIC:
                raise ModelInstallError(f"{path} is not a GGUF file")
        name_or_path = str(path)
    elif models.installed_file(CATALOG[name_or_path], settings.data_dir) is None:
        raise ModelInstallError(f"{name_or_path} is not installed: `skiff model install {name_or_path}` first")
    models.select(settings.data_dir, name_or_path)
    return current_model(settings)


def remove(settings: Settings, name: str) -> bool:
    return models.remove(name, settings.data_dir)
