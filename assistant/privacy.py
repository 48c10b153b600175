"""Which notes never leave the machine.

A chunk of a private note is never sent to the cloud: `private: true` front matter, or a path
under a folder or matching a glob in `private_paths`. Privacy is decided when the question is
asked, not when the notes were indexed, so adding a folder to `private_paths` takes effect at
once. An earlier answer in the chat that drew on a private note (its recorded sources say so) is
replaced by a placeholder: it may quote the note.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Sequence

from skiff.local.notes_index import Hit

WITHHELD_TURN = "(an earlier answer that drew on private notes; withheld)"


def is_private(hit: Hit, private_paths: Sequence[str]) -> bool:
    return hit.private or is_private_path(hit.path, private_paths)


def is_private_path(where: str, private_paths: Sequence[str]) -> bool:
    path = Path(where)
    for entry in private_paths:
        pattern = str(Path(entry).expanduser())
        if fnmatch.fnmatch(str(path), pattern) or fnmatch.fnmatch(path.name, entry):
            return True
        folder = Path(pattern)
        if not any(ch in pattern for ch in "*?[") and (path == folder or folder in path.parents):
            return True
    return False


def drew_on_private_notes(turn: dict, private_paths: Sequence[str]) -> bool:
    """A chat turn whose answer was written from a private note (`sources` as Answer.as_dict has them)."""
    return any(isinstance(source, dict) and (source.get("private") or is_private_path(str(source.get("path", "")),
                                                                                    private_paths))
               for source in turn.get("sources") or ())
