"""Every evolution item, read-only: filter by run, kept, rule, operation and round."""

from __future__ import annotations

from django.contrib import admin
from django.utils.html import format_html
from django.utils.safestring import SafeString

from generation.admin.base import ReadOnlyAdmin

from ..models import EvolutionItem


def _pre(text: str, limit: int = 400) -> SafeString:
    shown = text if len(text) <= limit else text[:limit] + "…"
    return format_html('<pre style="white-space: pre-wrap; margin: 0">{}</pre>', shown)


# --- items -------------------------------------------------------------------------------------


@admin.register(EvolutionItem)
class EvolutionItemAdmin(ReadOnlyAdmin, admin.ModelAdmin):
    list_display = ["id", "run", "round", "operation", "kept", "drop_rule", "evolved", "detail"]
    list_filter = [
        ("run", admin.RelatedOnlyFieldListFilter),
        "kept",
        "drop_rule",
        "operation",
        "round",
    ]
    list_select_related = ["run", "run__model", "run__source"]
    search_fields = ["instruction", "answer", "parent_text"]
    list_per_page = 50  # a run's items, 50 a page (the run's page links here)
    fields = [
        "run",
        "round",
        "source_example",
        "parent_item",
        "operation",
        "prompt",
        "kept",
        "drop_rule",
        "drop_detail",
        "parent_shown",
        "prompt_shown",
        "output_shown",
        "instruction_shown",
        "judge_shown",
        "answer_shown",
        "created_at",
    ]
    readonly_fields = fields

    @admin.display(description="evolved instruction")
    def evolved(self, obj: EvolutionItem) -> str:
        return obj.instruction[:80]

    @admin.display(description="why dropped")
    def detail(self, obj: EvolutionItem) -> str:
        return obj.drop_detail[:120]

    @admin.display(description="parent")
    def parent_shown(self, obj):
        return _pre(obj.parent_text, 4000)

    @admin.display(description="rewrite prompt")
    def prompt_shown(self, obj):
        return _pre(obj.prompt_text, 4000)

    @admin.display(description="evolver output")
    def output_shown(self, obj):
        return _pre(obj.output, 4000)

    @admin.display(description="evolved instruction")
    def instruction_shown(self, obj):
        return _pre(obj.instruction, 4000)

    @admin.display(description="judge output")
    def judge_shown(self, obj):
        return _pre(obj.judge_output, 4000)

    @admin.display(description="answer")
    def answer_shown(self, obj):
        return _pre(obj.answer, 4000)
