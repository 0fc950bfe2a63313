"""Parsing instruction data files (plain module, no Django).

Accepted shapes, one example per record:

- JSONL / JSON array / CSV with ``instruction``, optional ``input`` and ``output`` (Alpaca,
  dolly-ja, oasst1-89k-ja); other fields (``category``, ``index``...) are ignored;
- JSONL / JSON array with ``messages``: a list of ``{"role", "content"}``, one ``user`` message
  followed by one ``assistant`` message (multi-turn conversations are refused for now: the prompt
  formats have no earlier turns to put them in).

Everything is parsed and checked before anything is written; every problem raises
``ImportFormatError`` naming the file and the line (the record's 1-based index in a JSON array).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .importers import (
    NOT_AN_OBJECT,
    UNKNOWN_EXTENSION,
    ImportFormatError,
    decode,
    json_records,
)

NO_EXAMPLES = "holds no examples"
MISSING_FIELD = "no {field!r} field"
EMPTY_FIELD = "the {field} is empty"
NOT_TEXT = "field {field!r} must be a string, got {kind}"
MISSING_COLUMNS = "has no {columns} column (columns: {found})"
MESSAGES_NOT_LIST = "'messages' must be a list of {'role': ..., 'content': ...} objects"
BAD_ROLE = "message {n} has role {role!r}; expected 'user' or 'assistant'"
SYSTEM_MESSAGE = "system messages are not supported (the prompt formats have no system turn)"
MULTI_TURN = (
    "conversation with {n} messages; only one user message followed by one assistant "
    "message is supported for now"
)
TURN_ORDER = "expected a user message followed by an assistant message"


@dataclass(frozen=True)
class ParsedExample:
    line: int
    instruction: str
    output: str
    input: str = ""

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.instruction, self.input, self.output)


def parse_instruction_file(
    data: bytes, filename: str, *, limit: int | None = None
) -> list[ParsedExample]:
    """Examples from a JSONL, JSON-array or CSV file, in file order."""
    text = decode(data, filename, limit=limit)
    ext = Path(filename).suffix.lower()
    if ext in (".jsonl", ".ndjson", ".json"):
        records = json_records(text, filename, array=ext == ".json", what="example")
        examples = [example_from_record(r, filename, line) for line, r in records]
    elif ext == ".csv":
        examples = _parse_csv(text, filename)
    else:
        raise ImportFormatError(filename, UNKNOWN_EXTENSION.format(ext=ext))
    if not examples:
        raise ImportFormatError(filename, NO_EXAMPLES)
    return examples


def _parse_csv(text: str, filename: str) -> list[ParsedExample]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = [c.strip() for c in (reader.fieldnames or [])]
    missing = [c for c in ("instruction", "output") if c not in columns]
    if missing:
        problem = MISSING_COLUMNS.format(columns=" or ".join(map(repr, missing)), found=columns)
        raise ImportFormatError(filename, problem, line=1)
    reader.fieldnames = columns
    out = []
    try:
        for row in reader:
            # line_num is the physical line the row ended on; quoted newlines make it differ.
            out.append(_example(row, filename, reader.line_num))
    except csv.Error as exc:
        raise ImportFormatError(filename, f"bad CSV ({exc})", line=reader.line_num) from None
    return out


def example_from_record(record: object, filename: str, line: int) -> ParsedExample:
    if not isinstance(record, dict):
        kind = type(record).__name__
        raise ImportFormatError(filename, NOT_AN_OBJECT.format(kind=kind), line=line)
    if "messages" in record:
        return _from_messages(record["messages"], filename, line)
    return _example(record, filename, line)


def _text(record: dict, field: str, filename: str, line: int, *, required: bool) -> str:
    if field not in record or record[field] is None:
        if required:
            raise ImportFormatError(filename, MISSING_FIELD.format(field=field), line=line)
        return ""
    value = record[field]
    if not isinstance(value, str):
        kind = type(value).__name__
        raise ImportFormatError(filename, NOT_TEXT.format(field=field, kind=kind), line=line)
    value = value.strip()
    if required and not value:
        raise ImportFormatError(filename, EMPTY_FIELD.format(field=field), line=line)
    return value


def _example(record: dict, filename: str, line: int) -> ParsedExample:
    return ParsedExample(
        line=line,
        instruction=_text(record, "instruction", filename, line, required=True),
        input=_text(record, "input", filename, line, required=False),
        output=_text(record, "output", filename, line, required=True),
    )


def _from_messages(messages: object, filename: str, line: int) -> ParsedExample:
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise ImportFormatError(filename, MESSAGES_NOT_LIST, line=line)
    for n, message in enumerate(messages, start=1):
        role = message.get("role")
        if role == "system":
            raise ImportFormatError(filename, SYSTEM_MESSAGE, line=line)
        if role not in ("user", "assistant"):
            raise ImportFormatError(filename, BAD_ROLE.format(n=n, role=role), line=line)
    if len(messages) != 2:
        raise ImportFormatError(filename, MULTI_TURN.format(n=len(messages)), line=line)
    user, assistant = messages
    if (user["role"], assistant["role"]) != ("user", "assistant"):
        raise ImportFormatError(filename, TURN_ORDER, line=line)
    return ParsedExample(
        line=line,
        instruction=_text(
            {"instruction": user.get("content")}, "instruction", filename, line, required=True
        ),
        output=_text({"output": assistant.get("content")}, "output", filename, line, required=True),
    )


# --- statistics --------------------------------------------------------------------------------


def drop_duplicates(examples: Sequence[ParsedExample]) -> tuple[list[ParsedExample], int]:
    """Examples without exact repeats of (instruction, input, output); first ones kept."""
    seen: set[tuple[str, str, str]] = set()
    kept = []
    for example in examples:
        if example.key not in seen:
            seen.add(example.key)
            kept.append(example)
    return kept, len(examples) - len(kept)


def summary(examples: Sequence[ParsedExample]) -> dict:
    """Rows, unique instructions (instruction + input), exact-duplicate rows, character lengths."""
    rows = len(examples)
    return {
        "rows": rows,
        "unique_instructions": len({(e.instruction, e.input) for e in examples}),
        "duplicate_rows": rows - len({e.key for e in examples}),
        "rows_with_input": sum(1 for e in examples if e.input),
        "instruction_chars": percentiles([len(e.instruction) + len(e.input) for e in examples]),
        "output_chars": percentiles([len(e.output) for e in examples]),
    }


PERCENTILES = (50, 90, 95, 99)


def percentiles(values: Sequence[int | float]) -> dict:
    """Nearest-rank percentiles p50/p90/p95/p99 plus min, mean and max (empty: {})."""
    if not values:
        return {}
    ordered = sorted(values)
    n = len(ordered)
    out: dict = {"min": ordered[0]}
    for p in PERCENTILES:
        out[f"p{p}"] = ordered[max(0, math.ceil(p / 100 * n) - 1)]
    out["max"] = ordered[-1]
    out["mean"] = round(sum(ordered) / n, 1)
    return out
