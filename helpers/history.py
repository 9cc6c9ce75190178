"""Conversation history kept in SQLite, bounded for the prompt, and follow-up rewriting. Taught in 07_history.ipynb."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import ollama

from helpers.chunking import count_tokens

REWRITE_PROMPT = (
    "Rewrite the user's last question so that it can be understood without the conversation: replace words like "
    "'it', 'that', 'they' or 'and ...?' with what they refer to. Keep the names, codes and numbers. "
    "Reply with the rewritten question only."
)


class HistoryStore:
    """Messages per chat id in a SQLite file: every write is committed, so a kernel restart loses nothing."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, check_same_thread=False)
        with self.db:
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY AUTOINCREMENT, chat_id TEXT NOT NULL,"
                " role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')), content TEXT NOT NULL,"
                " created_at TEXT NOT NULL)")
            self.db.execute("CREATE INDEX IF NOT EXISTS messages_chat ON messages (chat_id, id)")

    def add(self, chat_id: str, role: str, content: str) -> None:
        """Append one message to a chat (committed at once)."""
        with self.db:
            self.db.execute("INSERT INTO messages (chat_id, role, content, created_at) VALUES (?, ?, ?, ?)",
                            (chat_id, role, content, datetime.now(UTC).isoformat()))

    def messages(self, chat_id: str) -> list[dict]:
        """A chat's messages, oldest first, as {"role", "content"} dicts ready for ollama.chat."""
        rows = self.db.execute("SELECT role, content FROM messages WHERE chat_id = ? ORDER BY id", (chat_id,))
        return [{"role": role, "content": content} for role, content in rows]

    def chat_ids(self) -> list[str]:
        """Every chat id, most recently active first."""
        rows = self.db.execute("SELECT chat_id FROM messages GROUP BY chat_id ORDER BY MAX(id) DESC")
        return [r[0] for r in rows]

    def delete(self, chat_id: str) -> None:
        """Forget a chat."""
        with self.db:
            self.db.execute("DELETE FROM messages WHERE chat_id = ?", (chat_id,))

    def close(self) -> None:
        """Close the database file."""
        self.db.close()


def new_chat_id() -> str:
    """A fresh, unique chat id."""
    return uuid.uuid4().hex[:12]


def last_n(messages: list[dict], n: int) -> list[dict]:
    """The last n messages (system messages always kept, in front)."""
    system = [m for m in messages if m["role"] == "system"]
    rest = [m for m in messages if m["role"] != "system"]
    return system + (rest[-n:] if n > 0 else [])


def within_token_budget(messages: list[dict], budget: int, count: Callable[[str], int] = count_tokens) -> list[dict]:
    """The newest messages whose content fits in budget tokens (system messages always kept)."""
    system = [m for m in messages if m["role"] == "system"]
    left = budget - sum(count(m["content"]) for m in system)
    kept: list[dict] = []
    for m in reversed([m for m in messages if m["role"] != "system"]):
        cost = count(m["content"])
        if cost > left:
            break
        kept.insert(0, m)
        left -= cost
    return system + kept


def rewrite_query(client: ollama.Client, model: str, history: list[dict], question: str,
                  options: dict | None = None) -> str:
    """Ask the model to turn a follow-up into a standalone question, using the conversation so far."""
    if not history:
        return question
    convo = "\n".join(f"{m['role']}: {m['content']}" for m in history if m["role"] != "system")
    response = client.chat(model=model, messages=[
        {"role": "system", "content": REWRITE_PROMPT},
        {"role": "user", "content": f"Conversation:\n{convo}\n\nLast question: {question}\n\nRewritten question:"},
    ], options={"temperature": 0, "seed": 0, "num_predict": 60, **(options or {})})
    rewritten = response.message.content.strip().strip('"').splitlines()
    return rewritten[0].strip() if rewritten and rewritten[0].strip() else question
