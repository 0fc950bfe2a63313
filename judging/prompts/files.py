"""Judge prompts from files: a benchmark's own (FastChat's ``judge_prompts.jsonl``, as MT-Bench
and Rakuda ship theirs) or one an admin wrote (JSON, JSON Lines, YAML, or a text template with
front matter). Every prompt in a file is parsed and checked before anything is written, and all
are stored in one transaction (versions.judge_prompt_save: a used version is kept)."""

from __future__ import annotations

import os
import re
import string
from pathlib import Path

import yaml
from django.conf import settings
from django.db import transaction

from evalsite import jsonguard
from generation.importers import ImportFormatError, decode, json_records, read_limited

from ..engine import verdicts
from ..models import JudgePrompt
from .versions import BAD_FIELD, judge_prompt_problems, judge_prompt_save, prompt_defaults

FILE_EXTENSIONS = "use .json, .jsonl, .yaml / .yml, or a text file (.txt, .md, .j2, .jinja)"
UNKNOWN_EXTENSION = "has an unknown extension {ext!r}: " + FILE_EXTENSIONS
NO_PROMPTS = "holds no judge prompt"
NOT_A_MAPPING = "expected an object of judge prompt fields, got {kind}"
UNKNOWN_KEYS = "unknown key(s) {keys}; a judge prompt has: {known}"
NOT_TEXT = "{key!r} must be text, got {kind}"
NOT_INTEGER = "{key!r} must be an integer, got {value!r}"
NO_FRONT_MATTER = (
    "a text judge prompt starts with front matter: a line '---', 'name: ...' (and kind, "
    "verdict_format...), a line '---', then the template"
)
BAD_YAML = "not valid YAML ({detail})"
YAML_TOO_DEEP = "YAML nested more than {limit} levels deep"
LONE_SURROGATE = "a string holds a lone surrogate (such as \\ud800), which is not text"
DUPLICATE_NAME = "a second prompt named {name!r} (the first is on line {first})"
NOT_IN_FILE = "no prompt named {names} in the file; it has: {found}"
ONE_NAME_ONLY = "a name can be given only when the file holds one prompt (it holds {n})"
FASTCHAT_PLACEHOLDER = "placeholder {{{name}}} is not one FastChat's judge prompts use ({known})"
FASTCHAT_MIXED = (
    "placeholder {{{name}}} is a single-turn one, and the prompt also shows numbered turns "
    "({{question_1}}...): use one kind"
)
FASTCHAT_TYPE = "'type' must be pairwise or single, got {value!r}"
FASTCHAT_FORMAT = "'output_format' {value!r} is not one the app reads ({known})"

# A judge prompt file is a list of flat mappings: a few levels are all it needs.
MAX_YAML_DEPTH = 32
_SURROGATE = re.compile("[\ud800-\udfff]")

_KEYS = ("name", "description", "kind", "system_prompt", "template", "verdict_format")
_NUMBERS = ("score_min", "score_max")
_TEXT_EXTENSIONS = (".txt", ".md", ".j2", ".jinja", ".jinja2")
# FastChat's judge_prompts.jsonl (MT-Bench, Rakuda): its placeholders and verdict formats.
# Single-turn placeholders are the last turn's values; numbered ones (multi-turn prompts:
# {question_1}, {answer_a_2}, {answer_2} of a single-answer prompt, {ref_answer_2}) are the
# turns of the conversation (verdicts.render's ``turns``).
_FASTCHAT_NAMES = {
    "question": "question",
    "answer": "answer",
    "answer_a": "answer_1",
    "answer_b": "answer_2",
    "ref_answer_1": "reference",
}
_FASTCHAT_TURN = re.compile(r"^(question|answer_a|answer_b|answer|ref_answer)_([1-9][0-9]?)$")
_FASTCHAT_TURN_KEYS = {
    "question": "question",
    "answer_a": "answer_1",
    "answer_b": "answer_2",
    "answer": "answer",
    "ref_answer": "reference",
}
_FASTCHAT_FORMATS = {
    "last": verdicts.LAST_LINE_123,
    "[[A]]": verdicts.BRACKETS_ABC,
    "[[rating_a,rating_b]]": verdicts.BRACKETS_TWO_RATINGS,
    "[[rating]]": verdicts.BRACKETS_RATING,
}
_FASTCHAT_KEYS = (
    "name",
    "type",
    "system_prompt",
    "prompt_template",
    "description",
    "category",
    "output_format",
)


