"""Login with failed attempts throttled per username and per client address.

Counters live in the shared cache, so they hold across web workers. The username is keyed the
way Django's authentication sees it (``UsernameField`` applies NFKC, so ``ａnn3`` and ``𝐚nn3``
sign in as ``ann3``): keying on the raw string let look-alike spellings dodge the limit.
"""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.contrib import admin
from django.contrib.auth.forms import UsernameField
from django.contrib.auth.views import LoginView
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from rest_framework.throttling import BaseThrottle

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
    """The client's address, honouring ``NUM_PROXIES`` trusted proxies like DRF's throttles."""
    return BaseThrottle().get_ident(request) or "unknown"


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


def failure_record(key: str) -> None:
    if cache.add(key, 1, timeout=settings.LOGIN_FAILURE_WINDOW) is False:
        try:
            cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.set(key, 1, timeout=settings.LOGIN_FAILURE_WINDOW)


class ThrottledLoginView(LoginView):
    redirect_authenticated_user = True

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
