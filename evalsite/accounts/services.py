"""Personal API tokens (create, revoke, check) and the audit log's one writer, ``audit_record``.

A token is ``evt_<prefix>_<secret>``: the prefix (public) finds the row, the SHA-256 of the whole
token is compared in constant time. A plain hash is enough because the secret is 256 random
bits (nothing to guess from a dictionary); a slow password hash would only cost every request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

from django.contrib.contenttypes.models import ContentType
from django.db import IntegrityError, transaction
from django.utils import timezone

from .models import ApiToken, AuditEntry

Action = AuditEntry.Action


class TokenError(Exception):
    """A token request the service refuses; the message says why."""


TOKEN_KIND = "evt"
NAME_REQUIRED = "give the token a name (what it is for)"
EXPIRY_IN_PAST = "the expiry must be in the future"
ALREADY_REVOKED = "token {prefix}… is already revoked"
NO_FREE_PREFIX = "could not draw an unused token prefix; try again"
# last_used_at is written at most this often per token: a script's every call need not write.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def _digest(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()


def _split(raw: str) -> tuple[str, str] | None:
    """(prefix, secret) of a well-formed token, else None."""
    kind, _, rest = raw.partition("_")
    prefix, _, secret = rest.partition("_")
    if kind != TOKEN_KIND or len(prefix) != 8 or not secret:
        return None
    return prefix, secret


def api_token_create(
    *, user, name: str, expires_at: datetime | None = None
) -> tuple[ApiToken, str]:
    """Make a token for ``user``; returns the row and the token, which is never shown again."""
    name = (name or "").strip()
    if not name:
        raise TokenError(NAME_REQUIRED)
    if expires_at is not None and expires_at <= timezone.now():
        raise TokenError(EXPIRY_IN_PAST)
    for _attempt in range(5):
        prefix = secrets.token_hex(4)
        raw = f"{TOKEN_KIND}_{prefix}_{secrets.token_urlsafe(32)}"
        try:
            with transaction.atomic():
                token = ApiToken.objects.create(
                    user=user,
                    name=name[:100],
                    prefix=prefix,
                    digest=_digest(raw),
                    expires_at=expires_at,
                )
                audit_record(
                    user=user,
                    action=Action.TOKEN_CREATE,
                    obj=token,
                    owner=user.get_username(),
                    expires_at=expires_at.isoformat() if expires_at else None,
                )
        except IntegrityError:  # the 32-bit prefix is taken: draw another
            continue
        return token, raw
    raise TokenError(NO_FREE_PREFIX)


@transaction.atomic
def api_token_revoke(*, token: ApiToken, user=None) -> ApiToken:
    """Revoke a token at once (the next request with it gets 401); ``user`` is who did it."""
    updated = ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )
    token.refresh_from_db()
    if not updated:
        raise TokenError(ALREADY_REVOKED.format(prefix=token.prefix))
    audit_record(
        user=user,
        action=Action.TOKEN_REVOKE,
        obj=token,
        owner=token.user.get_username(),
    )
    return token


def api_token_check(raw: str) -> ApiToken | None:
    """The active token ``raw`` names (with its user loaded), or None: unknown, wrong secret,
    revoked or expired all look the same to the caller."""
    parts = _split(raw)
    if parts is None:
        return None
    token = ApiToken.objects.select_related("user").filter(prefix=parts[0]).first()
    if token is None or not hmac.compare_digest(token.digest, _digest(raw)):
        return None
    if not token.is_active:
        return None
    now = timezone.now()
    if token.last_used_at is None or token.last_used_at < now - LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token


def audit_record(*, user, action: str, obj, **details) -> AuditEntry:
    """Record that ``user`` did ``action`` to ``obj`` (``details``: JSON-safe values).

    Call it inside the transaction of the change, after the change, so that a refused or
    rolled-back change leaves no entry. ``user`` may be None (a command, the system); a user
    that came in with an API token (``user.api_token``, set by the Bearer authentication) is
    recorded with that token.
    """
    signed_in = getattr(user, "pk", None) is not None
    return AuditEntry.objects.create(
        user=user if signed_in else None,
        token=getattr(user, "api_token", None) if signed_in else None,
        actor=user.get_username() if signed_in else "",
        action=action,
        content_type=ContentType.objects.get_for_model(obj) if obj is not None else None,
        object_id=str(obj.pk) if obj is not None else "",
        object_repr=str(obj)[:200] if obj is not None else "",
        details=details,
    )
