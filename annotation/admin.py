"""Staff admin: studies (open/close, identity flags and masks), comparisons, assignments, votes,
and the "open a study comparing these runs…" action on generation runs.

annotation depends on generation, never the reverse: the action is added here by extending
whatever admin generation registered for GenerationRun.
"""

from __future__ import annotations

import itertools
import re

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q
from django.http import Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from evalsite.admin_helpers import ExtensibleAdmin, admin_action_register
from evalsite.errors import ServiceError
from generation.models import GenerationRun

from . import gold, studies
from .forms import StudyCreateForm
from .identity import apply_masks
from .models import (
    AnnotatorExclusion,
    Assignment,
    Comparison,
    IdentityFlag,
    Study,
    StudyRun,
    Vote,
)

# --- generation runs: the study action --------------------------------------------------------


def _flag_message(study: Study) -> str:
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


@admin_action_register(GenerationRun, permissions=["annotation.add_study"])
@admin.action(description="Open a study comparing these runs…")
def open_study_action(modeladmin, request, queryset):
    runs = list(queryset.select_related("model", "prompt_set").order_by("pk"))
    try:
        studies.study_runs_check(runs=runs)
    except ServiceError as exc:
        modeladmin.message_user(request, f"Cannot make a study: {exc}", messages.ERROR)
        return None
    if "apply" in request.POST:
        form = StudyCreateForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            try:
                study = studies.study_create(
                    name=data["name"],
                    title=data["title"],
                    runs=runs,
                    votes_per_comparison=data["votes_per_comparison"],
                    instructions=data["instructions"],
                    open_now=data["open_now"],
                    sampling=data["sampling"] or Study.Sampling.UNIFORM,
                    quota=data["quota"],
                    gold_rate=data["gold_rate"] or 0.0,
                    user=request.user,
                )
            except ServiceError as exc:
                form.add_error(None, str(exc))
            else:
                modeladmin.message_user(
                    request,
                    f"Study {study.name!r} created with {study.comparisons.count()} "
                    f"comparisons ({study.get_status_display()}).",
                    messages.SUCCESS,
                )
                modeladmin.message_user(request, _flag_message(study), messages.WARNING)
                return HttpResponseRedirect(
                    reverse("admin:annotation_study_change", args=[study.pk])
                )
    else:
        form = StudyCreateForm()
    pairs = len(list(itertools.combinations(runs, 2)))
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": "Open a study comparing these runs",
        "opts": modeladmin.model._meta,
        "runs": runs,
        "prompt_set": runs[0].prompt_set,
        "comparison_count": pairs * runs[0].prompt_set.questions.count(),
        "form": form,
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
    }
    return TemplateResponse(request, "admin/annotation/study_create.html", context)


# --- studies ------------------------------------------------------------------------------------


