"""The Japanese catalogue is complete for the staff pages: every string the results page (with
the judge's and routing sections), the leaderboard, the sweeps pages and the voting page ask to
translate, and every sentence the ranking engine writes for them, has a non-empty msgstr in
locale/ja/LC_MESSAGES/django.po, and the page renders it in Japanese."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import translation
from django.utils.translation.template import templatize

from annotation import powered, reports  # noqa: F401  (their sentences register on import)
from annotation.ranking import (  # noqa: F401
    covariates,
    diagnostics,
    fit,
    intervals,
    robustness,
    sandwich,
    solvers,
    summaries,
)
from annotation.ranking.sentences import TEMPLATES, Note

REPO = Path(settings.BASE_DIR)
PO = REPO / "locale" / "ja" / "LC_MESSAGES" / "django.po"
STAFF_TEMPLATES = [
    *sorted((REPO / "annotation" / "templates" / "annotation").glob("results*.html")),
    REPO / "annotation" / "templates" / "annotation" / "vote.html",
    *sorted((REPO / "judging" / "templates" / "judging").glob("*.html")),
    *sorted((REPO / "benchmarks" / "templates" / "benchmarks").glob("*.html")),
    *sorted((REPO / "sweeps" / "templates" / "sweeps").glob("*.html")),
]
# Words the page shows from the engine and the judge's design (``|say``).
ENGINE_WORDS = ["judge consistent", "judge unsure", "routing", "uniform", "active"]

# templatize writes each string as a Python literal, in single or double quotes.
_LITERAL = r"u'(?:[^'\\]|\\.)*'" + "|" + r'u"(?:[^"\\]|\\.)*"'
_CALL = re.compile(r"\b(n?p?gettext)\(((?:\s*(?:" + _LITERAL + r")\s*,?)+)")


def template_msgids(path: Path) -> list[str]:
    """The msgids a template asks for, as makemessages reads them (Django's ``templatize``):
    {% translate %}, {% blocktranslate %} (both forms of a plural)."""
    found = []
    for kind, args in _CALL.findall(templatize(path.read_text(encoding="utf-8"))):
        strings = [ast.literal_eval(s) for s in re.findall(_LITERAL, args)]
        found += strings[1:3] if kind.startswith("np") else strings[:2]
    return found


def catalogue() -> dict[str, list[str]]:
    """msgid -> its msgstr (one per plural form) from the .po text."""
    entries: dict[str, list[str]] = {}
    key, field = None, None
    parts: dict[str, list[str]] = {}

    def close():
        if key is not None:
            msgid = "".join(parts.get("msgid", []))
            strs = [v for k, v in parts.items() if k.startswith("msgstr")]
            entries[msgid] = ["".join(s) for s in strs]
            plural = "".join(parts.get("msgid_plural", []))
            if plural:
                entries[plural] = entries[msgid]

    for line in PO.read_text(encoding="utf-8").splitlines():
        if line.startswith("msgid "):
            close()
            key, parts = line, {}
        match = re.match(r'^(msgid_plural|msgid|msgstr(?:\[\d\])?) "(.*)"$', line)
        if match:
            field = match.group(1)
            parts.setdefault(field, []).append(ast.literal_eval('"' + match.group(2) + '"'))
        elif line.startswith('"') and field:
            parts[field].append(ast.literal_eval(line))
    close()
    return entries


def test_every_staff_string_and_engine_sentence_has_japanese():
    found = catalogue()
    wanted = {m for path in STAFF_TEMPLATES for m in template_msgids(path)}
    wanted |= set(TEMPLATES) | set(ENGINE_WORDS)
    assert len(wanted) > 250  # the extraction saw the templates
    missing = sorted(m for m in wanted if not any(found.get(m, [])))
    assert missing == [], f"{len(missing)} staff strings have no Japanese: {missing}"


def test_japanese_sentences_keep_their_placeholders():
    found = catalogue()
    for template in TEMPLATES:
        (translated,) = found[template]
        names = set(re.findall(r"\{(\w+)", translated))
        assert names <= set(re.findall(r"\{(\w+)", template)), template


@pytest.mark.django_db
def test_an_engine_note_renders_in_japanese(settings):
    from django.template import Context, Template

    note = Note(intervals.NOTE_FEW_QUESTIONS, n=3)
    page = Template("{% load results_text %}{{ note|say }}")
    with translation.override("ja"):
        assert (
            page.render(Context({"note": note}))
            == "質問は 3 問だけです：これほど少ない質問の再標本化による区間はおおまかです。"
        )
    with translation.override("en"):
        assert page.render(Context({"note": note})) == str(note)
