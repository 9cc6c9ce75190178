"""A chat app in the notebook: ipywidgets over history -> rewrite -> retrieve -> prompt -> stream -> store -> metrics.

Taught in 10_chat-app.ipynb (guard=, lesson 15's guardrails: 15_guardrails.ipynb).

    app = ChatApp(client, qdrant, "handbook", cfg=cfg, history=HistoryStore(path), metrics=MetricsLog())
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

from helpers.guardrails import Guard
from helpers.history import HistoryStore, last_n, new_chat_id
from helpers.metrics import CallRecord, MetricsLog
from helpers.rag import Hit
from helpers.turn import OPTIONS, Prepared, RagTurn, cited_sources, clean_answer, generation_options

__all__ = ["OPTIONS", "STOPPED", "ChatApp", "clean_answer", "plain_text", "sources_html", "transcript_html"]

if TYPE_CHECKING:
    from helpers.setup import Config

STAGE_TEXT = {
    "rewrite": "rewriting the follow-up for the search ...",
    "retrieve": "searching the handbook ...",
    "generate": "reading the sources ...",
}
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
    items = []
    for h, source in zip(hits, cited_sources(hits, answer or "")):
        n, cited = source["n"], source["cited"]
        mark = (
            (
                " <span style='background:#1a7f37;color:white;border-radius:8px;padding:0 6px;font-size:11px'>"
                "cited</span>"
            )
            if cited
            else ""
        )
        items.append(
            f"<div class='chat-source' style='margin:4px 0;padding:4px 8px;border-left:3px solid "
            f"{'#1a7f37' if cited else '#d0d7de'}'><b>[{n}] {html.escape(h.title)}</b>{mark} "
            f"<span style='color:#59636e;font-size:12px'>{html.escape(h.chunk_id)}, score {h.score:.2f}"
            f"</span><br><span style='font-size:13px'>{html.escape(plain_text(h.text))}</span></div>"
        )
    when = "cited ones marked" if answer is not None else "the answer is being written"
    return f"<div style='color:#1f2328;line-height:1.4'><b>Sources</b> <small>({len(hits)} retrieved, {when})</small>{''.join(items)}</div>"


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
        collection: str,
        *,
        cfg: Config,
        history: HistoryStore,
        metrics: MetricsLog | None = None,
        k: int = 4,
        max_messages: int = 6,
        options: dict | None = None,
        hybrid: bool = False,
        guard: Guard | None = None,
    ) -> None:
        self.client, self.qdrant, self.cfg, self.collection = client, qdrant, cfg, collection
        self.hybrid = hybrid  # True: dense + BM25 fused by RRF (lesson 11) instead of dense alone
        self.guard = guard  # lesson 15's guardrails; None (the default): lesson 10's pipeline as it was
        self.history, self.k, self.max_messages = history, k, max_messages
        self.metrics = metrics if metrics is not None else MetricsLog()
        self.options = generation_options(options)
        self.typed = 0  # questions typed into the widget: the first one starts a new chat if code left one behind
        self.chat_id = new_chat_id()
        self.last_hits: list[Hit] = []
        self.last_query = ""
        self.last_error: Exception | None = None
        self.query_filter: models.Filter | None = None  # e.g. only one category of documents
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
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

    def turn(self) -> RagTurn:
        """The one RAG turn (helpers/turn.py) with this app's settings; built per question, so changes apply."""
        return RagTurn(
            self.client,
            self.qdrant,
            self.collection,
            chat_model=self.cfg.chat_model,
            embed_model=self.cfg.embed_model,
            k=self.k,
            hybrid=self.hybrid,
            query_filter=self.query_filter,
            guard=self.guard,
            options=self.options,
            metrics=self.metrics,
        )

    def retrieve(self, query: str) -> list[Hit]:
        """The k best chunks for the query (hybrid if self.hybrid), within self.query_filter if one is set."""
        return self.turn().retrieve(query)

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
        started, request_id = time.perf_counter(), uuid.uuid4().hex[:8]
        past = last_n(self.history.messages(self.chat_id), n=self.max_messages)
        self.sources.value = ""  # the previous turn's sources and status go at once
        self.status.value = ""
        verdict = self.guard.check_input(question) if self.guard else None
        if verdict is not None and verdict.blocked:  # refused before any model call; kept out of the conversation
            refusal = self.guard.refusal if self.guard else ""  # in the guard's language
            self.history.add_failed(self.chat_id, question, f"blocked by the guardrails: {'; '.join(verdict.reasons)}")
            self.last_hits, self.last_query = [], question
            self.render()
            self.status.value = (
                f"<span style='color:#9a6700'>{html.escape(refusal)} ({html.escape('; '.join(verdict.reasons))})</span>"
            )
            return refusal
        turn = self.turn()
        turn.on_stage = lambda stage: self.render((question, "", STAGE_TEXT[stage]))
        prepared = turn.prepare(question, past=past, request_id=request_id, degrade=False)
        self.last_hits, self.last_query = prepared.hits, prepared.query
        self.sources.value = sources_html(prepared.hits)
        pieces: list[str] = []
        shown = [0.0]

        def show(piece: str) -> None:  # called for every streamed piece: the answer grows in its bubble
            pieces.append(piece)
            if time.perf_counter() - shown[0] > 0.05:  # at most ~20 redraws a second
                shown[0] = time.perf_counter()
                self.render((question, "".join(pieces), "writing ... (Stop ends it here)"))

        stream = self.client.chat(
            model=self.cfg.chat_model, messages=prepared.messages, stream=True, options=prepared.options
        )
        answer, record = self.metrics.stream(
            stream, request_id=request_id, on_text=show, should_stop=self._stop.is_set, started=started
        )
        finished = turn.finish(answer, prepared.hits)
        text = (finished.text + STOPPED).strip() if record.stopped else finished.text
        self.history.add_turn(self.chat_id, question, text)
        self.render()
        self.sources.value = sources_html(prepared.hits, text)
        self.status.value = self._summary(request_id, prepared, record)
        return text

    def _summary(self, request_id: str, prepared: Prepared, record: CallRecord) -> str:
        """The status line after a turn: what was searched, the turn's tokens over every stage, the speed.

        The first token's time counts from the question (rewrite and search included): what the user waited.
        """
        query, question = prepared.query, prepared.question
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

    def send_typed(self, question: str) -> bool:
        """send() for a question typed into the widget; the first one starts a new chat if code left one behind."""
        if self.typed == 0 and question.strip() and not self.busy and self.history.messages(self.chat_id):
            self.new_chat()  # Run All's turns stay in the history store; the learner's first question starts afresh
        sent = self.send(question)
        self.typed += sent
        return sent

    def _on_send(self, _button: widgets.Button) -> None:
        """The Send button."""
        self.send_typed(self.input.value)

    def _on_type(self, change: dict) -> None:
        """Enter sends: a newline typed at the end of the text (Python sees no key events, only the value)."""
        new, old = change["new"], change["old"]
        if new.endswith("\n") and new[:-1] == old:
            if not self.send_typed(new) and self.busy:
                self.input.value = old  # keep the question, drop the newline, until the answer is done
