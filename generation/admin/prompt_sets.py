"""Prompt sets and their questions: read-only once a run has answered them."""

from __future__ import annotations

from django.contrib import admin

from evalsite.admin_helpers import ImportFromFile

from ..models import PromptSet, Question
from ..registry import prompt_set_import
from .forms import PromptSetImportForm


class QuestionInline(admin.TabularInline):
    model = Question
    extra = 0
    fields = ["position", "category", "external_id", "text", "follow_ups"]

    def has_change_permission(self, request, obj=None):
        # A set with answers is read-only: edit by importing a new set.
        return obj is None or not obj.has_answers

    has_add_permission = has_change_permission
    has_delete_permission = has_change_permission


@admin.register(PromptSet)
class PromptSetAdmin(ImportFromFile, admin.ModelAdmin):
    list_display = ["name", "question_count", "source", "created_at"]
    search_fields = ["name"]
    inlines = [QuestionInline]
    change_list_template = "admin/generation/promptset/change_list.html"
    import_form = PromptSetImportForm
    import_title = "Import a prompt set"
    import_template = "admin/generation/import_form.html"

    @admin.display(description="questions")
    def question_count(self, obj: PromptSet) -> int:
        return obj.questions.count()

    def has_delete_permission(self, request, obj=None):
        return obj is None or not obj.has_answers

    def import_file(self, request, upload, data):
        prompt_set = prompt_set_import(**upload, replace=data["replace"])
        return (
            prompt_set,
            f"Imported {prompt_set.questions.count()} questions into {prompt_set.name}.",
        )


@admin.register(Question)
class QuestionAdmin(admin.ModelAdmin):
    list_display = ["prompt_set", "position", "category", "short_text"]
    list_filter = ["prompt_set", "category"]
    search_fields = ["text", "external_id"]

    @admin.display(description="text")
    def short_text(self, obj: Question) -> str:
        return obj.text[:80]

    def has_change_permission(self, request, obj=None):
        return obj is None or not obj.prompt_set.has_answers

    has_delete_permission = has_change_permission
