"""The answers store: every question skiff answered, with its route, decision, sources, timings
and tokens, the router's decision record (signals, thresholds, reason, φ(x)) and the feedback
events that train the router. SQLite with forward-only migrations; the question row is written before generation
starts and finished after, so a kill -9 never loses a question that was asked."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from skiff.local.sqlite_store import open_database, transaction
from skiff.router.draft_check import pack, unpack
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
    # Cloud answers (what was sent, cost), local/cloud pairs of one question, and standing
    # verdicts kept apart from the observation log, so a pair can replace two one-sided
    # observations with one exact one.
    """
    ALTER TABLE answers ADD COLUMN sent TEXT;
    ALTER TABLE answers ADD COLUMN cost_usd REAL;
    ALTER TABLE answers ADD COLUMN pair_id TEXT;
    CREATE INDEX answers_pair ON answers(pair_id);
    ALTER TABLE feedback_events ADD COLUMN kind TEXT NOT NULL DEFAULT 'single';
    CREATE TABLE verdicts (
        answer_id TEXT PRIMARY KEY REFERENCES answers(id),
        verdict TEXT NOT NULL CHECK (verdict IN ('good', 'bad')),
        updated_at REAL NOT NULL
    );
    INSERT INTO verdicts(answer_id, verdict, updated_at)
        SELECT answer_id, verdict, created_at FROM feedback_events f WHERE weight > 0 AND seq =
            (SELECT MAX(seq) FROM feedback_events g WHERE g.answer_id = f.answer_id)
    """,
    # How much local compute a local+ answer got: plain, a vote over N samples, or a test-time LoRA.
    "ALTER TABLE answers ADD COLUMN allocation TEXT",
    # The notes check ("my notes don't say"): its verdict, probability, threshold and signals.
    "ALTER TABLE answers ADD COLUMN abstention TEXT",
    # The cascade's second stage: the draft check's verdict and signals, ψ as it saw them (feedback
    # trains on exactly these), the model that wrote the draft, and a draft that was set aside.
    """
    ALTER TABLE decisions ADD COLUMN draft_check TEXT;
    ALTER TABLE decisions ADD COLUMN draft_features BLOB;
    ALTER TABLE decisions ADD COLUMN draft_model TEXT;
    ALTER TABLE answers ADD COLUMN draft TEXT;
    CREATE INDEX decisions_draft_model ON decisions(draft_model, created_at)
    """,
]

# One observation the surrogate holds: (answer_id, kind, verdict, answered_by, target).
ObservationKey = tuple[str, str, str, str, float]


@dataclass(frozen=True)
class DraftRecord:
    """What the cascade's check saw of a local draft: its verdict (as a dict), ψ, and the model."""

    check: dict
    features: np.ndarray  # ψ of each reading, a row each
    model: str
    text: str | None = None  # the draft itself, when it was set aside for a stronger answer


def new_answer_id() -> str:
    return uuid.uuid4().hex[:12]


