"""Other names a model or its maker goes by, for the self-identification check (plain module).

An answer may name its maker in kana or katakana (りんな, サイバーエージェント) or in a phrase the
maker's models use; the study's identity finder (annotation/identity.py) looks for a model's
``aliases`` as it does for its name, and ``maker_aliases`` as for its maker.
"""

from __future__ import annotations

BAD_ALIASES = '{field} must be a list of names (strings), e.g. ["りんな"]'
ALIAS_TOO_LONG = "{field}: {alias!r} is longer than {limit} characters"
ALIAS_LIMIT = 200

# Suggestions for makers Japanese SFT teams compare (the admin shows them beside a model whose
# maker is one of these; README.md lists them too). Keys are matched case-insensitively.
MAKER_ALIAS_SUGGESTIONS: dict[str, list[str]] = {
    "rinna": ["りんな", "リンナ"],
    "LINE": ["ライン", "LINEヤフー", "LINE株式会社"],
    "CyberAgent": ["サイバーエージェント", "OpenCALM", "CALM2"],
    "ELYZA": ["イライザ", "エライザ", "株式会社ELYZA"],
    "LLM-jp": ["国立情報学研究所", "LLM勉強会"],
    "Stability AI": ["スタビリティ", "StableLM"],
    "Preferred Networks": ["プリファードネットワークス", "PLaMo"],
    "Rakuten": ["楽天", "RakutenAI"],
    "Tokyo Tech": ["東京工業大学", "東工大", "Swallow"],
    "Stockmark": ["ストックマーク"],
    "KARAKURI": ["カラクリ"],
    "Sakana AI": ["サカナAI"],
    "NTT": ["日本電信電話", "tsuzumi"],
    "NEC": ["日本電気", "cotomi"],
    "Fujitsu": ["富士通"],
    "OpenAI": ["オープンエーアイ", "ChatGPT"],
    "Anthropic": ["アンソロピック", "Claude"],
    "Google": ["グーグル", "Gemini"],
    "Meta": ["メタ", "Llama"],
    "Microsoft": ["マイクロソフト"],
}


def aliases_clean(field: str, value: object) -> list[str]:
    """``value`` as stored: names stripped, blanks and repeats dropped, in order; ValueError
    when it is not a list of strings or a name is too long."""
    if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
        raise ValueError(BAD_ALIASES.format(field=field))
    out = list(dict.fromkeys(a.strip() for a in value if a.strip()))
    for alias in out:
        if len(alias) > ALIAS_LIMIT:
            raise ValueError(ALIAS_TOO_LONG.format(field=field, alias=alias, limit=ALIAS_LIMIT))
    return out


def suggested_maker_aliases(maker: str) -> list[str]:
    """The suggestions for ``maker`` (case-insensitive; none for an unknown maker)."""
    wanted = maker.strip().casefold()
    for known, aliases in MAKER_ALIAS_SUGGESTIONS.items():
        if known.casefold() == wanted:
            return list(aliases)
    return []
