"""Judge prompts rendered, and a judge's output read back as a verdict. Plain module, no Django.

A judge prompt is Jinja2 source rendered in the same sandbox as the prompt templates
(StrictUndefined, so a misspelt variable is an error, not an empty string) over:
- pairwise: ``question``, ``answer_1``, ``answer_2``;
- grading: ``question``, ``answer``;
- both: ``reference`` and ``criteria`` (empty strings when the question has none);
- both: ``turns``, the whole conversation, one mapping per user turn in order (``question``,
  ``reference`` and ``answer_1`` / ``answer_2``, or ``answer``), its last entry being the flat
  values above; and ``history``, the same without the last turn ([] for one turn). A prompt
  that shows ``history`` or ``turns`` is a whole-conversation (multi-turn) prompt.

Verdict formats (``JudgePrompt.verdict_format``):
- ``last_line_123``: the last non-empty line, once labels (``判定:``, ``Verdict:``) and markup
  (``**``, brackets, a closing 。) are taken off, is exactly 1, 2 or 3 (full-width digits too):
  answer 1 better, answer 2 better, tie.
- ``brackets_abc``: MT-Bench's, the last ``[[A]]``, ``[[B]]`` or ``[[C]]`` (tie) in the output.
- ``brackets_two_ratings``: FastChat's pairwise-with-scores form, the last
  ``[[rating_a,rating_b]]`` (``[[8, 6.5]]``): the higher rating wins, ratings within
  ``TIE_DELTA`` (0.1, FastChat's own) are a tie.
- ``score``: grading, the last integer in ``[lo, hi]`` on the last line that has one
  (``評価: 4``, ``[[4]]``, ``Rating: 4/5`` reads 4).
- ``brackets_rating``: MT-Bench's single grading, the last ``[[n]]`` (``[[8.5]]`` too) in
  ``[lo, hi]``; a rating anywhere else is not read.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from jinja2 import TemplateError

from generation.engine.render import sandboxed

PAIRWISE, GRADING = "pairwise", "grading"
LAST_LINE_123, BRACKETS_ABC, SCORE = "last_line_123", "brackets_abc", "score"
BRACKETS_RATING = "brackets_rating"
BRACKETS_TWO_RATINGS = "brackets_two_ratings"
FORMATS = {
    PAIRWISE: (LAST_LINE_123, BRACKETS_ABC, BRACKETS_TWO_RATINGS),
    GRADING: (SCORE, BRACKETS_RATING),
}
# Two ratings this close are a tie (FastChat's gen_judgment reads [[rating_a,rating_b]] so).
TIE_DELTA = 0.1
CONVERSATION = ("turns", "history")
VARIABLES = {
    PAIRWISE: ("question", "answer_1", "answer_2", "reference", "criteria", *CONVERSATION),
    GRADING: ("question", "answer", "reference", "criteria", *CONVERSATION),
}
# The per-turn values of ``turns`` / ``history`` entries.
TURN_KEYS = {
    PAIRWISE: ("question", "answer_1", "answer_2", "reference"),
    GRADING: ("question", "answer", "reference"),
}

# What a pairwise verdict says, in the order the judge saw the answers.
FIRST, SECOND, TIE = "first", "second", "tie"

_LABEL = re.compile(
    r"^(?:判定|評価|結論|最終判定|答え|verdict|answer|final verdict)\s*[:：]\s*", re.I
)
_MARKUP = "*_`'\"[]()（）「」【】。.、 \t"
_BRACKETS = re.compile(r"\[\[([ABC])\]\]")
_RATING = re.compile(r"\[\[\s*([0-9]+(?:\.[0-9]+)?)\s*\]\]")
_TWO_RATINGS = re.compile(r"\[\[\s*([0-9]+(?:\.[0-9]+)?)\s*,\s*([0-9]+(?:\.[0-9]+)?)\s*\]\]")
_INTEGER = re.compile(r"(?<![0-9.])([0-9]+)(?![0-9]|\.[0-9])")  # whole numbers only: 4.5 is none


@dataclass(frozen=True)
class JudgeTemplate:
    """A judge prompt (mirrors a ``JudgePrompt`` row)."""

    name: str
    version: int
    kind: str
    template: str
    verdict_format: str
    system_prompt: str = ""
    score_min: int = 1
    score_max: int = 5
    # Shows the whole conversation (``turns`` / ``history``), not only the last turn.
    multi_turn: bool = False


def render(judge: JudgeTemplate, **values) -> str:
    """The judge prompt for one comparison in one order, or one answer (``VARIABLES``).

    ``turns`` (the whole conversation, as ``TURN_KEYS`` mappings) fills the flat values from
    its last entry when they are not given, and ``history``; without it the conversation is
    the one turn the flat values make."""
    wanted = VARIABLES[judge.kind]
    unknown = set(values) - set(wanted)
    if unknown:
        raise ValueError(f"judge prompt {judge.name}: unknown variables {sorted(unknown)}")
    flat = [name for name in wanted if name not in CONVERSATION]
    turns = [dict(turn) for turn in values.get("turns") or ()]
    if turns:
        last = turns[-1]
        filled = {name: values.get(name) or last.get(name) or "" for name in flat}
    else:
        filled = {name: values.get(name) or "" for name in flat}
        turns = [{key: filled[key] for key in TURN_KEYS[judge.kind]}]
    for turn in turns:
        for key in TURN_KEYS[judge.kind]:
            turn.setdefault(key, "")
    filled.update(turns=turns, history=turns[:-1])
    return sandboxed(judge.template).render(**filled).strip() + "\n"


def problems(judge: JudgeTemplate) -> dict[str, str]:
    """Field -> what is wrong, rendering it once with sample values (empty when it is fine)."""
    found: dict[str, str] = {}
    if judge.kind not in FORMATS:
        return {"kind": f"unknown kind {judge.kind!r}; use pairwise or grading"}
    if judge.verdict_format not in FORMATS[judge.kind]:
        found["verdict_format"] = (
            f"a {judge.kind} prompt reads one of: {', '.join(FORMATS[judge.kind])}"
        )
    if judge.kind == GRADING and not judge.score_min < judge.score_max:
        found["score_max"] = "the highest score must be above the lowest"
    needed = ("answer_1", "answer_2") if judge.kind == PAIRWISE else ("answer",)
    sample = sample_turns(judge.kind, 2 if judge.multi_turn else 1)
    try:
        text = render(judge, turns=sample)
    except TemplateError as exc:
        found["template"] = f"the Jinja source failed: {exc}"
        return found
    shown = sample if judge.multi_turn else sample[-1:]
    missing = [
        f"{name} of turn {n}" if judge.multi_turn else name
        for n, turn in enumerate(shown, 1)
        for name in ("question", *needed)
        if turn[name] not in text
    ]
    if missing:
        found["template"] = "the prompt never shows: " + ", ".join(missing)
    return found


def sample_turns(kind: str, count: int) -> list[dict[str, str]]:
    """A conversation of ``count`` turns whose every value names itself (``<answer_1 of 2>``)."""
    return [{key: f"<{key} of {n}>" for key in TURN_KEYS[kind]} for n in range(1, count + 1)]


def shows_history(judge: JudgeTemplate) -> bool:
    """Whether the prompt shows the turns before the last one (rendered on a sample)."""
    sample = sample_turns(judge.kind, 2)
    try:
        text = render(judge, turns=sample)
    except (TemplateError, ValueError):
        return False
    return sample[0]["question"] in text


def _normal(text: str) -> str:
    return unicodedata.normalize("NFKC", text or "")


def parse_pairwise(verdict_format: str, output: str) -> str | None:
    """FIRST, SECOND or TIE as the output says, or None when it does not say (unparsable)."""
    text = _normal(output)
    if verdict_format == BRACKETS_ABC:
        found = _BRACKETS.findall(text)
        return {"A": FIRST, "B": SECOND, "C": TIE}[found[-1]] if found else None
    if verdict_format == BRACKETS_TWO_RATINGS:
        pairs = _TWO_RATINGS.findall(text)
        if not pairs:
            return None
        first, second = (float(n) for n in pairs[-1])
        if abs(first - second) <= TIE_DELTA:
            return TIE
        return FIRST if first > second else SECOND
    if verdict_format != LAST_LINE_123:
        raise ValueError(f"not a pairwise verdict format: {verdict_format!r}")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return None
    last = _LABEL.sub("", lines[-1].strip(_MARKUP)).strip(_MARKUP)
    return {"1": FIRST, "2": SECOND, "3": TIE}.get(last)


def parse_rating(output: str, lowest: float, highest: float) -> float | None:
    """MT-Bench's ``[[rating]]``: the last ``[[n]]`` in the output, when in range; else None."""
    found = _RATING.findall(_normal(output))
    if not found:
        return None
    value = float(found[-1])
    return value if lowest <= value <= highest else None


def parse_grade(verdict_format: str, output: str, lowest: int, highest: int) -> float | None:
    """A grading verdict read by its prompt's format (None: unparsable)."""
    if verdict_format == BRACKETS_RATING:
        return parse_rating(output, lowest, highest)
    if verdict_format != SCORE:
        raise ValueError(f"not a grading verdict format: {verdict_format!r}")
    return parse_score(output, lowest, highest)


def parse_score(output: str, lowest: int, highest: int) -> int | None:
    """The last integer in range on the last line that has one, or None."""
    for line in reversed(_normal(output).splitlines()):
        line = re.sub(r"/\s*[0-9]+", "", line)  # "4/5" reads 4, not 5
        scores = [int(n) for n in _INTEGER.findall(line) if lowest <= int(n) <= highest]
        if scores:
            return scores[-1]
    return None


def in_comparison_terms(said: str, first: str) -> str:
    """A verdict on the shown order (FIRST / SECOND / TIE) as the comparison's a / b / tie,
    given which of its answers (``first``: a or b) was shown as answer 1."""
    if said == TIE:
        return "tie"
    other = "b" if first == "a" else "a"
    return first if said == FIRST else other
