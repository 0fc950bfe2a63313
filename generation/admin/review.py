"""The staff review page of an instruction data set: page through its rows (the pending ones by
default, or those in one review state), see each generated row's lineage, and accept, edit or
reject it. Every button is a plain form post (the page works without JavaScript);
generation/static/generation/review.js adds the keyboard (a, r, e then Ctrl+Enter, j / k)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import urlencode

from evalsite.errors import ServiceError

from ..models import InstructionDataset, InstructionExample
from ..review import (
    ACTIONS,
    RowReview,
    edit_lock,
    instruction_rows_review,
    review_counts,
    review_lock,
)
from .base import ExtraPages

Review = InstructionExample.Review
ROWS_PER_PAGE = 20
# Filter name -> rows it shows; "pending" is the queue, and the page's default.
STATES = {
    "pending": {"review": Review.PENDING},
    "accepted": {"review": Review.ACCEPTED},
    "rejected": {"review": Review.REJECTED},
    "edited": {"edited": True},
    "all": {},
}
BAD_POSITION = "the form named no row"
DONE = {"accept": "Row {} accepted.", "reject": "Row {} rejected.", "edit": "Row {} edited."}


def _rows(dataset: InstructionDataset, state: str):
    return dataset.examples.filter(**STATES[state]).order_by("position")


class ReviewPage(ExtraPages):
    """Adds ``<id>/review/`` (URL name ``generation_instructiondataset_review``) to the
    instruction data set admin: viewing needs the view permission, reviewing the change one."""

    pages = (("<path:object_id>/review/", "review_view", "generation_instructiondataset_review"),)

    def review_view(self, request: HttpRequest, object_id: str):
        dataset = self.get_object(request, unquote(object_id))
        if dataset is None:
            raise Http404
        if not self.has_view_permission(request, dataset):
            raise PermissionDenied
        state = request.GET.get("state", "pending")
        if state not in STATES:
            state = "pending"
        if request.method == "POST":
            if not self.has_change_permission(request, dataset):
                raise PermissionDenied
            return self._review_post(request, dataset, state)
        paginator = Paginator(
            _rows(dataset, state).select_related("parent__dataset", "reviewed_by"),
            ROWS_PER_PAGE,
        )
        page = paginator.get_page(request.GET.get("page"))
        counts = review_counts(dataset)
        lock = review_lock(dataset)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Review {dataset.name}",
            "opts": self.model._meta,
            "original": dataset,
            "dataset": dataset,
            "page": page,
            "state": state,
            "filters": [
                (name, urlencode({"state": name}), _filter_count(name, counts, dataset))
                for name in STATES
            ],
            "counts": counts,
            "lock": lock,
            "edit_lock": None if lock else edit_lock(dataset),
            "can_review": lock is None and self.has_change_permission(request, dataset),
            "query": urlencode({"state": state, "page": page.number}),
        }
        return render(request, "admin/generation/instructiondataset/review.html", context)

    def _review_post(self, request: HttpRequest, dataset: InstructionDataset, state: str):
        action = request.POST.get("action", "")
        try:
            position = int(request.POST.get("position", ""))
        except ValueError:
            self.message_user(request, BAD_POSITION, messages.ERROR)
            return HttpResponseRedirect(_page_url(dataset, state, 1, None))
        review = RowReview(position=position, action=action)
        if action == "edit":
            review = RowReview(
                position=position,
                action=action,
                instruction=_posted(request, "instruction"),
                input=_posted(request, "input"),
                output=_posted(request, "output"),
            )
        try:
            if action not in ACTIONS:
                raise ServiceError(f"unknown review action {action!r}")
            instruction_rows_review(dataset=dataset, reviews=[review], user=request.user)
        except ServiceError as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return HttpResponseRedirect(_where(dataset, state, position, stay=True))
        self.message_user(request, DONE[action].format(position))
        return HttpResponseRedirect(_where(dataset, state, position, stay=False))


def _posted(request: HttpRequest, field: str) -> str:
    # Browsers send a textarea's line breaks as CRLF; the rows hold plain newlines.
    return request.POST.get(field, "").replace("\r\n", "\n")


def _filter_count(name: str, counts: dict, dataset: InstructionDataset) -> int:
    if name == "all":
        return counts["pending"] + counts["accepted"] + counts["rejected"]
    return counts[name]


def _where(dataset: InstructionDataset, state: str, position: int, *, stay: bool) -> str:
    """The page (and row anchor) to show after reviewing row ``position``: the row itself when
    it is still listed and ``stay``, else the next listed row (the previous one at the end)."""
    rows = _rows(dataset, state)
    target = None
    if stay:
        target = rows.filter(position=position).first()
    target = (
        target
        or rows.filter(position__gt=position).first()
        or rows.filter(position__lt=position).last()
    )
    if target is None:
        return _page_url(dataset, state, 1, None)
    before = rows.filter(position__lt=target.position).count()
    return _page_url(dataset, state, before // ROWS_PER_PAGE + 1, target.position)


def _page_url(dataset: InstructionDataset, state: str, page: int, position: int | None) -> str:
    url = reverse("admin:generation_instructiondataset_review", args=[dataset.pk])
    url += "?" + urlencode({"state": state, "page": page})
    return url + (f"#row-{position}" if position is not None else "")
