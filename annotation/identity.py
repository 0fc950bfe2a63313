"""Find spans of an answer that may give its model away, and mask them (plain Python).

An answer that says 「私はLINEによって開発されたAIです」 unblinds the pair however carefully the
page hides names. The finder is deliberately generous (admins review every flag); masking only
replaces what an admin chose.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

MASK = "[…]"

NAME = "name"
MAKER = "maker"
WORD = "word"
SELF_INTRO = "self_intro"
DEVELOPED_BY = "developed_by"

# A clause, not a paragraph: stop at sentence ends and line breaks.
_CLAUSE = r"[^。．！？!?\n]"
_PATTERNS = [
    # 私はXです / 僕はXです / 私の名前はXです
    (
        SELF_INTRO,
        re.compile(
            rf"(?:私|わたし|わたくし|僕|ぼく)(?:の名前)?は{_CLAUSE}{{1,40}}?(?:です|と申します)"
        ),
    ),
    # XによってAIが開発された / Xが開発した / Xにより作られた
    (
        DEVELOPED_BY,
        re.compile(
            rf"{_CLAUSE}{{1,40}}?(?:によって|により|が)"
            r"(?:開発|作成|訓練|学習|構築|作ら|作っ)(?:された|されました|した|しました|れた|れました|た)"
        ),
    ),
    (
        SELF_INTRO,
        re.compile(
            r"\bI(?:'m| am) (?:an? )?(?:AI|assistant|language model|chatbot|[A-Z][\w.-]+)"
            rf"{_CLAUSE}{{0,40}}",
        ),
    ),
    (
        DEVELOPED_BY,
        re.compile(
            r"\b(?:developed|created|trained|built|made) by (?:the )?[A-Z][\w.-]*"
            r"(?: [A-Z][\w.-]*)*",
        ),
    ),
]


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    kind: str
    text: str


# Katakana (with the long-vowel mark and half-width forms): a word written in it runs on until
# the script changes, so ``ライン`` is a word in 「ラインが開発」 but not inside 「オンライン」.
_KATAKANA = "\u30a0-\u30ff\uff66-\uff9f"


def _word_pattern(word: str) -> re.Pattern[str]:
    """A word, not part of a longer Latin word (``LINE`` must not match ``Pipeline``) nor, when
    it starts or ends in katakana, of a longer katakana one (``ライン`` in ``ガイドライン``).

    All-capital words (LINE, META) match only in capitals, so ``line`` in "a line of code" is not
    flagged; others match in any case (``rinna``, ``Rinna``).
    """
    flags = 0 if word.isupper() else re.IGNORECASE
    before = "A-Za-z0-9" + (_KATAKANA if re.match(f"[{_KATAKANA}]", word) else "")
    after = "A-Za-z0-9" + (_KATAKANA if re.search(f"[{_KATAKANA}]$", word) else "")
    return re.compile(rf"(?<![{before}]){re.escape(word)}(?![{after}])", flags)


def model_terms(models: Iterable, *, words: Iterable[str] = ()):
    """``identity_terms`` of models (objects with ``name``, ``name_or_path``, ``maker``,
    ``aliases`` and ``maker_aliases``; a served model's ``endpoint_model`` and a
    ``display_label`` too where they have them): a model's aliases, label and served model id
    count as its name, its maker's aliases (りんな, サイバーエージェント...) as its maker."""
    models = list(models)
    return identity_terms(
        names=[n for m in models for n in (m.name, m.name_or_path, *m.aliases, *_more(m)) if n],
        makers=[n for m in models for n in (m.maker, *m.maker_aliases) if n],
        words=words,
    )


def _more(model) -> tuple[str, ...]:
    return tuple(getattr(model, f, "") for f in ("endpoint_model", "display_label"))


def identity_terms(*, names: Iterable[str], makers: Iterable[str], words: Iterable[str]):
    """(kind, term) pairs to look for: names and paths are split at "/" too (org and repo)."""
    terms: dict[str, str] = {}
    for word in words:
        terms.setdefault(word.strip(), WORD)
    for maker in makers:
        terms[maker.strip()] = MAKER
    for name in names:
        name = name.strip()
        terms[name] = NAME
        for part in name.split("/"):
            terms.setdefault(part.strip(), NAME)
    # Very short Latin terms ("AI", "7b") would flag half the answers; two kanji or kana name
    # something (楽天, メタ).
    return [
        (kind, term) for term, kind in terms.items() if len(term) >= (3 if term.isascii() else 2)
    ]


def find_identity_spans(text: str, terms: Iterable[tuple[str, str]]) -> list[Span]:
    """Every span that may identify a model, sorted; overlapping spans are all reported."""
    found: dict[tuple[int, int], Span] = {}
    for kind, term in terms:
        for match in _word_pattern(term).finditer(text):
            found.setdefault(match.span(), Span(*match.span(), kind, match.group()))
    for kind, pattern in _PATTERNS:
        for match in pattern.finditer(text):
            found.setdefault(match.span(), Span(*match.span(), kind, match.group()))
    return sorted(found.values(), key=lambda s: (s.start, s.end))


def apply_masks(text: str, spans: Iterable[tuple[int, int]]) -> str:
    """The text with each span (merged where they overlap) replaced by ``[…]``."""
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        start, end = max(0, start), min(len(text), end)
        if end <= start:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    out, pos = [], 0
    for start, end in merged:
        out.append(text[pos:start])
        out.append(MASK)
        pos = end
    out.append(text[pos:])
    return "".join(out)
