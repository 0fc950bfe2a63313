"""Parsing prompt-set files and answer files (plain module, no Django).

Everything is parsed and checked before anything is written, so a caller can import atomically.
Every problem raises ``ImportFormatError`` naming the file, the line and what is wrong.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalsite import jsonguard
from evalsite.imports import (  # noqa: F401 - the importers' names for them
    NOT_UTF8,
    NUL_BYTE,
    TOO_LARGE,
    ImportFormatError,
    decode,
    read_limited,
)

EMPTY_FILE = "holds no questions"
NO_QUESTION_COLUMN = "has no 'question' column (columns: {columns})"
EMPTY_QUESTION = "the question is empty"
BAD_JSON = jsonguard.BAD_JSON
NOT_AN_OBJECT = "expected a JSON object, got {kind}"
NO_TEXT_FIELD = "no question text: expected one of 'text', 'question', 'input' or 'turns'"
TURNS_NOT_LIST = "'turns' must be a non-empty list of strings"
EMPTY_TURN = "turn {n} is empty"
DUPLICATE_ID = "question_id {qid!r} already appeared on line {first}"
NOT_TEXT = "field {field!r} must be a string, got {kind}"
TOO_LONG = "the {field} is {length} characters, over the {limit}-character limit"
UNKNOWN_EXTENSION = "has an unknown extension {ext!r}: use .csv, .jsonl or .json"

TEXT_FIELDS = ("text", "question", "input")
# The columns' lengths (Question.category, Question.external_id): a longer value is the file's
# fault, named with its line, not a database error.
FIELD_LIMITS = {"category": 100, "external_id": 100}
# Grader fields, each under its own name or ELYZA-tasks-100's (the first one present is used).
REFERENCE_FIELDS = ("reference", "output")
CRITERIA_FIELDS = ("criteria", "eval_aspect")


@dataclass(frozen=True)
class ParsedQuestion:
    line: int
    text: str
    category: str = ""
    external_id: str = ""
    # Later user turns (FastChat / MT-Bench ``turns`` after the first).
    follow_ups: tuple[str, ...] = ()
    # For graders: a reference answer and what to look at (ELYZA-tasks-100's ``output`` and
    # ``eval_aspect``; ``reference`` / ``criteria`` in any format).
    reference: str = ""
    criteria: str = ""


def parse_prompt_file(
    data: bytes, filename: str, *, limit: int | None = None
) -> list[ParsedQuestion]:
    """Questions from a CSV, JSONL or JSON-array file, in file order."""
    text = decode(data, filename, limit=limit)
    ext = Path(filename).suffix.lower()
    if ext == ".csv":
        questions = _parse_csv(text, filename)
    elif ext in (".jsonl", ".ndjson", ".json"):
        records = json_records(text, filename, array=ext == ".json", what="question")
        questions = [_question_from_record(r, filename, line) for line, r in records]
    else:
        raise ImportFormatError(filename, UNKNOWN_EXTENSION.format(ext=ext))
    if not questions:
        raise ImportFormatError(filename, EMPTY_FILE)
    for question in questions:
        _check_lengths(question, filename)
    _check_unique_ids(questions, filename)
    return questions


def _parse_csv(text: str, filename: str) -> list[ParsedQuestion]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = [c.strip() for c in (reader.fieldnames or [])]
    if "question" not in columns:
        raise ImportFormatError(filename, NO_QUESTION_COLUMN.format(columns=columns), line=1)
    reader.fieldnames = columns
    out = []
    try:
        for row in reader:
            # line_num is the physical line the row ended on; quoted newlines make it differ.
            line = reader.line_num
            question = (row.get("question") or "").strip()
            if not question:
                raise ImportFormatError(filename, EMPTY_QUESTION, line=line)
            out.append(
                ParsedQuestion(
                    line=line,
                    text=question,
                    category=(row.get("category") or "").strip(),
                    external_id=(row.get("question_id") or "").strip(),
                    reference=(row.get("reference") or "").strip(),
                    criteria=(row.get("criteria") or "").strip(),
                )
            )
    except csv.Error as exc:
        raise ImportFormatError(filename, f"bad CSV ({exc})", line=reader.line_num) from None
    return out


def json_records(text: str, filename: str, *, array: bool, what: str) -> list[tuple[int, Any]]:
    """(line, record) of a JSONL text, or of a JSON array (its 1-based index standing in for the
    line); ImportFormatError naming the line of the first unreadable one."""
    try:
        if array:
            return jsonguard.array_records(text, what=what)
        return jsonguard.jsonl_records(text)
    except jsonguard.RecordError as exc:
        raise ImportFormatError(filename, exc.problem, line=exc.line) from None


def _question_from_record(record: object, filename: str, line: int) -> ParsedQuestion:
    if not isinstance(record, dict):
        raise ImportFormatError(
            filename, NOT_AN_OBJECT.format(kind=type(record).__name__), line=line
        )
    follow_ups: tuple[str, ...] = ()
    if "turns" in record:
        turns = record["turns"]
        if not isinstance(turns, list) or not turns or not all(isinstance(t, str) for t in turns):
            raise ImportFormatError(filename, TURNS_NOT_LIST, line=line)
        for n, turn in enumerate(turns[1:], start=2):
            if not turn.strip():
                raise ImportFormatError(filename, EMPTY_TURN.format(n=n), line=line)
        question, follow_ups = turns[0], tuple(t.strip() for t in turns[1:])
    else:
        field = next((f for f in TEXT_FIELDS if f in record), None)
        if field is None:
            raise ImportFormatError(filename, NO_TEXT_FIELD, line=line)
        question = record[field]
        if not isinstance(question, str):
            raise ImportFormatError(
                filename, NOT_TEXT.format(field=field, kind=type(question).__name__), line=line
            )
    question = question.strip()
    if not question:
        raise ImportFormatError(filename, EMPTY_QUESTION, line=line)
    category = record.get("category") or ""
    if not isinstance(category, str):
        raise ImportFormatError(
            filename, NOT_TEXT.format(field="category", kind=type(category).__name__), line=line
        )
    qid = record.get("question_id")
    return ParsedQuestion(
        line=line,
        text=question,
        category=category.strip(),
        external_id="" if qid is None else str(qid).strip(),
        follow_ups=follow_ups,
        reference=_optional_text(record, REFERENCE_FIELDS, filename, line),
        criteria=_optional_text(record, CRITERIA_FIELDS, filename, line),
    )


def _optional_text(record: dict, fields: tuple[str, ...], filename: str, line: int) -> str:
    """The first of ``fields`` the record has, stripped ("" when it has none or it is null)."""
    field = next((f for f in fields if record.get(f) is not None), None)
    if field is None:
        return ""
    value = record[field]
    if not isinstance(value, str):
        raise ImportFormatError(
            filename, NOT_TEXT.format(field=field, kind=type(value).__name__), line=line
        )
    return value.strip()


def _check_lengths(question: ParsedQuestion, filename: str) -> None:
    for field, limit in FIELD_LIMITS.items():
        length = len(getattr(question, field))
        if length > limit:
            problem = TOO_LONG.format(field=field, length=length, limit=limit)
            raise ImportFormatError(filename, problem, line=question.line)


def _check_unique_ids(questions: list[ParsedQuestion], filename: str) -> None:
    seen: dict[str, int] = {}
    for q in questions:
        if not q.external_id:
            continue
        if q.external_id in seen:
            raise ImportFormatError(
                filename, DUPLICATE_ID.format(qid=q.external_id, first=seen[q.external_id]), q.line
            )
        seen[q.external_id] = q.line


# --- answers made elsewhere (FastChat ``model_answer`` JSONL) ----------------------------------

NO_ANSWERS = "holds no answers"
ANSWERS_EXTENSION = "has an unknown extension {ext!r}: use .jsonl or .json"
NO_QUESTION_ID = "no 'question_id'"
BAD_QUESTION_ID = "'question_id' must be a string or an integer, got {kind}"
BAD_MODEL_ID = "'model_id' must be a non-empty string of at most {limit} characters"
NO_CHOICES = "no answer: expected 'choices' (a non-empty list) whose first has 'turns'"
CHOICE_TURNS = "'choices[0].turns' must be a non-empty list of strings"
DUPLICATE_ANSWER = (
    "a second answer of {model!r} to question_id {qid!r} (the first is on line {first})"
)
MODEL_ID_LIMIT = 200  # LanguageModel.name


@dataclass(frozen=True)
class ParsedAnswer:
    line: int
    question_id: str
    model_id: str  # blank when the record has none
    turns: tuple[str, ...]  # the reply to each user turn, in order


def parse_answer_file(
    data: bytes, filename: str, *, limit: int | None = None
) -> list[ParsedAnswer]:
    """Answers in FastChat's ``model_answer`` shape (``question_id``, ``model_id``,
    ``choices[0].turns``), one JSON object a line (or a JSON array), in file order."""
    text = decode(data, filename, limit=limit)
    ext = Path(filename).suffix.lower()
    if ext not in (".jsonl", ".ndjson", ".json"):
        raise ImportFormatError(filename, ANSWERS_EXTENSION.format(ext=ext))
    records = json_records(text, filename, array=ext == ".json", what="answer")
    answers = [_answer_from_record(r, filename, line) for line, r in records]
    if not answers:
        raise ImportFormatError(filename, NO_ANSWERS)
    return answers


def _answer_from_record(record: object, filename: str, line: int) -> ParsedAnswer:
    def refuse(problem: str):
        return ImportFormatError(filename, problem, line=line)

    if not isinstance(record, dict):
        raise refuse(NOT_AN_OBJECT.format(kind=type(record).__name__))
    qid = record.get("question_id")
    if qid is None:
        raise refuse(NO_QUESTION_ID)
    if isinstance(qid, bool) or not isinstance(qid, str | int) or not str(qid).strip():
        raise refuse(BAD_QUESTION_ID.format(kind=type(qid).__name__))
    model_id = record.get("model_id", "")
    if not isinstance(model_id, str) or len(model_id.strip()) > MODEL_ID_LIMIT:
        raise refuse(BAD_MODEL_ID.format(limit=MODEL_ID_LIMIT))
    choices = record.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise refuse(NO_CHOICES)
    turns = choices[0].get("turns")
    if not isinstance(turns, list) or not turns or not all(isinstance(t, str) for t in turns):
        raise refuse(CHOICE_TURNS)
    return ParsedAnswer(
        line=line,
        question_id=str(qid).strip(),
        model_id=model_id.strip(),
        turns=tuple(t.strip() for t in turns),
    )
