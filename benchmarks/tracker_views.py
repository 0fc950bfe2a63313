"""The leaderboard's button: log the table the page shows to the experiment tracker the site
names (``benchmarks.tracking``)."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_POST

from annotation.tracker_views import logged_message
from evalsite import trackers

from . import leaderboard as board
from . import tracking
from .leaderboard_views import _bad, leaderboard_access


@leaderboard_access
@require_POST
def leaderboard_tracker(request: HttpRequest) -> HttpResponse:
    query = QueryDict(request.POST.get("query", ""))
    back = reverse("benchmarks:leaderboard") + ("?" + query.urlencode() if query else "")
    try:
        options = board.parse_options(query)
    except ValueError as exc:  # not a query the page made: as the page answers it
        return _bad(exc)
    try:
        logged = tracking.leaderboard_log(options=options, tracker=trackers.tracker_from(settings))
    except ValueError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, logged_message(logged))
    return redirect(back + "#tracker")
