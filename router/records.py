"""The answers store: every question skiff answered, with its route, decision, sources, timings
and tokens. SQLite with forward-only migrations; the question row is written before generation
starts and finished after, so a kill -9 never loses a question that was asked."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

from skiff.local.sqlite_store import connect, migrate

_MIGRATIONS = [
    """
    CREATE TABLE answers (
        id TEXT PRIMARY KEY,
        created_at REAL NOT NULL,
        finished_at REAL,
        question TEXT NOT NULL,
        answer TEXT,
        route TEXT NOT NULL,
        reason TEXT NOT NULL,
        signals TEXT NOT NULL DEFAULT '{}',
        sources TEXT NOT NULL DEFAULT '[]',
        timings TEXT NOT NULL DEFAULT '{}',
        tokens TEXT NOT NULL DEFAULT '{}',
        model TEXT,
        stop_reason TEXT
    );
    CREATE INDEX answers_created ON answers(created_at)
    """,
]


def new_answer_id() -> str:
    return uuid.uuid4().hex[:12]


class AnswerStore:
    def __init__(self, path: Path) -> None:
        self.db = connect(path)
        migrate(self.db, _MIGRATIONS)

    def close(self) -> None:
        self.db.close()

    def start(self, answer_id: str, question: str, route: str, reason: str, signals: dict, model: str) -> None:
        self.db.execute(
            "INSERT INTO answers(id, created_at, question, route, reason, signals, model, stop_reason) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, 'interrupted')",
            (answer_id, time.time(), question, route, reason, json.dumps(signals), model),
        )

    def finish(self, answer_id: str, answer: str, sources: list, timings: dict, tokens: dict, stop_reason: str) -> None:
        self.db.execute(
            "UPDATE answers SET finished_at=?, answer=?, sources=?, timings=?, tokens=?, stop_reason=? WHERE id=?",
            (time.time(), answer, json.dumps(sources), json.dumps(timings), json.dumps(tokens), stop_reason, answer_id),
        )

    def get(self, answer_id: str) -> dict | None:
        cursor = self.db.execute("SELECT * FROM answers WHERE id=?", (answer_id,))
        row = cursor.fetchone()
        if row is None:
            return None
        record = dict(zip([c[0] for c in cursor.description], row))
        for key in ("signals", "sources", "timings", "tokens"):
            record[key] = json.loads(record[key])
        return record

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
