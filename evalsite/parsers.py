"""The API's JSON parser: DRF's, with nesting bounded and lone surrogates refused (a 400)."""

from __future__ import annotations

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser
from rest_framework.settings import api_settings

from evalsite import jsonguard


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


class SafeJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        options = {"parse_constant": _reject_constant} if api_settings.STRICT_JSON else {}
        try:
            return jsonguard.loads(stream.read().decode(encoding), **options)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
