"""``Authorization: Bearer <token>`` for the staff API (REST_FRAMEWORK's default classes, after
sessions). Only DRF views with the default classes read it: Django pages, the admin and the
annotator API (sessions only) never do, so a token cannot act there as its user.

No CSRF check: a browser never attaches this header by itself, so another site cannot make it
send one. Failed attempts count per client address like failed sign-ins (evalsite/auth.py),
and once over the limit that address is refused, right token or not, until the window ends.
"""

from __future__ import annotations

from django.conf import settings
from django.core.cache import cache
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header

from evalsite.auth import client_address, failure_key, failure_record

from .services import api_token_check

INVALID_TOKEN = "Invalid, revoked or expired API token."
MALFORMED_HEADER = "Malformed Authorization header: expected 'Bearer <token>'."
TOO_MANY_TOKEN_FAILURES = (
    "Too many failed API token attempts from your address; try again in {minutes} minutes."
)


class TokenRejected(exceptions.APIException):
    """401 with a Bearer challenge (RFC 6750). Not an AuthenticationFailed: DRF turns those into
    403 when the first authentication class (sessions) has no challenge to send."""

    status_code = 401
    default_detail = INVALID_TOKEN
    default_code = "invalid_token"
    auth_header = 'Bearer realm="api", error="invalid_token"'


class BearerTokenAuthentication(BaseAuthentication):
    keyword = b"bearer"

    def authenticate(self, request):
        header = get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword:
            return None  # not ours (no header, or another scheme)
        key = failure_key("token-address", client_address(request))
        if cache.get(key, 0) >= settings.LOGIN_ADDRESS_FAILURE_LIMIT:
            minutes = max(1, settings.LOGIN_FAILURE_WINDOW // 60)
            raise exceptions.Throttled(
                wait=settings.LOGIN_FAILURE_WINDOW,
                detail=TOO_MANY_TOKEN_FAILURES.format(minutes=minutes),
            )
        if len(header) != 2:
            failure_record(key)
            raise TokenRejected(MALFORMED_HEADER)
        try:
            raw = header[1].decode("ascii")
        except UnicodeDecodeError:
            raw = ""
        token = api_token_check(raw)
        if token is None or not token.user.is_active:
            failure_record(key)
            raise TokenRejected(INVALID_TOKEN)
        user = token.user
        # audit_record reads this to say the action came through this token.
        user.api_token = token
        return user, token

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="api"'


class BearerTokenScheme(OpenApiAuthenticationExtension):
    """Names the scheme in the OpenAPI schema (/api/schema/)."""

    target_class = "evalsite.accounts.authentication.BearerTokenAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "a personal API token"}
