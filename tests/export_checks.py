"""What an export must not carry, checked the way its readers meet it: a spreadsheet opening the
CSV, a Markdown renderer showing the table (markdown-it with raw HTML switched ON, the most
permissive reader: GitHub and most wikis allow less)."""

from __future__ import annotations

import csv
import io
import re
from html.parser import HTMLParser

from markdown_it import MarkdownIt

# OWASP "CSV injection": a cell starting so is run as a formula. Written out here, not imported,
# so the tests do not share a mistake with the code.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
NUMBER = re.compile(r"-?\d+(\.\d+)?")  # a spreadsheet reads it as a number, not a formula
HOSTILE_TAGS = {"img", "a", "script", "iframe", "svg", "em", "strong", "code", "del", "s"}

_renderer = MarkdownIt("commonmark", {"html": True, "linkify": False}).enable(
    ["table", "strikethrough"]
)


def csv_cells(text: str) -> list[str]:
    return [cell for row in csv.reader(io.StringIO(text, newline="")) for cell in row]


def formula_cells(text: str) -> list[str]:
    """The cells of a CSV document a spreadsheet would run (numbers are not formulas)."""
    return [c for c in csv_cells(text) if c.startswith(FORMULA_STARTS) and not NUMBER.fullmatch(c)]


def render(markdown: str) -> str:
    return _renderer.render(markdown)


class _Reader(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def read_html(html: str) -> _Reader:
    reader = _Reader()
    reader.feed(html)
    reader.close()
    return reader


def hostile_tags(html: str) -> list[tuple[str, dict]]:
    """Tags the Markdown's text must never become, and any attribute naming a script."""
    found = []
    for tag, attrs in read_html(html).tags:
        scripted = any(
            name.startswith("on") or "javascript:" in (value or "").lower()
            for name, value in attrs.items()
        )
        if tag in HOSTILE_TAGS or scripted:
            found.append((tag, attrs))
    return found


def table_lines(markdown: str) -> list[list[str]]:
    """Each block of table lines (lines starting with ``|``) of a Markdown document."""
    blocks, current = [], []
    for line in markdown.split("\n"):
        if line.startswith("|"):
            current.append(line)
        elif current:
            blocks.append(current)
            current = []
    return blocks + ([current] if current else [])


def delimiters(line: str) -> int:
    """How many pipes of a table line delimit cells (a pipe after an odd number of backslashes
    is escaped: part of a cell)."""
    return len(re.findall(r"(?<!\\)(?:\\\\)*\|", line))


def flat(text: str) -> str:
    """What a table cell shows of ``text``: line breaks become spaces, the ends are trimmed."""
    return re.sub(r"\r\n|[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]", " ", text).strip()
