"""Whole numbers typed by people (query strings, ids given by name or number): ASCII digits only.

``str.isdigit`` is true for ``'²'`` and ``'①'``, on which ``int`` raises (a server error), and for
other scripts' digits (``'٣'``), which ``int`` reads; a long run of digits makes ``int`` raise
too. Every place that turns such text into an ``int`` asks ``whole_number`` instead.
"""

from __future__ import annotations

import re

# A PostgreSQL bigint (every primary key): nothing larger can name a row.
MAX_ID = 2**63 - 1

NOT_A_NUMBER = "{name} must be a whole number in digits 0-9 (got {value!r})"
OUT_OF_RANGE = "{name} must be from {low} to {high} (got {value})"

_DIGITS = re.compile(r"-?[0-9]{1,19}")


def whole_number(text: str, *, name: str, low: int = 0, high: int = MAX_ID) -> int:
    """``text`` as an ``int`` from ``low`` to ``high``; ValueError naming ``name`` otherwise.
    A leading minus is read only when ``low`` is negative."""
    if not isinstance(text, str) or not _DIGITS.fullmatch(text) or (text[0] == "-" and low >= 0):
        raise ValueError(NOT_A_NUMBER.format(name=name, value=text))
    value = int(text)
    if not low <= value <= high:
        raise ValueError(OUT_OF_RANGE.format(name=name, low=low, high=high, value=value))
    return value


def is_whole_number(text: str, *, low: int = 0, high: int = MAX_ID) -> bool:
    """Whether ``whole_number`` would read ``text`` (for ids that may also be names)."""
    try:
        whole_number(text, name="", low=low, high=high)
    except ValueError:
        return False
    return True
