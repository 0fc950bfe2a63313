"""Staff pages of sweeps: the list, one sweep's grid (table and chart) and the chart itself."""

from __future__ import annotations

import functools

from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.cache import never_cache

from generation.engine import charts

from .models import Sweep
from .services import sweep_overlap
from .tables import sweep_cells, sweep_counts, sweep_plot


def _may_view(view):
    """Staff with the right to view sweeps (the admin's own permission)."""

    @staff_member_required
    @never_cache
    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs):
        if not request.user.has_perm("sweeps.view_sweep"):
            raise PermissionDenied
        return view(request, *args, **kwargs)

    return wrapped


@_may_view
def sweep_list(request: HttpRequest) -> HttpResponse:
    sweeps = Sweep.objects.select_related("base_model", "judge").order_by("-created_at")[:200]
    return render(request, "sweeps/sweep_list.html", {"sweeps": sweeps})


@_may_view
def sweep_detail(request: HttpRequest, sweep_id: int) -> HttpResponse:
    sweep = get_object_or_404(
        Sweep.objects.select_related("base_model", "judge", "judge_prompt", "prompt_set"),
        pk=sweep_id,
    )
    cells = sweep_cells(sweep)
    context = {
        "sweep": sweep,
        "cells": cells,
        "counts": sweep_counts(cells),
        "best": next((c for c in cells if c["best"]), None),
        "may_change": request.user.has_perm("sweeps.change_sweep"),
        "overlap": [o.message() for o in sweep_overlap(sweep)],
    }
    return render(request, "sweeps/sweep_detail.html", context)


@_may_view
def sweep_chart(request: HttpRequest, sweep_id: int, fmt: str) -> HttpResponse:
    if fmt not in charts.FORMATS:
        raise Http404(charts.UNKNOWN_FORMAT.format(fmt=fmt))
    sweep = get_object_or_404(Sweep.objects.select_related("base_model"), pk=sweep_id)
    chart = sweep_plot(sweep, fmt=fmt)
    kind = "image/png" if fmt == "png" else "image/svg+xml"
    return HttpResponse(chart.data, content_type=kind)