class StudyRunInline(admin.TabularInline):
    model = StudyRun
    fields = ["run", "model"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False


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


class StudyAdminForm(forms.ModelForm):
    class Meta:
        model = Study
        fields = [
            "name",
            "title",
            "votes_per_comparison",
            "instructions",
            "pool_users",
            "pool_groups",
            "quota",
            "gold_rate",
            "fast_vote_seconds",
            "sampling",
            "sampling_floor",
            "routing",
            "audit_share",
        ]

    # Left out of a post (an older form, a script): the study keeps what it has.
    KEEP_IF_MISSING = ("gold_rate", "fast_vote_seconds", "sampling", "sampling_floor")
    KEEP_IF_MISSING += ("audit_share",)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name in self.KEEP_IF_MISSING:
            self.fields[name].required = False

    def clean(self):
        cleaned = super().clean()
        for name in self.KEEP_IF_MISSING:
            if cleaned.get(name) is None:
                cleaned[name] = getattr(self.instance, name)
        models = [sr.model for sr in StudyRun.objects.filter(study=self.instance)]
        try:
            studies.study_texts_check(
                models=models,
                texts={
                    "title": cleaned.get("title", ""),
                    "instructions": cleaned.get("instructions", ""),
                },
            )
        except ServiceError as exc:
            raise forms.ValidationError(str(exc)) from None
        return cleaned


@admin.register(Study)
class StudyAdmin(ExtensibleAdmin, admin.ModelAdmin):
    form = StudyAdminForm
    list_display = [
        "name",
        "title",
        "status",
        "prompt_set",
        "votes_per_comparison",
        "comparison_count",
        "vote_count",
        "flag_summary",
        "created_at",
    ]
    list_filter = ["status", "prompt_set"]
    search_fields = ["name", "title"]
    fields = [
        "name",
        "title",
        "identity_review",
        "status",
        "prompt_set",
        "votes_per_comparison",
        "instructions",
        "pool_users",
        "pool_groups",
        "quota",
        "gold_rate",
        "fast_vote_seconds",
        "sampling",
        "sampling_floor",
        "routing",
        "audit_share",
        "created_by",
        "created_at",
        "opened_at",
        "closed_at",
    ]
    readonly_fields = [
        "identity_review",
        "status",
        "prompt_set",
        "created_by",
        "created_at",
        "opened_at",
        "closed_at",
    ]
    inlines = [StudyRunInline, IdentityFlagInline]
    filter_horizontal = ["pool_users", "pool_groups"]
    actions = [
        "open_studies",
        "close_studies",
        "rescan_identity",
        "review_identity",
        "mask_all_flags",
        "gold_from_controls",
    ]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .select_related("prompt_set")
            .annotate(
                comparisons_n=Count("comparisons", distinct=True),
                flags_n=Count("identity_flags", distinct=True),
                masked_n=Count(
                    "identity_flags", filter=Q(identity_flags__masked=True), distinct=True
                ),
            )
        )

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

    def has_add_permission(self, request) -> bool:
        # A study is built with all its comparisons: use the action on generation runs,
        # `manage.py create_study` or POST /api/studies/.
        return False

    @admin.display(description="comparisons", ordering="comparisons_n")
    def comparison_count(self, study: Study) -> int:
        return study.comparisons_n

    @admin.display(description="votes")
    def vote_count(self, study: Study) -> str:
        wanted = study.comparisons_n * study.votes_per_comparison
        return f"{studies.study_vote_count(study=study)} / {wanted}"

    def get_urls(self):
        review = path(
            "<int:study_id>/identity-flags/",
            self.admin_site.admin_view(self.identity_review_view),
            name="annotation_study_identity_review",
        )
        return [review, *super().get_urls()]

    @admin.display(description="identity flags")
    def identity_review(self, study: Study):
        if not study.pk:
            return "-"
        return format_html(
            '<a href="{}">{}</a>',
            reverse("admin:annotation_study_identity_review", args=[study.pk]),
            f"Review identity flags ({_flag_message(study)})",
        )

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

    @admin.action(description="Review the identity flags of the selected study…")
    def review_identity(self, request, queryset):
        study = queryset.order_by("pk").first()
        return HttpResponseRedirect(
            reverse("admin:annotation_study_identity_review", args=[study.pk])
        )

    @admin.display(description="identity flags", ordering="flags_n")
    def flag_summary(self, study: Study) -> str:
        if not study.flags_n:
            return "–"
        return f"{study.flags_n} ({study.masked_n} masked)"

    def _change_each(self, request, queryset, change, done: str) -> None:
        for study in queryset:
            try:
                change(study=study, user=request.user)
            except ServiceError as exc:
                self.message_user(request, str(exc), messages.ERROR)
                continue
            self.message_user(request, f"{done} {study.name!r}.", messages.SUCCESS)
            if change is studies.study_open:
                self.message_user(request, _flag_message(study), messages.WARNING)

    @admin.action(description="Open the selected studies (flags self-identifying answers)")
    def open_studies(self, request, queryset):
        self._change_each(request, queryset, studies.study_open, "Opened")

    @admin.action(description="Close the selected studies")
    def close_studies(self, request, queryset):
        self._change_each(request, queryset, studies.study_close, "Closed")

    @admin.action(description="Re-scan answers for self-identifying text")
    def rescan_identity(self, request, queryset):
        for study in queryset:
            studies.study_flag_identity(study=study)
            self.message_user(request, f"{study.name}: {_flag_message(study)}", messages.INFO)

    @admin.action(
        description="Make gold checks from pairs with a known-bad answer (empty or cut off)"
    )
    def gold_from_controls(self, request, queryset):
        for study in queryset:
            made = gold.gold_from_controls(study=study)
            self.message_user(request, f"{study.name}: {made} gold check(s) made.", messages.INFO)

    @admin.action(description="Mask every flagged span for annotators")
    def mask_all_flags(self, request, queryset):
        changed = studies.identity_flags_mask(
            flags=IdentityFlag.objects.filter(study__in=queryset), masked=True, user=request.user
        )
        self.message_user(request, f"Masked {changed} span(s).", messages.SUCCESS)


