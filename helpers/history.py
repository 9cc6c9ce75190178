"""Conversation history kept in SQLite (or PostgreSQL), bounded for the prompt, and follow-up rewriting.

Taught in 07_history.ipynb; the PostgreSQL store and failed turns in 13_serve.ipynb; the bounded store (the last N
messages read with LIMIT, a pool, a statement timeout, expiry) in 19_deploy.ipynb.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import ollama

from helpers.chunking import count_tokens

REWRITE_PROMPT = (
    "You turn a follow-up question into a standalone question for a search engine. Use the conversation to replace "
    "words such as 'it', 'that', 'there' or 'they', and openings such as 'And ...?' or 'What about ...?', with the "
    "thing they refer to. Keep every name, code and number. Do not answer the question. "
    "Reply with the standalone question only, on one line."
)
STOPWORDS = frozenset(
    "a an the and or but of to in on at for by with from into about as is are was were be been do does did can could "
    "should would may might must will shall have has had i me my we our you your it its they them their he she his "
    "her this that these those there here what which who whom whose when where why how not no yes so if then than "
    "also just only very much many some any all each per up out over again more most before after".split()
)

REFERRING = frozenset(
    "it its it's that this these those there then they them their he she him his her one ones same such".split()
)


class HistoryStore:
    """Messages per chat id in a SQLite file: every write is committed, so a kernel restart loses nothing.

    One table, `messages (id, chat_id, role, message, status, model, created_at)`, the same in SQLite and PostgreSQL
    (PostgresHistoryStore, taught in 13_serve.ipynb). `status` is 'ok', or 'failed' for a turn that did not complete:
    failed rows are kept for the record but never returned by `messages()`, so no half-written turn reaches a prompt.
    `model` names the model that wrote an answer (lesson 19). timeout_s: how long a statement waits for a lock.
    """

    placeholder = "?"
    id_column = "id INTEGER PRIMARY KEY AUTOINCREMENT"

    def __init__(self, path: str | Path, *, timeout_s: float = 5.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()  # one connection, shared by a server's threads: one statement at a time
        self.db = sqlite3.connect(self.path, check_same_thread=False, timeout=timeout_s)
        columns = [row[1] for row in self.db.execute("PRAGMA table_info(messages)")]
        with self.db:
            if "content" in columns:  # a file from before the column was named `message`
                self.db.execute("ALTER TABLE messages RENAME COLUMN content TO message")
            if columns and "status" not in columns:
                self.db.execute("ALTER TABLE messages ADD COLUMN status TEXT NOT NULL DEFAULT 'ok'")
            if columns and "model" not in columns:
                self.db.execute("ALTER TABLE messages ADD COLUMN model TEXT")
            self._create(self.db)

    def _create(self, db: Any) -> None:
        """The table and its index, if missing."""
        db.execute(
            f"CREATE TABLE IF NOT EXISTS messages ({self.id_column}, chat_id TEXT NOT NULL,"
            " role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')), message TEXT NOT NULL,"
            " status TEXT NOT NULL DEFAULT 'ok' CHECK (status IN ('ok', 'failed')), model TEXT,"
            " created_at TEXT NOT NULL)"
        )
        db.execute("CREATE INDEX IF NOT EXISTS messages_chat ON messages (chat_id, id)")

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        """The connection, in a transaction: committed on success, rolled back on error."""
        with self.lock, self.db:
            yield self.db

    def _write(self, rows: list[tuple[str, str, str, str]], *, model: str | None = None) -> None:
        """Insert (chat_id, role, message, status) rows in one transaction: all of them or none (model: the answers')."""
        sql = "INSERT INTO messages (chat_id, role, message, status, model, created_at) VALUES ({})".format(
            ", ".join([self.placeholder] * 6)
        )
        now = timestamp()
        with self._connection() as db:
            for row in rows:
                db.execute(sql, (*row, model if row[1] == "assistant" else None, now))

    def _read(self, sql: str, params: tuple = ()) -> list[tuple]:
        """Rows of a query (placeholders written as ?)."""
        with self._connection() as db:
            return list(db.execute(sql.replace("?", self.placeholder), params))

    def _change(self, sql: str, params: tuple = ()) -> int:
        """Run one DELETE or UPDATE (placeholders written as ?); how many rows it changed."""
        with self._connection() as db:
            return db.execute(sql.replace("?", self.placeholder), params).rowcount

    def add(self, chat_id: str, role: str, content: str) -> None:
        """Append one message to a chat (committed at once)."""
        self._write([(chat_id, role, content, "ok")])

    def add_turn(self, chat_id: str, question: str, answer: str, *, model: str | None = None) -> None:
        """Store a complete turn, question and answer, in one transaction; model: who answered."""
        self._write([(chat_id, "user", question, "ok"), (chat_id, "assistant", answer, "ok")], model=model)

    def add_failed(self, chat_id: str, question: str, reason: str) -> None:
        """Record a turn that did not complete (question + why), kept out of the conversation."""
        self._write([(chat_id, "user", question, "failed"), (chat_id, "assistant", reason, "failed")])

    def messages(self, chat_id: str, *, limit: int | None = None) -> list[dict]:
        """A chat's messages, oldest first, as {"role", "content"} dicts ready for ollama.chat.

        limit: only the last `limit` messages, chosen by the database (ORDER BY id DESC LIMIT n): a long chat is never
        read whole (lesson 19).
        """
        params: tuple = (chat_id,)
        if limit is None:
            sql = "SELECT role, message FROM messages WHERE chat_id = ? AND status = 'ok' ORDER BY id"
        else:
            sql = (
                "SELECT role, message FROM (SELECT id, role, message FROM messages WHERE chat_id = ? AND status = 'ok'"
                " ORDER BY id DESC LIMIT ?) AS recent ORDER BY id"
            )
            params = (chat_id, max(0, limit))
        return [{"role": role, "content": content} for role, content in self._read(sql, params)]

    def rows(self, chat_id: str) -> list[dict]:
        """Every stored row of a chat, failed ones included, with status, model and time."""
        rows = self._read(
            "SELECT role, message, status, model, created_at FROM messages WHERE chat_id = ? ORDER BY id", (chat_id,)
        )
        return [
            {"role": r, "content": m, "status": s, "model": model, "created_at": str(t)} for r, m, s, model, t in rows
        ]

    def chat_ids(self) -> list[str]:
        """Every chat id, most recently active first."""
        return [r[0] for r in self._read("SELECT chat_id FROM messages GROUP BY chat_id ORDER BY MAX(id) DESC")]

    def delete(self, chat_id: str) -> int:
        """Forget a chat; returns how many rows were deleted."""
        return self._change("DELETE FROM messages WHERE chat_id = ?", (chat_id,))

    def expire(self, *, days: float) -> int:
        """Delete the chats whose last message is older than `days` (lesson 19); returns how many rows went."""
        cutoff = timestamp(datetime.now(UTC) - timedelta(days=days))
        return self._change(
            "DELETE FROM messages WHERE chat_id IN (SELECT chat_id FROM messages GROUP BY chat_id"
            " HAVING MAX(created_at) < ?)",
            (cutoff,),
        )

    def close(self) -> None:
        """Close the database connection."""
        self.db.close()


def timestamp(when: datetime | None = None) -> str:
    """A UTC time as ISO text with microseconds, so that text order is time order (created_at, expiry)."""
    return (when or datetime.now(UTC)).isoformat(timespec="microseconds")


class PostgresHistoryStore(HistoryStore):
    """The same table in PostgreSQL (psycopg 3), so several app processes share one history. Taught in 13_serve.ipynb.

    A pool of connections (psycopg-pool: threads do not queue behind one connection), each with a statement timeout;
    timeout_s also bounds the wait for a free connection (lesson 19).
    """

    placeholder = "%s"
    id_column = "id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"

    def __init__(self, url: str, *, timeout_s: float = 5.0, pool_size: int = 4) -> None:
        from psycopg_pool import ConnectionPool

        self.url, self.timeout_s = url, timeout_s
        self.path = Path(url.split("@")[-1])  # for display only: no password
        self.pool = ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            timeout=timeout_s,  # the longest wait for a free (or new) connection
            kwargs={"autocommit": True, "options": f"-c statement_timeout={round(timeout_s * 1000)}"},
            check=ConnectionPool.check_connection,  # a connection the server dropped is replaced, not handed out
            open=False,
            name="history",
        )
        try:
            self.pool.open(wait=True, timeout=timeout_s)
            with self._connection() as db:
                db.execute("SELECT pg_advisory_xact_lock(7012)")  # two processes starting at once: one creates
                self._create(db)
                db.execute("ALTER TABLE messages ADD COLUMN IF NOT EXISTS model TEXT")  # a table from before lesson 19
        except BaseException:
            self.pool.close()
            raise

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        """A pooled connection in a transaction block, given back to the pool afterwards."""
        with self.pool.connection() as db, db.transaction():
            yield db

    def close(self) -> None:
        """Close every pooled connection."""
        self.pool.close()


