"""Login with failed attempts throttled per username (shared cache, so across web workers)."""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.contrib import admin
from django.contrib.auth.views import LoginView
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse

TOO_MANY_ATTEMPTS = (
    "Too many failed sign-in attempts for this user; try again in {minutes} minutes."
)


def _key(username: str) -> str:
    digest = hashlib.sha256(username.strip().lower().encode()).hexdigest()
    return f"login-failures:{digest}"


class ThrottledLoginView(LoginView):
    redirect_authenticated_user = True

    def post(self, request: HttpRequest, *args, **kwargs) -> HttpResponse:
        key = _key(request.POST.get("username", ""))
        if cache.get(key, 0) >= settings.LOGIN_FAILURE_LIMIT:
            form = self.get_form()
            minutes = max(1, settings.LOGIN_FAILURE_WINDOW // 60)
            form.errors.clear()
            form.add_error(None, TOO_MANY_ATTEMPTS.format(minutes=minutes))
            response = self.render_to_response(self.get_context_data(form=form))
            response.status_code = 429
            return response
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form):
        key = _key(self.request.POST.get("username", ""))
        if cache.add(key, 1, timeout=settings.LOGIN_FAILURE_WINDOW) is False:
            try:
                cache.incr(key)
            except ValueError:  # expired between add and incr
                cache.set(key, 1, timeout=settings.LOGIN_FAILURE_WINDOW)
        return super().form_invalid(form)

    def form_valid(self, form):
        cache.delete(_key(form.get_user().get_username()))
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
