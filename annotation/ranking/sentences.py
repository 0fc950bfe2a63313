"""Sentences the ranking engine writes for people (notes, "is the order settled" lines), kept
translatable without Django: each template is registered here (``sentence``), and a filled-in
one is a ``Note``, a ``str`` that also remembers its template and values, so a page can say it
in the reader's language (``annotation/templatetags/results_text.py``) while exports and tests
read plain English."""

from __future__ import annotations

TEMPLATES: list[str] = []  # every registered template, for the catalogue-completeness test


def sentence(template: str) -> str:
    """Register a template (a module constant) as a sentence people read."""
    if template not in TEMPLATES:
        TEMPLATES.append(template)
    return template


def whole(value: float) -> int:
    """A figure rounded for a sentence; never -0 (a bound of -0.3 Elo reads 0)."""
    return round(value) + 0


def _note(template: str, values: dict, words: tuple[str, ...]) -> Note:
    return Note(template, words=words, **values)


class Note(str):
    """``template.format(**values)``; ``words``: the values that are words of the sentence
    (translated with it) rather than names or figures."""

    template: str
    values: dict
    words: tuple[str, ...]

    def __new__(cls, template: str, *, words: tuple[str, ...] = (), **values) -> Note:
        made = super().__new__(cls, template.format(**values))
        made.template, made.values, made.words = template, values, words
        return made

    def __reduce__(self):  # cached fits are pickled
        return _note, (self.template, self.values, self.words)
