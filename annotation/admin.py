"""Staff admin: studies (open/close, gold checks; their identity review is admin_identity.py)
and the "open a study comparing these runs…" action on generation runs. Comparisons,
assignments, votes and exclusions are admin_records.py, registered by importing it here.

annotation depends on generation, never the reverse: the action is added here by extending
whatever admin generation registered for GenerationRun.
"""

from __future__ import annotations

import itertools

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import Count, Q
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse

from evalsite.admin_helpers import ExtensibleAdmin, admin_action_register
from evalsite.errors import ServiceError
from evalsite.runs.admin import RunAdmin
from generation.models import GenerationRun

# admin_records registers the records' admins (admin autodiscovery imports this module only).
from . import admin_records, gold, staging, studies  # noqa: F401
from .admin_identity import IdentityFlagInline, IdentityReviewAdmin, flag_message
from .forms import StudyCreateForm
from .models import StagePlan, Study, StudyRun

# --- generation runs: the study action --------------------------------------------------------


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
                modeladmin.message_user(request, flag_message(study), messages.WARNING)
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


# What staff may change on a study, in the order the form shows it (name and title first).
STUDY_SETTINGS = [
    "votes_per_comparison",
    "instructions",
    "pool_users",
    "pool_groups",
    "quota",
    "gold_rate",
    "fast_vote_seconds",
    "sampling",
    "sampling_floor",
    "human_budget",
    "routing",
    "audit_share",
]
STUDY_STAMPS = ["created_by", "created_at", "opened_at", "closed_at"]


class StudyAdminForm(forms.ModelForm):
    class Meta:
        model = Study
        fields = ["name", "title", *STUDY_SETTINGS]

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
class StudyAdmin(IdentityReviewAdmin, ExtensibleAdmin, admin.ModelAdmin):
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
        *STUDY_SETTINGS,
        *STUDY_STAMPS,
    ]
    readonly_fields = ["identity_review", "status", "prompt_set", *STUDY_STAMPS]
    inlines = [StudyRunInline, IdentityFlagInline]
    filter_horizontal = ["pool_users", "pool_groups"]
    actions = [
        "open_studies",
        "close_studies",
        "rescan_identity",
        "review_identity",
        "mask_all_flags",
        "gold_from_controls",
        "plan_next_stage",
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

    def _change_each(self, request, queryset, change, done: str) -> None:
        for study in queryset:
            try:
                change(study=study, user=request.user)
            except ServiceError as exc:
                self.message_user(request, str(exc), messages.ERROR)
                continue
            self.message_user(request, f"{done} {study.name!r}.", messages.SUCCESS)
            if change is studies.study_open:
                self.message_user(request, flag_message(study), messages.WARNING)

    @admin.action(description="Open the selected studies (flags self-identifying answers)")
    def open_studies(self, request, queryset):
        self._change_each(request, queryset, studies.study_open, "Opened")

    @admin.action(description="Close the selected studies")
    def close_studies(self, request, queryset):
        self._change_each(request, queryset, studies.study_close, "Closed")

    def get_readonly_fields(self, request, obj=None):
        found = list(super().get_readonly_fields(request, obj))
        # The staged design's budget is fixed once the study opened (its weights rest on it).
        if obj is not None and obj.status != Study.Status.DRAFT:
            found.append("human_budget")
        return found

    @admin.action(description="Plan the next stage of the selected staged studies (when full)")
    def plan_next_stage(self, request, queryset):
        for study in queryset:
            try:
                plan = staging.stage_plan_start(study=study, user=request.user)
            except ServiceError as exc:
                self.message_user(request, str(exc), messages.ERROR)
                continue
            self.message_user(
                request,
                f"{study.name}: stage {plan.stage} is {plan.status} (stage plan {plan.pk}).",
                messages.SUCCESS,
            )

    @admin.action(
        description="Make gold checks from pairs with a known-bad answer (empty or cut off)"
    )
    def gold_from_controls(self, request, queryset):
        for study in queryset:
            made = gold.gold_from_controls(study=study)
            self.message_user(request, f"{study.name}: {made} gold check(s) made.", messages.INFO)


@admin.register(StagePlan)
class StagePlanAdmin(RunAdmin):
    """The staged design's stage plans (annotation/staging.py): runs on the spine, read-only,
    with retry and cancel; a new one is made by the study's "Plan the next stage" action."""

    list_display = ["id", "study", "stage", "share", "status", "progress", "votes", "created_at"]
    list_filter = ["status", "study"]
    list_select_related = ["study"]
    run_fields = ["study", "stage", "share", "budget"]
    result_fields = ["votes"]
    retry_description = "Retry (draw the stage if it is not drawn yet)"
