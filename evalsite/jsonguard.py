"""JSON from people we do not trust: bounded nesting, and only text a database can store.

``json.loads`` recurses once per level, so a body of 100,000 ``[`` ends in ``RecursionError``
(a server error), and a ``\\ud800`` escape decodes to a lone surrogate that no UTF-8 column
accepts. ``loads`` turns both into a ``ValueError`` the caller reports like any other bad JSON.
Plain Python: the importers, the API's parser and the vote file reader all use it.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_DEPTH = 64
TOO_DEEP = "JSON nested more than {limit} levels deep"
LONE_SURROGATE = "a string holds a lone surrogate escape (such as \\ud800), which is not text"

# A JSON string (escapes included) or one bracket: brackets inside strings do not nest.
_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


class UnsafeJSON(ValueError):
    """Parseable JSON the app refuses; the message says why."""


def check_depth(text: str, *, limit: int = MAX_DEPTH) -> None:
    depth = 0
    for match in _TOKENS.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > limit:
                raise UnsafeJSON(TOO_DEEP.format(limit=limit))
        elif token in "]}":
            depth -= 1


def check_text(value: Any) -> None:
    """Refuse lone surrogates anywhere in a decoded value (keys included)."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise UnsafeJSON(LONE_SURROGATE) from None


def loads(text: str | bytes, *, limit: int = MAX_DEPTH, **options) -> Any:
    """``json.loads`` (``options`` go to it) that raises ``json.JSONDecodeError`` or
    ``UnsafeJSON``, never worse."""
    if isinstance(text, bytes | bytearray):
        text = text.decode("utf-8")
    check_depth(text, limit=limit)
    value = json.loads(text, **options)
    check_text(value)
    return value


BAD_JSON = "not valid JSON ({detail})"
NOT_AN_ARRAY = "expected a JSON array of {what} objects"


class RecordError(ValueError):
    """A record file that cannot be read: the problem and the 1-based line (or None)."""

    def __init__(self, problem: str, line: int | None):
        self.problem, self.line = problem, line
        super().__init__(problem if line is None else f"line {line}: {problem}")


def _problem(exc: ValueError) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return BAD_JSON.format(detail=exc.msg)
    return str(exc)


def jsonl_records(text: str) -> list[tuple[int, Any]]:
    """(line, value) for each non-blank line of a JSON Lines text."""
    records = []
    # split("\n"), not splitlines(): U+2028 and friends may sit unescaped inside JSON strings.
    for number, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        try:
            records.append((number, loads(raw)))
        except ValueError as exc:
            raise RecordError(_problem(exc), number) from None
    return records


def array_records(text: str, *, what: str) -> list[tuple[int, Any]]:
    """(index, value) for each element of a JSON array: its elements have no line of their own,
    so their 1-based index stands in for the line in messages."""
    try:
        records = loads(text)
    except json.JSONDecodeError as exc:
        raise RecordError(_problem(exc), exc.lineno) from None
    except ValueError as exc:
        raise RecordError(_problem(exc), None) from None
    if not isinstance(records, list):
        raise RecordError(NOT_AN_ARRAY.format(what=what), None)
    return list(enumerate(records, start=1))