class HistoryUnavailableError(RuntimeError):
    """HISTORY_URL names a store that cannot be opened; the message says what to do."""


HISTORY_HELP = (
    "Set HISTORY_URL to postgresql://USER:PASSWORD@HOST:5432/DATABASE (a running PostgreSQL) or to a SQLite file "
    "(a path, or sqlite:///path), or unset it to keep the history in SQLite under the state directory."
)


def open_history(target: str | Path, *, timeout_s: float = 5.0) -> HistoryStore:
    """A HistoryStore for a SQLite path, or a PostgresHistoryStore for a postgresql:// URL. Taught in 13_serve.ipynb.

    A URL of another kind, or a PostgreSQL that does not answer, raises HistoryUnavailableError saying the fix.
    """
    text = str(target)
    scheme = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", text)
    if scheme is None or scheme.group(1) == "sqlite":
        return HistoryStore(text.removeprefix("sqlite:///"), timeout_s=timeout_s)
    if scheme.group(1) not in ("postgresql", "postgres"):
        raise HistoryUnavailableError(
            f"HISTORY_URL {text.split('@')[-1]!r}: {scheme.group(1)}:// is not supported. {HISTORY_HELP}"
        )
    import psycopg

    try:
        return PostgresHistoryStore(text, timeout_s=timeout_s)
    except psycopg.Error as exc:
        where = text.split("@")[-1]  # no password in the message
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise HistoryUnavailableError(
            f"The history database at {where} cannot be opened ({reason}). Start PostgreSQL there (or check the "
            f"user, password and database in the URL). {HISTORY_HELP}"
        ) from exc


