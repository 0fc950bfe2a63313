"""Find spans of an answer that may give its model away, and mask them (plain Python).

An answer that says 「私はLINEによって開発されたAIです」 unblinds the pair however carefully the
page hides names. The finder is deliberately generous (admins review every flag); masking only
replaces what an admin chose.
"""

from __future__ import annotations

import re
import unicodedata
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
_I_JA = r"(?:私|わたし|わたくし|僕|ぼく)"
# What a model is when it speaks of itself (an AI, a language model, an assistant).
_AI_JA = r"(?:AI|ＡＩ|人工知能|言語モデル|アシスタント|チャットボット|対話システム)"
_AI_EN = (
    r"(?:AI|artificial intelligence|(?:large )?language model|assistant|chatbot|computer program)"
)
_ADJ_EN = (
    r"(?:(?:just|only|simply|merely|a|an|large|artificial|AI|virtual|digital|helpful|"
    r"responsible|ethical|conversational|and)[ ,]+)*"
)

# Candidates, each with the rule that keeps it (``_self_span_kept``): INTRO (私はXです) is kept
# when X is a model term or a Latin name the question did not give; AI (the pattern names an AI
# itself) always; MADE (developed by) when it speaks of the model or names a term.
_INTRO, _AI, _MADE = "intro", "ai", "made"
_PATTERNS = [
    (
        SELF_INTRO,
        _INTRO,
        re.compile(
            rf"{_I_JA}(?:の名前)?は{_CLAUSE}{{1,40}}?(?:です|と申します|といいます|と言います)"
        ),
    ),
    # 私はAIアシスタントのため / 私はOpenAIが開発したAI言語モデルです
    (
        SELF_INTRO,
        _AI,
        re.compile(
            rf"{_I_JA}(?:自身)?(?:は|が){_CLAUSE}{{0,24}}?{_AI_JA}+"
            r"(?:です|であ|だか|なので|のため|ですので|ですから|に過ぎ|にすぎ|として)"
        ),
    ),
    # AI言語モデルとして / 言語モデルである私
    (
        SELF_INTRO,
        _AI,
        re.compile(
            r"(?:AI|人工知能)(?:言語モデル|アシスタント|チャットボット)として"
            rf"|(?:言語モデル|アシスタント|チャットボット|AI)である{_I_JA}"
        ),
    ),
    (SELF_INTRO, _AI, re.compile(rf"\bI(?:['’]m| am) {_ADJ_EN}{_AI_EN}\b")),
    (SELF_INTRO, _AI, re.compile(rf"\b[Aa]s an? {_ADJ_EN}{_AI_EN}\b")),
    # XによってAIが開発された / Xが開発した / Xにより作られた
    (
        DEVELOPED_BY,
        _MADE,
        re.compile(
            rf"{_CLAUSE}{{1,40}}?(?:によって|により|が)"
            r"(?:開発|作成|訓練|学習|構築|作ら|作っ)(?:された|されました|した|しました|れた|れました|た)"
        ),
    ),
    (
        DEVELOPED_BY,
        _MADE,
        re.compile(
            r"\b(?:developed|created|trained|built|made) by (?:the )?[A-Z][\w.-]*"
            r"(?: [A-Z][\w.-]*)*",
        ),
    ),
]
# A self-reference inside a developed-by clause: the model, not a government, was made.
_SELF_MARK = re.compile(
    rf"{_I_JA}|言語モデル|アシスタント|チャットボット|このAI|このモデル|\b(?:I|me|my)\b"
)
_AI_SELF = re.compile(
    r"(?:AI|人工知能)(?:言語モデル|アシスタント|チャットボット)|開発され|訓練され|学習され|"
    r"\b(?:developed|trained|created) by\b"
)
# What a developed-by clause made, right after it, when that is an AI (the answer's own kind).
_MADE_AN_AI = re.compile(
    r"\s*(?:AI|人工知能|(?:大規模)?言語モデル|チャットボット|(?:AI)?アシスタント)(?:です|であり|で[、,])"
)
# 私は「X」です: the introduced name, to compare with the question.
_INTRODUCED = re.compile(
    rf"^{_I_JA}(?:の名前)?は[「『\s]*(?P<name>.+?)[」』\s]*(?:です|と申します|といいます|と言います)$"
)
_LATIN_NAME = re.compile(r"^[A-Za-z][\w.\- ]{1,40}$")
# The question asks the model to play someone: 〜になりきって, 〜のふりをして, 〜として答えて,
# 〜を演じて, あなたは〜です, "act as", "pretend to be", "role-play".
_ROLE_PLAY = re.compile(
    r"なりき|(?:ふり|フリ)を|として(?:振る舞|ふるま|答え|回答|返答|話|書|会話)|演じ|役を|役に|"
    r"ロールプレイ|あなたは[^。\n]{1,40}(?:です|だ)(?:。|\n|$)|"
    r"(?i:\bact as\b|\bpretend\b|role-?play|\bimagine you are\b|\byou are (?:a|an|the)\b)"
)


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    kind: str
    text: str


