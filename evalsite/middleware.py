"""A strict content security policy on every page, a size limit at the door, and the database
connection's health check only when it may be needed."""

from __future__ import annotations

import time

from django.conf import settings
from django.db import connections
from django.http import HttpRequest, HttpResponse, JsonResponse

REQUEST_TOO_LARGE = (
    "The request is {size} bytes, over the {limit}-byte limit (MAX_UPLOAD_BYTES); "
    "nothing was read or stored."
)
# Room for multipart headers and the form's other fields around a file of the largest size.
MULTIPART_OVERHEAD = 64 * 1024

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
            # Swagger UI (like the admin) keeps inline styles; its scripts are same-origin files.
            admin_like = request.path.startswith(("/admin/", "/api/docs/"))
            response["Content-Security-Policy"] = ADMIN_CSP if admin_like else STRICT_CSP
        response.setdefault("Referrer-Policy", "same-origin")
        return response


class RequestSizeLimitMiddleware:
    """Refuse a body over the upload limit from its Content-Length, before anything reads it.

    Django bounds form fields (DATA_UPLOAD_MAX_MEMORY_SIZE) but not files or a body read as a
    stream, so an upload used to be read whole before its size was checked.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        limit = settings.MAX_UPLOAD_BYTES + MULTIPART_OVERHEAD
        try:
            size = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            size = 0
        if size > limit:
            message = REQUEST_TOO_LARGE.format(size=size, limit=settings.MAX_UPLOAD_BYTES)
            if request.path.startswith("/api/"):
                return JsonResponse({"detail": message}, status=413)
            return HttpResponse(message, status=413, content_type="text/plain; charset=utf-8")
        return self.get_response(request)


class ConnectionCheckMiddleware:
    """Django's CONN_HEALTH_CHECKS pings a kept connection (``SELECT 1``) before the first query
    of every request: a round trip on every request of the annotator loop. A connection that
    finished a request without an error less than DB_HEALTH_CHECK_IDLE seconds ago is taken as
    alive; Django still checks it after an error (``errors_occurred``) and after an idle spell.
    A database that restarts under a busy worker costs that worker's next request (a 503 the
    page retries), after which Django, seeing the error, reconnects. 0 checks every request.

    First in MIDDLEWARE: after Django's request_started handler (which resets the check), before
    anything that queries.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        idle = settings.DB_HEALTH_CHECK_IDLE
        if idle > 0:
            now = time.monotonic()
            for conn in connections.all(initialized_only=True):
                last = getattr(conn, "evalsite_last_ok", None)
                if (
                    conn.connection is not None
                    and conn.health_check_enabled
                    and not conn.errors_occurred
                    and last is not None
                    and now - last < idle
                ):
                    conn.health_check_done = True
        response = self.get_response(request)
        if idle > 0:
            now = time.monotonic()
            for conn in connections.all(initialized_only=True):
                if conn.connection is not None and not conn.errors_occurred:
                    conn.evalsite_last_ok = now
                else:
                    conn.evalsite_last_ok = None
        return response