def new_chat_id() -> str:
    """A fresh, unique chat id."""
    return uuid.uuid4().hex[:12]


def last_n(messages: list[dict], *, n: int) -> list[dict]:
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


def llm_rewrite(
    client: ollama.Client,
    question: str,
    *,
    history: list[dict],
    model: str,
    options: dict | None = None,
    last: int = 6,
    on_response: Callable[[ollama.ChatResponse], object] | None = None,
) -> str:
    """The model's standalone version of a follow-up, from the last messages of the conversation (one line).

    on_response gets the model's whole response, e.g. to count its tokens (helpers.metrics.count_usage).
    """
    convo = "\n".join(f"{m['role']}: {m['content']}" for m in last_n(history, n=last) if m["role"] != "system")
    response = client.chat(
        model=model,
        messages=[
            {"role": "system", "content": REWRITE_PROMPT},
            {
                "role": "user",
                "content": f"Conversation:\n{convo}\n\nFollow-up question: {question}\n\nStandalone question:",
            },
        ],
        options={"temperature": 0, "seed": 0, "num_predict": 60, "stop": ["\n"], **(options or {})},
    )
    if on_response is not None:
        on_response(response)
    lines = [line.strip() for line in (response.message.content or "").strip().strip('"').splitlines() if line.strip()]
    return lines[0].strip('"') if lines else ""


def content_words(text: str) -> set[str]:
    """Lower-case words that carry meaning (no stopwords), cut to 5 letters so 'approve' matches 'approves'."""
    return {w[:5] for w in re.findall(r"[a-z0-9][a-z0-9'-]*", text.lower()) if w not in STOPWORDS and len(w) > 2}


def rewrite_problem(rewrite: str, question: str, history: list[dict]) -> str | None:
    """Why a rewrite cannot be used as a standalone question, or None when it looks right.

    A usable rewrite is one question, keeps a content word of the follow-up, is not a copy of an earlier
    question, and adds at least one word from the conversation (it resolved what 'it' or 'that' meant).
    """
    text = rewrite.strip()
    earlier = {m["content"].strip().lower() for m in history if m["role"] == "user"}
    context = set().union(*(content_words(m["content"]) for m in history if m["role"] != "system"))
    asked = content_words(question)
    if not text.endswith("?") or len(text.split()) > 40:
        return "not a single question"
    if text.lower() == question.strip().lower():
        return "unchanged"
    if text.lower() in earlier:
        return "copies an earlier question"
    if asked and not content_words(text) & asked:
        return "lost what the follow-up asks"
    if not (content_words(text) - asked) & context:
        return "adds nothing from the conversation"
    return None


def refers_back(question: str) -> bool:
    """True when a question needs the conversation: it has a word like 'it' or 'there', or no content word at all."""
    words = set(re.findall(r"[a-z']+", question.lower()))
    return bool(words & REFERRING) or not content_words(question)


def context_query(question: str, *, history: list[dict], max_words: int = 60) -> str:
    """No-LLM standalone query: the follow-up first, then the previous question and the start of its answer.

    A question that does not refer back (a new topic, such as "And the emergency plan?") is searched on its own, so
    the previous turn's words cannot pull the search back to the old topic.
    """
    if not refers_back(question):
        return question
    users = [m["content"] for m in history if m["role"] == "user"]
    answers = [m["content"] for m in history if m["role"] == "assistant"]
    answer = " ".join(answers[-1].split()[:max_words]) if answers else ""
    return " ".join(x for x in (question, users[-1] if users else "", answer) if x)


def rewrite_query(
    client: ollama.Client,
    question: str,
    *,
    history: list[dict],
    model: str,
    options: dict | None = None,
    on_response: Callable[[ollama.ChatResponse], object] | None = None,
) -> str:
    """A standalone query for retrieval: the model's rewrite if it passes rewrite_problem, else context_query.

    on_response gets the model's response when the model was asked (see llm_rewrite).
    """
    if not any(m["role"] != "system" for m in history):
        return question
    rewrite = llm_rewrite(client, question, history=history, model=model, options=options, on_response=on_response)
    return rewrite if rewrite_problem(rewrite, question, history) is None else context_query(question, history=history)
