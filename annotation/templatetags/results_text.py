"""How the results pages write numbers and the ranking engine's sentences: whole numbers with
no "-0", intervals as "low – high", and the engine's notes in the reader's language."""

from __future__ import annotations

from django import template
from django.utils.translation import gettext

register = template.Library()

MISSING = "–"


def _whole(value) -> str:
    if value is None or value == "":
        return MISSING
    rounded = round(float(value))
    return str(rounded + 0)  # + 0: -0.0 rounds to an int 0, never "-0"


@register.filter
def whole(value) -> str:
    """A strength or a bound rounded to a whole number; never "-0" (a bound of -0.4 is 0)."""
    return _whole(value)


@register.simple_tag
def interval(low, high) -> str:
    """ "low – high" in whole numbers, "–" when either end is unknown."""
    if low is None or high is None:
        return MISSING
    return f"{_whole(low)} – {_whole(high)}"


@register.filter
def say(sentence) -> str:
    """A sentence the ranking engine wrote (``ranking.sentences``), in the active language: a
    ``Note`` is its template translated and filled with its values; a plain one is looked up
    whole (and shown as it is when the catalogue has no translation)."""
    if sentence is None:
        return ""
    template_text = getattr(sentence, "template", None)
    if template_text is None:
        return gettext(str(sentence))
    values = {
        name: gettext(value) if name in sentence.words else value
        for name, value in sentence.values.items()
    }
    try:
        return gettext(template_text).format(**values)
    except (KeyError, IndexError, ValueError):  # a translation that lost a placeholder
        return str(sentence)
