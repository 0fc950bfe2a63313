"""Answers as annotators see them: Markdown rendered on the server, and a word-level diff.

``render_answer`` renders one text (an answer, or one turn of a conversation) with markdown-it
(CommonMark plus tables) and raw HTML switched off, so a ``<script>`` in an answer arrives as
text; links keep markdown-it's check (no ``javascript:``). Line breaks stay where the model put
them. The page inserts the result as HTML; nothing else an annotator sees is inserted so.
"""

from __future__ import annotations

import difflib
import html
import re

from markdown_it import MarkdownIt

_md = MarkdownIt("commonmark", {"html": False, "breaks": True, "linkify": False}).enable("table")

# Words: runs of Latin letters and digits, and every other character alone (Japanese has no
# spaces, so a kana or kanji is its own word); whitespace runs are kept as they are.
_TOKEN = re.compile(r"[A-Za-z0-9_]+|\s+|.", re.DOTALL)


def render_answer(text: str) -> str:
    """One text as safe HTML (block elements; an empty text gives an empty string)."""
    return _md.render(text or "")


def with_html(**texts: str) -> dict[str, str]:
    """The texts, and each rendered (``render_answer``) under its name + ``_html``."""
    return texts | {f"{name}_html": render_answer(text) for name, text in texts.items()}


def word_diff(left: str, right: str) -> tuple[str, str]:
    """The two texts as escaped HTML, words only in the left one in ``<del>``, words only in
    the right one in ``<ins>`` (plain text: the diff is about wording, not layout).

    Lines are matched first, then sentences within the lines that changed, then words within
    the sentences that changed, so two long answers that differ in a few words cost little (the
    pair is sent on every request of the loop); a changed block of more than
    ``MAX_WORD_CELLS`` word pairs is marked whole.
    """
    out_left: list[str] = []
    out_right: list[str] = []
    _diff(left or "", right or "", _LEVELS, out_left, out_right)
    return "".join(out_left), "".join(out_right)


MAX_WORD_CELLS = 1_000_000
# Lines (with their line break), then sentences (with their closing punctuation and space).
_LEVELS = (
    re.compile(r"[^\n]*\n|[^\n]+"),
    re.compile(r"[^。！？.!?]*[。！？.!?]+\s*|.+", re.DOTALL),
)


def _diff(left: str, right: str, levels, out_left: list[str], out_right: list[str]) -> None:
    splitter = levels[0] if levels else _TOKEN
    a, b = splitter.findall(left), splitter.findall(right)
    if not levels and len(a) * len(b) > MAX_WORD_CELLS:
        opcodes = [("replace", 0, len(a), 0, len(b))]
    else:
        opcodes = difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes()
    for op, i1, i2, j1, j2 in opcodes:
        old, new = "".join(a[i1:i2]), "".join(b[j1:j2])
        if op == "equal":
            out_left.append(html.escape(old))
            out_right.append(html.escape(new))
        elif levels and old and new:
            _diff(old, new, levels[1:], out_left, out_right)
        else:
            if old:
                out_left.append(f"<del>{html.escape(old)}</del>")
            if new:
                out_right.append(f"<ins>{html.escape(new)}</ins>")