# Katakana (with the long-vowel mark and half-width forms): a word written in it runs on until
# the script changes, so ``ライン`` is a word in 「ラインが開発」 but not inside 「オンライン」.
_KATAKANA = "\u30a0-\u30ff\uff66-\uff9f"


def _word_pattern(word: str, *, exact_case: bool = False) -> re.Pattern[str]:
    """A word, not part of a longer Latin word (``LINE`` must not match ``Pipeline``) nor, when
    it starts or ends in katakana, of a longer katakana one (``ライン`` in ``ガイドライン``).

    All-capital words (LINE, META) match only in capitals, so ``line`` in "a line of code" is not
    flagged; others match in any case (``rinna``, ``Rinna``) unless ``exact_case``.
    """
    flags = 0 if exact_case or word.isupper() else re.IGNORECASE
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


def _norm(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold()


def asks_for_role(question: str) -> bool:
    """Whether the question asks the model to play someone (「のび太になりきって」, "act as")."""
    return bool(_ROLE_PLAY.search(unicodedata.normalize("NFKC", question or "")))


def find_identity_spans(
    text: str, terms: Iterable[tuple[str, str]], *, question: str = ""
) -> list[Span]:
    """Every span that may identify a model, sorted; overlapping spans are all reported.

    ``question`` is what the model was asked (every user turn): a term the question itself
    holds (「Googleの検索について」) is no self-identification, and neither is a self-introduction
    of a role the question asks for (「のび太になりきって」, then 「私はのび太です」). Settings'
    identity words (other makers' names: Google, Meta) count only in a sentence that speaks of
    the model itself and, with a capital, only as written ("stability" in running English is
    no maker); a self-introduction is kept only when it names an AI,
    a model term or a Latin name, and a developed-by clause only when it speaks of the model
    or names a term (not 「首相官邸のスタッフが作成した文書」).
    """
    asked = _norm(question or "")
    role_play = asks_for_role(question or "")
    found: dict[tuple[int, int], Span] = {}
    for kind, term in terms:
        if asked and _norm(term) in asked:
            continue
        exact = kind == WORD and term != term.lower()
        for match in _word_pattern(term, exact_case=exact).finditer(text):
            if kind == WORD and not _speaks_of_itself(text, *match.span()):
                continue
            found.setdefault(match.span(), Span(*match.span(), kind, match.group()))
    named = list(found.values())
    for kind, rule, pattern in _PATTERNS:
        for match in pattern.finditer(text):
            span = Span(*match.span(), kind, match.group())
            if _self_span_kept(
                span, rule, named=named, asked=asked, role_play=role_play, after=text[span.end :]
            ):
                found.setdefault(match.span(), span)
    return sorted(found.values(), key=lambda s: (s.start, s.end))


_SENTENCE_END = re.compile(r"[。．！？!?\n]|\.(?:\s|$)")


def _speaks_of_itself(text: str, start: int, end: int) -> bool:
    """Whether the sentence around text[start:end] speaks of the model itself (first person,
    an AI, being made): 「Googleも使えないんですか」 names a company, 「私はGoogleが…」 may not."""
    before = [m.end() for m in _SENTENCE_END.finditer(text, 0, start)]
    after = _SENTENCE_END.search(text, end)
    sentence = text[before[-1] if before else 0 : after.start() if after else len(text)]
    return bool(_SELF_MARK.search(sentence) or _AI_SELF.search(sentence))


def _self_span_kept(
    span: Span, rule: str, *, named: list[Span], asked: str, role_play: bool, after: str = ""
) -> bool:
    if rule == _AI or any(span.start <= t.start and t.end <= span.end for t in named):
        return True
    if rule == _MADE:
        # 私は…によって開発された, or what was made is an AI: Acme社によって開発されたAIです.
        return bool(_SELF_MARK.search(span.text) or _MADE_AN_AI.match(after))
    # 私はXです naming neither an AI nor a model term: only a Latin name counts (私はVicunaです,
    # not 私は、憲法改正に賛成です), and not one the question gave or asked the model to play.
    introduced = _INTRODUCED.match(span.text)
    if not introduced or not _LATIN_NAME.match(introduced["name"]):
        return False
    return not role_play and _norm(introduced["name"]) not in asked


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
