"""Judge prompts rendered, and a judge's output read back as a verdict. Plain module, no Django.

A judge prompt is Jinja2 source rendered in the same sandbox as the prompt templates
(StrictUndefined, so a misspelt variable is an error, not an empty string) over:
- pairwise: ``question``, ``answer_1``, ``answer_2``;
- grading: ``question``, ``answer``;
- both: ``reference`` and ``criteria`` (empty strings when the question has none).

Verdict formats (``JudgePrompt.verdict_format``):
- ``last_line_123``: the last non-empty line, once labels (``判定:``, ``Verdict:``) and markup
  (``**``, brackets, a closing 。) are taken off, is exactly 1, 2 or 3 (full-width digits too):
  answer 1 better, answer 2 better, tie.
- ``brackets_abc``: MT-Bench's, the last ``[[A]]``, ``[[B]]`` or ``[[C]]`` (tie) in the output.
- ``score``: grading, the last integer in ``[lo, hi]`` on the last line that has one
  (``評価: 4``, ``[[4]]``, ``Rating: 4/5`` reads 4).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from jinja2 import TemplateError

from generation.engine.render import sandboxed

PAIRWISE, GRADING = "pairwise", "grading"
LAST_LINE_123, BRACKETS_ABC, SCORE = "last_line_123", "brackets_abc", "score"
FORMATS = {PAIRWISE: (LAST_LINE_123, BRACKETS_ABC), GRADING: (SCORE,)}
VARIABLES = {
    PAIRWISE: ("question", "answer_1", "answer_2", "reference", "criteria"),
    GRADING: ("question", "answer", "reference", "criteria"),
}

# What a pairwise verdict says, in the order the judge saw the answers.
FIRST, SECOND, TIE = "first", "second", "tie"

_LABEL = re.compile(
    r"^(?:判定|評価|結論|最終判定|答え|verdict|answer|final verdict)\s*[:：]\s*", re.I
)
_MARKUP = "*_`'\"[]()（）「」【】。.、 \t"
_BRACKETS = re.compile(r"\[\[([ABC])\]\]")
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


def render(judge: JudgeTemplate, **values: str) -> str:
    """The judge prompt for one comparison in one order, or one answer (``VARIABLES``)."""
    wanted = VARIABLES[judge.kind]
    unknown = set(values) - set(wanted)
    if unknown:
        raise ValueError(f"judge prompt {judge.name}: unknown variables {sorted(unknown)}")
    filled = {name: values.get(name) or "" for name in wanted}
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
    sample = {name: f"<{name}>" for name in VARIABLES[judge.kind]}
    try:
        text = render(judge, **sample)
    except TemplateError as exc:
        found["template"] = f"the Jinja source failed: {exc}"
        return found
    needed = ("answer_1", "answer_2") if judge.kind == PAIRWISE else ("answer",)
    missing = [name for name in ("question", *needed) if sample[name] not in text]
    if missing:
        found["template"] = "the prompt never shows: " + ", ".join(missing)
    return found


def _normal(text: str) -> str:
    return unicodedata.normalize("NFKC", text or "")


def parse_pairwise(verdict_format: str, output: str) -> str | None:
    """FIRST, SECOND or TIE as the output says, or None when it does not say (unparsable)."""
    text = _normal(output)
    if verdict_format == BRACKETS_ABC:
        found = _BRACKETS.findall(text)
        return {"A": FIRST, "B": SECOND, "C": TIE}[found[-1]] if found else None
    if verdict_format != LAST_LINE_123:
        raise ValueError(f"not a pairwise verdict format: {verdict_format!r}")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return None
    last = _LABEL.sub("", lines[-1].strip(_MARKUP)).strip(_MARKUP)
    return {"1": FIRST, "2": SECOND, "3": TIE}.get(last)


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
