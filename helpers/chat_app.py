"""A chat app in the notebook: ipywidgets over history -> rewrite -> retrieve -> prompt -> stream -> store -> metrics.

Taught in 10_chat-app.ipynb.

    app = ChatApp(client, qdrant, cfg, "handbook", HistoryStore(path), MetricsLog())
    display(app.widget)          # type a question, press Send
    app.ask("Where is the muster point?")   # or drive it from code
"""

from __future__ import annotations

import html
import uuid
from typing import TYPE_CHECKING

import ipywidgets as widgets
import ollama
from qdrant_client import QdrantClient, models

from helpers.history import HistoryStore, last_n, new_chat_id, rewrite_query
from helpers.metrics import MetricsLog
from helpers.rag import Hit, build_messages, cited_numbers, retrieve

if TYPE_CHECKING:
    from helpers.setup import Config

OPTIONS = {"temperature": 0, "seed": 42, "num_predict": 120, "num_ctx": 4096}


def bubble(role: str, text: str) -> str:
    """One message as HTML: who said it, then the text (escaped, line breaks kept)."""
    who = "You" if role == "user" else "Assistant"
    color = "#1f5fa8" if role == "user" else "#2b7a3d"
    body = html.escape(text).replace("\n", "<br>")
    return f"<div style='margin:4px 0'><b style='color:{color}'>{who}:</b> {body}</div>"


def sources_html(hits: list[Hit], answer: str) -> str:
    """The retrieved chunks as a numbered list; the ones the answer cites are marked."""
    cited = set(cited_numbers(answer))
    items = []
    for n, h in enumerate(hits, 1):
        mark = " <b>(cited)</b>" if n in cited else ""
        snippet = html.escape(h.text[:160].replace("\n", " "))
        items.append(f"<li>[{n}] <code>{html.escape(h.chunk_id)}</code> {html.escape(h.title)}, "
                     f"score {h.score:.3f}{mark}<br><small>{snippet}...</small></li>")
    return f"<ol style='list-style:none;padding-left:0'>{''.join(items)}</ol>" if items else "<i>no sources yet</i>"


class ChatApp:
    """A chat UI (question box, Send, New chat, streamed answer, sources panel) over the workshop's RAG pipeline."""

    def __init__(self, client: ollama.Client, qdrant: QdrantClient, cfg: Config, collection: str,
                 history: HistoryStore, metrics: MetricsLog, k: int = 4, max_messages: int = 6,
                 options: dict | None = None) -> None:
        self.client, self.qdrant, self.cfg, self.collection = client, qdrant, cfg, collection
        self.history, self.metrics, self.k, self.max_messages = history, metrics, k, max_messages
        self.options = {**OPTIONS, **(options or {})}
        self.chat_id = new_chat_id()
        self.last_hits: list[Hit] = []
        self.last_query = ""
        self.last_error: Exception | None = None
        self.query_filter: models.Filter | None = None  # e.g. only one category of documents
        self.input = widgets.Textarea(placeholder="Ask about Halvorsen Ridge Station ...",
                                      layout=widgets.Layout(width="100%", height="60px"))
        self.send_button = widgets.Button(description="Send", button_style="primary")
        self.new_button = widgets.Button(description="New chat")
        self.transcript, self.answer_box = widgets.HTML(), widgets.HTML()
        self.status, self.sources = widgets.HTML(), widgets.HTML()
        self.send_button.on_click(self._on_send)
        self.new_button.on_click(lambda _button: self.new_chat())
        self.widget = widgets.VBox([self.transcript, self.answer_box, self.input,
                                    widgets.HBox([self.send_button, self.new_button]), self.status,
                                    widgets.HTML("<b>Sources</b>"), self.sources])
        self.render()

    def render(self) -> None:
        """Show the current chat's stored messages in the transcript."""
        messages = self.history.messages(self.chat_id)
        self.transcript.value = "".join(bubble(m["role"], m["content"]) for m in messages if m["role"] != "system")

    def retrieve(self, query: str) -> list[Hit]:
        """The k chunks most similar to the query, within self.query_filter if one is set."""
        return retrieve(self.qdrant, self.client, self.collection, self.cfg.embed_model, query, k=self.k,
                        query_filter=self.query_filter)

    def ask(self, question: str) -> str:
        """One turn: history -> rewrite -> retrieve -> prompt -> stream -> store -> metrics. Returns the answer."""
        request_id, model = uuid.uuid4().hex[:8], self.cfg.chat_model
        past = last_n(self.history.messages(self.chat_id), self.max_messages)
        self.answer_box.value = bubble("user", question)
        query = question
        if past:  # a follow-up: make it standalone before it is embedded
            with self.metrics.timed("rewrite", model, request_id):
                query = rewrite_query(self.client, model, past, question)
        with self.metrics.timed("retrieve", self.cfg.embed_model, request_id):
            hits = self.retrieve(query)
        system, user = build_messages(query, hits)
        pieces: list[str] = []

        def show(piece: str) -> None:  # called for every streamed piece: the answer grows on screen
            pieces.append(piece)
            self.answer_box.value = bubble("user", question) + bubble("assistant", "".join(pieces) + " ...")

        stream = self.client.chat(model=model, messages=[system, *past, user], stream=True, options=self.options)
        answer, record = self.metrics.stream(stream, "generate", request_id, on_text=show)
        answer = answer.strip()
        self.history.add(self.chat_id, "user", question)
        self.history.add(self.chat_id, "assistant", answer)
        self.last_hits, self.last_query = hits, query
        self.sources.value = sources_html(hits, answer)
        self.answer_box.value = ""
        self.render()
        speed = f", {record.tokens_per_s:.0f} tokens/s" if record.tokens_per_s else ""
        self.status.value = (f"<small>searched for: {html.escape(query)} | {record.prompt_tokens} prompt + "
                             f"{record.completion_tokens} answer tokens, first token after {record.ttft_s or 0:.1f} s"
                             f"{speed}</small>")
        return answer

    def new_chat(self) -> str:
        """Start a fresh conversation (the old one stays in the history store); returns the new chat id."""
        self.chat_id = new_chat_id()
        self.last_hits, self.last_query = [], ""
        self.answer_box.value = self.status.value = self.sources.value = ""
        self.render()
        return self.chat_id

    def _on_send(self, _button: widgets.Button) -> None:
        """The Send button: ask the question in the box; errors go to the status line, not the kernel log."""
        question = self.input.value.strip()
        if not question:
            return
        self.input.value, self.send_button.disabled, self.last_error = "", True, None
        try:
            self.ask(question)
        except Exception as exc:  # a UI callback shows every failure instead of losing it
            self.last_error = exc
            self.status.value = f"<span style='color:#b00020'>{type(exc).__name__}: {html.escape(str(exc))}</span>"
        finally:
            self.send_button.disabled = False
