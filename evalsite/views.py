"""Error pages that never show a traceback; a lost database is a clean, retryable 503; the
health endpoint load balancers probe (details for staff who may view runs)."""

from __future__ import annotations

import logging
import sys

from django.contrib.auth import get_permission_codename
from django.db import DEFAULT_DB_ALIAS, InterfaceError, OperationalError, connections
from django.http import HttpRequest, HttpResponse, JsonResponse
from drf_spectacular.utils import extend_schema, inline_serializer
from drf_spectacular.views import SpectacularSwaggerSplitView
from rest_framework import serializers
from rest_framework.decorators import api_view, permission_classes
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from evalsite.runs import workers
from evalsite.runs.kinds import all_kinds

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


class ApiDocsView(SpectacularSwaggerSplitView):
    """Swagger UI (staff only, through SERVE_PERMISSIONS). OPTIONS would try to render the HTML
    template with no template name (a 500): the page answers GET and HEAD only."""

    http_method_names = ["get", "head"]


HEALTH_OK = "ok"
HEALTH_DOWN = "unavailable"
RUN_VIEWERS = "staff with a view permission on a kind of run only"

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
            required=False, help_text=f"{RUN_VIEWERS}: false when the broker cannot be asked"
        ),
        "workers": serializers.DictField(
            child=serializers.ListField(child=_HealthWorker),
            required=False,
            help_text=f"{RUN_VIEWERS}: the workers consuming each queue",
        ),
        "runs": serializers.ListField(
            child=_HealthRun,
            required=False,
            help_text=(
                f"{RUN_VIEWERS}: the running runs of the kinds they may view, the worker "
                "holding each and its last heartbeat"
            ),
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


def run_view_permission(model) -> str:
    """``<app>.view_<model>``: who holds it for a kind of run sees the health details."""
    return f"{model._meta.app_label}.{get_permission_codename('view', model._meta)}"


def _viewable_run_labels(request: Request) -> set[str]:
    """The kinds of run (the spine's registry: generation, fine-tune, judge, evolution, benchmark
    runs) that the caller, active staff, may view in the admin.

    Authentication is deferred to here: a session or token the database cannot check (it is
    down) or a bad token makes the caller anonymous, never an error page."""
    try:
        user = request.user
        if not (user and user.is_active and user.is_staff):
            return set()
        return {
            kind.label for kind in all_kinds() if user.has_perm(run_view_permission(kind.model))
        }
    except Exception:  # noqa: BLE001 - authentication errors and a lost database alike
        return set()


def _run_details(labels: set[str]) -> dict:
    """Worker host names per queue, and the running runs of the kinds in ``labels``."""
    found = workers.recent_census()
    return {
        "workers_known": found.known,
        "workers": {
            queue: [{"name": name, "last_heartbeat": found.taken_at} for name in names]
            for queue, names in found.by_queue().items()
        },
        "runs": [run for run in workers.running_runs() if run["kind"] in labels],
    }


class HealthView(APIView):
    """For load balancers: no sign-in, JSON only, quick timeouts, never a traceback. Worker
    host names and runs are shown only to staff who may view some kind of run: they name the
    machines and the work, which a staff user with no permissions must not learn either."""

    permission_classes = [AllowAny]
    renderer_classes = [JSONRenderer]
    throttle_classes: list = []

    def perform_authentication(self, request: Request) -> None:
        # Deferred to _viewable_run_labels, so that a database that is down cannot fail the
        # probe early.
        pass

    @extend_schema(
        responses={200: _Health, 503: _Health},
        description=(
            "200 when the database and the broker are reachable, 503 naming the one that is "
            "not. Unauthenticated; staff with the view permission on a kind of run (for "
            "example generation.view_generationrun) also see the workers per queue and the "
            "running runs of the kinds they may view, with their last heartbeat."
        ),
    )
    def get(self, request: Request) -> Response:
        body = {
            "database": HEALTH_OK if _database_ok() else HEALTH_DOWN,
            "broker": HEALTH_OK if workers.broker_error() is None else HEALTH_DOWN,
        }
        healthy = body["database"] == body["broker"] == HEALTH_OK
        if body["database"] == HEALTH_OK:
            labels = _viewable_run_labels(request)
            if labels:
                body.update(_run_details(labels))
        response = Response(body, status=200 if healthy else 503)
        response["Cache-Control"] = "no-store"
        if not healthy:
            response["Retry-After"] = "5"
        return response
