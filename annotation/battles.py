"""Pairwise judgments in FastChat's battle shape, and Rakuda tournaments (plain module, no Django).

A battle is one JSON object per line (JSONL) with ``model_a``, ``model_b``, ``winner`` (one of
``model_a``, ``model_b``, ``tie``, ``tie (bothbad)``), ``question_id``, ``judge``, optional
``tstamp`` and optional ``conversation_a`` / ``conversation_b`` (lists of ``{"role", "content"}``
turns). A whole-file JSON array of such objects (FastChat's ``clean_battle_*.json``) is read too.

``parse_battles`` checks everything before it returns, so a caller can import atomically; every
problem raises ``BattleFormatError`` naming the line (and the record) and what is wrong.
Fields this module does not know are kept in ``BattleRecord.extra`` and written back out.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from annotation.ranking import Battle
from evalsite import jsonguard

WINNERS = ("model_a", "model_b", "tie", "tie (bothbad)")
OUTCOMES = {"model_a": "a", "model_b": "b", "tie": "tie", "tie (bothbad)": "tie"}
REQUIRED = ("model_a", "model_b", "winner")
KNOWN = ("question_id", "model_a", "model_b", "winner", "judge", "conversation_a")
KNOWN += ("conversation_b", "tstamp", "turn")
RAKUDA_SCORES = {1: "model_a", 2: "model_b", 3: "tie"}
RAKUDA_UNPARSABLE = -1
RAKUDA_MATCH_FIELDS = ("model1_id", "model2_id", "question_id", "question", "response1")
RAKUDA_MATCH_FIELDS += ("response2", "score")

NOT_UTF8 = "not UTF-8 text (bad byte at offset {offset})"
BAD_JSON = jsonguard.BAD_JSON
NOT_AN_OBJECT = "expected a JSON object, got {kind}"
MISSING_FIELD = "missing field {field!r}"
NOT_A_NAME = "field {field!r} must be a non-empty string, got {value!r}"
SAME_MODELS = "model_a and model_b are the same model ({name!r})"
UNKNOWN_WINNER = "unknown winner {value!r}: expected one of model_a, model_b, tie, tie (bothbad)"
BAD_QUESTION_ID = "question_id must be a string or an integer, got {value!r}"
NO_QUESTION = "no question: give question_id or a conversation with a user turn"
BAD_JUDGE = "judge must be a string, got {value!r}"
BAD_TSTAMP = "tstamp must be a number, got {value!r}"
BAD_CONVERSATION = "{field} must be a list of turns, got {kind}"
BAD_TURN = "{field} turn {turn} must be an object with string 'role' and 'content'"
BAD_TURN_COUNT = "turn must be a positive integer (the conversation's user turns), got {value!r}"
ARRAY_SYNTAX = "expected ',' or ']' after the record"
NOT_RAKUDA = "not a Rakuda tournament: expected a JSON object with a 'matches' list"
UNKNOWN_SCORE = "unknown score {value!r}: expected 1, 2, 3 or -1"


class BattleFormatError(ValueError):
    """Judgments that cannot be read; the message names where (line, record or match)."""

    def __init__(self, problem: str, *, line: int | None = None, where: str | None = None):
        self.problem = problem
        self.line = line
        if where is None:
            where = f"line {line}" if line is not None else "input"
        self.where = where
        super().__init__(f"{where}: {problem}")


Turn = dict[str, str]


@dataclass(frozen=True)
class BattleRecord:
    model_a: str
    model_b: str
    winner: str  # one of WINNERS
    question_id: str | int | None = None
    judge: str | None = None
    tstamp: float | None = None
    conversation_a: list[Turn] | None = None
    conversation_b: list[Turn] | None = None
    turn: int | None = None  # how many user turns the conversation has (None: not given, 1)
    extra: dict[str, Any] = field(default_factory=dict)  # other fields, kept for the round trip
    line: int | None = field(default=None, compare=False)  # where it was read from

    @property
    def outcome(self) -> str:
        """ "a", "b" or "tie" (both kinds of tie)."""
        return OUTCOMES[self.winner]

    def question_text(self) -> str | None:
        """The first user turn of either conversation."""
        return first_user_turn(self.conversation_a) or first_user_turn(self.conversation_b)

    def answer_a(self) -> str | None:
        return assistant_answer(self.conversation_a)

    def answer_b(self) -> str | None:
        return assistant_answer(self.conversation_b)

    def user_turns(self) -> list[str]:
        """Every user turn of the longer conversation (the two share them)."""
        return max(
            (
                [t["content"] for t in conversation or () if t.get("role") == "user"]
                for conversation in (self.conversation_a, self.conversation_b)
            ),
            key=len,
        )

    def question_key(self) -> str | None:
        """What identifies the question: the question_id, else the question text."""
        if self.question_id is not None:
            return str(self.question_id)
        return self.question_text()

    def to_battle(self, *, shown_order: bool = True) -> Battle:
        """The ranking module's record. In FastChat's battles and Rakuda's tournaments
        ``model_a`` (``model1``) is the answer shown first; ``shown_order=False`` for files
        where that is not so (no shown order then)."""
        return Battle(
            self.model_a,
            self.model_b,
            self.outcome,
            question=self.question_key(),
            first_shown="a" if shown_order else None,
        )


def first_user_turn(conversation: list[Turn] | None) -> str | None:
    for turn in conversation or ():
        if turn.get("role") == "user":
            return turn.get("content")
    return None


def assistant_replies(conversation: list[Turn] | None) -> list[str]:
    """Every assistant turn after the first user turn, in order (one per user turn)."""
    replies, seen_user = [], False
    for turn in conversation or ():
        if turn.get("role") == "user":
            seen_user = True
        elif turn.get("role") == "assistant" and seen_user:
            replies.append(turn.get("content"))
    return replies


def assistant_answer(conversation: list[Turn] | None) -> str | None:
    """The first assistant turn after the first user turn."""
    seen_user = False
    for turn in conversation or ():
        if turn.get("role") == "user":
            seen_user = True
        elif turn.get("role") == "assistant" and seen_user:
            return turn.get("content")
    return None


# --- reading -----------------------------------------------------------------------------------


def parse_battles(source: str | bytes | os.PathLike | Iterable[str | bytes]) -> list[BattleRecord]:
    """Read battles from a path, file text (``str`` / ``bytes``), or an iterable of lines.

    A ``str`` is a path when it is one line, does not start like JSON and names a file;
    otherwise it is the file's text. Blank lines are skipped. Raises ``BattleFormatError`` at
    the first problem; returns only when every record is valid.
    """
    text = _read_text(source)
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            # The array's own bracket is one level: each record may nest as deep as a line.
            jsonguard.check_depth(text, limit=jsonguard.MAX_DEPTH + 1)
        except jsonguard.UnsafeJSON as exc:
            raise BattleFormatError(str(exc), line=None) from None
        return [
            _record(obj, line=line, where=f"record {n} (line {line})")
            for n, (line, obj) in enumerate(_json_array(text), start=1)
        ]
    try:
        lines = jsonguard.jsonl_records(text)
    except jsonguard.RecordError as exc:
        raise BattleFormatError(exc.problem, line=exc.line) from None
    return [_record(obj, line=number) for number, obj in lines]


def _read_text(source) -> str:
    if isinstance(source, str) and _looks_like_path(source):
        source = Path(source)
    if isinstance(source, os.PathLike):
        source = Path(source).read_bytes()
    if isinstance(source, bytes):
        return _decode(source)
    if isinstance(source, str):
        return source
    parts = []
    for number, line in enumerate(source, start=1):
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                problem = NOT_UTF8.format(offset=exc.start)
                raise BattleFormatError(problem, line=number) from None
        parts.append(line.rstrip("\r\n"))
    return "\n".join(parts)


def _looks_like_path(text: str) -> bool:
    if "\n" in text or text.lstrip().startswith(("{", "[")) or not text.strip():
        return False
    try:
        return Path(text).is_file()
    except (OSError, ValueError):
        return False


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise BattleFormatError(NOT_UTF8.format(offset=exc.start), line=line) from None


def _json_array(text: str) -> Iterable[tuple[int, Any]]:
    """(line, value) for each element of a JSON array, so errors can name the record's line."""
    decoder = json.JSONDecoder()
    pos = _skip_space(text, text.index("[") + 1)
    line, counted = 1, 0

    def line_at(position: int) -> int:
        nonlocal line, counted
        line += text.count("\n", counted, position)
        counted = position
        return line

    if pos < len(text) and text[pos] == "]":
        end = pos + 1
    else:
        while True:
            start_line = line_at(pos)
            try:
                value, pos = decoder.raw_decode(text, pos)
            except json.JSONDecodeError as exc:
                raise BattleFormatError(BAD_JSON.format(detail=exc.msg), line=exc.lineno) from None
            try:
                jsonguard.check_text(value)
            except jsonguard.UnsafeJSON as exc:
                raise BattleFormatError(str(exc), line=start_line) from None
            yield start_line, value
            pos = _skip_space(text, pos)
            if pos < len(text) and text[pos] == ",":
                pos = _skip_space(text, pos + 1)
            elif pos < len(text) and text[pos] == "]":
                end = pos + 1
                break
            else:
                raise BattleFormatError(ARRAY_SYNTAX, line=line_at(pos))
    if _skip_space(text, end) != len(text):
        problem = BAD_JSON.format(detail="extra data after the array")
        raise BattleFormatError(problem, line=line_at(end))


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _record(obj: Any, *, line: int | None, where: str | None = None) -> BattleRecord:
    def fail(problem: str):
        raise BattleFormatError(problem, line=line, where=where)

    if not isinstance(obj, dict):
        fail(NOT_AN_OBJECT.format(kind=_kind(obj)))
    for name in REQUIRED:
        if name not in obj:
            fail(MISSING_FIELD.format(field=name))
    for name in ("model_a", "model_b"):
        value = obj[name]
        if not isinstance(value, str) or not value.strip():
            fail(NOT_A_NAME.format(field=name, value=value))
    if obj["model_a"] == obj["model_b"]:
        fail(SAME_MODELS.format(name=obj["model_a"]))
    if obj["winner"] not in WINNERS:
        fail(UNKNOWN_WINNER.format(value=obj["winner"]))
    question_id = obj.get("question_id")
    if question_id is not None and (
        isinstance(question_id, bool) or not isinstance(question_id, str | int)
    ):
        fail(BAD_QUESTION_ID.format(value=question_id))
    judge = obj.get("judge")
    if judge is not None and not isinstance(judge, str):
        fail(BAD_JUDGE.format(value=judge))
    tstamp = obj.get("tstamp")
    if tstamp is not None and (isinstance(tstamp, bool) or not isinstance(tstamp, int | float)):
        fail(BAD_TSTAMP.format(value=tstamp))
    turns = obj.get("turn")
    if turns is not None and (isinstance(turns, bool) or not isinstance(turns, int) or turns < 1):
        fail(BAD_TURN_COUNT.format(value=turns))
    conversations = {}
    for name in ("conversation_a", "conversation_b"):
        value = obj.get(name)
        if value is None:
            conversations[name] = None
            continue
        if not isinstance(value, list):
            fail(BAD_CONVERSATION.format(field=name, kind=_kind(value)))
        for turn_number, turn in enumerate(value, start=1):
            if not (
                isinstance(turn, dict)
                and isinstance(turn.get("role"), str)
                and isinstance(turn.get("content"), str)
            ):
                fail(BAD_TURN.format(field=name, turn=turn_number))
        conversations[name] = value
    record = BattleRecord(
        model_a=obj["model_a"],
        model_b=obj["model_b"],
        winner=obj["winner"],
        question_id=question_id,
        judge=judge,
        tstamp=tstamp,
        conversation_a=conversations["conversation_a"],
        conversation_b=conversations["conversation_b"],
        turn=turns,
        extra={k: v for k, v in obj.items() if k not in KNOWN},
        line=line,
    )
    if record.question_key() is None:
        fail(NO_QUESTION)
    return record


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", type(None): "null"}.get(
        type(value), type(value).__name__
    )


