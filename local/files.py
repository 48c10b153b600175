"""Walking notes folders: follows symlinked folders but never loops, skips hidden folders
(.obsidian, .git, .trash), and reports every file it cannot take with a reason."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from typing import Iterator

from skiff.local.readers import SUPPORTED_SUFFIXES


@dataclass(frozen=True)
class Found:
    path: str  # absolute, as walked (symlinked files keep their own name)
    root: str


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


def _supported(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in SUPPORTED_SUFFIXES


def _utf8_name(path: str) -> bool:
    """False for a name with bytes that are not UTF-8 (Python keeps them as lone surrogates):
    SQLite, chromadb and the JSON summary on stdout cannot hold such a string, and one of them
    used to abort the whole run, so such a file or folder is skipped instead."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable_path(path: str) -> str:
    """The path with undecodable bytes shown as U+FFFD: safe to report, not to open."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


NOT_UTF8_NAME = "file name is not valid UTF-8 (rename it to index it)"


def walk_notes(root: str) -> Iterator[Found | Skipped]:
    """Yield supported files under `root` (a folder or a single file), in a stable order."""
    root = os.path.abspath(os.path.expanduser(root))
    if not _utf8_name(root):
        yield Skipped(printable_path(root), NOT_UTF8_NAME)
        return
    if not os.path.lexists(root):
        yield Skipped(root, "no such file or folder")
        return
    if not os.path.isdir(root):
        if not os.path.exists(root):
            yield Skipped(root, "broken symlink")
        elif _supported(root):
            yield Found(root, root)
        else:
            yield Skipped(root, f"unsupported file type {os.path.splitext(root)[1]!r}")
        return
    try:
        top = os.stat(root)
    except OSError as error:
        yield Skipped(root, f"unreadable folder ({error.strerror})")
        return
    yield from _walk_dir(root, root, ((top.st_dev, top.st_ino),), set())


def _walk_dir(folder: str, root: str, ancestors: tuple, visited: set) -> Iterator[Found | Skipped]:
    visited.add(ancestors[-1])
    try:
        with os.scandir(folder) as scan:
            entries = sorted(scan, key=lambda e: e.name)
    except OSError as error:
        yield Skipped(folder, f"unreadable folder ({error.strerror or error})")
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if not _utf8_name(entry.name):
            try:
                reportable = _supported(entry.name) or entry.is_dir()
            except OSError:
                reportable = False
            if reportable:
                yield Skipped(printable_path(entry.path), NOT_UTF8_NAME)
            continue
        try:
            is_link = entry.is_symlink()
            is_dir = entry.is_dir(follow_symlinks=True)
        except OSError as error:
            reason = "symlink loop" if error.errno == errno.ELOOP else f"cannot stat ({error.strerror or error})"
            yield Skipped(entry.path, reason)
            continue
        if is_dir:
            try:
                info = os.stat(entry.path)
            except OSError as error:
                # ELOOP: a link that points at itself.
                yield Skipped(
                    entry.path, f"symlink loop ({error.strerror})" if is_link else f"cannot stat ({error.strerror})"
                )
                continue
            key = (info.st_dev, info.st_ino)
            if key in ancestors:
                yield Skipped(entry.path, "symlink loop (links back to a folder above it)")
            elif key in visited:
                yield Skipped(entry.path, "folder already indexed through another path")
            else:
                yield from _walk_dir(entry.path, root, ancestors + (key,), visited)
            continue
        if not _supported(entry.name):
            continue
        if is_link and not os.path.exists(entry.path):
            yield Skipped(entry.path, _dangling_reason(entry.path))
            continue
        try:
            regular = entry.is_file(follow_symlinks=True)
        except OSError:
            regular = False
        if not regular:
            # FIFOs, sockets and devices: opening one can block forever or never end.
            yield Skipped(entry.path, "not a regular file")
            continue
        yield Found(entry.path, root)


def _dangling_reason(path: str) -> str:
    try:
        os.stat(path)
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "symlink loop"
    return "broken symlink"