def judge_prompt_load(
    path, *, only: list[str] | None = None, name: str | None = None, user=None
) -> list[JudgePrompt]:
    """Store the judge prompts in the file at ``path`` (``only``: just those names; ``name``:
    store a one-prompt file under this name) and return the rows that now hold them.

    Formats: JSON (an object or a list), JSON Lines, YAML (a mapping or a list) of the fields
    ``name, kind, template, verdict_format, system_prompt, description, score_min, score_max``;
    FastChat's ``judge_prompts.jsonl`` lines (MT-Bench's, Rakuda's: ``type``,
    ``prompt_template`` with ``{question}``-style placeholders, ``output_format``); or a text
    file whose front matter (YAML between two ``---`` lines) holds the fields and whose body is
    the template. Every prompt is checked before anything is written (ImportFormatError naming
    the file, the line and the field), and all are stored in one transaction; a name that
    exists gets the file's version as its next one when a run used the latest.
    """
    data = read_limited(path, settings.MAX_UPLOAD_BYTES)
    return judge_prompts_import(data=data, filename=str(path), only=only, name=name, user=user)


def judge_prompts_import(
    *, data: bytes, filename: str, only: list[str] | None = None, name: str | None = None, user=None
) -> list[JudgePrompt]:
    """``judge_prompt_load`` on a file's bytes (an upload)."""
    entries = parse_judge_prompt_file(data, filename, only=only)
    if name is not None:
        if len(entries) != 1:
            raise ImportFormatError(filename, ONE_NAME_ONLY.format(n=len(entries)))
        entries = [(entries[0][0], {**entries[0][1], "name": name})]
    seen: dict[str, int] = {}
    for line, entry in entries:
        where = None if line == 0 else line
        if entry["name"] in seen:
            problem = DUPLICATE_NAME.format(name=entry["name"], first=seen[entry["name"]])
            raise ImportFormatError(filename, problem, where)
        seen[entry["name"]] = line
        found = judge_prompt_problems({**prompt_defaults(), **entry})
        if found:
            problem = "; ".join(BAD_FIELD.format(field=f, problem=p) for f, p in found.items())
            raise ImportFormatError(filename, problem, where)
    source = os.path.basename(filename)
    with transaction.atomic():
        return [judge_prompt_save(**entry, source=source, user=user) for _, entry in entries]


def parse_judge_prompt_file(
    data: bytes, filename: str, only: list[str] | None = None
) -> list[tuple[int, dict]]:
    """(line, fields) of each prompt in a file, its fields named as ``PROMPT_FIELDS`` and
    defaults filled (line 0: the whole file). ``only``: just the prompts of those names (the
    others are not checked). Plain parsing: nothing is written."""
    text = decode(data, filename)
    ext = Path(filename).suffix.lower()
    if ext == ".jsonl":
        records = json_records(text, filename, array=False, what="judge prompt")
    elif ext == ".json":
        try:
            value = jsonguard.loads(text)
        except ValueError as exc:
            detail = getattr(exc, "msg", None) or str(exc)
            raise ImportFormatError(filename, jsonguard.BAD_JSON.format(detail=detail)) from None
        records = list(enumerate(value, 1)) if isinstance(value, list) else [(0, value)]
    elif ext in (".yaml", ".yml"):
        records = _yaml_records(text, filename)
    elif ext in _TEXT_EXTENSIONS:
        records = [(0, _front_matter(text, filename))]
    else:
        raise ImportFormatError(filename, UNKNOWN_EXTENSION.format(ext=ext))
    if not records:
        raise ImportFormatError(filename, NO_PROMPTS)
    if only:
        kept = [(n, r) for n, r in records if isinstance(r, dict) and r.get("name") in only]
        if not kept:
            found = ", ".join(
                str(r.get("name"))[:60] for _, r in records[:50] if isinstance(r, dict)
            )
            raise ImportFormatError(filename, NOT_IN_FILE.format(names=only, found=found))
        records = kept
    out = []
    for line, record in records:
        try:
            out.append((line, _fields(record)))
        except ValueError as exc:
            raise ImportFormatError(filename, str(exc), None if line == 0 else line) from None
    return out


