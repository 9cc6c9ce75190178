"""A chat app in the notebook: ipywidgets over history -> rewrite -> retrieve -> prompt -> stream -> store -> metrics.

Taught in 10_chat-app.ipynb (guard=, lesson 14's guardrails: 14_guardrails.ipynb).

    app = ChatApp(client, qdrant, cfg, "handbook", HistoryStore(path), MetricsLog())
    display(app.widget)          # type a question, press Enter (or Send); Stop ends an answer early
    app.ask("Where is the muster point?")   # or drive it from code: one whole turn, synchronous
"""

from __future__ import annotations

import html
import re
import threading
import time
import uuid
from typing import TYPE_CHECKING

import httpx
import ipywidgets as widgets
import ollama
from qdrant_client import QdrantClient, models

from helpers.guardrails import REFUSAL, Guard
from helpers.history import HistoryStore, last_n, new_chat_id, rewrite_query
from helpers.metrics import MetricsLog, count_usage
from helpers.rag import Hit, build_messages, cited_numbers, retrieve

if TYPE_CHECKING:
    from helpers.setup import Config

# "\nQuestion:" stops a small model that starts writing the next turn of the prompt's pattern itself.
OPTIONS = {"temperature": 0, "seed": 42, "num_predict": 120, "num_ctx": 4096, "stop": ["\nQuestion:"]}
STOPPED = " … (stopped)"
FRAME = (
    "height:340px;overflow-y:auto;display:flex;flex-direction:column-reverse;border:1px solid #d0d7de;"
    "border-radius:8px;padding:8px 10px;background:#fafbfc;color:#1f2328;font-size:14px;line-height:1.45"
)
BUBBLE = "padding:7px 11px;max-width:82%;white-space:pre-wrap;overflow-wrap:anywhere;border-radius:12px"
USER_STYLE = f"{BUBBLE};background:#dbeafe;border-bottom-right-radius:3px"
ASSISTANT_STYLE = f"{BUBBLE};background:#ffffff;border:1px solid #d0d7de;border-bottom-left-radius:3px"


def bubble(role: str, text: str, note: str = "") -> str:
    """One message as HTML: the user's on the right in blue, the assistant's on the left in white (text escaped)."""
    user = role == "user"
    who = "You" if user else "Assistant"
    extra = f"<div style='color:#59636e;font-style:italic;font-size:12px'>{html.escape(note)}</div>" if note else ""
    return (
        f"<div style='display:flex;flex-direction:column;align-items:{'flex-end' if user else 'flex-start'};"
        f"margin:6px 0'><div style='font-size:11px;color:#59636e;margin:0 4px'>{who}</div>"
        f"<div class='chat-{role}' style='{USER_STYLE if user else ASSISTANT_STYLE}'>{html.escape(text)}{extra}"
        f"</div></div>"
    )


def transcript_html(messages: list[dict], pending: tuple[str, str, str] | None = None) -> str:
    """The chat as a scrolling box that stays at the newest turn; pending = (question, partial answer, state)."""
    parts = [bubble(m["role"], m["content"]) for m in messages if m["role"] != "system"]
    if pending:
        question, partial, state = pending
        parts += [bubble("user", question), bubble("assistant", partial + ("▍" if partial else ""), state)]
    if not parts:
        parts = [
            "<div style='color:#59636e;font-style:italic'>No messages yet: ask about Halvorsen Ridge Station "
            "below and press Enter.</div>"
        ]
    return f"<div class='chat-transcript' style='{FRAME}'><div>{''.join(parts)}</div></div>"


def plain_text(markdown: str, limit: int = 220) -> str:
    """Markdown as one readable line: no heading marks, table pipes, checkboxes or emphasis; cut at a word."""
    lines = []
    for line in markdown.splitlines():
        line = line.strip()
        if re.fullmatch(r"\|?[\s:|-]+\|?", line) and "-" in line:  # a table's |---|---| row
            continue
        if line.startswith("|"):
            line = " · ".join(cell.strip() for cell in line.strip("|").split("|") if cell.strip())
        line = re.sub(r"^#{1,6}\s+", "", line)
        line = re.sub(r"^[-*+]\s+\[[ xX]\]\s+", "", line)
        line = re.sub(r"^[-*+]\s+", "", line)
        line = re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", line)
        line = re.sub(r"(\*\*|__|`)", "", line)
        if line:
            lines.append(line)
    text = " ".join(" ".join(lines).split())
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " …"


