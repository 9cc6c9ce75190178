"""The served app over your own folder (issue #23): `python -m app` with CORPUS_DIR, asked over real HTTP.

Slow: the real models of the session's stand-in (tests/conftest.py) answer; the app runs in a child process, as
`make serve CORPUS=...` starts it. The folder holds Markdown, text, a PDF whose answer is on page 3, an HTML page and
a broken PDF; the first source shown beside the answer must name the PDF's file and page (and a cited source, if the
model cites one, must be that page), the log the broken file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.support.pdfs import write_broken_pdf, write_pdf
from tests.support.served import app_process, ask


@dataclass(frozen=True)
class Case:
    """One language/embedder: the PDF's pages, a question answered on one page, the source title expected."""

    pages: list[str]
    question: str
    source: str  # the title of the source that answers: "<file> p. <n>"
    env: dict[str, str] = field(default_factory=dict)  # e.g. {"EMBED_MODEL": "multilingual-e5-small"}


ENGLISH = Case(
    pages=[
        "Nordvik Water Works\nAnnual report 2025\nIntroduction and overview of the year.",
        "Staff and shifts\nThe works employ twelve operators on three shifts.",
        "Boiler safety\nThe emergency shut-off valve for the boiler is in room B-17, behind the blue door.\n"
        "Close it clockwise and call the duty engineer on extension 4411.",
    ],
    question="Where is the emergency shut-off valve for the boiler?",
    source="report.pdf p. 3",
)
CASES = [pytest.param(ENGLISH, id="english-all-minilm")]  # add a language: pytest.param(Case(...), id=...)

HTML = """<html><head><title>Canteen</title><script>track()</script></head><body>
<h1>Canteen</h1><p>The canteen serves lunch from 11:30 to 13:30 on weekdays.</p></body></html>"""


def documents_folder(root: Path, case: Case) -> Path:
    """md, txt, the case's PDF, an HTML page and a broken PDF."""
    root.mkdir()
    (root / "parking.md").write_text("# Parking\n\nVisitors park in the north lot.\n", encoding="utf-8")
    (root / "wifi.txt").write_text("The guest Wi-Fi network is NordvikGuest.\n", encoding="utf-8")
    (root / "canteen.html").write_text(HTML, encoding="utf-8")
    write_pdf(root / "report.pdf", case.pages)
    write_broken_pdf(root / "broken.pdf")
    return root


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_the_app_answers_from_a_folder_and_its_source_names_the_pdf_page(stand_in, tmp_path, case):
    url, _server = stand_in
    env = {k: v for k, v in os.environ.items() if k not in {"WORKSHOP_OFFLINE", "QDRANT_URL", "HISTORY_URL"}}
    env |= {
        "OLLAMA_HOST": url,  # the session's stand-in: setup() in the child finds it instead of starting one
        "CORPUS_DIR": str(documents_folder(tmp_path / "my documents", case)),
        "WORKSHOP_STATE_DIR": str(tmp_path / "state"),
        **case.env,
    }
    log = tmp_path / "app.log"
    with app_process(env, log=log) as base, httpx.Client(base_url=base, timeout=600) as http:
        health = http.get("/healthz").json()
        assert health["parts"]["documents"] == "ok", health
        events = ask(http, "own-docs", case.question)
    names = [name for name, _ in events]
    assert names[-1] == "done", events[-1]
    sources = dict(events)["sources"]["sources"]
    assert sources[0]["title"] == case.source, [s["title"] for s in sources]  # shown beside the answer, ranked first
    cited = [s["title"] for s in sources if s["cited"]]  # the 135M model often answers without a [n]: not required
    assert not cited or case.source in cited, (cited, dict(events)["sources"]["answer"])
    text = log.read_text(encoding="utf-8")
    assert "skipped broken.pdf" in text and "damaged PDF" in text
    read = 3 + sum(bool(page.strip()) for page in case.pages)  # md, txt, html and a Document per PDF page
    assert f"{read} documents (" in text and f"{read} added" in text, "the start-up line says what sync_index did"


ONEGIN = Path(__file__).resolve().parents[1] / "data" / "books" / "onegin" / "ru"


@pytest.mark.slow
def test_a_russian_question_is_answered_from_a_russian_folder_with_the_multilingual_embedder(stand_in, tmp_path):
    url, _server = stand_in
    folder = tmp_path / "онегин"
    folder.mkdir()
    for name, lines in (("01.md", 60), ("02.md", 60)):  # the openings of chapters 1 and 2: the uncle is in the first
        text = (ONEGIN / name).read_text(encoding="utf-8").splitlines()[:lines]
        (folder / name).write_text("\n".join(text) + "\n", encoding="utf-8")
    (folder / "parking.md").write_text("# Parking\n\nVisitors park in the north lot.\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in {"WORKSHOP_OFFLINE", "QDRANT_URL", "HISTORY_URL"}}
    env |= {
        "OLLAMA_HOST": url,
        "CORPUS_DIR": str(folder),
        "WORKSHOP_STATE_DIR": str(tmp_path / "state"),
        "EMBED_MODEL": "multilingual-e5-small",
    }
    with app_process(env, log=tmp_path / "app.log") as base, httpx.Client(base_url=base, timeout=600) as http:
        assert http.get("/healthz").json()["parts"]["documents"] == "ok"
        events = ask(http, "onegin-ru", "Каких правил был мой дядя?")
    assert [name for name, _ in events][-1] == "done", events[-1]
    sources = dict(events)["sources"]["sources"]
    assert sources[0]["title"] == "Глава первая", [s["title"] for s in sources]  # «Мой дядя самых честных правил»
    assert "честных правил" in sources[0]["text"], sources[0]["text"]