class _Refused(yaml.MarkedYAMLError):
    """YAML that parses but that the app refuses (too deep, not text); says why and where."""


class _BoundedLoader(yaml.SafeLoader):
    """``yaml.safe_load``'s loader, bounded: PyYAML composes a node per nesting level by
    recursion (thousands of ``[`` end in RecursionError), and a ``"\\ud800"`` escape makes a
    string no database column stores."""

    def __init__(self, stream):
        super().__init__(stream)
        self.depth = 0

    def compose_node(self, parent, index):
        self.depth += 1
        try:
            if self.depth > MAX_YAML_DEPTH:
                mark = self.peek_event().start_mark
                raise _Refused(
                    problem=YAML_TOO_DEEP.format(limit=MAX_YAML_DEPTH), problem_mark=mark
                )
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_scalar(self, node):
        value = super().construct_scalar(node)
        if isinstance(value, str) and _SURROGATE.search(value):
            raise _Refused(problem=LONE_SURROGATE, problem_mark=node.start_mark)
        return value


def _load_yaml(text: str, filename: str, first_line: int = 1):
    """The YAML ``text`` holds (ImportFormatError with its line, ``first_line`` being the file
    line the text starts on, when it cannot be read or is refused)."""
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + first_line if mark is not None else None
        detail = getattr(exc, "problem", None) or str(exc)
        problem = detail if isinstance(exc, _Refused) else BAD_YAML.format(detail=detail)
        raise ImportFormatError(filename, problem, line) from None
    except RecursionError:  # merge keys (<<) chained through thousands of aliases
        problem = YAML_TOO_DEEP.format(limit=MAX_YAML_DEPTH)
        raise ImportFormatError(filename, problem) from None


def _yaml_records(text: str, filename: str) -> list[tuple[int, object]]:
    value = _load_yaml(text, filename)
    if value is None:
        return []
    return list(enumerate(value, 1)) if isinstance(value, list) else [(0, value)]


def _front_matter(text: str, filename: str) -> dict:
    lines = text.split("\n")
    if not lines or lines[0].strip() != "---":
        raise ImportFormatError(filename, NO_FRONT_MATTER, 1)
    end = next((i for i in range(1, len(lines)) if lines[i].strip() == "---"), None)
    if end is None:
        raise ImportFormatError(filename, NO_FRONT_MATTER, 1)
    head = _load_yaml("\n".join(lines[1:end]), filename, first_line=2) or {}
    if not isinstance(head, dict):
        raise ImportFormatError(filename, NOT_A_MAPPING.format(kind=type(head).__name__), 2)
    if "template" in head:
        raise ImportFormatError(filename, "the template is the text after the front matter", 2)
    return {**head, "template": "\n".join(lines[end + 1 :]).strip("\n") + "\n"}


def _fields(record: object) -> dict:
    """A record's prompt fields (ValueError saying what is wrong)."""
    if not isinstance(record, dict):
        raise ValueError(NOT_A_MAPPING.format(kind=type(record).__name__))
    if "prompt_template" in record:
        return _fastchat_fields(record)
    unknown = sorted(set(record) - set(_KEYS) - set(_NUMBERS))
    if unknown:
        known = ", ".join(_KEYS + _NUMBERS)
        raise ValueError(UNKNOWN_KEYS.format(keys=_listed(unknown), known=known))
    fields = {key: _text(record, key) for key in _KEYS if key in record}
    for key in _NUMBERS:
        if key in record:
            fields[key] = _integer(record, key)
    fields.setdefault("name", "")
    kind = fields.setdefault("kind", JudgePrompt.Kind.PAIRWISE)
    default = verdicts.SCORE if kind == JudgePrompt.Kind.GRADING else verdicts.LAST_LINE_123
    fields.setdefault("verdict_format", default)
    return fields


