"""PDF and HTML files as Documents, for load_documents (helpers/corpus.py): pypdf and beautifulsoup4, no own parser.

A PDF gives one Document per page with text, titled "report.pdf p. 3", so the page travels with every chunk into the
prompt's numbered sources and the cited sources. An HTML page gives one Document whose headings are Markdown "#" lines
(chunk_documents splits on them as it does for Markdown); scripts, styles and the page's <head> are dropped.
"""

from __future__ import annotations

import re
from pathlib import Path

from bs4 import BeautifulSoup, NavigableString
from bs4.element import PreformattedString
from pypdf import PdfReader

from helpers.corpus import Document, _title, decode_text

DROPPED_TAGS = ["script", "style", "noscript", "template", "head", "svg", "iframe"]
BLOCK_TAGS = [
    "p", "div", "li", "ul", "ol", "br", "tr", "table", "section", "article", "header", "footer", "main", "nav",
    "aside", "blockquote", "pre", "dt", "dd", "dl", "figure", "figcaption", "hr", "form", "address",
]  # fmt: skip


def _metadata(path: Path, *, root: Path, **extra: object) -> dict:
    """The metadata every loader gives: no category, date or tags, the file's path (and e.g. its page)."""
    return {
        "category": "uncategorised",
        "updated": None,
        "tags": [],
        "path": path.relative_to(root).as_posix(),
        **extra,
    }


def pdf_pages(path: Path) -> list[str]:
    """The text of each page of a PDF; ValueError for a damaged or encrypted file."""
    try:
        reader = PdfReader(path)
        if reader.is_encrypted and not reader.decrypt(""):
            raise ValueError("encrypted PDF that needs a password: save a copy without one")
        return [page.extract_text() or "" for page in reader.pages]
    except ValueError:
        raise
    except Exception as exc:  # noqa: BLE001 - pypdf raises many kinds for a broken file; each is reported
        raise ValueError(f"damaged PDF, pypdf cannot read it ({type(exc).__name__}: {exc})") from exc


def read_pdf(path: Path, *, root: Path) -> list[Document]:
    """One Document per PDF page with text, id "<path>/p<n>", title "<file> p. <n>"; ValueError if no page has text."""
    if not path.stat().st_size:
        raise ValueError("empty file")
    pages = pdf_pages(path)
    stem = path.relative_to(root).with_suffix("").as_posix()
    docs = [
        Document(f"{stem}/p{n}", f"{path.name} p. {n}", text.strip(), _metadata(path, root=root, page=n))
        for n, text in enumerate(pages, 1)
        if text.strip()
    ]
    if not docs:
        raise ValueError(f"no text on any of its {len(pages)} pages (a scan? run OCR on it first)")
    return docs


def html_text(raw: str) -> tuple[str | None, str]:
    """(the <title>, the visible text with headings as Markdown '#' lines and one paragraph per block)."""
    soup = BeautifulSoup(raw, "html.parser")
    title = soup.title.get_text(" ", strip=True) if soup.title else None
    for tag in soup.find_all(DROPPED_TAGS):
        tag.decompose()
    for string in soup.find_all(string=True):
        if not isinstance(string, PreformattedString) and string.find_parent("pre") is None:  # text, not comments
            string.replace_with(NavigableString(re.sub(r"\s+", " ", str(string))))
    for level in range(1, 7):
        for heading in soup.find_all(f"h{level}"):
            heading.replace_with(NavigableString(f"\n\n{'#' * level} {heading.get_text(' ', strip=True)}\n\n"))
    for block in soup.find_all(BLOCK_TAGS):
        before = {"p": "\n\n", "li": "\n- "}.get(block.name, "\n")
        block.insert_before(NavigableString(before))
        block.insert_after(NavigableString("\n\n" if block.name == "p" else "\n"))
    lines = [line.strip() for line in soup.get_text().splitlines()]
    return title or None, re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def read_html(path: Path, *, root: Path) -> Document:
    """An HTML file as one Document: its <title> (else first heading, else file name) and its text."""
    title, text = html_text(decode_text(path.read_bytes()))
    if not text:
        raise ValueError("no visible text in the page")
    meta = {"title": title} if title else {}
    doc_id = path.relative_to(root).with_suffix("").as_posix()
    return Document(doc_id, _title(meta, text, path), text, _metadata(path, root=root))
