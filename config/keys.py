"""API key files: the cloud's key (`skiff cloud key`) and the key `skiff serve` asks its clients
for. Written readable by their owner only, and refused when anyone else can read them."""

from __future__ import annotations

import os
from pathlib import Path


class KeyFileError(ValueError):
    """The API key file is unsafe to use; the message says how to fix it."""


def write_key_file(path: Path, key: str) -> Path:
    """Writes the key readable by its owner only, created that way (never briefly world-readable)."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.unlink(missing_ok=True)
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(key.strip() + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    return path


def read_key_file(path: Path, how_to_store: str) -> str | None:
    """The key in `path`, None when there is no file (or it is empty). `how_to_store` is the
    command that writes a good one, for the error's advice."""
    path = Path(path).expanduser()
    if not path.is_file():
        return None
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise KeyFileError(f"the key file {path} is readable by others (mode {mode:o}): "
                           f"run `chmod 600 {path}`; skiff will not use it until then")
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except UnicodeDecodeError:
        raise KeyFileError(f"the key file {path} is not UTF-8 text: store the key again with "
                           f"{how_to_store}") from None
