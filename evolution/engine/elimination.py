"""Elimination of failed evolutions: each rule is a pure function returning a ``Verdict``
(dropped?, rule name, detail). Plain module, no Django.

Rules on the instruction come first (they decide whether the instruction is worth answering),
then rules on the answer:

1. ``no_new_information``: the evolved instruction gains nothing over its parent: equal to it
   or contained in it, or (no judge) so similar that fewer than ``min_new_chars`` characters are
   new; with a judge, its verdict decides what the cheap check leaves open.
4. ``copies_prompt``: it copies words of the rewrite prompt itself (the labels of the prompt
   templates, 「指示文」, 「書き換え」 ...) that its parent did not have.
5. ``duplicate``: the same as, or nearly the same as, another instruction: a source row other
   than its parent (its own parent is rule 1's), or one already kept in the run.
6. ``fragment``: the evolved instruction is too little to be one (minimum content): fewer than
   ``min_content_chars`` characters once punctuation, whitespace and stop words are taken off
   (「if」, 「と」, "Here it is:"), or under ``min_length_ratio`` of its parent's length. A
   rewrite that came back cut off is no instruction, with a judge or without.
2. ``refusal``: the answer is short and apologises or refuses.
3. ``empty_answer``: the answer has nothing but punctuation, whitespace and stop words.

Texts are compared after NFKC normalisation with whitespace removed, so full-width and
half-width spellings and line breaks do not hide a copy.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from judging.engine import verdicts as judge_verdicts

from .operations import GIVEN, REWRITTEN

NO_NEW_INFORMATION, REFUSAL, EMPTY_ANSWER = "no_new_information", "refusal", "empty_answer"
COPIES_PROMPT, DUPLICATE, FRAGMENT = "copies_prompt", "duplicate", "fragment"
RULES = (NO_NEW_INFORMATION, REFUSAL, EMPTY_ANSWER, COPIES_PROMPT, DUPLICATE, FRAGMENT)
INSTRUCTION_RULES = (FRAGMENT, NO_NEW_INFORMATION, COPIES_PROMPT, DUPLICATE)
ANSWER_RULES = (REFUSAL, EMPTY_ANSWER)

# Thresholds a run may override (EvolutionRun.rules).
DEFAULTS = {
    # no_new_information: at least this similar to the parent, and fewer new characters.
    "similarity": 0.8,
    "min_new_chars": 6,
    # duplicate: at least this similar to another instruction (1.0: exact copies only).
    "near_duplicate": 0.92,
    # refusal: an apology or refusal this short or shorter.
    "refusal_max_chars": 120,
    # fragment: fewer content characters than this, or shorter than this share of the parent.
    "min_content_chars": 8,
    "min_length_ratio": 0.25,
}
BAD_RULES = "unknown elimination setting(s): {names}; known: " + ", ".join(DEFAULTS)
BAD_VALUE = "elimination setting {name} must be a number between {low} and {high} (got {value!r})"
_RANGES = {
    "similarity": (0.0, 1.0),
    "min_new_chars": (0, 10_000),
    "near_duplicate": (0.0, 1.0),
    "refusal_max_chars": (0, 100_000),
    "min_content_chars": (0, 10_000),
    "min_length_ratio": (0.0, 1.0),
}

REFUSAL_MARKERS = (
    "申し訳",
    "できません",
    "お答えできません",
    "お答えしかねます",
    "AIとして",
    "AI として",
    "言語モデルとして",
    "sorry",
    "i cannot",
    "i can't",
    "i am unable",
    "as an ai",
)
# Words of the rewrite prompts that have no place in an instruction made from one; the labels
# the templates write (``#...#``) are added from the templates themselves (``prompt_markers``).
PROMPT_WORDS = ("指示文", "書き換え", "書き換えた指示", "与えられた指示", GIVEN, REWRITTEN)
_JA_STOP = (
    # Japanese particles, copulas and demonstratives that say nothing alone.
    "は が を に へ と で や の も か ね よ な わ ぞ から まで より です ます でした ました "
    "だ である こと もの これ それ あれ この その あの ここ そこ ある いる する なる 等 など"
)
_EN_STOP = "a an the of to in on at is are was were be and or but it this that i you he she we they"
STOP_WORDS = tuple(_JA_STOP.split()) + tuple(_EN_STOP.split()) + ("ok", "yes", "no")
_PUNCTUATION = re.compile(r"[\s\W_]+", re.UNICODE)
_LABEL = re.compile(r"#[^#\n]{1,30}#")


@dataclass(frozen=True)
class Verdict:
    dropped: bool
    rule: str = ""
    detail: str = ""


KEPT = Verdict(False)


def rules_check(values: dict | None) -> dict:
    """The run's thresholds: ``DEFAULTS`` overridden by ``values`` (ValueError if unknown or out
    of range)."""
    values = dict(values or {})
    unknown = sorted(set(values) - set(DEFAULTS))
    if unknown:
        raise ValueError(BAD_RULES.format(names=", ".join(unknown)))
    for name, value in values.items():
        low, high = _RANGES[name]
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not low <= value <= high
        ):
            raise ValueError(BAD_VALUE.format(name=name, low=low, high=high, value=value))
    return {**DEFAULTS, **values}


def normal(text: str) -> str:
    """NFKC, lower case, no whitespace: what the comparisons look at."""
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", text or "")).lower()


def similarity(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, normal(a), normal(b), autojunk=False).ratio()


def new_chars(parent: str, evolved: str) -> int:
    """Characters of ``evolved`` outside the blocks it shares with ``parent``."""
    a, b = normal(parent), normal(evolved)
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    return len(b) - sum(block.size for block in matcher.get_matching_blocks())


# --- rule 1 ------------------------------------------------------------------------------------


def no_new_information(
    parent: str, evolved: str, settings: dict, judge_gains: bool | None = None
) -> Verdict:
    """Rule 1. ``judge_gains``: the judge's verdict (True: B adds information), None when there
    is no judge or its output did not parse (the cheap similarity check then decides)."""
    a, b = normal(parent), normal(evolved)
    if b == a:
        return Verdict(True, NO_NEW_INFORMATION, "the same as its parent")
    if b in a:
        return Verdict(True, NO_NEW_INFORMATION, "contained in its parent")
    if judge_gains is not None:
        if judge_gains:
            return KEPT
        return Verdict(True, NO_NEW_INFORMATION, "the judge found no information added")
    ratio = similarity(parent, evolved)
    added = new_chars(parent, evolved)
    if ratio >= settings["similarity"] and added < settings["min_new_chars"]:
        return Verdict(
            True,
            NO_NEW_INFORMATION,
            f"similarity {ratio:.2f} to its parent, {added} new character(s)",
        )
    return KEPT


# The judge's question for rule 1: does B add information over A? Its last line, read as a
# pairwise verdict (judging/engine/verdicts.parse_pairwise, format last_line_123): 1 yes, 2 no.
GAIN_JUDGE = judge_verdicts.JudgeTemplate(
    name="evolution_gain",
    version=1,
    kind=judge_verdicts.PAIRWISE,
    verdict_format=judge_verdicts.LAST_LINE_123,
    template="""\
