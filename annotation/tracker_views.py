"""The results page's button: log the study's results, fitted as the page shows them, to the
experiment tracker the site names (``annotation.tracking``)."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.utils.translation import gettext
from django.views.decorators.http import require_POST

from evalsite import trackers

from .models import Study
from .result_options import parse_options
from .views import _bad_option, count_from, results_access


def logged_message(logged: trackers.Logged) -> str:
    return gettext("Logged to %(tracker)s as run %(run)s (%(where)s).") % {
        "tracker": logged.tracker,
        "run": logged.run,
        "where": logged.where,
    }


@results_access
@require_POST
def results_tracker(request: HttpRequest, study_id: int) -> HttpResponse:
    study = get_object_or_404(Study, pk=study_id)
    query = QueryDict(request.POST.get("query", ""))
    back = reverse("annotation:results", args=[study.pk])
    back += ("?" + query.urlencode() if query else "") + "#tracker"
    try:
        options = parse_options(query)
    except ValueError as exc:  # not a query the page made: as the page answers it
        return _bad_option(exc)
    from .tracking import study_results_log  # the fit (scipy): when logging, not at start-up

    try:
        logged = study_results_log(
            study=study,
            tracker=trackers.tracker_from(settings),
            count_from=count_from(query),
            **options,
        )
    except ValueError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, logged_message(logged))
    return redirect(back)
