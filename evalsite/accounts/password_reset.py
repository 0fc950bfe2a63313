"""Password reset by mail: on only where mail can be sent, and limited per address and per email.

With no mail server (``PASSWORD_RESET_ENABLED`` off, the default without ``EMAIL_HOST``) every
reset page is a 404 and the sign-in page shows no link: the pages used to take requests from
anyone, as often as they liked, and send nothing. When on, each request for a reset mail counts
against the email address (NFKC, case-folded, as Django matches it) and against the client
address (``evalsite.auth.client_address``), in the cache counters the sign-in limits use; over
either limit the form answers 429 and no mail is sent.
"""

from __future__ import annotations

import unicodedata

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.core.cache import cache
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import path

from evalsite.auth import client_address, failure_key, failure_record

TOO_MANY_FOR_EMAIL = (
    "Too many password reset requests for this email address; try again in {minutes} minutes."
)
TOO_MANY_FROM_ADDRESS = (
    "Too many password reset requests from your address; try again in {minutes} minutes."
)


def normalized_email(raw: str) -> str:
    """The email as Django's reset form matches users (case-insensitively), NFKC so that
    look-alike spellings share one counter."""
    return unicodedata.normalize("NFKC", raw or "").strip().casefold()


def _counters(request: HttpRequest) -> list[tuple[str, int, str]]:
    """(cache key, limit, message) for each counter a reset request falls under."""
    return [
        (
            failure_key("reset-email", normalized_email(request.POST.get("email", ""))),
            settings.PASSWORD_RESET_EMAIL_LIMIT,
            TOO_MANY_FOR_EMAIL,
        ),
        (
            failure_key("reset-address", client_address(request)),
            settings.PASSWORD_RESET_ADDRESS_LIMIT,
            TOO_MANY_FROM_ADDRESS,
        ),
    ]


class ResetEnabledMixin:
    """404 unless mail is configured (the setting is read per request, not at import)."""

    def dispatch(self, request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not settings.PASSWORD_RESET_ENABLED:
            raise Http404("Password reset is not available on this site.")
        return super().dispatch(request, *args, **kwargs)


class ThrottledPasswordResetView(ResetEnabledMixin, auth_views.PasswordResetView):
    def post(self, request: HttpRequest, *args, **kwargs) -> HttpResponse:
        for key, limit, message in _counters(request):
            if cache.get(key, 0) >= limit:
                form = self.get_form()
                form.errors.clear()
                minutes = max(1, settings.PASSWORD_RESET_WINDOW // 60)
                form.add_error(None, message.format(minutes=minutes))
                response = self.render_to_response(self.get_context_data(form=form))
                response.status_code = 429
                return response
        return super().post(request, *args, **kwargs)

    def form_valid(self, form):
        # Counted whether or not the address belongs to a user: the answer must not tell.
        for key, _limit, _message in _counters(self.request):
            failure_record(key, window=settings.PASSWORD_RESET_WINDOW)
        return super().form_valid(form)


class PasswordResetDoneView(ResetEnabledMixin, auth_views.PasswordResetDoneView):
    pass


class PasswordResetConfirmView(ResetEnabledMixin, auth_views.PasswordResetConfirmView):
    pass


class PasswordResetCompleteView(ResetEnabledMixin, auth_views.PasswordResetCompleteView):
    pass


# Under /accounts/, before django.contrib.auth.urls: the same paths and names, so these answer.
urlpatterns = [
    path("password_reset/", ThrottledPasswordResetView.as_view(), name="password_reset"),
    path("password_reset/done/", PasswordResetDoneView.as_view(), name="password_reset_done"),
    path(
        "reset/<uidb64>/<token>/",
        PasswordResetConfirmView.as_view(),
        name="password_reset_confirm",
    ),
    path("reset/done/", PasswordResetCompleteView.as_view(), name="password_reset_complete"),
]
