"""SQLite helpers shared by skiff's stores: durable connections and forward-only migrations."""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence


def connect(path: Path) -> sqlite3.Connection:
    """Autocommit connection in WAL mode with full fsync: a committed row survives kill -9."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(path), timeout=30, isolation_level=None, check_same_thread=False)
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
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
