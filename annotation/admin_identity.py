"""The study admin's identity review: spans in the answers that may give a model away (flagged
when a study opens), their inline on the study page, the "Review identity flags" page (mask or
keep each, or a whole kind) and the study actions that re-scan or mask them.

``IdentityReviewAdmin`` is mixed into the Study admin (annotation/admin.py); every change goes
through the services in annotation/studies.py, so who masked or kept what is recorded.
"""

from __future__ import annotations

import re

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from evalsite.errors import ServiceError

from . import studies
from .identity import apply_masks
from .models import IdentityFlag, Study

REVIEW_URL = "annotation_study_identity_review"


def flag_message(study: Study) -> str:
    """What staff are told of a study's flags after making, opening or re-scanning it."""
    counts = studies.study_flag_counts(study=study)
    if not counts["flags"]:
        return "No answer seems to name its model."
    unreviewed = counts["unreviewed"]
    return (
        f"{counts['flags']} span(s) in the answers may give a model away "
        f"({counts['masked']} masked, {unreviewed} not reviewed); review them on the study's "
        "“Review identity flags” page (mask, keep, or a whole kind). "
        + (
            f"The {unreviewed} not reviewed open masked."
            if unreviewed
            else "Opening keeps every decision."
        )
    )


def flag_context(flag: IdentityFlag):
    """The flagged span in 40 characters either side, and the same as annotators see it masked."""
    text = flag.answer.text
    before = text[max(0, flag.start - 40) : flag.start]
    after = text[flag.end : flag.end + 40]
    return format_html(
        "…{}<mark>{}</mark>{}…<br><small>masked: …{}…</small>",
        before,
        text[flag.start : flag.end],
        after,
        apply_masks(
            before + text[flag.start : flag.end] + after,
            [(len(before), len(before) + flag.end - flag.start)],
        ),
    )


class IdentityFlagInline(admin.TabularInline):
    """Spans that may give a model away, masked (“[…]” for annotators) until staff untick one."""

    model = IdentityFlag
    fields = ["model_name", "question", "kind", "text", "context", "masked", "reviewed"]
    readonly_fields = ["model_name", "question", "kind", "text", "context", "reviewed"]
    extra = 0
    can_delete = False
    verbose_name_plural = "Identity flags (answers that may give their model away)"

    def get_queryset(self, request):
        return (
            super().get_queryset(request).select_related("answer__run__model", "answer__question")
        )

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="model")
    def model_name(self, flag: IdentityFlag) -> str:
        return flag.answer.run.model.name

    @admin.display(description="question")
    def question(self, flag: IdentityFlag) -> str:
        return f"#{flag.answer.question.position}"

    @admin.display(description="reviewed")
    def reviewed(self, flag: IdentityFlag) -> str:
        if flag.reviewed_at is None:
            return "-"
        who = flag.reviewed_by.get_username() if flag.reviewed_by else "?"
        return f"{who}, {flag.reviewed_at:%Y-%m-%d %H:%M}"

    @admin.display(description="in context (as annotators would see it masked)")
    def context(self, flag: IdentityFlag):
        return flag_context(flag)


class IdentityReviewAdmin:
    """Mix in before the Study ``ModelAdmin``: the review page and link, the flag count column,
    the flag inline's saving, and the actions ``rescan_identity``, ``review_identity`` and
    ``mask_all_flags`` (the admin lists them in its ``actions``). The queryset must annotate
    ``flags_n`` and ``masked_n``."""

    def get_urls(self):
        review = path(
            "<int:study_id>/identity-flags/",
            self.admin_site.admin_view(self.identity_review_view),
            name=REVIEW_URL,
        )
        return [review, *super().get_urls()]

    def save_formset(self, request, form, formset, change):
        if formset.model is not IdentityFlag:
            return super().save_formset(request, form, formset, change)
        # Each changed tick goes through the service, so who unmasked what is recorded.
        changed = []
        for flag_form in formset.forms:
            if "masked" in flag_form.changed_data:
                studies.identity_flags_mask(
                    flags=[flag_form.instance],
                    masked=flag_form.cleaned_data["masked"],
                    user=request.user,
                )
                changed.append((flag_form.instance, ["masked"]))
        # What formset.save() would have set: the admin's history message reads them (a change
        # of a tick was a 500 without them).
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], changed, []

    @admin.display(description="identity flags")
    def identity_review(self, study: Study):
        if not study.pk:
            return "-"
        return format_html(
            '<a href="{}">{}</a>',
            reverse(f"admin:{REVIEW_URL}", args=[study.pk]),
            f"Review identity flags ({flag_message(study)})",
        )

    @admin.display(description="identity flags", ordering="flags_n")
    def flag_summary(self, study: Study) -> str:
        if not study.flags_n:
            return "–"
        return f"{study.flags_n} ({study.masked_n} masked)"

    def identity_review_view(self, request, study_id: int):
        """Every flag of one study by kind, with its context: mask or keep each, or a whole
        kind at once (studies.identity_flags_review); reviewed flags open as decided."""
        study = Study.objects.filter(pk=study_id).first()
        if study is None or not self.has_view_permission(request, study):
            raise Http404
        can_change = self.has_change_permission(request, study)
        if request.method == "POST":
            if not can_change:
                raise PermissionDenied
            self._review_post(request, study)
            return HttpResponseRedirect(request.path)
        by_kind: dict[str, list] = {}
        for flag in studies.study_flags_for_review(study=study):
            by_kind.setdefault(flag.kind, []).append({"flag": flag, "context": flag_context(flag)})
        kinds = [
            {"kind": kind, "label": IdentityFlag.Kind(kind).label, "rows": rows}
            for kind, rows in by_kind.items()
        ]
        context = {
            **self.admin_site.each_context(request),
            "title": f"Identity flags of {study.name}",
            "opts": self.model._meta,
            "study": study,
            "kinds": kinds,
            "counts": studies.study_flag_counts(study=study),
            "can_change": can_change,
        }
        return TemplateResponse(request, "admin/annotation/study_identity_review.html", context)

    def _review_post(self, request, study: Study) -> None:
        flags = {
            int(key.removeprefix("flag-")): value
            for key, value in request.POST.items()
            if re.fullmatch(r"flag-[0-9]{1,9}", key) and value
        }
        kinds = {
            key.removeprefix("kind-"): value
            for key, value in request.POST.items()
            if key.startswith("kind-") and value
        }
        try:
            done = studies.identity_flags_review(
                study=study, flags=flags, kinds=kinds, user=request.user
            )
        except ServiceError as exc:
            self.message_user(request, str(exc), messages.ERROR)
        else:
            self.message_user(
                request,
                f"{done['reviewed']} flag(s) reviewed, {done['changed']} changed.",
                messages.SUCCESS,
            )

    @admin.action(description="Review the identity flags of the selected study…")
    def review_identity(self, request, queryset):
        study = queryset.order_by("pk").first()
        return HttpResponseRedirect(reverse(f"admin:{REVIEW_URL}", args=[study.pk]))

    @admin.action(description="Re-scan answers for self-identifying text")
    def rescan_identity(self, request, queryset):
        for study in queryset:
            studies.study_flag_identity(study=study)
            self.message_user(request, f"{study.name}: {flag_message(study)}", messages.INFO)

    @admin.action(description="Mask every flagged span for annotators")
    def mask_all_flags(self, request, queryset):
        changed = studies.identity_flags_mask(
            flags=IdentityFlag.objects.filter(study__in=queryset), masked=True, user=request.user
        )
        self.message_user(request, f"Masked {changed} span(s).", messages.SUCCESS)
