"""Staff pages: the home (studies, all work, skipped pairs), the list of all work (runs of every
kind and sweeps), the comparison of two studies, and the one-click exclusion of an annotator's
votes from a study's results."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.translation import gettext, gettext_lazy, pgettext_lazy
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from evalsite.query import is_whole_number
from evalsite.runs import listing

from . import quality, staff
from .models import Study
from .result_options import VOTERS
from .views import results_access

# The names the staff pages give each kind of work and each status (a kind not listed here
# shows its own name). Kinds are strings: annotation never imports the apps that register them.
KIND_LABELS = {
    "generation": pgettext_lazy("work kind", "generation"),
    "finetune": pgettext_lazy("work kind", "fine-tune"),
    "judge": pgettext_lazy("work kind", "judge"),
    "grading": pgettext_lazy("work kind", "grading"),
    "evolution": pgettext_lazy("work kind", "evolution"),
    "benchmark": pgettext_lazy("work kind", "benchmark"),
    "sweep": pgettext_lazy("work kind", "sweep"),
}
STATUS_LABELS = {
    "queued": pgettext_lazy("work status", "queued"),
    "running": pgettext_lazy("work status", "running"),
    "succeeded": pgettext_lazy("work status", "succeeded"),
    "failed": pgettext_lazy("work status", "failed"),
    "cancelled": pgettext_lazy("work status", "cancelled"),
}
HOME_WORK = 30  # rows of work on the home; the runs page lists up to listing.LIMIT


def _work_context(request: HttpRequest, limit: int) -> tuple[dict, int]:
    """The list of work for the page's filters (``kind``, ``status``), and the page's status:
    400 with the error for a filter that is not one."""
    kind, status = request.GET.get("kind", ""), request.GET.get("status", "")
    error, code, work = "", 200, []
    try:
        work = staff.work_list(user=request.user, kind=kind, status=status, limit=limit)
    except ValueError as exc:
        error, code = str(exc), 400
    for item in work:
        item["kind_label"] = KIND_LABELS.get(item["row"].kind, item["row"].kind)
        item["status_label"] = STATUS_LABELS.get(item["row"].status, item["row"].status)
    names = listing.kind_names()
    context = {
        "work": work,
        "work_error": error,
        "kind": kind,
        "status": status,
        "kind_choices": [(n, KIND_LABELS.get(n, n)) for n in names],
        "status_choices": [(s, STATUS_LABELS.get(s, s)) for s in listing.STATUSES],
    }
    return context, code


@staff_member_required
@never_cache
def staff_home(request: HttpRequest) -> HttpResponse:
    # What the admin would show them: staff it lets view nothing see an empty home.
    user = request.user
    may_read_results = user.has_perms(("annotation.view_study", "annotation.export_study"))
    may_see_studies = user.has_perm("annotation.view_study")
    work, code = _work_context(request, HOME_WORK)
    context = {
        **work,
        "studies": staff.study_summaries() if may_see_studies else [],
        "skipped": staff.skipped_pairs() if may_see_studies else [],
        "may_read_results": may_read_results,
        "all_studies": Study.objects.order_by("-created_at").only("pk", "name"),
    }
    return render(request, "annotation/staff_home.html", context, status=code)


@staff_member_required
@never_cache
def staff_runs(request: HttpRequest) -> HttpResponse:
    """All work (runs of every kind, sweeps) the user may view, filtered by kind and status,
    failures first; each row links to its live page."""
    context, code = _work_context(request, listing.LIMIT)
    return render(request, "annotation/staff_runs.html", context, status=code)


# What each side of a comparison of studies counts (VOTERS), as the page names it.
VOTER_CHOICES = [
    ("people", gettext_lazy("people")),
    ("judge", gettext_lazy("the LLM judge")),
    ("all", gettext_lazy("people and the judge")),
]


@results_access
@never_cache
def staff_compare(request: HttpRequest) -> HttpResponse:
    """Two studies over the same models, each read for its voters (people, the judge or both;
    the same study twice compares people with its judge): Kendall's tau of the strengths, per
    pair win rates. ``compare_studies`` and the API share ``results.studies_compare``."""
    studies = Study.objects.order_by("-created_at").only("pk", "name")
    first_id, second_id = request.GET.get("first"), request.GET.get("second")
    voters = tuple(request.GET.get(f"voters_{which}") or "people" for which in ("first", "second"))
    compared, error, status = None, "", 200
    if first_id and second_id:
        if not (is_whole_number(first_id) and is_whole_number(second_id)):
            # Not ids at all: the query was not made by this page's form.
            error, status = gettext("Choose two studies."), 400
        elif any(v not in VOTERS for v in voters):
            error = gettext("Choose people, the LLM judge or both for each study.")
        else:
            first = get_object_or_404(Study, pk=int(first_id))
            second = get_object_or_404(Study, pk=int(second_id))
            from .results import studies_compare  # scipy: when comparing, not at start-up

            try:
                compared = studies_compare(first=first, second=second, voters=voters)
            except ValueError as exc:
                error = str(exc)
    context = {
        "studies": studies,
        "first": first_id or "",
        "second": second_id or "",
        "voters_first": voters[0],
        "voters_second": voters[1],
        "voter_choices": VOTER_CHOICES,
        "compared": compared,
        "error": error,
    }
    return render(request, "annotation/staff_compare.html", context, status=status)


@results_access
@require_POST
def annotator_exclusion(request: HttpRequest, study_id: int, annotator_id: int) -> HttpResponse:
    """Leave an annotator's votes out of the study's results, or count them again."""
    study = get_object_or_404(Study, pk=study_id)
    if not request.user.has_perm("annotation.change_study"):
        return HttpResponse(status=403)
    excluded = request.POST.get("exclude") == "1"
    try:
        quality.annotator_exclude(
            study=study, annotator_id=annotator_id, excluded=excluded, user=request.user
        )
    except LookupError:
        raise Http404 from None
    if excluded:
        messages.success(request, gettext("Their votes are left out of the results."))
    else:
        messages.success(request, gettext("Their votes count again."))
    return redirect(reverse("annotation:results", args=[study.pk]) + "#quality")