指示Aと、それを作り直した指示Bがあります。BはAにない情報や条件を加えていますか。
[指示A]
{{ answer_1 }}
[指示B]
{{ answer_2 }}
最後の行に、加えていれば 1、加えていなければ 2 とだけ書いてください。
""",
)


def gain_judge_prompt(parent: str, evolved: str) -> str:
    """The judge prompt for rule 1 (one user turn, without its closing newline)."""
    return judge_verdicts.render(
        GAIN_JUDGE, question="", answer_1=parent.strip(), answer_2=evolved.strip()
    ).strip()


def gain_judge_reads(output: str) -> bool | None:
    """True (B adds information), False (it does not), None (unparsable)."""
    said = judge_verdicts.parse_pairwise(GAIN_JUDGE.verdict_format, output)
    if said is None:
        return None
    return said == judge_verdicts.FIRST


# --- rule 6 ------------------------------------------------------------------------------------


def _content(text: str) -> str:
    """The text without punctuation, whitespace and stop words (what carries meaning)."""
    chunks = _PUNCTUATION.split(unicodedata.normalize("NFKC", text or "").lower())
    return "".join(c for c in chunks if c and not _only_stop_words(c))


def fragment(parent: str, evolved: str, settings: dict) -> Verdict:
    """Rule 6: too little content to be an instruction (「if」), absolutely or beside its parent."""
    content = _content(evolved)
    if len(content) < settings["min_content_chars"]:
        return Verdict(
            True,
            FRAGMENT,
            f"{len(content)} content character(s), under {settings['min_content_chars']}",
        )
    a, b = normal(parent), normal(evolved)
    if a and len(b) < settings["min_length_ratio"] * len(a):
        return Verdict(
            True,
            FRAGMENT,
            f"{len(b)} characters, under {settings['min_length_ratio']:g} of its parent's {len(a)}",
        )
    return KEPT


# --- rule 4 ------------------------------------------------------------------------------------


def prompt_markers(templates: Iterable[str]) -> tuple[str, ...]:
    """What rule 4 looks for: ``PROMPT_WORDS`` and every ``#label#`` the templates write."""
    found = dict.fromkeys(PROMPT_WORDS)
    for template in templates:
        found.update(dict.fromkeys(_LABEL.findall(template)))
    return tuple(found)


