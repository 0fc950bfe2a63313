from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from . import views
from .auth import AdminThrottledLoginView, ThrottledLoginView

handler500 = "evalsite.views.server_error"

urlpatterns = [
    path("admin/login/", AdminThrottledLoginView.as_view(), name="admin-login"),
    path("admin/", admin.site.urls),
    path("accounts/login/", ThrottledLoginView.as_view(), name="login"),
    path("accounts/tokens/", include("evalsite.accounts.urls")),
    # Password reset: 404 unless mail is configured, throttled when it is (ahead of Django's).
    path("accounts/", include("evalsite.accounts.password_reset")),
    path("accounts/", include("django.contrib.auth.urls")),
    # The language switch (set_language): the browser's language until someone picks one.
    path("i18n/", include("django.conf.urls.i18n")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", views.ApiDocsView.as_view(url_name="schema"), name="api-docs"),
    path("api/ping/", views.ping, name="ping"),
    path("api/health/", views.HealthView.as_view(), name="health"),
    # The annotator loop's requests are the app's load: their routes are tried first.
    path("api/", include("annotation.api_urls")),
    path("api/", include("evalsite.runs.urls")),
    path("api/", include("generation.api_urls")),
    path("api/", include("judging.api_urls")),
    path("api/", include("evolution.api_urls")),
    path("api/", include("sweeps.api_urls")),
    path("api/", include("benchmarks.api_urls")),
    path("", include("evolution.urls")),
    path("", include("sweeps.urls")),
    path("", include("benchmarks.urls")),
    path("", include("annotation.urls")),
]
