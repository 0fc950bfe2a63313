"""A strict content security policy on every page the app serves."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse

# Annotator and results pages load only their own static files: no inline script or style.
STRICT_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)
# Django's admin uses inline styles in places; scripts stay same-origin.
ADMIN_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if "Content-Security-Policy" not in response:
            if request.path.startswith("/api/docs/"):
                return response  # the Swagger UI page needs its own inline bootstrap script
            admin_like = request.path.startswith("/admin/")
            response["Content-Security-Policy"] = ADMIN_CSP if admin_like else STRICT_CSP
        response.setdefault("Referrer-Policy", "same-origin")
        return response