def sources_html(hits: list[Hit], answer: str | None = None) -> str:
    """The retrieved chunks as readable numbered cards; after the answer, the ones it cites are marked."""
    if not hits:
        return ""
    cited = set(cited_numbers(answer or ""))
    items = []
    for n, h in enumerate(hits, 1):
        mark = (
            (
                " <span style='background:#1a7f37;color:white;border-radius:8px;padding:0 6px;font-size:11px'>"
                "cited</span>"
            )
            if n in cited
            else ""
        )
        items.append(
            f"<div class='chat-source' style='margin:4px 0;padding:4px 8px;border-left:3px solid "
            f"{'#1a7f37' if n in cited else '#d0d7de'}'><b>[{n}] {html.escape(h.title)}</b>{mark} "
            f"<span style='color:#59636e;font-size:12px'>{html.escape(h.chunk_id)}, score {h.score:.2f}"
            f"</span><br><span style='font-size:13px'>{html.escape(plain_text(h.text))}</span></div>"
        )
    when = "cited ones marked" if answer is not None else "the answer is being written"
    return f"<div style='color:#1f2328;line-height:1.4'><b>Sources</b> <small>({len(hits)} retrieved, {when})</small>{''.join(items)}</div>"


def clean_answer(text: str) -> str:
    """The answer without surrounding space or a trailing echoed "Question: ..." line."""
    return re.split(r"\n\s*Question:", text.strip())[0].strip()


def describe_error(exc: Exception, host: str) -> str:
    """A one-line error for the status line that says what to do."""
    if isinstance(exc, (httpx.ConnectError, ConnectionError)):
        return (
            f"Cannot reach the model server at {host}: re-run the notebook's setup cell (it starts the offline "
            "stand-in or finds your Ollama), then ask again."
        )
    if isinstance(exc, ollama.ResponseError):
        return f"The model server answered {exc.status_code}: {exc.error}"
    return f"{type(exc).__name__}: {exc}"


