"""The history table on both stores: SQLite (lesson 07) and a real PostgreSQL server started in a temp folder.

PostgreSQL refuses to run as root, so as root the fixture runs initdb/pg_ctl as the `postgres` user (runuser).
Without PostgreSQL installed the PostgreSQL tests skip with how to run them, except in CI (env CI set): there they fail.
"""

from __future__ import annotations

import glob
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from helpers.history import HistoryStore, HistoryUnavailableError, PostgresHistoryStore, open_history
from tests.conftest import free_port

REPO = Path(__file__).resolve().parent.parent


def pg_tool(name: str) -> str | None:
    """initdb / pg_ctl on PATH, or in Debian's /usr/lib/postgresql/<version>/bin."""
    return shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)


@pytest.fixture(scope="session")
def postgres_url():
    """postgresql://... of a throwaway PostgreSQL server on 127.0.0.1, stopped (fast) at the end of the session."""
    initdb, pg_ctl = pg_tool("initdb"), pg_tool("pg_ctl")
    if not (initdb and pg_ctl):
        message = (
            "PostgreSQL is not installed (no initdb/pg_ctl): install it (Debian/Ubuntu: `apt-get install "
            "postgresql`, macOS: `brew install postgresql`) to run the PostgreSQL history tests"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    base = Path(tempfile.mkdtemp(prefix="workshop-pg-"))
    as_root = os.geteuid() == 0

    def run(*cmd: str) -> subprocess.CompletedProcess:
        argv = ["runuser", "-u", "postgres", "--", *cmd] if as_root else list(cmd)
        return subprocess.run(argv, capture_output=True, text=True, timeout=120)

    if as_root:
        shutil.chown(base, "postgres", "postgres")
    port = free_port()
    done = run(initdb, "-D", f"{base}/data", "-A", "trust", "-U", "postgres")
    assert done.returncode == 0, done.stderr
    done = run(
        pg_ctl,
        "-D",
        f"{base}/data",
        "-o",
        f"-p {port} -k {base} -c listen_addresses=127.0.0.1",
        "-l",
        f"{base}/log",
        "-w",
        "start",
    )
    assert done.returncode == 0, done.stderr + (base / "log").read_text()
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        run(pg_ctl, "-D", f"{base}/data", "-m", "fast", "-w", "stop")
        shutil.rmtree(base, ignore_errors=True)


def fresh_postgres(url: str) -> PostgresHistoryStore:
    """A PostgresHistoryStore on an empty messages table."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS messages")
    return PostgresHistoryStore(url)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def store(request, tmp_path):
    """Each store, on an empty table."""
    if request.param == "sqlite":
        s = HistoryStore(tmp_path / "history.sqlite")
    else:
        s = fresh_postgres(request.getfixturevalue("postgres_url"))
    yield s
    s.close()


def reopen(s: HistoryStore) -> HistoryStore:
    """A new connection to the same table."""
    return PostgresHistoryStore(s.url) if isinstance(s, PostgresHistoryStore) else HistoryStore(s.path)


def test_a_turn_round_trips_and_survives_a_new_connection(store):
    store.add_turn("c1", "Which course do I need to drive a snowmobile?", "VH-120.")
    expected = [
        {"role": "user", "content": "Which course do I need to drive a snowmobile?"},
        {"role": "assistant", "content": "VH-120."},
    ]
    assert store.messages("c1") == expected
    rows = store.rows("c1")
    assert [r["status"] for r in rows] == ["ok", "ok"] and all(r["created_at"].startswith("20") for r in rows)
    again = reopen(store)  # another connection (another process would do the same)
    assert again.messages("c1") == expected
    again.close()


def test_a_failed_turn_is_recorded_but_kept_out_of_the_conversation(store):
    store.add_turn("c1", "q1", "a1")
    store.add_failed("c1", "q2", "generation failed: connection reset")
    store.add_turn("c1", "q3", "a3")
    assert [m["content"] for m in store.messages("c1")] == ["q1", "a1", "q3", "a3"]
    assert [(r["content"], r["status"]) for r in store.rows("c1")] == [
        ("q1", "ok"),
        ("a1", "ok"),
        ("q2", "failed"),
        ("generation failed: connection reset", "failed"),
        ("q3", "ok"),
        ("a3", "ok"),
    ]


def test_a_turn_is_written_whole_or_not_at_all(store):
    with pytest.raises(Exception, match="(?i)check"):
        store._write([("c1", "user", "q", "ok"), ("c1", "tool", "not a role", "ok")])
    assert store.rows("c1") == []
    with pytest.raises(Exception, match="(?i)check"):
        store._write([("c1", "user", "q", "half-done")])
    assert store.rows("c1") == []


def test_chats_are_separate_listed_newest_first_and_deleted(store):
    for i in range(3):
        store.add_turn("a", f"a{i}", f"ra{i}")
        store.add("b", "user", f"b{i}")
    assert store.chat_ids() == ["b", "a"] and store.messages("nobody") == []
    assert store.delete("a") == 6 and store.messages("a") == [] and len(store.messages("b")) == 3
    assert store.delete("a") == 0


def test_open_history_picks_the_store_from_the_target(tmp_path):
    s = open_history(tmp_path / "h.sqlite")
    assert type(s) is HistoryStore and s.path == tmp_path / "h.sqlite"
    s.close()


def test_a_lesson_07_file_with_the_old_content_column_is_migrated(tmp_path):
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, chat_id TEXT NOT NULL, role TEXT NOT NULL"
        " CHECK (role IN ('system', 'user', 'assistant')), content TEXT NOT NULL, created_at TEXT NOT NULL)"
    )
    db.execute("INSERT INTO messages (chat_id, role, content, created_at) VALUES ('c', 'user', 'kept', 'then')")
    db.commit()
    db.close()
    store = HistoryStore(path)
    store.add_turn("c", "new", "answer")
    assert [m["content"] for m in store.messages("c")] == ["kept", "new", "answer"]
    store.close()


WRITER = """
import sys
from helpers.history import open_history
store = open_history(sys.argv[1])
for i in range(int(sys.argv[3])):
    store.add_turn(sys.argv[2], f"q{i}", f"a{i}")
store.close()
"""


@pytest.mark.slow
def test_several_processes_share_the_postgres_table(postgres_url):
    fresh_postgres(postgres_url).close()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, postgres_url, f"proc-{n}", "25"], env=env) for n in range(3)
    ]
    assert [w.wait(timeout=120) for w in writers] == [0, 0, 0]
    store = PostgresHistoryStore(postgres_url)
    assert sorted(store.chat_ids()) == ["proc-0", "proc-1", "proc-2"]
    for n in range(3):
        messages = store.messages(f"proc-{n}")
        assert [m["content"] for m in messages] == [x for i in range(25) for x in (f"q{i}", f"a{i}")]
    store.close()


@pytest.mark.slow
def test_two_apps_in_one_process_share_one_postgres_history(stand_in, served_qdrant, postgres_url):
    """Two app instances (each its own store and connection) in this process; separate processes: the test above."""
    from app.service import create_app
    from infra.background import BackgroundServer
    from tests.support.served import ask, stand_in_config

    fresh_postgres(postgres_url).close()
    url = stand_in[0]
    apps = [
        create_app(
            stand_in_config(url),
            qdrant=served_qdrant,
            history=PostgresHistoryStore(postgres_url),
            options={"num_predict": 16},
        )
        for _ in range(2)
    ]
    for app in apps:
        app.state.service.k = 1
    with (
        BackgroundServer(apps[0]) as a,
        BackgroundServer(apps[1]) as b,
        httpx.Client(base_url=a.url, timeout=600) as http_a,
        httpx.Client(base_url=b.url, timeout=600) as http_b,
    ):
        events = ask(http_a, "shared", "Who leads the search and rescue team?")
        assert events[-1][0] == "done"
        seen_by_b = http_b.get("/chats/shared").json()["messages"]
        assert [m["role"] for m in seen_by_b] == ["user", "assistant"]
        assert seen_by_b[1]["content"] == dict(events)["sources"]["answer"]
        assert http_b.delete("/chats/shared").json()["deleted"] == 2
        assert http_a.get("/chats/shared").json()["messages"] == []
    for app in apps:
        app.state.service.history.close()


@pytest.mark.parametrize("url", ["mysql://user:secret@db:3306/chat", "redis://localhost:6379/0"])
def test_an_unsupported_history_url_says_what_to_set(url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(HistoryUnavailableError, match="is not supported.*HISTORY_URL to postgresql://") as caught:
        open_history(url)
    assert "secret" not in str(caught.value) and not any(tmp_path.iterdir()), "no SQLite file made of the URL"


def test_an_unreachable_postgres_says_to_start_it():
    url = f"postgresql://workshop:secret@127.0.0.1:{free_port()}/history?connect_timeout=3"
    with pytest.raises(HistoryUnavailableError, match="cannot be opened.*Start PostgreSQL") as caught:
        open_history(url)
    assert "secret" not in str(caught.value)


# Lesson 19: the bounded store. The LIMIT in SQL, expiry, a statement timeout, a pool, and an outage the answer survives.


def test_the_history_limit_is_in_the_sql_not_in_python(store):
    for i in range(40):
        store.add_turn("long", f"q{i}", f"a{i}")
    store.add_failed("long", "q-failed", "why")
    fetched = []
    read = store._read

    def spy(sql, params=()):
        rows = read(sql, params)
        fetched.append((sql, len(rows)))
        return rows

    store._read = spy
    assert [m["content"] for m in store.messages("long", limit=6)] == ["q37", "a37", "q38", "a38", "q39", "a39"]
    assert "LIMIT" in fetched[0][0] and fetched[0][1] == 6, "the database returned only the last 6 rows"
    assert len(store.messages("long")) == 80 and store.messages("long", limit=0) == []


def test_chats_idle_longer_than_the_ttl_expire(store):
    store.add_turn("old", "q", "a")
    store.add_turn("recent", "q", "a")
    store.add_turn("revived", "q", "a")
    long_ago = "2020-01-01T00:00:00.000000+00:00"
    store._change("UPDATE messages SET created_at = ? WHERE chat_id IN ('old', 'revived')", (long_ago,))
    store.add_turn("revived", "q2", "a2")  # a chat that is still used keeps its old turns
    assert store.expire(days=30) == 2
    assert sorted(store.chat_ids()) == ["recent", "revived"] and len(store.messages("revived")) == 4
    assert store.expire(days=30) == 0


def test_a_turn_names_the_model_that_answered(store):
    store.add_turn("c", "q", "a", model="smollm2:135m (openai@127.0.0.1:1)")
    assert [r["model"] for r in store.rows("c")] == [None, "smollm2:135m (openai@127.0.0.1:1)"]


@pytest.mark.slow
def test_a_slow_statement_is_cancelled_by_the_timeout(postgres_url):
    import psycopg

    fresh_postgres(postgres_url).close()
    store = PostgresHistoryStore(postgres_url, timeout_s=0.5)
    with pytest.raises(psycopg.errors.QueryCanceled, match="statement timeout"):
        store._read("SELECT pg_sleep(3)")
    assert store._read("SELECT 1") == [(1,)], "the pool hands out a working connection afterwards"
    store.close()


@pytest.mark.slow
def test_the_pool_serves_several_threads_at_once(postgres_url):
    from concurrent.futures import ThreadPoolExecutor

    fresh_postgres(postgres_url).close()
    store = PostgresHistoryStore(postgres_url, pool_size=3)
    with ThreadPoolExecutor(3) as pool:
        pids = list(pool.map(lambda _: store._read("SELECT pg_backend_pid() FROM pg_sleep(1)")[0][0], range(3)))
    assert len(set(pids)) == 3, "three statements ran at once, each on its own connection"
    store.close()


def served_app(stand_in, qdrant, history, **tuning):
    """The app on the in-process stand-in with the indexed qdrant, history, short answers and one source."""
    from app.service import create_app
    from tests.support.served import stand_in_config

    url = stand_in[0]
    app = create_app(stand_in_config(url), qdrant=qdrant, history=history, options={"num_predict": 16}, tuning=tuning)
    app.state.service.k = 1
    return app


@pytest.mark.slow
def test_old_chats_are_expired_when_the_app_starts(stand_in, served_qdrant, postgres_url):
    from infra.background import BackgroundServer

    store = fresh_postgres(postgres_url)
    store.add_turn("stale", "q", "a")
    store.add_turn("fresh", "q", "a")
    store._change("UPDATE messages SET created_at = ? WHERE chat_id = 'stale'", ("2020-01-01T00:00:00+00:00",))
    with BackgroundServer(served_app(stand_in, served_qdrant, store, history_ttl_days=30)) as server:
        deadline = time.monotonic() + 10
        while httpx.get(f"{server.url}/chats/stale").json()["messages"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert httpx.get(f"{server.url}/chats/stale").json()["messages"] == []
        assert len(httpx.get(f"{server.url}/chats/fresh").json()["messages"]) == 2
    store.close()


@pytest.mark.slow
def test_the_answer_streams_while_postgresql_is_down(stand_in, served_qdrant, postgres_url):
    import psycopg

    from infra.background import BackgroundServer
    from tests.support.served import ask

    admin = psycopg.connect(postgres_url, autocommit=True)
    admin.execute("DROP DATABASE IF EXISTS outage")
    admin.execute("CREATE DATABASE outage")
    url = postgres_url.rsplit("/", 1)[0] + "/outage"
    store = PostgresHistoryStore(url, timeout_s=1)
    try:
        with (
            BackgroundServer(served_app(stand_in, served_qdrant, store)) as server,
            httpx.Client(base_url=server.url, timeout=600) as http,
        ):
            assert dict(ask(http, "c", "Who leads the search and rescue team?"))["done"]["saved"] is True
            admin.execute("ALTER DATABASE outage ALLOW_CONNECTIONS false")  # the outage: no connection gets in
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'outage'")
            events = ask(http, "c", "Where is the muster point during a fire alarm?")
            names = [e for e, _ in events]
            assert "token" in names and names[-1] == "done", names
            assert dict(events)["done"]["saved"] is False
            assert "rag_turns_unsaved_total 1.0" in http.get("/metrics").text
            admin.execute("ALTER DATABASE outage ALLOW_CONNECTIONS true")  # back: the next turn is saved again
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # the pool reconnects by itself, with a backoff
                try:
                    store._read("SELECT 1")
                    break
                except psycopg.Error:
                    time.sleep(0.5)
            assert dict(ask(http, "c", "How cold does it get in winter?"))["done"]["saved"] is True
            kept = [m["content"] for m in http.get("/chats/c").json()["messages"] if m["role"] == "user"]
            assert kept == ["Who leads the search and rescue team?", "How cold does it get in winter?"]
    finally:
        store.close()
        admin.execute("ALTER DATABASE outage ALLOW_CONNECTIONS true")
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'outage'")
        admin.execute("DROP DATABASE IF EXISTS outage")
        admin.close()
