"""Error pages that never show a traceback; a lost database is a clean, retryable 503."""

from __future__ import annotations

import logging
import sys

from django.db import DataError, InterfaceError, OperationalError, connections
from django.http import HttpRequest, HttpResponse, JsonResponse
from drf_spectacular.utils import extend_schema, inline_serializer
from drf_spectacular.views import SpectacularSwaggerSplitView
from rest_framework import serializers
from rest_framework.decorators import api_view, permission_classes
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import exception_handler

log = logging.getLogger(__name__)

DATABASE_DOWN = "The database is unavailable; please retry in a moment."
SERVER_ERROR = "Something went wrong on our side; it has been logged."

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>{title}</title></head>
<body><h1>{title}</h1><p>{message}</p></body></html>"""


def server_error(request: HttpRequest) -> HttpResponse:
    """handler500: called inside Django's except block, so the exception is in sys.exc_info()."""
    exc = sys.exc_info()[1]
    if isinstance(exc, (OperationalError, InterfaceError)):
        # Drop broken connections so the next request opens fresh ones (recovery without restart).
        for conn in connections.all(initialized_only=True):
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - the connection is already broken
                log.debug("closing a broken connection failed", exc_info=True)
        status, title, message = 503, "Service unavailable", DATABASE_DOWN
    else:
        status, title, message = 500, "Server error", SERVER_ERROR
    if request.path.startswith("/api/") or "json" in request.headers.get("Accept", ""):
        response = JsonResponse({"detail": message}, status=status)
    else:
        response = HttpResponse(PAGE.format(title=title, message=message), status=status)
    if status == 503:
        response["Retry-After"] = "5"
    return response


@extend_schema(
    responses=inline_serializer("Ping", {"ok": serializers.BooleanField()}),
    description="A trivial authenticated view: the baseline the load benchmark compares with.",
)
@api_view(["GET"])
@permission_classes([IsAuthenticated])
def ping(request: Request) -> Response:
    return Response({"ok": True})


BAD_CHARACTERS = "The request holds characters that cannot be stored (such as a NUL byte)."


def api_exception_handler(exc, context):
    """DRF's handler, plus: data the database refuses to store is a 400, not a server error."""
    if isinstance(exc, DataError):
        return Response({"detail": BAD_CHARACTERS}, status=400)
    return exception_handler(exc, context)


class ApiDocsView(SpectacularSwaggerSplitView):
    """Swagger UI (staff only, through SERVE_PERMISSIONS). OPTIONS would try to render the HTML
    template with no template name (a 500): the page answers GET and HEAD only."""

    http_method_names = ["get", "head"]
