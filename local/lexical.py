"""The lexical side of the notes index: SQLite FTS5 (BM25) over every chunk, with its note's title
and heading path, in the manifest's own database.

Dense vectors find paraphrases; BM25 finds the rare exact word a question shares with its note (a
setting's name, `private`, an error message) that a 384-d MiniLM vector blurs. The two are fused
by the retrieval pipeline (skiff.assistant.retrieval).

Crash safety comes free from where the table lives: a file's rows change in the same SQLite
transaction that marks it done in the manifest (see manifest.py), so after a kill -9 the lexical
rows and the manifest agree, and a file left pending is redone, rows and all, by the next run.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from typing import Iterable, Sequence

# Forward-only steps appended to the manifest's schema (see manifest.py).
SCHEMA = [
    """
    CREATE VIRTUAL TABLE lexical USING fts5(
        text, tokenize = 'porter unicode61 remove_diacritics 2'
    );
    CREATE TABLE lexical_chunks (
        rowid INTEGER PRIMARY KEY,
        chunk_id TEXT NOT NULL UNIQUE,
        path TEXT NOT NULL
    );
    CREATE INDEX lexical_chunks_path ON lexical_chunks(path);
    """,
]

# Words of a question worth matching: letters or digits, as FTS5's unicode61 tokenizer splits them.
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
# The most distinct words a query keeps: BM25 over an OR of 60 words costs more than it finds.
MAX_QUERY_WORDS = 32
# Common words that only add posting-list reads (BM25's IDF would weigh them near zero anyway).
_STOPWORDS = frozenset("""a an and are as at be been but by can do does for from had has have how i if in into is
it its me my of on or our so that the their them then there these they this to was we what when where which who
why will with would you your""".split())


@dataclass(frozen=True)
class LexicalRow:
    chunk_id: str
    path: str
    text: str  # what is searched: title > section, then the chunk's text


@dataclass(frozen=True)
class LexicalHit:
    id: str
    path: str
    score: float  # BM25, higher is better (FTS5's bm25() negated)


def query_words(question: str) -> list[str]:
    words: list[str] = []
    for word in _WORD.findall(question.lower()):
        if word not in _STOPWORDS and word not in words:
            words.append(word)
    return words[:MAX_QUERY_WORDS]


def delete_paths(db: sqlite3.Connection, paths: Iterable[str]) -> None:
    """Drop every row of these files. Call inside the caller's transaction."""
    for path in paths:
        rowids = [row[0] for row in db.execute("SELECT rowid FROM lexical_chunks WHERE path=?", (path,))]
        if rowids:
            db.executemany("DELETE FROM lexical WHERE rowid=?", [(r,) for r in rowids])
            db.execute("DELETE FROM lexical_chunks WHERE path=?", (path,))


def insert_rows(db: sqlite3.Connection, rows: Sequence[LexicalRow]) -> None:
    """Add rows (their files' old rows deleted first). Call inside the caller's transaction."""
    for row in rows:
        old = db.execute("SELECT rowid FROM lexical_chunks WHERE chunk_id=?", (row.chunk_id,)).fetchone()
        if old is not None:  # never two rows for one chunk, whatever came before
            db.execute("DELETE FROM lexical WHERE rowid=?", old)
            db.execute("DELETE FROM lexical_chunks WHERE rowid=?", old)
        cursor = db.execute("INSERT INTO lexical_chunks(chunk_id, path) VALUES (?, ?)", (row.chunk_id, row.path))
        db.execute("INSERT INTO lexical(rowid, text) VALUES (?, ?)", (cursor.lastrowid, row.text))


def count(db: sqlite3.Connection) -> int:
    return db.execute("SELECT COUNT(*) FROM lexical_chunks").fetchone()[0]


def clear(db: sqlite3.Connection) -> None:
    db.execute("DELETE FROM lexical")
    db.execute("DELETE FROM lexical_chunks")


def search(db: sqlite3.Connection, question: str, k: int) -> list[LexicalHit]:
    """The k chunks BM25 ranks highest for any of the question's words."""
    words = query_words(question)
    if not words or k <= 0:
        return []
    match = " OR ".join('"' + word.replace('"', '""') + '"' for word in words)
    rows = db.execute(
        "SELECT c.chunk_id, c.path, bm25(lexical) AS score FROM lexical JOIN lexical_chunks c "
        "ON c.rowid = lexical.rowid WHERE lexical MATCH ? ORDER BY score LIMIT ?", (match, k))
    return [LexicalHit(chunk_id, path, -score) for chunk_id, path, score in rows]


@dataclass(frozen=True)
class TermStats:
    word: str
    documents: int  # chunks holding the word (after stemming), in the whole index
    in_context: bool  # whether any of the given chunks holds it


def term_stats(db: sqlite3.Connection, question: str, chunk_ids: Sequence[str]) -> tuple[int, list[TermStats]]:
    """(chunks in the index, per-word statistics) for the question's words against the chunks
    `chunk_ids`: how rare each word is, and whether the given context holds it. The words go
    through FTS5's own tokenizer (stemming included), so "syncing" in a question meets "sync"."""
    total = count(db)
    rowids = [row[0] for chunk_id in chunk_ids
              for row in db.execute("SELECT rowid FROM lexical_chunks WHERE chunk_id=?", (chunk_id,))]
    marks = ",".join("?" * len(rowids))
    stats = []
    for word in query_words(question):
        phrase = '"' + word.replace('"', '""') + '"'
        documents = db.execute("SELECT COUNT(*) FROM lexical WHERE lexical MATCH ?", (phrase,)).fetchone()[0]
        in_context = bool(rowids) and documents > 0 and db.execute(
            f"SELECT 1 FROM lexical WHERE lexical MATCH ? AND rowid IN ({marks}) LIMIT 1",
            (phrase, *rowids)).fetchone() is not None
        stats.append(TermStats(word, documents, in_context))
    return total, stats
