"""Error pages that never show a traceback; a lost database is a clean, retryable 503; the
health endpoint load balancers probe."""

from __future__ import annotations

import logging
import sys

from django.db import DEFAULT_DB_ALIAS, DataError, InterfaceError, OperationalError, connections
from django.http import HttpRequest, HttpResponse, JsonResponse
from drf_spectacular.utils import extend_schema, inline_serializer
from drf_spectacular.views import SpectacularSwaggerSplitView
from rest_framework import serializers
from rest_framework.decorators import api_view, permission_classes
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView, exception_handler

from generation import workers

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


HEALTH_OK = "ok"
HEALTH_DOWN = "unavailable"

_HealthWorker = inline_serializer(
    "HealthWorker",
    {
        "name": serializers.CharField(),
        "last_heartbeat": serializers.DateTimeField(help_text="when it last answered the broker"),
    },
)
_HealthRun = inline_serializer(
    "HealthRun",
    {
        "kind": serializers.CharField(),
        "id": serializers.IntegerField(),
        "queue": serializers.CharField(),
        "worker": serializers.CharField(),
        "heartbeat_at": serializers.DateTimeField(allow_null=True),
    },
)
_Health = inline_serializer(
    "Health",
    {
        # Plain strings: one choice set on two fields is two enums to drf-spectacular (W001).
        "database": serializers.CharField(help_text=f'"{HEALTH_OK}" or "{HEALTH_DOWN}"'),
        "broker": serializers.CharField(help_text=f'"{HEALTH_OK}" or "{HEALTH_DOWN}"'),
        "workers_known": serializers.BooleanField(
            required=False, help_text="staff only: false when the broker cannot be asked"
        ),
        "workers": serializers.DictField(
            child=serializers.ListField(child=_HealthWorker),
            required=False,
            help_text="staff only: the workers consuming each queue",
        ),
        "runs": serializers.ListField(
            child=_HealthRun,
            required=False,
            help_text="staff only: running runs, the worker holding each and its last heartbeat",
        ),
    },
)


def _database_ok() -> bool:
    connection = connections[DEFAULT_DB_ALIAS]
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception:  # noqa: BLE001 - any failure means "unavailable" to a load balancer
        log.warning("health: the database is unavailable", exc_info=True)
        if not connection.in_atomic_block:
            # A broken connection is dropped so the next request opens a fresh one.
            try:
                connection.close()
            except Exception:  # noqa: BLE001
                log.debug("closing a broken connection failed", exc_info=True)
        return False
    return True


def _is_staff(request: Request) -> bool:
    """Authentication is deferred to here: a session or token the database cannot check (it is
    down) or a bad token makes the caller anonymous, never an error page."""
    try:
        user = request.user
    except Exception:  # noqa: BLE001 - authentication errors and a lost database alike
        return False
    return bool(user and user.is_active and user.is_staff)


def _staff_details() -> dict:
    found = workers.recent_census()
    return {
        "workers_known": found.known,
        "workers": {
            queue: [{"name": name, "last_heartbeat": found.taken_at} for name in names]
            for queue, names in found.by_queue().items()
        },
        "runs": workers.running_runs(),
    }


class HealthView(APIView):
    """For load balancers: no sign-in, JSON only, quick timeouts, never a traceback. Worker
    host names and runs are shown to staff only."""

    permission_classes = [AllowAny]
    renderer_classes = [JSONRenderer]
    throttle_classes: list = []

    def perform_authentication(self, request: Request) -> None:
        # Deferred to _is_staff, so that a database that is down cannot fail the probe early.
        pass

    @extend_schema(
        responses={200: _Health, 503: _Health},
        description=(
            "200 when the database and the broker are reachable, 503 naming the one that is "
            "not. Unauthenticated; staff also see the workers per queue and the running runs "
            "with their last heartbeat."
        ),
    )
    def get(self, request: Request) -> Response:
        body = {
            "database": HEALTH_OK if _database_ok() else HEALTH_DOWN,
            "broker": HEALTH_OK if workers.broker_error() is None else HEALTH_DOWN,
        }
        healthy = body["database"] == body["broker"] == HEALTH_OK
        if body["database"] == HEALTH_OK and _is_staff(request):
            body.update(_staff_details())
        response = Response(body, status=200 if healthy else 503)
        response["Cache-Control"] = "no-store"
        if not healthy:
            response["Retry-After"] = "5"
        return response