# --- writing -----------------------------------------------------------------------------------


def swapped(record: BattleRecord) -> BattleRecord:
    """The same judgment with model_a and model_b (and their conversations) exchanged."""
    winner = {"model_a": "model_b", "model_b": "model_a"}.get(record.winner, record.winner)
    return replace(
        record,
        model_a=record.model_b,
        model_b=record.model_a,
        winner=winner,
        conversation_a=record.conversation_b,
        conversation_b=record.conversation_a,
    )


def battle_to_dict(record: BattleRecord) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if record.question_id is not None:
        out["question_id"] = record.question_id
    out |= {"model_a": record.model_a, "model_b": record.model_b, "winner": record.winner}
    if record.judge is not None:
        out["judge"] = record.judge
    if record.conversation_a is not None:
        out["conversation_a"] = record.conversation_a
    if record.conversation_b is not None:
        out["conversation_b"] = record.conversation_b
    if record.turn is not None:
        out["turn"] = record.turn
    if record.tstamp is not None:
        out["tstamp"] = record.tstamp
    for key, value in record.extra.items():
        out.setdefault(key, value)
    return out


def write_battles(records: Iterable[BattleRecord]) -> str:
    """JSONL text, one battle per line (UTF-8 kept as is, not \\u-escaped)."""
    return "".join(
        json.dumps(battle_to_dict(record), ensure_ascii=False) + "\n" for record in records
    )