def copies_prompt(parent: str, evolved: str, markers: Sequence[str]) -> Verdict:
    """Rule 4: a marker in the evolved instruction that its parent did not already have."""
    a, b = normal(parent), normal(evolved)
    copied = [m for m in markers if normal(m) in b and normal(m) not in a]
    if copied:
        return Verdict(True, COPIES_PROMPT, "copies the rewrite prompt: " + "、".join(copied))
    return KEPT


# --- rule 5 ------------------------------------------------------------------------------------


def duplicate(evolved: str, others: Iterable[tuple[str, str]], settings: dict) -> Verdict:
    """Rule 5. ``others``: (label, text) of the instructions to compare with: source rows but
    the parent, and the run's kept instructions so far."""
    b = normal(evolved)
    threshold = settings["near_duplicate"]
    for label, text in others:
        a = normal(text)
        if a == b:
            return Verdict(True, DUPLICATE, f"the same as {label}")
        # Cheap bounds first: the ratio cannot reach the threshold when lengths differ too much.
        if threshold < 1.0 and a and 2 * min(len(a), len(b)) / (len(a) + len(b)) >= threshold:
            ratio = difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()
            if ratio >= threshold:
                return Verdict(True, DUPLICATE, f"similarity {ratio:.2f} to {label}")
    return KEPT


# --- rules 2 and 3 -----------------------------------------------------------------------------


def refusal(answer: str, settings: dict) -> Verdict:
    """Rule 2: a short answer that apologises or refuses."""
    text = unicodedata.normalize("NFKC", answer or "").strip()
    if len(text) > settings["refusal_max_chars"]:
        return KEPT
    lowered = text.lower()
    hits = [m for m in REFUSAL_MARKERS if unicodedata.normalize("NFKC", m).lower() in lowered]
    if hits:
        return Verdict(True, REFUSAL, f"{len(text)} characters, says: " + "、".join(hits))
    return KEPT


_STOP_SET = frozenset(STOP_WORDS)
_STOP_LONGEST = max(len(w) for w in STOP_WORDS)


def _only_stop_words(chunk: str) -> bool:
    """Whether ``chunk`` splits wholly into stop words (Japanese writes no spaces between them).
    ``ends[i]``: the first i characters split so; linear in the chunk, no backtracking."""
    ends = [True] + [False] * len(chunk)
    for i in range(1, len(chunk) + 1):
        ends[i] = any(
            ends[i - n] and chunk[i - n : i] in _STOP_SET
            for n in range(1, min(i, _STOP_LONGEST) + 1)
        )
    return ends[-1]


def empty_answer(answer: str) -> Verdict:
    """Rule 3: nothing but punctuation, whitespace and stop words (an empty answer included)."""
    chunks = [c for c in _PUNCTUATION.split(unicodedata.normalize("NFKC", answer or "")) if c]
    if all(_only_stop_words(chunk.lower()) for chunk in chunks):
        shown = (answer or "").strip()[:40]
        return Verdict(True, EMPTY_ANSWER, f"only punctuation and stop words: {shown!r}")
    return KEPT


# --- all of them -------------------------------------------------------------------------------


def instruction_verdict(
    parent: str,
    evolved: str,
    *,
    others: Iterable[tuple[str, str]],
    markers: Sequence[str],
    settings: dict,
    judge_gains: bool | None = None,
) -> Verdict:
    """The first instruction rule that drops ``evolved`` (rules 6, 1, 4, 5), or ``KEPT``."""
    for verdict in (
        fragment(parent, evolved, settings),
        no_new_information(parent, evolved, settings, judge_gains),
        copies_prompt(parent, evolved, markers),
    ):
        if verdict.dropped:
            return verdict
    return duplicate(evolved, others, settings)


def answer_verdict(answer: str, settings: dict) -> Verdict:
    """The first answer rule that drops ``answer`` (rules 2, 3), or ``KEPT``."""
    verdict = refusal(answer, settings)
    return verdict if verdict.dropped else empty_answer(answer)