class ChatApp:
    """A chat UI (scrolling transcript, question box, Send / Stop / New chat, sources) over the RAG pipeline."""

    def __init__(
        self,
        client: ollama.Client,
        qdrant: QdrantClient,
        cfg: Config,
        collection: str,
        history: HistoryStore,
        metrics: MetricsLog,
        k: int = 4,
        max_messages: int = 6,
        options: dict | None = None,
        hybrid: bool = False,
        guard: Guard | None = None,
    ) -> None:
        self.client, self.qdrant, self.cfg, self.collection = client, qdrant, cfg, collection
        self.hybrid = hybrid  # True: dense + BM25 fused by RRF (lesson 11) instead of dense alone
        self.guard = guard  # lesson 14's guardrails; None (the default): lesson 10's pipeline as it was
        self.history, self.metrics, self.k, self.max_messages = history, metrics, k, max_messages
        self.options = {**OPTIONS, **(options or {})}
        self.chat_id = new_chat_id()
        self.last_hits: list[Hit] = []
        self.last_query = ""
        self.last_error: Exception | None = None
        self.query_filter: models.Filter | None = None  # e.g. only one category of documents
        self._stop, self._worker = threading.Event(), None
        self.transcript, self.status, self.sources = widgets.HTML(), widgets.HTML(), widgets.HTML()
        self.input = widgets.Textarea(
            placeholder="Ask about Halvorsen Ridge Station ... (Enter sends)",
            continuous_update=True,
            layout=widgets.Layout(width="100%", height="64px"),
        )
        self.send_button = widgets.Button(description="Send", button_style="primary", icon="paper-plane")
        self.stop_button = widgets.Button(description="Stop", icon="stop", disabled=True)
        self.new_button = widgets.Button(description="New chat", icon="plus")
        self.send_button.on_click(self._on_send)
        self.stop_button.on_click(lambda _button: self.stop())
        self.new_button.on_click(lambda _button: self.new_chat())
        self.input.observe(self._on_type, names="value")
        self.widget = widgets.VBox(
            [
                self.transcript,
                self.input,
                widgets.HBox([self.send_button, self.stop_button, self.new_button]),
                self.status,
                self.sources,
            ],
            layout=widgets.Layout(max_width="860px"),
        )
        self.widget.add_class("chat-app")
        self.render()

    @property
    def busy(self) -> bool:
        """True while a Send runs in the background."""
        return self._worker is not None and self._worker.is_alive()

    def render(self, pending: tuple[str, str, str] | None = None) -> None:
        """Show the current chat's stored messages (and a turn in progress) in the transcript."""
        self.transcript.value = transcript_html(self.history.messages(self.chat_id), pending)

    def retrieve(self, query: str) -> list[Hit]:
        """The k best chunks for the query (hybrid if self.hybrid), within self.query_filter if one is set."""
        return retrieve(
            self.qdrant,
            self.client,
            self.collection,
            self.cfg.embed_model,
            query,
            k=self.k,
            query_filter=self.query_filter,
            hybrid=self.hybrid,
        )

    def ask(self, question: str) -> str:
        """One turn: history -> rewrite -> retrieve -> prompt -> stream -> store -> metrics. Returns the answer."""
        if self.busy and threading.current_thread() is not self._worker:
            raise RuntimeError("an answer is still being written: call app.wait() or app.stop() first")
        self._set_running(True)
        try:
            return self.run_turn(question)
        finally:
            self._set_running(False)

    def run_turn(self, question: str) -> str:
        """One turn in the calling thread, updating the widgets as it goes (ask() adds the button states)."""
        request_id, model = uuid.uuid4().hex[:8], self.cfg.chat_model
        past = last_n(self.history.messages(self.chat_id), self.max_messages)
        self.sources.value = ""  # the previous turn's sources and status go at once
        self.status.value = ""
        verdict = self.guard.check_input(question) if self.guard else None
        if verdict is not None and verdict.blocked:  # refused before any model call; kept out of the conversation
            self.history.add_failed(self.chat_id, question, f"blocked by the guardrails: {'; '.join(verdict.reasons)}")
            self.last_hits, self.last_query = [], question
            self.render()
            self.status.value = (
                f"<span style='color:#9a6700'>{html.escape(REFUSAL)} ({html.escape('; '.join(verdict.reasons))})</span>"
            )
            return REFUSAL
        query = question
        if past:  # a follow-up: make it standalone before it is embedded (for retrieval only)
            self.render((question, "", "rewriting the follow-up for the search ..."))
            with self.metrics.timed("rewrite", model, request_id) as rec:
                query = rewrite_query(self.client, model, past, question, on_response=lambda r: count_usage(rec, r))
        self.render((question, "", "searching the handbook ..."))
        with self.metrics.timed("retrieve", self.cfg.embed_model, request_id):
            hits = self.retrieve(query)
        if self.guard:  # chunks that carry instructions are left out of the prompt
            hits, _dropped = self.guard.filter_hits(hits)
        self.last_hits, self.last_query = hits, query
        self.sources.value = sources_html(hits)
        system, user = build_messages(question, hits)  # the prompt carries the user's own words (lesson 07)
        messages = self.guard.messages(question, hits, past) if self.guard else [system, *past, user]
        self.render((question, "", "reading the sources ..."))
        pieces: list[str] = []
        shown = [0.0]

        def show(piece: str) -> None:  # called for every streamed piece: the answer grows in its bubble
            pieces.append(piece)
            if time.perf_counter() - shown[0] > 0.05:  # at most ~20 redraws a second
                shown[0] = time.perf_counter()
                self.render((question, "".join(pieces), "writing ... (Stop ends it here)"))

        stream = self.client.chat(model=model, messages=messages, stream=True, options=self.options)
        answer, record = self.metrics.stream(
            stream, "generate", request_id, on_text=show, should_stop=self._stop.is_set
        )
        answer = clean_answer(answer)
        if self.guard:  # links, canary-like codes and bad citations stripped; an echo of the system prompt refused
            answer = self.guard.check_output(answer, hits).text
        if record.stopped:
            answer = (answer + STOPPED).strip()
        self.history.add(self.chat_id, "user", question)
        self.history.add(self.chat_id, "assistant", answer)
        self.render()
        self.sources.value = sources_html(hits, answer)
        self.status.value = self._summary(request_id, query, question, record)
        return answer

    def _summary(self, request_id: str, query: str, question: str, record: object) -> str:
        """The status line after a turn: what was searched, the turn's tokens over every stage, the speed."""
        rows = [r for r in self.metrics.records if r.request_id == request_id]
        tokens = sum(r.prompt_tokens + r.completion_tokens for r in rows)
        shown = query if len(query) <= 120 else query[:120].rsplit(" ", 1)[0] + " …"
        searched = "your question" if query == question else f"“{html.escape(shown)}” (the rewritten follow-up)"
        speed = f", {record.tokens_per_s:.0f} tokens/s" if record.tokens_per_s else ""
        stopped = " · stopped by you" if record.stopped else ""
        return (
            f"<div style='color:#59636e;font-size:12px;line-height:1.4'>searched for {searched} · {tokens} tokens in this turn "
            f"({' + '.join(f'{r.stage} {r.prompt_tokens + r.completion_tokens}' for r in rows)}) · first token "
            f"after {record.ttft_s or 0:.1f} s{speed} · {sum(r.duration_s for r in rows):.1f} s in all"
            f"{stopped}</div>"
        )

    def stop(self) -> None:
        """Stop the answer being written: the stream is closed at the next token, which stops the generation."""
        if self.busy:
            self._stop.set()
            self.status.value = "<small style='color:#59636e'>stopping ...</small>"

    def wait(self, timeout: float | None = None) -> None:
        """Block until the answer started by Send (or Enter) is complete; for code and tests."""
        if self._worker is not None:
            self._worker.join(timeout)

    def new_chat(self) -> str:
        """Start a fresh conversation (the old one stays in the history store); returns the new chat id."""
        self.stop()
        self.wait()
        self.chat_id = new_chat_id()
        self.last_hits, self.last_query = [], ""
        self.status.value = self.sources.value = ""
        self.render()
        return self.chat_id

    def send(self, question: str) -> bool:
        """Start a turn in a background thread (the kernel stays free); False if empty or one is still running."""
        question = question.strip()
        if not question:
            return False
        if self.busy:
            self.status.value = "<small style='color:#9a6700'>Still answering: wait, or press Stop.</small>"
            return False
        self.input.value, self.last_error = "", None
        self._stop.clear()
        self._set_running(True)
        self.sources.value = ""
        self.status.value = ""
        self.render((question, "", "thinking ..."))  # on screen before the worker starts
        self._worker = threading.Thread(target=self._run, args=(question,), daemon=True, name="chat-app-turn")
        self._worker.start()
        return True

    def _run(self, question: str) -> None:
        """The worker: one turn; every failure is shown in the status line and kept in last_error."""
        try:
            self.ask(question)
        except Exception as exc:  # a UI thread shows every failure instead of losing it
            self.last_error = exc
            self.render()
            self.status.value = (
                f"<span style='color:#b00020'>Your question “{html.escape(question)}” got no answer. "
                f"{html.escape(describe_error(exc, self.cfg.ollama_host))}</span>"
            )
        finally:
            self._set_running(False)

    def _set_running(self, running: bool) -> None:
        """Send is off and Stop is on while an answer is produced."""
        self.send_button.disabled, self.stop_button.disabled = running, not running

    def _on_send(self, _button: widgets.Button) -> None:
        """The Send button."""
        self.send(self.input.value)

    def _on_type(self, change: dict) -> None:
        """Enter sends: a newline typed at the end of the text (Python sees no key events, only the value)."""
        new, old = change["new"], change["old"]
        if new.endswith("\n") and new[:-1] == old:
            if not self.send(new) and self.busy:
                self.input.value = old  # keep the question, drop the newline, until the answer is done
