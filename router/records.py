"""The answers store: every question skiff answered, with its route, decision, sources, timings
and tokens, the router's decision record (signals, thresholds, reason, φ(x)) and the feedback
events that train the router. SQLite with forward-only migrations; the question row is written before generation
starts and finished after, so a kill -9 never loses a question that was asked."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import numpy as np

from skiff.local.sqlite_store import connect, migrate, transaction
from skiff.router.policy import Decision

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
    # The router's decisions and the feedback that trains it.
    """
    ALTER TABLE answers ADD COLUMN answered_by TEXT;
    CREATE TABLE decisions (
        answer_id TEXT PRIMARY KEY REFERENCES answers(id),
        created_at REAL NOT NULL,
        route TEXT NOT NULL,
        router_route TEXT NOT NULL,
        overridden INTEGER NOT NULL,
        reason TEXT NOT NULL,
        signals TEXT NOT NULL,
        features BLOB
    );
    CREATE INDEX decisions_created ON decisions(created_at);
    CREATE TABLE feedback_events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        answer_id TEXT NOT NULL REFERENCES answers(id),
        verdict TEXT NOT NULL CHECK (verdict IN ('good', 'bad')),
        answered_by TEXT NOT NULL,
        target REAL NOT NULL,
        weight REAL NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX feedback_answer ON feedback_events(answer_id)
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

    def start(self, answer_id: str, question: str, decision: Decision, answered_by: str, model: str) -> None:
        """The question and the decision, in one transaction, before any token is generated."""
        now = time.time()
        features = None if decision.features is None else np.asarray(decision.features, dtype=np.float64).tobytes()
        with transaction(self.db):
            self.db.execute(
                "INSERT INTO answers(id, created_at, question, route, reason, signals, model, stop_reason, answered_by) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, 'interrupted', ?)",
                (answer_id, now, question, decision.route, decision.reason, json.dumps(decision.signals), model,
                 answered_by),
            )
            self.db.execute(
                "INSERT INTO decisions(answer_id, created_at, route, router_route, overridden, reason, signals, features) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (answer_id, now, decision.route, decision.router_route or decision.route, int(decision.overridden),
                 decision.reason, json.dumps(decision.signals), features),
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

    def latest_answer_id(self) -> str | None:
        row = self.db.execute("SELECT id FROM answers ORDER BY created_at DESC, rowid DESC LIMIT 1").fetchone()
        return row[0] if row else None

    def features(self, answer_id: str) -> np.ndarray | None:
        row = self.db.execute("SELECT features FROM decisions WHERE answer_id=?", (answer_id,)).fetchone()
        return None if row is None or row[0] is None else np.frombuffer(row[0], dtype=np.float64).copy()

    def recent_features(self, limit: int) -> np.ndarray:
        """φ of the most recent routed questions, person's overrides included (they were asked)."""
        rows = self.db.execute(
            "SELECT features FROM decisions WHERE features IS NOT NULL ORDER BY created_at DESC LIMIT ?", (limit,)
        ).fetchall()
        return np.stack([np.frombuffer(r[0], dtype=np.float64) for r in rows]) if rows else np.zeros((0, 0))

    def decision_total(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM decisions").fetchone()[0]

    def decision_counts(self, since: float = 0.0) -> dict[str, dict[str, int]]:
        """Per route: how often the router chose it, and how often it actually answered (a cloud
        decision without an endpoint is answered locally)."""
        counts: dict[str, dict[str, int]] = {}
        queries = {
            "chosen": "SELECT router_route, COUNT(*) FROM decisions WHERE created_at >= ? GROUP BY router_route",
            "ran": "SELECT COALESCE(a.answered_by, d.route), COUNT(*) FROM decisions d JOIN answers a "
                   "ON a.id = d.answer_id WHERE d.created_at >= ? GROUP BY 1",
        }
        for key, query in queries.items():
            for route, n in self.db.execute(query, (since,)):
                counts.setdefault(route, {"chosen": 0, "ran": 0})[key] = n
        return counts

    # -- feedback ------------------------------------------------------------------------------

    def verdict(self, answer_id: str) -> tuple[str, float] | None:
        """The standing verdict on an answer and the target it trained with, if any."""
        row = self.db.execute(
            "SELECT verdict, target, weight FROM feedback_events WHERE answer_id=? ORDER BY seq DESC LIMIT 1",
            (answer_id,),
        ).fetchone()
        return (row[0], row[1]) if row and row[2] > 0 else None

    def add_feedback_events(self, events: list[tuple[str, str, str, float, float]]) -> None:
        """(answer_id, verdict, answered_by, target, weight) rows, all or none."""
        now = time.time()
        with transaction(self.db):
            self.db.executemany(
                "INSERT INTO feedback_events(answer_id, verdict, answered_by, target, weight, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(*event, now) for event in events],
            )

    def feedback_events_after(self, seq: int) -> list[tuple[int, str, float, float]]:
        """(seq, answer_id, target, weight) in order, for events the posterior has not absorbed."""
        return self.db.execute(
            "SELECT seq, answer_id, target, weight FROM feedback_events WHERE seq > ? ORDER BY seq", (seq,)
        ).fetchall()

    def last_feedback_event(self) -> int:
        return self.db.execute("SELECT COALESCE(MAX(seq), 0) FROM feedback_events").fetchone()[0]

    def feedback_counts(self) -> dict[str, int]:
        """Standing verdicts (the last event per answer, if it was not a retraction)."""
        rows = self.db.execute(
            "SELECT verdict, COUNT(*) FROM feedback_events f WHERE weight > 0 AND seq = "
            "(SELECT MAX(seq) FROM feedback_events g WHERE g.answer_id = f.answer_id) GROUP BY verdict"
        ).fetchall()
        return {"good": 0, "bad": 0, **dict(rows)}
