"""What the management commands share: a row named on the command line, a JSON option."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import CommandError


def named(model, name: str, what: str, option: str = ""):
    """The ``model`` row called ``name``, or the command's error "no <what> named ..." (led by
    the ``option`` that named it, when given)."""
    row = model.objects.filter(name=name).first()
    if row is None:
        lead = f"{option}: " if option else ""
        raise CommandError(f"{lead}no {what} named {name!r}")
    return row


def json_value(text: str, option: str) -> Any:
    """The JSON an option holds, or the command's error saying where it is not JSON."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CommandError(f"{option} is not valid JSON ({exc.msg})") from None


def json_object(text: str, option: str, not_object: str = "{option} must be a JSON object") -> dict:
    """An option holding a JSON object (decoding settings, thresholds, defaults); anything else
    is the command's error ``not_object``."""
    value = json_value(text, option)
    if not isinstance(value, dict):
        raise CommandError(not_object.format(option=option))
    return value