# --- comparisons, assignments, votes: read-only records -----------------------------------------


class _ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Comparison)
class ComparisonAdmin(_ReadOnlyAdmin):
    list_display = ["id", "study", "question", "run_a", "run_b", "votes_n", "gold", "gold_expected"]
    list_filter = ["study", "gold"]
    actions = ["gold_a", "gold_b", "gold_tie", "gold_none"]

    def has_gold_permission(self, request) -> bool:
        return request.user.has_perm("annotation.change_study")

    def _gold(self, request, queryset, expected):
        changed = gold.comparisons_mark_gold(comparisons=queryset, expected=expected)
        self.message_user(request, f"{changed} comparison(s) changed.", messages.SUCCESS)

    @admin.action(description="Gold check: answer a should win", permissions=["gold"])
    def gold_a(self, request, queryset):
        self._gold(request, queryset, "a")

    @admin.action(description="Gold check: answer b should win", permissions=["gold"])
    def gold_b(self, request, queryset):
        self._gold(request, queryset, "b")

    @admin.action(description="Gold check: a tie is expected", permissions=["gold"])
    def gold_tie(self, request, queryset):
        self._gold(request, queryset, "tie")

    @admin.action(description="No longer a gold check", permissions=["gold"])
    def gold_none(self, request, queryset):
        self._gold(request, queryset, None)

    list_select_related = ["study", "question__prompt_set", "run_a__model", "run_b__model"]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(votes_n=Count("votes"))

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="votes", ordering="votes_n")
    def votes_n(self, comparison: Comparison) -> int:
        return comparison.votes_n


@admin.register(Assignment)
class AssignmentAdmin(_ReadOnlyAdmin):
    list_display = [
        "id",
        "study",
        "comparison",
        "annotator",
        "left",
        "status",
        "skip_reason",
        "first_delivered_at",
        "lease_expires_at",
    ]
    list_filter = ["study", "status", "skip_reason", "left"]
    search_fields = ["annotator__username", "token"]
    list_select_related = ["study", "annotator", "comparison__question", "comparison__study"]
    raw_id_fields = ["comparison", "annotator"]


@admin.register(Vote)
class VoteAdmin(_ReadOnlyAdmin):
    """Votes are evidence: never edited here; only a superuser may delete one."""

    list_display = [
        "id",
        "comparison",
        "annotator",
        "outcome",
        "tie_kind",
        "shown",
        "seconds",
        "imported",
        "judge",
        "created_at",
    ]
    list_filter = ["comparison__study", "outcome", "shown", "imported"]
    search_fields = ["annotator__username", "judge", "comment"]
    list_select_related = ["comparison__study", "comparison__question", "annotator"]

    def has_delete_permission(self, request, obj=None) -> bool:
        return request.user.is_superuser


@admin.register(AnnotatorExclusion)
class AnnotatorExclusionAdmin(admin.ModelAdmin):
    """Annotators whose votes a study's results leave out; delete the row to count them again
    (the results page's Exclude / Include again button does the same in one click)."""

    list_display = ["study", "annotator", "excluded_by", "excluded_at"]
    list_filter = ["study"]
    raw_id_fields = ["annotator"]
    readonly_fields = ["excluded_by", "excluded_at"]

    def save_model(self, request, obj, form, change):
        if not change:
            obj.excluded_by = request.user
        super().save_model(request, obj, form, change)
