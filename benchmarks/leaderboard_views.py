"""The staff leaderboard: the page (sortable by any column, links in its headers), its CSV and
Markdown exports (the same query, the same numbers) and its JSON under the staff API."""

from __future__ import annotations

from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.decorators import permission_required
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import content_disposition_header
from django.views.decorators.cache import never_cache
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.models import Study
from annotation.views import RESULTS_PERMISSIONS

from . import leaderboard as board
from . import leaderboard_table as lt
from .models import BenchmarkResult

# Reading results (as the results page asks) and benchmark runs.
LEADERBOARD_PERMISSIONS = (*RESULTS_PERMISSIONS, "benchmarks.view_benchmarkrun")
EXPORTS = {
    "csv": ("text/csv; charset=utf-8", "leaderboard.csv"),
    "md": ("text/markdown; charset=utf-8", "leaderboard.md"),
}
UNKNOWN_EXPORT = "unknown export format {fmt!r}; use csv or md"
ARROWS = {lt.ASC: "▲", lt.DESC: "▼"}
ARIA = {lt.ASC: "ascending", lt.DESC: "descending"}


def leaderboard_access(view):
    checked = permission_required(LEADERBOARD_PERMISSIONS, raise_exception=True)(view)
    return staff_member_required(checked)


def _bad(exc: ValueError) -> HttpResponse:
    # Plain text: the message echoes the request's value, which must never become markup.
    return HttpResponseBadRequest(str(exc), content_type="text/plain; charset=utf-8")


def _table(params) -> tuple[board.Options, lt.Table]:
    options = board.parse_options(params)
    return options, board.leaderboard(options)


def _query(params, **changes) -> str:
    """The page's query string with ``changes`` (None drops a key)."""
    query = params.copy()
    for name, value in changes.items():
        query.pop(name, None)
        if value is not None:
            query[name] = value
    return query.urlencode()


def _header(params, table: lt.Table, key: str, title: str, detail: str = "") -> dict:
    """A sortable header: its link sorts by it, the other way round when it is the sort."""
    current = table.direction if table.sort == key else ""
    direction = lt.default_direction(key)
    if current:
        direction = lt.DESC if current == lt.ASC else lt.ASC
    return {
        "key": key,
        "title": title,
        "detail": detail,
        "url": "?" + _query(params, sort=key, dir=direction),
        "arrow": ARROWS.get(current, ""),
        "aria_sort": ARIA.get(current, "none"),
    }


def _cell(column: lt.Column, figure: lt.Figure | None) -> dict:
    """What a cell shows, where it links, and what its tooltip says about the figure."""
    if figure is None:
        return {"text": "", "url": "", "about": ""}
    about = []
    if figure.run is not None:
        about.append(f"run {figure.run}")
    if figure.n is not None:
        about.append(f"n = {figure.n}")
    if figure.prompt_format:
        about.append(f"prompt: {figure.prompt_format}")
    return {"text": lt.figure_text(column, figure), "url": figure.url, "about": ", ".join(about)}


@leaderboard_access
@never_cache
def leaderboard_page(request: HttpRequest) -> HttpResponse:
    try:
        options, table = _table(request.GET)
    except ValueError as exc:
        return _bad(exc)
    params = request.GET
    context = {
        "table": table,
        "options": options,
        "headers": {
            "model": _header(params, table, lt.MODEL, "Model"),
            "lineage": _header(params, table, lt.LINEAGE, "Lineage"),
        },
        "columns": [_header(params, table, c.key, c.title, c.detail) for c in table.columns],
        "rows": [
            {
                "model": row.model,
                "label": row.label,
                "lineage": row.lineage,
                "lineage_text": lt.lineage_text(row.lineage),
                "cells": [_cell(c, row.figures.get(c.key)) for c in table.columns],
            }
            for row in table.rows
        ],
        "studies": Study.objects.order_by("-created_at").only("pk", "name"),
        "grading_runs": board.grading_runs(),
        "all_tasks": BenchmarkResult.objects.order_by("task")
        .values_list("task", flat=True)
        .distinct(),
        "exports": {
            fmt: reverse("benchmarks:leaderboard-export") + "?" + _query(params, format=fmt)
            for fmt in EXPORTS
        },
    }
    return render(request, "benchmarks/leaderboard.html", context)


@leaderboard_access
@never_cache
def leaderboard_export(request: HttpRequest) -> HttpResponse:
    """?format=csv|md with the page's query: the table as the page sorts it."""
    fmt = request.GET.get("format", "csv")
    if fmt not in EXPORTS:
        return _bad(ValueError(UNKNOWN_EXPORT.format(fmt=fmt)))
    try:
        options, table = _table(request.GET)
    except ValueError as exc:
        return _bad(exc)
    if fmt == "csv":
        text = lt.to_csv(table)
    else:
        title = "Leaderboard" + (f": {options.study.name}" if options.study else "")
        text = lt.to_markdown(table, title=title)
    content_type, filename = EXPORTS[fmt]
    response = HttpResponse(text, content_type=content_type)
    response["Content-Disposition"] = content_disposition_header(True, filename)
    return response


class LeaderboardApi(APIView):
    """Staff: the leaderboard as JSON (the page's query: study, grading, task, sort, dir)."""

    required_permissions = list(LEADERBOARD_PERMISSIONS)

    @extend_schema(
        operation_id="leaderboard",
        parameters=[
            OpenApiParameter("study", str, description="study id; blank: none"),
            OpenApiParameter("grading", str, description="grading run id; blank: none"),
            OpenApiParameter("task", str, many=True, description="benchmark tasks shown"),
            OpenApiParameter("sort", str, description="column key, lineage or model"),
            OpenApiParameter("dir", str, enum=[lt.ASC, lt.DESC]),
        ],
        responses={200: OpenApiTypes.OBJECT, 400: OpenApiResponse(description="bad query")},
    )
    def get(self, request):
        try:
            options, table = _table(request.query_params)
        except ValueError as exc:
            raise ValidationError({"detail": str(exc)}) from None
        return Response(board.context(options) | lt.to_json(table))