def _fastchat_fields(record: dict) -> dict:
    """A FastChat ``judge_prompts.jsonl`` line as prompt fields: ``{placeholder}`` becomes a
    Jinja variable (a numbered one, a turn of ``turns``), the rest of the text is kept exactly
    (in raw blocks where it could read as Jinja). ``output_format`` says how the verdict is read
    (``[[A]]``, ``[[rating]]``, ``[[rating_a,rating_b]]``, Rakuda's ``last``); ``category`` is
    kept."""
    unknown = sorted(set(record) - set(_FASTCHAT_KEYS) - set(_NUMBERS))
    if unknown:
        known = ", ".join(_FASTCHAT_KEYS)
        raise ValueError(UNKNOWN_KEYS.format(keys=_listed(unknown), known=known))
    kinds = {"pairwise": JudgePrompt.Kind.PAIRWISE, "single": JudgePrompt.Kind.GRADING}
    kind = kinds.get(record.get("type", "pairwise"))
    if kind is None:
        raise ValueError(FASTCHAT_TYPE.format(value=record.get("type")))
    given = record.get("output_format", "last" if kind == "pairwise" else "[[rating]]")
    verdict_format = _FASTCHAT_FORMATS.get(given)
    if verdict_format is None:
        raise ValueError(FASTCHAT_FORMAT.format(value=given, known=", ".join(_FASTCHAT_FORMATS)))
    try:
        parsed = list(string.Formatter().parse(_text(record, "prompt_template")))
    except ValueError as exc:
        raise ValueError(f"'prompt_template': {exc}") from None
    fields_named = [field for _, field, _, _ in parsed if field is not None]
    # {ref_answer_1} alone is the single-turn prompts' reference; other numbers mean turns.
    numbered = any(_FASTCHAT_TURN.match(f) and f != "ref_answer_1" for f in fields_named)
    parts = []
    for literal, field, _spec, _conversion in parsed:
        if literal:
            risky = any(m in literal for m in ("{{", "{%", "{#")) or literal.endswith("{")
            parts.append("{% raw %}" + literal + "{% endraw %}" if risky else literal)
        if field is not None:
            parts.append("{{ " + _fastchat_variable(field, kind, numbered) + " }}")
    fields = {
        "name": _text(record, "name") if "name" in record else "",
        "description": _text(record, "description") if "description" in record else "",
        "category": _text(record, "category")[:100] if "category" in record else "",
        "kind": kind,
        "system_prompt": _text(record, "system_prompt") if "system_prompt" in record else "",
        "template": "".join(parts),
        "verdict_format": verdict_format,
    }
    if kind == JudgePrompt.Kind.GRADING:
        fields.update(score_min=1, score_max=10)  # MT-Bench's single-answer scale
    for key in _NUMBERS:
        if key in record:
            fields[key] = _integer(record, key)
    return fields


def _fastchat_variable(field: str, kind: str, numbered: bool) -> str:
    """The Jinja expression a FastChat placeholder stands for."""
    turn = _FASTCHAT_TURN.match(field)
    # A pairwise prompt's {answer_1} would be ambiguous; FastChat writes {answer_a_1} there.
    if turn and not (turn.group(1) == "answer" and kind == JudgePrompt.Kind.PAIRWISE):
        key = _FASTCHAT_TURN_KEYS[turn.group(1)]
        if field == "ref_answer_1" and not numbered:
            return "reference"
        return f"turns[{int(turn.group(2)) - 1}].{key}"
    if field in _FASTCHAT_NAMES:
        if numbered and field != "ref_answer_1":
            raise ValueError(FASTCHAT_MIXED.format(name=field))
        return _FASTCHAT_NAMES[field]
    known = "question, answer, answer_a, answer_b, ref_answer_1, and numbered turns: "
    known += "question_1, answer_a_1, answer_b_1, answer_1, ref_answer_1, ..."
    raise ValueError(FASTCHAT_PLACEHOLDER.format(name=field, known=known))


def _listed(keys: list) -> str:
    """A few of ``keys`` for a message (a file may hold thousands, each of any length)."""
    shown = [repr(str(key)[:40]) for key in keys[:5]]
    return f"[{', '.join(shown)}]" + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")


def _text(record: dict, key: str) -> str:
    value = record[key]
    if not isinstance(value, str):
        raise ValueError(NOT_TEXT.format(key=key, kind=type(value).__name__))
    return value


def _integer(record: dict, key: str) -> int:
    value = record[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(NOT_INTEGER.format(key=key, value=value))
    return value
