"""Conversations for the TUI: a list of chats, each a list of messages, in SQLite.

A question is written before it is answered; an answer's row exists before its first token and
each streamed piece is written before it is shown, so a kill -9 loses nothing that was on screen.
An answer that was cut short keeps its text and says how it ended.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from skiff.local.sqlite_store import open_database, transaction

_MIGRATIONS = [
    """
    CREATE TABLE conversations (
        id TEXT PRIMARY KEY,
        title TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE messages (
        id TEXT PRIMARY KEY,
        conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
        content TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'done',
        answer_id TEXT,
        meta TEXT NOT NULL DEFAULT '{}',
        created_at REAL NOT NULL
    );
    CREATE INDEX messages_conversation ON messages(conversation_id, created_at);
    CREATE INDEX conversations_updated ON conversations(updated_at)
    """,
    # What the TUI remembers between runs (the theme picked in the command palette).
    "CREATE TABLE preferences (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
]

# What `status` can say about an assistant message.
STREAMING, DONE, CANCELLED, FAILED = "streaming", "done", "cancelled", "failed"


def _new_id() -> str:
    return uuid.uuid4().hex[:12]


@dataclass
class Message:
    id: str
    role: str
    content: str
    status: str = DONE
    answer_id: str | None = None
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Conversation:
    id: str
    title: str
    updated_at: float


class ChatHistory:
    def __init__(self, path: Path) -> None:
        self.db, self.recovery = open_database(
            path, _MIGRATIONS, "chat history", "A new, empty chat history was started; open the backup with any "
            "SQLite tool to read what it still holds.")
        # Every streamed piece is written before it is shown. In WAL mode NORMAL still survives a
        # killed process (the commit is in the OS's hands); only a power cut can lose the last
        # pieces, and it makes a write per token cheap.
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        # A process killed mid-answer left a 'streaming' row: it is what was shown, cut short.
        self.db.execute("UPDATE messages SET status=? WHERE status=?", (CANCELLED, STREAMING))

    def close(self) -> None:
        self.db.close()

    def preference(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM preferences WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def set_preference(self, key: str, value: str) -> None:
        self.db.execute("INSERT INTO preferences(key, value) VALUES (?, ?) "
                        "ON CONFLICT(key) DO UPDATE SET value=excluded.value", (key, value))

    # -- conversations -------------------------------------------------------------------------

    def create(self, title: str = "New chat") -> Conversation:
        now = time.time()
        conversation = Conversation(_new_id(), title, now)
        self.db.execute("INSERT INTO conversations(id, title, created_at, updated_at) VALUES (?, ?, ?, ?)",
                        (conversation.id, title, now, now))
        return conversation

    def conversations(self, search: str = "") -> list[Conversation]:
        if search:
            pattern = f"%{search}%"
            rows = self.db.execute(
                "SELECT DISTINCT c.id, c.title, c.updated_at FROM conversations c LEFT JOIN messages m "
                "ON m.conversation_id = c.id WHERE c.title LIKE ? OR m.content LIKE ? ORDER BY c.updated_at DESC",
                (pattern, pattern),
            ).fetchall()
        else:
            rows = self.db.execute(
                "SELECT id, title, updated_at FROM conversations ORDER BY updated_at DESC"
            ).fetchall()
        return [Conversation(*row) for row in rows]

    def rename(self, conversation_id: str, title: str) -> None:
        self.db.execute("UPDATE conversations SET title=? WHERE id=?", (title.strip() or "Untitled", conversation_id))

    def delete(self, conversation_id: str) -> None:
        with transaction(self.db):
            self.db.execute("DELETE FROM messages WHERE conversation_id=?", (conversation_id,))
            self.db.execute("DELETE FROM conversations WHERE id=?", (conversation_id,))

    # -- messages ------------------------------------------------------------------------------

    def messages(self, conversation_id: str) -> list[Message]:
        rows = self.db.execute(
            "SELECT id, role, content, status, answer_id, meta FROM messages WHERE conversation_id=? "
            "ORDER BY created_at, rowid",
            (conversation_id,),
        ).fetchall()
        return [Message(r[0], r[1], r[2], r[3], r[4], json.loads(r[5])) for r in rows]

    def questions(self, limit: int = 200) -> list[str]:
        """Earlier questions, newest last, for recalling with the up key."""
        rows = self.db.execute(
            "SELECT content FROM messages WHERE role='user' ORDER BY created_at DESC LIMIT ?", (limit,)
        ).fetchall()
        return [r[0] for r in reversed(rows)]

    def add_question(self, conversation_id: str, text: str) -> Message:
        message = Message(_new_id(), "user", text)
        now = time.time()
        with transaction(self.db):
            self.db.execute(
                "INSERT INTO messages(id, conversation_id, role, content, created_at) VALUES (?, ?, 'user', ?, ?)",
                (message.id, conversation_id, text, now),
            )
            # The first question names the chat.
            self.db.execute(
                "UPDATE conversations SET updated_at=?, title=CASE WHEN title='New chat' THEN ? ELSE title END "
                "WHERE id=?",
                (now, text.strip().splitlines()[0][:60], conversation_id),
            )
        return message

    def start_answer(self, conversation_id: str) -> Message:
        message = Message(_new_id(), "assistant", "", STREAMING)
        self.db.execute(
            "INSERT INTO messages(id, conversation_id, role, content, status, created_at) "
            "VALUES (?, ?, 'assistant', '', ?, ?)",
            (message.id, conversation_id, STREAMING, time.time()),
        )
        return message

    def update_answer(self, message_id: str, content: str) -> None:
        self.db.execute("UPDATE messages SET content=? WHERE id=?", (content, message_id))

    def finish_answer(self, message_id: str, content: str, status: str, answer_id: str | None, meta: dict) -> None:
        self.db.execute(
            "UPDATE messages SET content=?, status=?, answer_id=?, meta=? WHERE id=?",
            (content, status, answer_id, json.dumps(meta, ensure_ascii=False), message_id),
        )

    def history_for(self, conversation_id: str, before_message: str | None = None) -> list[dict]:
        """The conversation as chat turns for the model (finished answers only)."""
        turns = []
        for message in self.messages(conversation_id):
            if message.id == before_message:
                break
            if message.role == "assistant" and (message.status == FAILED or not message.content):
                continue
            turn = {"role": message.role, "content": message.content}
            if message.role == "assistant" and message.meta.get("sources"):
                turn["sources"] = message.meta["sources"]  # a cloud question withholds answers from private notes
            turns.append(turn)
        return turns
