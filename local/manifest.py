"""The index manifest: one SQLite row per file skiff has looked at, written so that a kill -9 at
any point leaves a state the next run repairs.

Protocol per batch of files: embed; mark the files 'pending'; replace their chunks in chromadb;
mark them 'done' (or 'skipped') with their content hash. A row left 'pending' by a crash has no
hash, so the next run redoes that file from scratch (delete by path, then add), which gives the
same index as an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from skiff.local import lexical
from skiff.local.atomic import write_atomically
from skiff.local.sqlite_store import open_database, transaction

_SCHEMA = [
    # Forward-only migrations: append, never edit.
    """
    CREATE TABLE files (
        path TEXT PRIMARY KEY,
        root TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('pending', 'done', 'skipped')),
        sha256 TEXT,
        size INTEGER,
        mtime_ns INTEGER,
        chunks INTEGER NOT NULL DEFAULT 0,
        kind TEXT,
        reason TEXT,
        updated_at REAL NOT NULL
    );
    CREATE INDEX files_root ON files(root);
    CREATE TABLE roots (path TEXT PRIMARY KEY, added_at REAL NOT NULL);
    """,
    *lexical.SCHEMA,
]


@dataclass(frozen=True)
class FileRecord:
    path: str
    root: str
    state: str
    sha256: str | None
    size: int | None
    mtime_ns: int | None
    chunks: int
    kind: str | None
    reason: str | None


class Manifest:
    def __init__(self, path: Path) -> None:
        # The folders indexed are also kept outside SQLite, so a damaged manifest still knows
        # what to rebuild from.
        self.roots_path = Path(path).with_name("roots.json")
        # Not announced here: the index decides what a damaged manifest means for its chunks.
        self.db, self.recovery = open_database(Path(path), _SCHEMA, "notes index", "", announce=False)
        if self.recovery is not None:
            self._insert_roots(self.saved_roots())
        elif not self.roots_path.exists() and self.roots():
            self.add_roots([])  # an index made before the mirror existed

    def close(self) -> None:
        self.db.close()

    def records(self) -> dict[str, FileRecord]:
        rows = self.db.execute(
            "SELECT path, root, state, sha256, size, mtime_ns, chunks, kind, reason FROM files"
        )
        return {row[0]: FileRecord(*row) for row in rows}

    def add_roots(self, roots: Iterable[str]) -> None:
        self._insert_roots(roots)
        known = self.roots()
        if known != self.saved_roots():
            write_atomically(self.roots_path, json.dumps(known, ensure_ascii=False).encode("utf-8", "surrogatepass"))

    def _insert_roots(self, roots: Iterable[str]) -> None:
        now = time.time()
        with transaction(self.db):
            self.db.executemany(
                "INSERT OR IGNORE INTO roots(path, added_at) VALUES (?, ?)", [(r, now) for r in roots]
            )

    def saved_roots(self) -> list[str]:
        """The roots as last mirrored beside the database ([] when there is no readable copy)."""
        try:
            roots = json.loads(self.roots_path.read_bytes().decode("utf-8", "surrogatepass"))
        except (OSError, ValueError):
            return []
        return sorted(r for r in roots if isinstance(r, str)) if isinstance(roots, list) else []

    def mark_all_pending(self) -> int:
        """Every file is to be redone from scratch by the next run (its chunks cannot be trusted)."""
        with transaction(self.db):
            return self.db.execute(
                "UPDATE files SET state='pending', sha256=NULL, updated_at=? WHERE state='done'",
                (time.time(),)).rowcount

    def pending(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM files WHERE state='pending'").fetchone()[0]

    def done_chunks(self) -> int:
        return self.totals()[1]

    def roots(self) -> list[str]:
        return [row[0] for row in self.db.execute("SELECT path FROM roots ORDER BY path")]

    def mark_pending(self, files: Iterable[tuple[str, str]]) -> None:
        """(path, root) pairs whose chunks are about to change."""
        now = time.time()
        with transaction(self.db):
            self.db.executemany(
                "INSERT INTO files(path, root, state, updated_at) VALUES (?, ?, 'pending', ?) "
                "ON CONFLICT(path) DO UPDATE SET state='pending', sha256=NULL, updated_at=excluded.updated_at",
                [(path, root, now) for path, root in files],
            )

    def commit(self, records: Iterable[FileRecord], lexical_rows: Sequence[lexical.LexicalRow] = ()) -> None:
        """Record files as done or skipped; their lexical rows are replaced by `lexical_rows` in the
        same transaction, so the two never disagree after a crash."""
        records = list(records)
        now = time.time()
        with transaction(self.db):
            lexical.delete_paths(self.db, [r.path for r in records])
            lexical.insert_rows(self.db, lexical_rows)
            self.db.executemany(
                "INSERT OR REPLACE INTO files(path, root, state, sha256, size, mtime_ns, chunks, kind, reason, "
                "updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (r.path, r.root, r.state, r.sha256, r.size, r.mtime_ns, r.chunks, r.kind, r.reason, now)
                    for r in records
                ],
            )

    def touch(self, path: str, mtime_ns: int) -> None:
        with transaction(self.db):
            self.db.execute("UPDATE files SET mtime_ns=? WHERE path=?", (mtime_ns, path))

    def forget(self, paths: Iterable[str]) -> None:
        paths = list(paths)
        with transaction(self.db):
            lexical.delete_paths(self.db, paths)
            self.db.executemany("DELETE FROM files WHERE path=?", [(p,) for p in paths])

    # -- the lexical rows (lexical.py) ---------------------------------------------------------

    def lexical_count(self) -> int:
        return lexical.count(self.db)

    def lexical_search(self, question: str, k: int) -> list[lexical.LexicalHit]:
        return lexical.search(self.db, question, k)

    def term_stats(self, question: str, chunk_ids: Sequence[str]) -> tuple[int, list[lexical.TermStats]]:
        return lexical.term_stats(self.db, question, chunk_ids)

    def refill_lexical(self, rows: Iterable[lexical.LexicalRow]) -> int:
        """Replace every lexical row with `rows` (an index made before the lexical side existed)."""
        written = 0
        with transaction(self.db):
            lexical.clear(self.db)
            batch: list[lexical.LexicalRow] = []
            for row in rows:
                batch.append(row)
                if len(batch) >= 1000:
                    lexical.insert_rows(self.db, batch)
                    written += len(batch)
                    batch = []
            lexical.insert_rows(self.db, batch)
            written += len(batch)
        return written

    def fingerprint(self) -> str:
        """A hash of what is indexed (each file's path and content hash): it changes exactly when
        the indexed notes change."""
        rows = self.db.execute(
            "SELECT path, sha256 FROM files WHERE state='done' AND chunks > 0 ORDER BY path").fetchall()
        digest = hashlib.sha256()
        for path, sha in rows:
            digest.update(f"{path}\0{sha}\n".encode("utf-8", "surrogatepass"))
        return digest.hexdigest()[:16]

    def totals(self) -> tuple[int, int]:
        files, chunks = self.db.execute(
            "SELECT COUNT(*), COALESCE(SUM(chunks), 0) FROM files WHERE state='done'"
        ).fetchone()
        return files, chunks
