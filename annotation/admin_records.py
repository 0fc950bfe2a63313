"""Staff admin for what a study records: comparisons (and their gold checks), assignments,
votes (read-only evidence) and annotator exclusions. Registered when annotation/admin.py, which
admin autodiscovery imports, imports this module.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import Count

from . import gold
from .models import AnnotatorExclusion, Assignment, Comparison, Vote

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
