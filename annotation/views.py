"""Annotator pages: the list of open studies and the voting page (the loop itself is the API)."""

from __future__ import annotations

from functools import wraps

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache

from . import selectors


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
