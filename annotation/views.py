"""Annotator pages (open studies, the voting page; the loop itself is the API), and the staff
results page with its chart and downloads."""

from __future__ import annotations

from functools import wraps

from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import render
from django.views.decorators.cache import never_cache

from . import reports, results, selectors
from .models import Study


def annotator_required(view):
    """Logged-in annotators and staff; others get 403, anonymous visitors the login page."""

    @wraps(view)
    @login_required
    @never_cache
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not selectors.user_is_annotator(request.user):
            raise PermissionDenied
        return view(request, *args, **kwargs)

    return wrapper


@annotator_required
def index(request: HttpRequest) -> HttpResponse:
    studies = [
        {
            "id": study.pk,
            "title": study.public_title,
            "done": progress.done,
            "total": progress.total,
        }
        for study, progress in selectors.open_studies_for(annotator=request.user)
    ]
    return render(request, "annotation/index.html", {"studies": studies})


@annotator_required
def vote_page(request: HttpRequest, study_id: int) -> HttpResponse:
    study = selectors.open_study(study_id=study_id)
    if study is None:
        raise Http404
    progress = selectors.annotator_progress(study=study, annotator=request.user)
    return render(
        request,
        "annotation/vote.html",
        {
            "study_id": study.pk,
            "title": study.public_title,
            "instructions": study.instructions,
            "done": progress.done,
            "total": progress.total,
        },
    )


# --- results (staff) ---------------------------------------------------------------------------


def _study_or_404(study_id: int) -> Study:
    study = Study.objects.filter(pk=study_id).first()
    if study is None:
        raise Http404
    return study


@staff_member_required
def results_page(request: HttpRequest, study_id: int) -> HttpResponse:
    study = _study_or_404(study_id)
    try:
        options = results.parse_options(request.GET)
    except ValueError as exc:
        return HttpResponseBadRequest(str(exc))
    found = results.study_results(study=study, **options)
    context = {
        "study": study,
        "results": found,
        "pairs": [(p, reports.whole_percents(p.wins, p.ties, p.losses)) for p in found.pairs],
        "categories": [
            (category, [(p, reports.whole_percents(p.wins, p.ties, p.losses)) for p in rows])
            for category, rows in sorted(found.categories.items())
        ],
        "options": {**found.options, "position": options.get("position", False)},
        "query": request.GET.urlencode(),
        "formats": results.EXPORT_FORMATS,
    }
    return render(request, "annotation/results.html", context)


@staff_member_required
def results_chart(request: HttpRequest, study_id: int, fmt: str) -> HttpResponse:
    if fmt not in ("png", "svg"):
        raise Http404
    study = _study_or_404(study_id)
    try:
        options = results.parse_options(request.GET)
    except ValueError as exc:
        return HttpResponseBadRequest(str(exc))
    found = results.study_results(study=study, **options)
    if found.ranking is None:
        raise Http404("no votes yet")
    content_type = "image/png" if fmt == "png" else "image/svg+xml"
    return HttpResponse(results.strength_chart(results=found, fmt=fmt), content_type=content_type)


@staff_member_required
def results_download(request: HttpRequest, study_id: int, fmt: str) -> HttpResponse:
    study = _study_or_404(study_id)
    if fmt not in results.EXPORT_FORMATS:
        raise Http404
    text, content_type, filename = results.export(study=study, fmt=fmt)
    response = HttpResponse(text, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
