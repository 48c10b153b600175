"""What skiff does when one of its own files is found damaged: keep the damaged copy as a backup
beside it, start that part afresh (rebuilding it where it can be rebuilt), and say so.

Only skiff's own files under its data folder are ever moved; a person's notes are never touched.
The front ends (CLI, TUI) listen for recoveries and tell the person what happened and where the
backup is; a library user can read `recoveries()`.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


@dataclass(frozen=True)
class Recovery:
    what: str  # "chat history", "answer records", "notes index", "router posterior"
    reason: str  # what was wrong, in the library's words
    backups: tuple[Path, ...]  # where the damaged files were moved
    outcome: str  # what skiff did about it, and what the person may do

    def message(self) -> str:
        where = ", ".join(str(p) for p in self.backups) or "nothing was kept"
        return f"the {self.what} was damaged ({self.reason}); the damaged copy is kept as {where}. {self.outcome}"


_lock = threading.Lock()
_seen: list[Recovery] = []
_listeners: list[Callable[[Recovery], None]] = []


def report(recovery: Recovery) -> None:
    with _lock:
        _seen.append(recovery)
        listeners = list(_listeners)
    for listener in listeners:
        listener(recovery)


def recoveries() -> list[Recovery]:
    """Every recovery in this process so far."""
    with _lock:
        return list(_seen)


def on_recovery(listener: Callable[[Recovery], None], replay: bool = True) -> Callable[[], None]:
    """Call `listener` for each recovery from now on (and, with `replay`, for those already made).
    Returns the function that stops it."""
    with _lock:
        _listeners.append(listener)
        earlier = list(_seen) if replay else []
    for recovery in earlier:
        listener(recovery)

    def stop() -> None:
        with _lock:
            if listener in _listeners:
                _listeners.remove(listener)

    return stop


def quarantine(*paths: Path) -> tuple[Path, ...]:
    """Move each existing path aside to `<name>.damaged-<time>` in the same folder (a rename, so
    nothing is copied and nothing is lost); returns where they went."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    moved = []
    for path in map(Path, paths):
        if not os.path.lexists(path):
            continue
        target = path.with_name(f"{path.name}.damaged-{stamp}")
        suffix = 1
        while os.path.lexists(target):
            suffix += 1
            target = path.with_name(f"{path.name}.damaged-{stamp}-{suffix}")
        os.replace(path, target)
        moved.append(target)
    return tuple(moved)


class DiskFullError(OSError):
    """A write failed because the disk holding skiff's data is full; the message says what to do."""


# How the layers below word a full disk: OSError's errno, SQLite's SQLITE_FULL, and chromadb,
# whose Rust core reports a failed write without the cause (so free space decides there).
_FULL_ERRNOS = {28, 122}  # ENOSPC, EDQUOT
_FULL_WORDS = ("no space left", "disk is full", "disk full", "quota exceeded")
NEARLY_FULL_BYTES = 8 * 1024 * 1024


def disk_full(error: BaseException, folder: Path) -> str | None:
    """What to tell the person when a full disk under `folder` caused `error`; None when it did not."""
    free = _free_bytes(folder)
    cause: BaseException | None = error
    said = False
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno in _FULL_ERRNOS:
            said = True
        if any(word in str(cause).lower() for word in _FULL_WORDS):
            said = True
        cause = cause.__cause__ or cause.__context__
    if not said and (free is None or free >= NEARLY_FULL_BYTES):
        return None
    room = f"{free / 1024:.0f} KB free" if free is not None else "no room"
    return f"no space left on the disk holding {folder} ({room}) while writing to it"


def _free_bytes(folder: Path) -> int | None:
    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None
