"""The one CSV writer and the one Markdown writer of every export (plain Python, no Django, so
the plain engines of every app, ranking reports and the leaderboard table among them, use them).

CSV: a text cell a spreadsheet would run as a formula (OWASP "CSV injection": it starts with
``=``, ``+``, ``-``, ``@``, a tab or a carriage return) gets a leading apostrophe, which
spreadsheets show as text; numbers stay numbers (a strength may be negative). Header cells go
through the same rule: headers name models and studies too.

Markdown: every cell is literal text. Pipes are escaped and line breaks become spaces, so a cell
never ends its row or its table; ``<``, ``>`` and ``&`` become entities, so no raw HTML, autolink
or character reference survives; emphasis and code marks are escaped; an inline link or image
needs ``](`` (references need a definition, which only a line starting with ``[`` makes, and
no line of these documents starts so), so ``](`` loses its meaning; the colon of a
``javascript:``, ``vbscript:`` or ``data:`` scheme is escaped. Rendered, a cell shows exactly
the text it was given.

File names: ``file_name`` makes a download's name from text people chose (a data set's name);
the view passes it to Django's ``content_disposition_header``, which quotes or encodes it.
"""

from __future__ import annotations

import csv
import io
import numbers
import re
import unicodedata
from collections.abc import Iterable, Iterator, Sequence

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
ALIGNMENTS = {"l": "---", "r": "---:", "c": ":---:"}
BAD_ALIGN = "alignment {align!r}: one of l, r, c per column ({n} columns)"
BAD_ROW = "row {index} has {got} cells; the header has {n}"


# --- CSV ---------------------------------------------------------------------------------------


def csv_cell(value):
    """One cell as the CSV writer gets it: blank for None, floats with four places, numbers as
    they are, text that a spreadsheet would run with an apostrophe in front."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, numbers.Number):  # numpy's and Decimal too: never a formula
        return value
    text = str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def csv_lines(header: Sequence, rows: Iterable[Sequence]) -> Iterator[str]:
    """The CSV document one line at a time (header first): for a streaming response."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    # The csv module quotes a cell holding a line break only if the break is part of the line
    # terminator: a row with a carriage return in a cell is written with every cell quoted, or
    # a reader would end the row there.
    quoting_all = csv.writer(buffer, lineterminator="\n", quoting=csv.QUOTE_ALL)
    for row in _with_header(header, rows):
        cells = [csv_cell(value) for value in row]
        carriage_return = any(isinstance(cell, str) and "\r" in cell for cell in cells)
        (quoting_all if carriage_return else writer).writerow(cells)
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()


def csv_text(header: Sequence, rows: Iterable[Sequence]) -> str:
    """The CSV document, every cell (header included) through ``csv_cell``."""
    return "".join(csv_lines(header, rows))


def _with_header(header: Sequence, rows: Iterable[Sequence]) -> Iterator[Sequence]:
    yield header
    yield from rows


# --- Markdown ----------------------------------------------------------------------------------

# Everything a Markdown renderer treats as a line break.
_LINE_BREAKS = re.compile(r"\r\n|[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]")
_ALWAYS = {"\\": "\\\\", "|": "\\|", "`": "\\`", "*": "\\*", "~": "\\~"}
_ALWAYS |= {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_SCHEME = re.compile(r"(?i)\b(javascript|vbscript|data)(\s*):")
# What would start a block (heading, list, quote) if the text began a line.
_BLOCK_START = re.compile(r"^(#|\+|-|=|\[|\d+(?=[.)](\s|$)))")


def markdown_cell(value) -> str:
    """Any value as literal Markdown inline text (see the module's note); None is blank."""
    if value is None:
        return ""
    text = _LINE_BREAKS.sub(" ", str(value))
    out = []
    for i, char in enumerate(text):
        if char in _ALWAYS:
            out.append(_ALWAYS[char])
        elif char == "_" and not _inside_word(text, i):
            out.append("\\_")  # intraword underscores never make emphasis: keep them plain
        elif char == "(" and i and text[i - 1] == "]":
            out.append("\\(")  # no inline link or image
        else:
            out.append(char)
    return _SCHEME.sub(r"\1\2\\:", "".join(out))


def _inside_word(text: str, i: int) -> bool:
    return 0 < i < len(text) - 1 and text[i - 1].isalnum() and text[i + 1].isalnum()


def markdown_text(value) -> str:
    """``markdown_cell`` for text that begins a line (a heading's or a list item's): it cannot
    start a block of its own either (a heading, list, quote or link definition)."""
    text = markdown_cell(value).lstrip()
    found = _BLOCK_START.match(text)
    if found is None:
        return text
    if found.group(1)[0].isdigit():  # "1." / "1)": escape the mark after the number
        end = found.end()
        return text[:end] + "\\" + text[end:]
    return "\\" + text


def markdown_table(header: Sequence, rows: Iterable[Sequence], *, align: str = "") -> str:
    """A GitHub-flavoured Markdown table (lines joined by newlines, no final newline), every
    cell through ``markdown_cell``. ``align``: one of l, r, c per column (default: all l).
    ValueError when a row's width differs from the header's."""
    n = len(header)
    align = align or "l" * n
    if len(align) != n or set(align) - set(ALIGNMENTS):
        raise ValueError(BAD_ALIGN.format(align=align, n=n))
    lines = [_markdown_row(header), "|" + "|".join(ALIGNMENTS[a] for a in align) + "|"]
    for index, row in enumerate(rows, start=1):
        if len(row) != n:
            raise ValueError(BAD_ROW.format(index=index, got=len(row), n=n))
        lines.append(_markdown_row(row))
    return "\n".join(lines)


def _markdown_row(cells: Sequence) -> str:
    return "| " + " | ".join(markdown_cell(cell) for cell in cells) + " |"


# --- file names --------------------------------------------------------------------------------

FALLBACK_NAME = "download"


def file_name(text: str) -> str:
    """``text`` as a download's file name: control and format characters (a line break would
    make the header invalid; a right-to-left override disguises the extension) and path
    separators become ``_``; an empty name becomes ``FALLBACK_NAME``."""
    name = "".join(
        "_" if char in "/\\" or unicodedata.category(char) in ("Cc", "Cf") else char
        for char in text.strip()
    )
    return name or FALLBACK_NAME
