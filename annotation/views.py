"""Annotator pages (open studies, the voting page; the loop itself is the API), and the staff
results page with its chart and downloads."""

from __future__ import annotations

from functools import wraps
from typing import TYPE_CHECKING

from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.decorators import login_required, permission_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import content_disposition_header
from django.views.decorators.cache import never_cache

from generation.lineage import lineage_text, model_lineage
from generation.models import LanguageModel

from . import result_options
from .hooks import results_sections
from .loop.state import annotator_progress, open_studies_for, open_study, user_is_annotator
from .models import Assignment, Study
from .study_votes import reading

if TYPE_CHECKING:
    from .results import Results

# The results views import ``results``, ``reports`` and ``results_export`` when called: they load
# numpy, scipy and matplotlib, which every process that imports the URLs (each worker and
# command runs Django's checks) would otherwise pay for at start-up.


def annotator_required(view):
    """Logged-in annotators and staff; others get 403, anonymous visitors the login page."""

    @wraps(view)
    @login_required
    @never_cache
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not user_is_annotator(request.user):
            raise PermissionDenied
        return view(request, *args, **kwargs)

    return wrapper


def home(request: HttpRequest) -> HttpResponse:
    """Where sign-in lands: staff on their home, everyone else on their studies."""
    if request.user.is_authenticated and request.user.is_staff:
        return redirect(reverse("annotation:staff-home"))
    return redirect(reverse("annotation:index"))


@annotator_required
def index(request: HttpRequest) -> HttpResponse:
    studies = [
        {
            "id": study.pk,
            "title": study.public_title,
            "done": progress.done,
            "total": progress.total,
        }
        for study, progress in open_studies_for(annotator=request.user)
    ]
    return render(request, "annotation/index.html", {"studies": studies})


@annotator_required
def vote_page(request: HttpRequest, study_id: int) -> HttpResponse:
    study = open_study(study_id=study_id, annotator=request.user)
    if study is None:
        raise Http404  # not open, or the annotator is not in its pool
    progress = annotator_progress(
        study_id=study.pk, k=study.votes_per_comparison, annotator=request.user
    )
    return render(
        request,
        "annotation/vote.html",
        {
            "study_id": study.pk,
            "title": study.public_title,
            "instructions": study.instructions,
            "done": progress.done,
            "total": progress.total,
            # Skipped pairs leave the total; the page says how many beside it.
            "skipped": Assignment.objects.filter(
                study=study, annotator=request.user, status=Assignment.Status.SKIPPED
            ).count(),
        },
    )


# --- results (staff) ---------------------------------------------------------------------------


def _study_or_404(study_id: int) -> Study:
    study = Study.objects.filter(pk=study_id).first()
    if study is None:
        raise Http404
    return study


def results_access(view):
    """Staff who may read results (the API asks the same ``export_study`` permission)."""
    checked = permission_required(RESULTS_PERMISSIONS, raise_exception=True)(view)
    return staff_member_required(checked)


RESULTS_PERMISSIONS = ("annotation.view_study", "annotation.export_study")


def count_from(params) -> list[str]:
    """The models (labels or names) whose pairs are counted from their side (?from=...)."""
    return [value for value in params.getlist("from") if value]


def _bad_option(exc: ValueError) -> HttpResponse:
    # Plain text: the message echoes the request's value, which must never become markup.
    return HttpResponseBadRequest(str(exc), content_type="text/plain; charset=utf-8")


@results_access
def results_page(request: HttpRequest, study_id: int) -> HttpResponse:
    from . import results

    study = _study_or_404(study_id)
    try:
        options = result_options.parse_options(request.GET)
    except ValueError as exc:
        return _bad_option(exc)
    # One read of the study's votes serves the tables, the fits, the annotators, the judge's
    # sections and the agreement.
    with reading(study):
        try:
            found = results.study_results(
                study=study, count_from=count_from(request.GET), **options
            )
        except ValueError as exc:
            return _bad_option(exc)
        return render(request, "annotation/results.html", _results_context(request, study, found))


def _results_context(request: HttpRequest, study: Study, found: Results) -> dict:
    from . import reports, results, results_export

    context = {
        "study": study,
        "results": found,
        "pairs": [(p, reports.whole_percents(p.wins, p.ties, p.losses)) for p in found.pairs],
        "categories": [
            (category, [(p, reports.whole_percents(p.wins, p.ties, p.losses)) for p in rows])
            for category, rows in sorted(found.categories.items())
        ],
        "options": found.options,
        "query": request.GET.urlencode(),
        "formats": results_export.EXPORT_FORMATS,
        "count_from": count_from(request.GET),
        "labels": list(results.study_labels(study=study).values()),
        "truncation": results.study_truncation(study=study),
        "judge_agreement": results.judge_agreement(study=study),
        "lineage": _tuned_models(study),
    }
    # Sections the apps built on this one add (the LLM judge's, with routing).
    sections = results_sections()
    for section in sections:
        context.update(section.context(study))
    context["section_templates"] = [section.template for section in sections]
    return context


def _tuned_models(study: Study) -> list[tuple[str, str]]:
    """(label, lineage) of the study's models that were made by fine-tuning here, so analysts
    see the base, the method and the data (or votes) behind each tuned model."""
    from .results import study_labels

    labels = study_labels(study=study)
    models = LanguageModel.objects.filter(name__in=labels).order_by("name")
    found = [(labels[m.name], lineage_text(model_lineage(m))) for m in models]
    return [(label, text) for label, text in found if text]


@results_access
def results_chart(request: HttpRequest, study_id: int, fmt: str) -> HttpResponse:
    study = _study_or_404(study_id)
    if fmt not in ("png", "svg"):
        raise Http404
    from . import results

    try:
        options = result_options.parse_options(request.GET)
    except ValueError as exc:
        return _bad_option(exc)
    # The fit the page embedding this chart has just made and cached (or a fresh one).
    fitted = results.study_ranking(study=study, **options)
    if fitted is None:
        raise Http404("no votes yet")
    chart = results.strength_chart(study=study, fitted=fitted, fmt=fmt)
    return HttpResponse(chart, content_type="image/png" if fmt == "png" else "image/svg+xml")


@results_access
def results_download(request: HttpRequest, study_id: int, fmt: str) -> HttpResponse:
    from . import results, results_export

    study = _study_or_404(study_id)
    if fmt not in results_export.EXPORT_FORMATS:
        raise Http404
    found = None
    try:
        options = result_options.parse_options(request.GET)
        if count_from(request.GET) and fmt in ("csv", "json", "md"):
            found = results.study_results(
                study=study, count_from=count_from(request.GET), **options
            )
    except ValueError as exc:
        return _bad_option(exc)
    text, content_type, filename = results_export.export(
        study=study,
        fmt=fmt,
        results=found,
        provenance=result_options.wants_provenance(request.GET),
        **options,
    )
    response = HttpResponse(text, content_type=content_type)
    response["Content-Disposition"] = content_disposition_header(True, filename)
    return response