class AnswerStore:
    def __init__(self, path: Path) -> None:
        self.db, self.recovery = open_database(
            path, _MIGRATIONS, "answers database",
            "A new, empty record was started: earlier answers can no longer be shown or judged, and "
            "the router keeps what it had learned from them.")

    def close(self) -> None:
        self.db.close()

    def start(self, answer_id: str, question: str, decision: Decision, answered_by: str, model: str) -> None:
        """The question and the decision, in one transaction, before any token is generated."""
        now = time.time()
        features = None if decision.features is None else np.asarray(decision.features, dtype=np.float64).tobytes()
        with transaction(self.db):
            self.db.execute(
                "INSERT INTO answers(id, created_at, question, route, reason, signals, model, stop_reason, "
                "answered_by) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, 'interrupted', ?)",
                (
                    answer_id,
                    now,
                    question,
                    decision.route,
                    decision.reason,
                    json.dumps(decision.signals),
                    model,
                    answered_by,
                ),
            )
            self.db.execute(
                "INSERT INTO decisions(answer_id, created_at, route, router_route, overridden, reason, signals, "
                "features) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    answer_id,
                    now,
                    decision.route,
                    decision.router_route or decision.route,
                    int(decision.overridden),
                    decision.reason,
                    json.dumps(decision.signals),
                    features,
                ),
            )

    def finish(self, answer_id: str, answer: str, sources: list, timings: dict, tokens: dict, stop_reason: str,
               answered_by: str, model: str, cost_usd: float | None = None, allocation: dict | None = None,
               abstention: dict | None = None, draft: DraftRecord | None = None) -> None:
        """The answer and who wrote it (`start` recorded who was to, before any token), with the
        draft check's record when a local draft was checked: all in one transaction."""
        with transaction(self.db):
            self.db.execute(
                "UPDATE answers SET finished_at=?, answer=?, sources=?, timings=?, tokens=?, stop_reason=?, "
                "answered_by=?, model=?, cost_usd=?, allocation=?, abstention=?, draft=? WHERE id=?",
                (time.time(), answer, json.dumps(sources), json.dumps(timings), json.dumps(tokens), stop_reason,
                 answered_by, model, cost_usd, json.dumps(allocation) if allocation else None,
                 json.dumps(abstention) if abstention else None, draft.text if draft else None, answer_id),
            )
            if draft is not None:
                self.db.execute(
                    "UPDATE decisions SET draft_check=?, draft_features=?, draft_model=? WHERE answer_id=?",
                    (json.dumps(draft.check), pack(draft.features), draft.model, answer_id))

    def discard(self, answer_id: str) -> None:
        """An answer started but never given (the local model was too busy to take it): the client
        asks again, and one question must not count twice."""
        with transaction(self.db):
            self.db.execute("DELETE FROM decisions WHERE answer_id=?", (answer_id,))
            self.db.execute("DELETE FROM answers WHERE id=?", (answer_id,))

    def set_sent(self, answer_id: str, sent: dict) -> None:
        """What left the machine for this answer, written before the request goes out."""
        self.db.execute("UPDATE answers SET sent=? WHERE id=?", (json.dumps(sent, ensure_ascii=False), answer_id))

    # -- pairs: a local and a cloud answer to one question -------------------------------------

    def pair(self, first_id: str, second_id: str) -> None:
        with transaction(self.db):
            self.db.execute("UPDATE answers SET pair_id=? WHERE id IN (?, ?)", (first_id, first_id, second_id))

    def unpaired_counterpart(self, question: str, answered_by: str, exclude: str, within_s: float) -> str | None:
        """The latest answer to the same question by the other model, not yet in a pair."""
        other = "local" if answered_by == "cloud" else "cloud"
        row = self.db.execute(
            "SELECT id FROM answers WHERE question=? AND answered_by=? AND id<>? AND pair_id IS NULL "
            "AND created_at>=? AND answer IS NOT NULL AND answer<>'' ORDER BY created_at DESC LIMIT 1",
            (question, other, exclude, time.time() - within_s),
        ).fetchone()
        return row[0] if row else None

    def partner(self, answer_id: str) -> str | None:
        row = self.db.execute(
            "SELECT b.id FROM answers a JOIN answers b ON a.pair_id = b.pair_id AND b.id <> a.id WHERE a.id=?",
            (answer_id,),
        ).fetchone()
        return row[0] if row else None

    def usage_rate(self, window_s: float) -> tuple[int, float]:
        """(decisions in the last `window_s`, seconds of that window skiff has been in use)."""
        now = time.time()
        count, first = self.db.execute(
            "SELECT COUNT(*), MIN(created_at) FROM decisions WHERE created_at >= ?", (now - window_s,)
        ).fetchone()
        return count, (now - first) if first is not None else 0.0

    def mean_cloud_cost(self, last: int = 200) -> tuple[float, int]:
        """Mean cost of the recent priced cloud answers, and how many there were."""
        rows = self.db.execute(
            "SELECT cost_usd FROM answers WHERE answered_by='cloud' AND cost_usd > 0 ORDER BY created_at DESC LIMIT ?",
            (last,),
        ).fetchall()
        return (sum(r[0] for r in rows) / len(rows), len(rows)) if rows else (0.0, 0)

    def cloud_spend(self, since: float) -> dict:
        answers, usd, tokens_in, tokens_out = self.db.execute(
            "SELECT COUNT(*), COALESCE(SUM(cost_usd), 0), COALESCE(SUM(json_extract(tokens, '$.prompt')), 0), "
            "COALESCE(SUM(json_extract(tokens, '$.completion')), 0) FROM answers "
            "WHERE answered_by='cloud' AND created_at>=?",
            (since,),
        ).fetchone()
        return {"answers": answers, "usd": round(usd, 6), "tokens_in": int(tokens_in), "tokens_out": int(tokens_out)}

    def get(self, answer_id: str) -> dict | None:
        cursor = self.db.execute("SELECT a.*, d.draft_check FROM answers a LEFT JOIN decisions d "
                                 "ON d.answer_id = a.id WHERE a.id=?", (answer_id,))
        row = cursor.fetchone()
        if row is None:
            return None
        record = dict(zip([c[0] for c in cursor.description], row))
        optional = ("sent", "allocation", "abstention", "draft_check")
        for key in ("signals", "sources", "timings", "tokens", *optional):
            record[key] = json.loads(record[key]) if record.get(key) else ({} if key not in optional else None)
        return record

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def latest_answer_id(self) -> str | None:
        row = self.db.execute("SELECT id FROM answers ORDER BY created_at DESC, rowid DESC LIMIT 1").fetchone()
        return row[0] if row else None

    def features(self, answer_id: str) -> np.ndarray | None:
        row = self.db.execute("SELECT features FROM decisions WHERE answer_id=?", (answer_id,)).fetchone()
        return None if row is None or row[0] is None else np.frombuffer(row[0], dtype=np.float64).copy()

    def draft_features(self, answer_id: str, model: str) -> np.ndarray | None:
        """ψ of each reading the check made of this answer's draft (a row each), when `model` wrote it."""
        row = self.db.execute("SELECT draft_features FROM decisions WHERE answer_id=? AND draft_model=?",
                              (answer_id, model)).fetchone()
        return None if row is None or row[0] is None else unpack(row[0])

    def draft_replaced(self, answer_id: str) -> bool:
        """Whether a local+ method's answer replaced this answer's draft (the verdict is not the draft's)."""
        row = self.db.execute("SELECT draft_check FROM decisions WHERE answer_id=?", (answer_id,)).fetchone()
        return bool(row and row[0] and json.loads(row[0]).get("replaced_by"))

    def recent_draft_features(self, model: str, limit: int) -> list[np.ndarray]:
        """ψ of the readings of the most recent drafts `model` wrote and the check read."""
        rows = self.db.execute(
            "SELECT draft_features FROM decisions WHERE draft_model=? AND draft_features IS NOT NULL "
            "ORDER BY created_at DESC LIMIT ?", (model, limit)).fetchall()
        return [unpack(row[0]) for row in rows]

    def draft_total(self, model: str) -> int:
        return self.db.execute("SELECT COUNT(*) FROM decisions WHERE draft_model=?", (model,)).fetchone()[0]

    def cloud_stages(self, since: float = 0.0) -> dict[str, int]:
        """Answers the cloud wrote, by stage: sent before any draft, or after the draft check
        escalated a local draft; and how many drafts the check read."""
        before, after, checked = self.db.execute(
            "SELECT COALESCE(SUM(a.answered_by = 'cloud' AND d.draft_check IS NULL), 0), "
            "COALESCE(SUM(a.answered_by = 'cloud' AND json_extract(d.draft_check, '$.escalated') = 1), 0), "
            "COALESCE(SUM(d.draft_check IS NOT NULL), 0) "
            "FROM decisions d JOIN answers a ON a.id = d.answer_id WHERE d.created_at >= ?", (since,)).fetchone()
        return {"before_draft": int(before), "after_draft": int(after), "drafts_checked": int(checked)}

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

    def verdict(self, answer_id: str) -> str | None:
        """The standing verdict on an answer, if any."""
        row = self.db.execute("SELECT verdict FROM verdicts WHERE answer_id=?", (answer_id,)).fetchone()
        return row[0] if row else None

    def applied_observations(self, answer_ids: list[str], after_event: int = 0) -> dict[ObservationKey, float]:
        """What the surrogate holds about these answers (events after `after_event`, the last one a
        reset dropped): each observation with its net weight."""
        marks = ",".join("?" * len(answer_ids))
        rows = self.db.execute(
            f"SELECT answer_id, kind, verdict, answered_by, target, SUM(weight) FROM feedback_events "
            f"WHERE answer_id IN ({marks}) AND seq > ? GROUP BY answer_id, kind, verdict, answered_by, target",
            [*answer_ids, after_event],
        ).fetchall()
        return {tuple(row[:5]): row[5] for row in rows if abs(row[5]) > 1e-12}

    def record_verdict(self, answer_id: str, verdict: str,
                       events: list[tuple[str, str, str, str, float, float]]) -> None:
        """The new standing verdict and the observation events it causes, all or none.
        Events are (answer_id, kind, verdict, answered_by, target, weight)."""
        now = time.time()
        with transaction(self.db):
            self.db.execute(
                "INSERT INTO verdicts(answer_id, verdict, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT(answer_id) DO UPDATE SET verdict=excluded.verdict, updated_at=excluded.updated_at",
                (answer_id, verdict, now),
            )
            self.db.executemany(
                "INSERT INTO feedback_events(answer_id, kind, verdict, answered_by, target, weight, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(*event, now) for event in events],
            )

    def verdict_events_after(self, seq: int) -> list[tuple[int, str, str, str, str, float]]:
        """(seq, answer_id, kind, verdict, answered_by, weight) in order, after event `seq`."""
        return self.db.execute(
            "SELECT seq, answer_id, kind, verdict, answered_by, weight FROM feedback_events WHERE seq > ? "
            "ORDER BY seq", (seq,)).fetchall()

    def feedback_events_after(self, seq: int) -> list[tuple[int, str, float, float]]:
        """(seq, answer_id, target, weight) in order, for events the posterior has not absorbed."""
        return self.db.execute(
            "SELECT seq, answer_id, target, weight FROM feedback_events WHERE seq > ? ORDER BY seq", (seq,)
        ).fetchall()

    def last_feedback_event(self) -> int:
        return self.db.execute("SELECT COALESCE(MAX(seq), 0) FROM feedback_events").fetchone()[0]

    def number_events_after(self, seq: int) -> None:
        """New feedback events get numbers above `seq`: after the log was lost, the posterior has
        absorbed events up to `seq` that the new log never held, and must still see the new ones."""
        with transaction(self.db):
            current = self.db.execute("SELECT seq FROM sqlite_sequence WHERE name='feedback_events'").fetchone()
            if current is None:
                self.db.execute("INSERT INTO sqlite_sequence(name, seq) VALUES ('feedback_events', ?)", (seq,))
            elif current[0] < seq:
                self.db.execute("UPDATE sqlite_sequence SET seq=? WHERE name='feedback_events'", (seq,))

    def feedback_counts(self) -> dict[str, int]:
        """Standing verdicts (the last event per answer, if it was not a retraction)."""
        rows = self.db.execute("SELECT verdict, COUNT(*) FROM verdicts GROUP BY verdict").fetchall()
        return {"good": 0, "bad": 0, **dict(rows)}
