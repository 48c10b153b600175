"""SQLite helpers shared by skiff's stores: durable connections, forward-only migrations, and
recovery from a damaged file (kept as a backup, replaced by a fresh one, reported)."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from skiff.local.recovery import Recovery, quarantine, report

# SQLite's primary result codes for a damaged file; anything else (locked, read-only, no
# permission, a newer schema) is not damage and must never move a file aside.
_SQLITE_CORRUPT, _SQLITE_NOTADB = 11, 26


class SharedConnection(sqlite3.Connection):
    """A connection several threads may use (the server answers questions in parallel): one
    thread's transaction runs whole before another thread's statement, which would otherwise join
    it (one connection has one transaction) or fail to BEGIN a second."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lock = threading.RLock()

    def execute(self, *args, **kwargs) -> sqlite3.Cursor:
        with self.lock:
            return super().execute(*args, **kwargs)


def connect(path: Path) -> SharedConnection:
    """Autocommit connection in WAL mode with full fsync: a committed row survives kill -9."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(path), timeout=30, isolation_level=None, check_same_thread=False,
                         factory=SharedConnection)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    return db


def migrate(db: sqlite3.Connection, steps: Sequence[str]) -> None:
    """Apply the steps past PRAGMA user_version, each in its own transaction. Append, never edit."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > len(steps):
        raise RuntimeError(
            f"database schema version {version} is newer than this skiff knows ({len(steps)}); upgrade skiff"
        )
    for number, script in enumerate(steps[version:], start=version + 1):
        with transaction(db):
            for statement in filter(str.strip, script.split(";")):
                db.execute(statement)
            db.execute(f"PRAGMA user_version={number}")


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    with getattr(db, "lock", _NO_LOCK):
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")


_NO_LOCK = contextlib.nullcontext()


def is_damage(error: BaseException) -> bool:
    return isinstance(error, sqlite3.DatabaseError) and (
        getattr(error, "sqlite_errorcode", 0) & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB))


def open_database(path: Path, steps: Sequence[str], what: str, outcome: str,
                  announce: bool = True) -> tuple[sqlite3.Connection, Recovery | None]:
    """connect() and migrate(), after a quick integrity check. A damaged file (and its WAL) is
    moved aside as a backup and a fresh database takes its place; the Recovery says so (and is
    reported to the front ends unless `announce` is False: then the caller reports it)."""
    try:
        return _open_checked(path, steps), None
    except sqlite3.DatabaseError as error:
        if not is_damage(error):
            raise
        reason = str(error)
    backups = quarantine(path, Path(f"{path}-wal"), Path(f"{path}-shm"))
    recovery = Recovery(what, reason, backups, outcome)
    if announce:
        report(recovery)
    return _open_checked(path, steps), recovery


def _open_checked(path: Path, steps: Sequence[str]) -> sqlite3.Connection:
    db = None
    try:
        db = connect(path)
        problems = [row[0] for row in db.execute("PRAGMA quick_check(5)")]
        if problems != ["ok"]:
            raise _corrupt("; ".join(problems))
        migrate(db, steps)
        return db
    except BaseException:
        if db is not None:
            db.close()
        raise


def _corrupt(detail: str) -> sqlite3.DatabaseError:
    error = sqlite3.DatabaseError(f"integrity check failed: {detail}")
    error.sqlite_errorcode = _SQLITE_CORRUPT
    return error
