"""The search for a secret in everything a program wrote: every file under some folders (zip
members inflated, gzip unpacked, SQLite databases also read row by row from a copy) and every
captured text, for the key, a 12-character piece of it, and its URL-encoded, JSON-escaped, base64,
hex, UTF-16 and UTF-32 forms. It says where and which form, never the key."""

from __future__ import annotations

import base64
import gzip
import shutil
import sqlite3
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import quote, quote_plus


def _base64_cores(data: bytes) -> list[bytes]:
    """The part of base64(prefix + data) that depends on `data` alone, for each of the three
    alignments `data` can have inside a longer encoded string; standard and URL-safe alphabets."""
    cores = []
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + data)
        core = encoded[4 if shift else 0: len(encoded) - (4 if (shift + len(data)) % 3 else 0)]
        cores += [core, core.translate(bytes.maketrans(b"+/", b"-_"))]
    return cores


def key_forms(key: str) -> dict[str, list[bytes]]:
    raw = key.encode()
    random_part = key.split("-", 2)[2]  # after "sk-<label>-": every piece of it is the key's own
    return {
        "the key": [raw],
        "a 12-character piece of the key": [random_part[i:i + 12].encode() for i in range(len(random_part) - 11)],
        "the key URL-encoded": [quote(key, safe="").encode(), quote_plus(key).encode()],
        "the key JSON-escaped": [key.replace("/", "\\/").encode()],
        "the key in base64": _base64_cores(raw) + _base64_cores(b"Bearer " + raw),
        "the key in hex": [raw.hex().encode(), raw.hex().upper().encode()],
        "the key in UTF-16": [key.encode("utf-16-le"), key.encode("utf-16-be")],
        "the key in UTF-32": [key.encode("utf-32-le"), key.encode("utf-32-be")],  # numpy's str arrays
    }


def _sqlite_values(path: Path, scratch: Path) -> bytes:
    """Every value of every table, read from a copy (with its WAL): a value the file splits over
    overflow pages is whole here."""
    scratch.mkdir(parents=True, exist_ok=True)
    copy = scratch / f"{len(list(scratch.iterdir()))}.sqlite3"
    shutil.copyfile(path, copy)
    for suffix in ("-wal", "-journal"):
        if path.with_name(path.name + suffix).exists():
            shutil.copyfile(path.with_name(path.name + suffix), copy.with_name(copy.name + suffix))
    parts: list[bytes] = []
    try:
        db = sqlite3.connect(copy)
        try:
            tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            for table in tables:
                try:
                    rows = db.execute(f'SELECT * FROM "{table}"').fetchall()
                except sqlite3.Error:
                    continue  # a virtual table whose module is not here: its shadow tables are read
                for row in rows:
                    parts += [v if isinstance(v, bytes) else str(v).encode() for v in row if v is not None]
        finally:
            db.close()
    except sqlite3.DatabaseError:
        pass  # not readable as a database (a damaged copy skiff set aside): its bytes were searched
    return b"\n".join(parts)


def _contents(path: Path, scratch: Path) -> Iterator[tuple[str, bytes]]:
    data = path.read_bytes()
    yield str(path), data
    if data[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as archive:
                for name in archive.namelist():
                    yield f"{path} (member {name})", archive.read(name)
        except zipfile.BadZipFile:
            pass
    if data[:2] == b"\x1f\x8b":
        try:
            yield f"{path} (gunzipped)", gzip.decompress(data)
        except (OSError, EOFError):
            pass
    if data[:16] == b"SQLite format 3\x00":
        yield f"{path} (rows)", _sqlite_values(path, scratch)


def find_leaks(keys: Sequence[str], roots: Sequence[Path], texts: dict[str, str], scratch: Path) -> list[str]:
    """Where any form of any key occurs; says which key (by number) and form, never the key."""
    forms = [key_forms(key) for key in keys]
    found: list[str] = []

    def search(where: str, data: bytes) -> None:
        for number, key_form in enumerate(forms):
            for form, needles in key_form.items():
                if any(needle in data for needle in needles):
                    found.append(f"{form} (key #{number}) in {where}")

    for root in roots:
        for path in sorted(Path(root).rglob("*")):
            if path.is_file() and not path.is_symlink():
                for where, data in _contents(path, scratch):
                    search(where, data)
    for name, text in texts.items():
        search(name, text.encode("utf-8", "surrogateescape"))
    return found