def read_judgments(source: bytes | str) -> list[BattleRecord]:
    """Battles from a file's bytes or text: FastChat's battle JSONL or JSON array, or a Rakuda
    tournament (one JSON object with ``matches``), told apart by their shape."""
    text = _decode(source) if isinstance(source, bytes) else source
    if text.lstrip().startswith("{"):
        try:
            whole = jsonguard.loads(text)
        except (jsonguard.UnsafeJSON, ValueError):
            whole = None  # JSONL (several objects), or broken: parse_battles says where
        if isinstance(whole, dict) and "matches" in whole:
            return rakuda_tournament_to_battles(whole)
    # The caller's bytes as they came: parse_battles reads a one-line str as a path.
    return parse_battles(source.encode("utf-8") if isinstance(source, str) else source)


# --- Rakuda ------------------------------------------------------------------------------------


def rakuda_tournament_to_battles(
    tournament: dict | str | bytes | os.PathLike, *, judge: str | None = None
) -> list[BattleRecord]:
    """Battles from a Rakuda tournament (one JSON object whose ``matches`` hold the judgments).

    ``score`` 1: the first model (``model1_id``) won, 2: the second won, 3: tie; -1 (the referee's
    answer could not be parsed) is dropped. ``judge`` defaults to the stem of the tournament's
    ``metadata.reviewer_path`` (e.g. ``gpt4_reviewer``). Each record gets the question and both
    responses as single-turn conversations, and the referee's comments in ``extra``.
    """
    if isinstance(tournament, os.PathLike | bytes):
        tournament = _read_text(tournament)
    if isinstance(tournament, str):
        try:
            tournament = json.loads(tournament)
        except json.JSONDecodeError as exc:
            raise BattleFormatError(BAD_JSON.format(detail=exc.msg), line=exc.lineno) from None
    if not isinstance(tournament, dict) or not isinstance(tournament.get("matches"), list):
        raise BattleFormatError(NOT_RAKUDA)
    if judge is None:
        reviewer = (tournament.get("metadata") or {}).get("reviewer_path")
        judge = Path(reviewer).stem if isinstance(reviewer, str) and reviewer else "rakuda"
    records = []
    for number, match in enumerate(tournament["matches"], start=1):
        where = f"match {number}"
        if not isinstance(match, dict):
            raise BattleFormatError(NOT_AN_OBJECT.format(kind=_kind(match)), where=where)
        for name in RAKUDA_MATCH_FIELDS:
            if name not in match:
                raise BattleFormatError(MISSING_FIELD.format(field=name), where=where)
        score = match["score"]
        if score == RAKUDA_UNPARSABLE and not isinstance(score, bool):
            continue
        if isinstance(score, bool) or score not in RAKUDA_SCORES:
            raise BattleFormatError(UNKNOWN_SCORE.format(value=score), where=where)
        extra = {}
        if "referee_comments" in match:
            extra["referee_comments"] = match["referee_comments"]
        obj = {
            "question_id": match["question_id"],
            "model_a": match["model1_id"],
            "model_b": match["model2_id"],
            "winner": RAKUDA_SCORES[score],
            "judge": judge,
            "conversation_a": _single_turn(match["question"], match["response1"]),
            "conversation_b": _single_turn(match["question"], match["response2"]),
            **extra,
        }
        records.append(_record(obj, line=None, where=where))
    return records


def _single_turn(question: Any, answer: Any) -> list[Turn]:
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
