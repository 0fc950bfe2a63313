"""``{% tracker_form url %}``: the button that logs what a staff page shows (a study's results,
the leaderboard) to the experiment tracker the site names, with the page's own query."""

from __future__ import annotations

from django import template
from django.conf import settings

from evalsite import trackers

register = template.Library()


@register.inclusion_tag("annotation/tracker_form.html", takes_context=True)
def tracker_form(context, action: str, show_messages: bool = False) -> dict:
    request = context["request"]
    return {
        "tracker": trackers.tracker_from(settings),
        "action": action,
        "query": request.GET.urlencode(),
        "csrf_token": context.get("csrf_token"),
        # Pages that list no messages of their own show the outcome here.
        "messages": context.get("messages") if show_messages else None,
    }
