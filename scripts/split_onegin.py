"""Split Eugene Onegin (Russian original, Spalding's 1881 English translation) into one Markdown file per chapter.

How data/books/onegin/ru/*.md and en/*.md were made (see data/books/onegin/README.md for the sources):

    .venv/bin/python scripts/split_onegin.py RU_TXT EN_TXT data/books/onegin
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

RU_CHAPTERS = ["первая", "вторая", "третья", "четвёртая", "пятая", "шестая", "седьмая", "восьмая"]
EN_CANTOS = ["FIRST", "SECOND", "THIRD", "FOURTH", "FIFTH", "SIXTH", "SEVENTH", "EIGHTH"]


def tidy(lines: list[str]) -> str:
    """Lines without leading/trailing blanks or indentation, at most one empty line in a row, ending in a newline."""
    text = "\n".join(line.strip() for line in lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def split_ru(text: str) -> list[tuple[str, str]]:
    """(title, body) per chapter: from each 'Глава <n>' line to the next; the dedication before chapter 1 is left out."""
    lines = text.splitlines()
    starts = [lines.index(f"Глава {n}") for n in RU_CHAPTERS]
    ends = [*starts[1:], len(lines)]
    return [(lines[s], tidy(lines[s + 1 : e])) for s, e in zip(starts, ends)]


def split_en(text: str) -> list[tuple[str, str]]:
    """(title, body) per canto: from each 'CANTO THE <n>' heading to its 'End of Canto' line or the next canto."""
    lines = text.splitlines()
    heads = [i for i, line in enumerate(lines) if re.fullmatch(r" {6}CANTO THE [A-Z]+", line.rstrip())]
    if [lines[i].split()[-1] for i in heads] != EN_CANTOS:
        raise ValueError(f"expected 8 canto headings, found {[lines[i].strip() for i in heads]}")
    ends = [*heads[1:], len(lines)]
    cantos = []
    for start, stop in zip(heads, ends):
        body = lines[start + 1 : stop]
        last = max(i for i, line in enumerate(body) if re.match(r"\s*end of canto", line, re.IGNORECASE))
        title = lines[start].strip().title().replace(" The ", " the ")
        body = [line for line in body[: last + 1] if line.strip().lower() != title.lower()]
        cantos.append((title, tidy(body)))
    return cantos


def write(chapters: list[tuple[str, str]], folder: Path) -> None:
    """One file per chapter, 01.md to 08.md, each opening with a '# ' title line."""
    folder.mkdir(parents=True, exist_ok=True)
    for n, (title, body) in enumerate(chapters, start=1):
        (folder / f"{n:02d}.md").write_text(f"# {title}\n\n{body}", encoding="utf-8")


def main() -> None:
    """Read both texts, write ru/ and en/ under the output folder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ru", type=Path, help="onegin.txt (Russian, UTF-8)")
    parser.add_argument("en", type=Path, help="23997-0.txt (Spalding's translation, UTF-8)")
    parser.add_argument("out", type=Path, help="output folder, e.g. data/books/onegin")
    args = parser.parse_args()
    write(split_ru(args.ru.read_text(encoding="utf-8")), args.out / "ru")
    write(split_en(args.en.read_text(encoding="utf-8")), args.out / "en")


if __name__ == "__main__":
    main()
