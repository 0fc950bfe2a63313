"""Login with failed attempts throttled per username and per client address, and the one
function that says what a client's address is.

Counters live in the shared cache, so they hold across web workers. The username is keyed the
way Django's authentication sees it (``UsernameField`` applies NFKC, so ``ａnn3`` and ``𝐚nn3``
sign in as ``ann3``): keying on the raw string let look-alike spellings dodge the limit.

Every per-address limit (sign-in and API token failures, password reset requests, DRF throttles
through the classes below) keys on ``client_address``: the whole X-Forwarded-For header used to
be taken as the address, so a client picked its own (a new one per attempt, or its victim's).
"""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.contrib import admin
from django.contrib.auth import backends, get_user_model
from django.contrib.auth.forms import UsernameField
from django.contrib.auth.views import LoginView
from django.core.cache import cache
from django.db import connections, router
from django.http import HttpRequest, HttpResponse
from rest_framework import throttling

TOO_MANY_ATTEMPTS = (
    "Too many failed sign-in attempts for this user; try again in {minutes} minutes."
)
TOO_MANY_FROM_ADDRESS = (
    "Too many failed sign-in attempts from your address; try again in {minutes} minutes."
)


def normalized_username(raw: str) -> str:
    """The username as the authentication backend will look it up, case-folded."""
    return (UsernameField().to_python(raw) or "").strip().casefold()


def client_address(request: HttpRequest) -> str:
    """The address a request comes from, as far as the server can trust it.

    ``REMOTE_ADDR`` (the peer of the connection) unless ``NUM_PROXIES`` = N trusted proxies
    stand in front: then the N-th X-Forwarded-For entry from the right, written by the outermost
    of them; whatever lies further left the client wrote. A header with fewer than N entries did
    not come through all of them, so again ``REMOTE_ADDR``.
    """
    remote = request.META.get("REMOTE_ADDR") or "unknown"
    proxies = settings.NUM_PROXIES
    if proxies <= 0:
        return remote
    entries = request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")
    if len(entries) < proxies:
        return remote
    return entries[-proxies].strip() or remote


class ClientAddressThrottleMixin:
    """DRF throttles keyed on ``client_address``: DRF's own get_ident reads X-Forwarded-For by
    its NUM_PROXIES rules (the whole header when unset, the leftmost entry when short)."""

    def get_ident(self, request) -> str:
        return client_address(request)


def counter_hit(key: str, *, window: int) -> tuple[int, float]:
    """Count one hit under ``key`` in a window of ``window`` seconds that starts at its first
    hit; returns (hits in the window so far, seconds until it ends). One round trip to Redis
    (INCR, EXPIRE NX and TTL pipelined); other caches: add, then incr."""
    client = _redis_client()
    if client is not None:
        name = cache.make_and_validate_key(key)
        pipe = client.pipeline(transaction=False)
        pipe.incr(name)
        pipe.expire(name, window, nx=True)
        pipe.ttl(name)
        hits, _, ttl = pipe.execute()
        return int(hits), float(ttl if ttl and ttl > 0 else window)
    if cache.add(key, 1, timeout=window):
        return 1, float(window)
    try:
        return int(cache.incr(key)), float(window)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, timeout=window)
        return 1, float(window)


def _redis_client():
    """The shared cache's redis-py client (evalsite.cache.RedisCache), or None."""
    from django.core.cache import caches

    from evalsite.cache import RedisCache

    default = caches["default"]
    return default._cache.get_client(write=True) if isinstance(default, RedisCache) else None


class ScopedRateThrottle(ClientAddressThrottleMixin, throttling.ScopedRateThrottle):
    """DRF's scoped throttle (per user, per address when signed out) on one Redis round trip a
    request: a counter per window that starts at the client's first request, rather than DRF's
    list of timestamps read and written back (two round trips and a pickle of up to ``rate``
    floats). A client may make up to twice the rate across the end of one window and the start
    of the next; for a rate limit on annotators (ANNOTATE_RATE) that is close enough."""

    def allow_request(self, request, view) -> bool:
        self.scope = getattr(view, self.scope_attr, None)
        if not self.scope:
            return True
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        # Not DRF's key: its value there is a pickled list (workers of both kinds may run
        # side by side during an upgrade).
        hits, self._left = counter_hit("hits:" + self.key, window=int(self.duration))
        return hits <= self.num_requests

    def wait(self) -> float | None:
        return self._left


class AnonRateThrottle(ClientAddressThrottleMixin, throttling.AnonRateThrottle):
    pass


class UserRateThrottle(ClientAddressThrottleMixin, throttling.UserRateThrottle):
    pass


