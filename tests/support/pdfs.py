"""Small real PDFs for the loader tests, written with pypdf (Helvetica text, one line per text line)."""

from __future__ import annotations

from pathlib import Path

from pypdf import PdfWriter
from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

PAGE_W, PAGE_H = 612, 792


def _escape(line: str) -> str:
    """A line as a PDF literal string's content."""
    return line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def write_pdf(path: Path, pages: list[str], *, password: str | None = None) -> Path:
    """A PDF with one page per text ("" gives a page without text, like a scan); password encrypts it."""
    writer = PdfWriter()
    font = DictionaryObject(
        {
            NameObject("/Type"): NameObject("/Font"),
            NameObject("/Subtype"): NameObject("/Type1"),
            NameObject("/BaseFont"): NameObject("/Helvetica"),
            NameObject("/Encoding"): NameObject("/WinAnsiEncoding"),
        }
    )
    for text in pages:
        page = writer.add_blank_page(width=PAGE_W, height=PAGE_H)
        lines = "".join(f"({_escape(line)}) Tj T* " for line in text.splitlines())
        stream = DecodedStreamObject()
        stream.set_data(f"BT /F1 11 Tf 14 TL 72 720 Td {lines}ET".encode("latin-1") if text else b"")
        page[NameObject("/Contents")] = writer._add_object(stream)
        page[NameObject("/Resources")] = DictionaryObject(
            {NameObject("/Font"): DictionaryObject({NameObject("/F1"): writer._add_object(font)})}
        )
    if password is not None:
        writer.encrypt(user_password=password, owner_password=password, algorithm="RC4-128")
    with open(path, "wb") as f:
        writer.write(f)
    return path


def write_broken_pdf(path: Path) -> Path:
    """A file named .pdf whose body was cut off: a PDF header and half an object, no cross-reference table."""
    path.write_bytes(b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R\n")
    return path
