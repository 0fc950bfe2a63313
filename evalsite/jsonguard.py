"""JSON from people we do not trust: bounded nesting, and only text a database can store.

``json.loads`` recurses once per level, so a body of 100,000 ``[`` ends in ``RecursionError``
(a server error); a ``\\ud800`` escape decodes to a lone surrogate that no UTF-8 column
accepts, and ``\\u0000`` to a NUL that no PostgreSQL text or jsonb value holds. ``loads`` turns
each into a ``ValueError`` the caller reports like any other bad JSON.
Plain Python: the importers, the API's parser and the vote file reader all use it.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_DEPTH = 64
TOO_DEEP = "JSON nested more than {limit} levels deep"
LONE_SURROGATE = "a string holds a lone surrogate escape (such as \\ud800), which is not text"
NUL_CHARACTER = "a string holds a NUL character (\\u0000), which cannot be stored"

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


def _strings(value: Any):
    """Every string of a decoded value, keys included (a loop, not recursion: the value may
    come from a caller that did not bound its depth)."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list | tuple):
            pending.extend(item)


def check_text(value: Any) -> None:
    """Refuse lone surrogates and NUL characters anywhere in a decoded value (keys included)."""
    for text in _strings(value):
        if "\x00" in text:
            raise UnsafeJSON(NUL_CHARACTER)
        try:
            text.encode("utf-8")
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