def failure_key(kind: str, value: str) -> str:
    """The cache key counting failed attempts of one ``kind`` (user, address...) for ``value``."""
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
    return f"login-failures:{kind}:{digest}"


def _keys(request: HttpRequest) -> list[tuple[str, int, str]]:
    """(cache key, limit, message) for each counter a sign-in attempt falls under."""
    username = normalized_username(request.POST.get("username", ""))
    return [
        (failure_key("user", username), settings.LOGIN_FAILURE_LIMIT, TOO_MANY_ATTEMPTS),
        (
            failure_key("address", client_address(request)),
            settings.LOGIN_ADDRESS_FAILURE_LIMIT,
            TOO_MANY_FROM_ADDRESS,
        ),
    ]


def failure_record(key: str, *, window: int | None = None) -> None:
    """Count one more attempt under ``key``; the count lapses ``window`` seconds (by default
    LOGIN_FAILURE_WINDOW) after the first."""
    window = window or settings.LOGIN_FAILURE_WINDOW
    if cache.add(key, 1, timeout=window) is False:
        try:
            cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.set(key, 1, timeout=window)


class ThrottledLoginView(LoginView):
    redirect_authenticated_user = True

    def get_context_data(self, **kwargs):
        # The "forgot your password" link only where the reset pages answer (mail configured).
        return {
            **super().get_context_data(**kwargs),
            "password_reset_enabled": settings.PASSWORD_RESET_ENABLED,
        }

    def post(self, request: HttpRequest, *args, **kwargs) -> HttpResponse:
        for key, limit, message in _keys(request):
            if cache.get(key, 0) >= limit:
                form = self.get_form()
                minutes = max(1, settings.LOGIN_FAILURE_WINDOW // 60)
                form.errors.clear()
                form.add_error(None, message.format(minutes=minutes))
                response = self.render_to_response(self.get_context_data(form=form))
                response.status_code = 429
                return response
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form):
        for key, _limit, _message in _keys(self.request):
            failure_record(key)
        return super().form_invalid(form)

    def form_valid(self, form):
        # A success clears the user's counter, not the address's: one good password must not
        # reset a spray across many usernames from the same place.
        cache.delete(failure_key("user", normalized_username(form.get_user().get_username())))
        return super().form_valid(form)


class AdminThrottledLoginView(ThrottledLoginView):
    template_name = "admin/login.html"

    def get_context_data(self, **kwargs):
        return {
            **admin.site.each_context(self.request),
            "title": "Log in",
            "app_path": self.request.get_full_path(),
            **super().get_context_data(**kwargs),
        }


class ModelBackend(backends.ModelBackend):
    """Django's model backend, with the signed-in user of every request read by one plain
    statement: the ORM's ``get(pk=...)`` built and compiled its query each time, 0.36-0.51 ms
    of the app's CPU per request against 0.10-0.20 ms read so (in-process on a busy machine,
    2026-12-08). The row and its values are those the ORM would give (every concrete column,
    through the same converters), checked the same way (is_active)."""

    def get_user(self, user_id):
        user = user_row(user_id)
        return user if user is not None and self.user_can_authenticate(user) else None


# (user model, database alias) -> its statement, and each column's converters (as the ORM's)
_USER_SQL: dict[tuple, tuple[str, list]] = {}


def user_row(user_id) -> object | None:
    """The user with this primary key, every field loaded as the ORM loads it, or None."""
    model = get_user_model()
    fields = model._meta.concrete_fields
    alias = router.db_for_read(model)
    connection = connections[alias]
    known = _USER_SQL.get((model, alias))
    if known is None:
        quote = connection.ops.quote_name
        statement = "SELECT {} FROM {} WHERE {} = %s".format(
            ", ".join(quote(f.column) for f in fields),
            quote(model._meta.db_table),
            quote(model._meta.pk.column),
        )
        columns = [f.get_col(model._meta.db_table) for f in fields]
        converters = [
            (col, connection.ops.get_db_converters(col) + f.get_db_converters(connection))
            for f, col in zip(fields, columns, strict=True)
        ]
        known = _USER_SQL[model, alias] = (statement, converters)
    statement, converters = known
    try:
        pk = model._meta.pk.to_python(user_id)
    except Exception:  # noqa: BLE001 - a session key the model cannot take: nobody
        return None
    with connection.cursor() as cursor:
        cursor.execute(statement, [pk])
        row = cursor.fetchone()
    if row is None:
        return None
    values = []
    for value, (col, convert) in zip(row, converters, strict=True):
        for converter in convert:
            value = converter(value, col, connection)
        values.append(value)
    return model.from_db(alias, [f.attname for f in fields], values)
